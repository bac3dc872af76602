"""Tests of pipeline.data: readers, bad images, preprocessing, subsets, the generated set."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data import (
    BadImageError,
    LabelledSet,
    PreprocessSpec,
    Sample,
    crop_uint8,
    generate_demo_set,
    load_crops,
    load_rgb,
    normalize,
    preprocess_image,
    read_ilsvrc_val,
    read_image_folder,
    read_subset_list,
    resized_size,
    split_per_class,
    stratified_subsets,
    write_subset_list,
)
from pipeline.data import generated as generated_mod

RNG = np.random.default_rng(1234)


def _random_rgb(w: int, h: int) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _png_16bit_rgb(arr: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG written by hand (PIL cannot save one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------------------------
# PreprocessSpec


def test_spec_defaults_roundtrip() -> None:
    spec = PreprocessSpec()
    d = spec.to_dict()
    assert d == {
        "resize": 256,
        "crop": 224,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "color": "RGB",
        "interpolation": "bilinear",
        "scale": 255.0,
    }
    assert json.loads(json.dumps(d)) == d
    assert PreprocessSpec.from_dict(d) == spec
    assert PreprocessSpec.from_dict({"crop": 200, "mean": [0.5, 0.5, 0.5]}).mean == (0.5, 0.5, 0.5)
    hash(PreprocessSpec.from_dict(d))  # lists from JSON were frozen into tuples


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"resize": 200, "crop": 224}, "resize"),
        ({"crop": 0, "resize": 0}, "crop"),
        ({"crop": 224.0}, "crop"),
        ({"std": (0.2, 0.0, 0.2)}, "std"),
        ({"mean": (0.5, 0.5)}, "mean"),
        ({"color": "BGR"}, "color"),
        ({"interpolation": "nearest"}, "interpolation"),
        ({"scale": 0.0}, "scale"),
    ],
)
def test_spec_validation_names_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PreprocessSpec(**kwargs)


def test_spec_from_dict_unknown_key() -> None:
    with pytest.raises(ValueError, match="sizee"):
        PreprocessSpec.from_dict({"sizee": 3})
    with pytest.raises(ValueError, match="crop"):
        PreprocessSpec.from_dict({"crop": "224"})


# --------------------------------------------------------------------------------------------
# Preprocessing geometry and values


def test_resized_size_uses_integer_floor() -> None:
    assert resized_size(500, 375, 256) == (341, 256)  # 500*256/375 = 341.33
    assert resized_size(375, 500, 256) == (256, 341)
    assert resized_size(300, 300, 256) == (256, 256)
    assert resized_size(100, 299, 256) == (256, 765)  # 299*256/100 = 765.44
    assert resized_size(256, 301, 256) == (256, 301)


@pytest.mark.parametrize("w, h", [(500, 375), (375, 500), (640, 427), (224, 224), (90, 120)])
def test_crop_uint8_matches_contract(w: int, h: int) -> None:
    spec = PreprocessSpec()
    img = _random_rgb(w, h)
    out = crop_uint8(img, spec)
    assert out.shape == (3, 224, 224) and out.dtype == np.uint8
    rw, rh = resized_size(w, h, 256)
    ref = np.asarray(img.resize((rw, rh), Image.BILINEAR))
    left, top = (rw - 224) // 2, (rh - 224) // 2
    np.testing.assert_array_equal(out, ref[top : top + 224, left : left + 224].transpose(2, 0, 1))


def test_crop_offset_integer_division() -> None:
    # Short side already 256: no resampling, so the crop window can be checked exactly.
    img = _random_rgb(256, 301)
    arr = np.asarray(img)
    out = crop_uint8(img, PreprocessSpec())
    # left = (256-224)//2 = 16, top = (301-224)//2 = 38
    np.testing.assert_array_equal(out, arr[38:262, 16:240].transpose(2, 0, 1))


def test_normalize_one_pixel_by_hand() -> None:
    spec = PreprocessSpec()
    chw = np.zeros((3, 4, 5), dtype=np.uint8)
    chw[:, 2, 3] = (10, 128, 250)
    out = normalize(chw, spec)
    assert out.dtype == np.float32 and out.shape == (3, 4, 5)
    expected = [
        (10 / 255 - 0.485) / 0.229,
        (128 / 255 - 0.456) / 0.224,
        (250 / 255 - 0.406) / 0.225,
    ]
    np.testing.assert_allclose(out[:, 2, 3], expected, rtol=1e-6)
    np.testing.assert_allclose(out[0, 0, 0], (0 - 0.485) / 0.229, rtol=1e-6)
    # Exact float32 recipe: (v / scale - mean) / std, every step in float32.
    f32 = np.float32
    assert out[1, 2, 3] == (f32(128) / f32(255.0) - f32(0.456)) / f32(0.224)


def test_normalize_batch_and_errors() -> None:
    spec = PreprocessSpec()
    batch = RNG.integers(0, 256, (2, 3, 8, 8), dtype=np.uint8)
    out = normalize(batch, spec)
    assert out.shape == (2, 3, 8, 8) and out.dtype == np.float32
    np.testing.assert_array_equal(out[1], normalize(batch[1], spec))
    with pytest.raises(ValueError):
        normalize(batch.astype(np.float32), spec)
    with pytest.raises(ValueError):
        normalize(batch[:, :2], spec)


def test_preprocess_image_constant_colour(tmp_path: Path) -> None:
    # Bilinear resampling of a flat image stays flat, so every output pixel is known exactly.
    path = tmp_path / "flat.png"
    Image.new("RGB", (300, 200), (10, 128, 250)).save(path)
    spec = PreprocessSpec()
    out = preprocess_image(path, spec)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    expected = normalize(np.array([10, 128, 250], dtype=np.uint8).reshape(3, 1, 1), spec)
    np.testing.assert_array_equal(out, np.broadcast_to(expected, out.shape))


def test_preprocess_image_equals_steps(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    _random_rgb(333, 250).save(path)
    spec = PreprocessSpec(resize=160, crop=128)
    out = preprocess_image(path, spec)
    assert out.shape == (3, 128, 128)
    np.testing.assert_array_equal(out, normalize(crop_uint8(load_rgb(path), spec), spec))


# --------------------------------------------------------------------------------------------
# Decoding of unusual and broken files


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def test_load_rgb_cmyk_jpeg(tmp_path: Path) -> None:
    path = _save(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    img = load_rgb(path)
    assert img.mode == "RGB" and img.size == (40, 30)
    r, g, b = np.asarray(img)[15, 20]
    assert r > 200 and g < 60 and b < 60  # cyan 0, magenta+yellow full: red


def test_load_rgb_grayscale_and_1bit(tmp_path: Path) -> None:
    gray = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16))
    img = load_rgb(_save(gray, tmp_path / "g.png"))
    arr = np.asarray(img)
    assert img.mode == "RGB"
    for c in range(3):
        np.testing.assert_array_equal(arr[..., c], np.asarray(gray))
    one = load_rgb(_save(gray.convert("1"), tmp_path / "b.png"))
    assert one.mode == "RGB" and set(np.unique(np.asarray(one))) <= {0, 255}


def test_load_rgb_palette_with_transparency(tmp_path: Path) -> None:
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putpixel((1, 1), 1)
    path = _save(pal, tmp_path / "p.png", transparency=0)
    assert "transparency" in Image.open(path).info
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL warns when such images skip the RGBA step
        img = load_rgb(path)
    arr = np.asarray(img)
    # Alpha is dropped: the transparent index keeps its palette colour.
    assert tuple(arr[0, 0]) == (255, 0, 0) and tuple(arr[1, 1]) == (0, 255, 0)


def test_load_rgb_alpha_dropped(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert tuple(np.asarray(load_rgb(_save(rgba, tmp_path / "a.png")))[0, 0]) == (10, 20, 30)
    la = Image.new("LA", (4, 4), (77, 0))
    assert tuple(np.asarray(load_rgb(_save(la, tmp_path / "la.png")))[0, 0]) == (77, 77, 77)


def test_load_rgb_16bit_gray_keeps_high_byte(tmp_path: Path) -> None:
    values = np.array([[0, 0x00FF, 0x0100, 0x1234], [0x8000, 0xABCD, 0xFF00, 0xFFFF]], np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "g16.png")
    assert Image.open(path).mode.startswith("I")
    arr = np.asarray(load_rgb(path))
    np.testing.assert_array_equal(arr[..., 0], (values >> 8).astype(np.uint8))
    np.testing.assert_array_equal(arr[..., 2], arr[..., 0])


def test_load_rgb_16bit_rgb_png(tmp_path: Path) -> None:
    values = RNG.integers(0, 65536, (5, 7, 3)).astype(np.uint16)
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png_16bit_rgb(values))
    np.testing.assert_array_equal(np.asarray(load_rgb(path)), (values >> 8).astype(np.uint8))


def test_load_rgb_32bit_int_and_float_tiff(tmp_path: Path) -> None:
    ints = np.array([[-5, 0x1234, 70000]], dtype=np.int32)
    arr = np.asarray(load_rgb(_save(Image.fromarray(ints, "I"), tmp_path / "i.tif")))
    assert list(arr[0, :, 0]) == [0, 0x12, 0xFF]  # clipped to 0..65535, then >> 8
    floats = np.array([[0.5, 4660.9, 1e9]], dtype=np.float32)
    arr = np.asarray(load_rgb(_save(Image.fromarray(floats, "F"), tmp_path / "f.tif")))
    assert list(arr[0, :, 0]) == [0, 0x12, 0xFF]


def _write_broken(tmp_path: Path) -> dict[str, Path]:
    good = io.BytesIO()
    _random_rgb(64, 48).save(good, format="JPEG", quality=90)
    data = good.getvalue()
    files = {
        "truncated": tmp_path / "truncated.JPEG",
        "text": tmp_path / "text.JPEG",
        "empty": tmp_path / "empty.JPEG",
    }
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["text"].write_text("this is not an image\n")
    files["empty"].write_bytes(b"")
    return files


@pytest.mark.parametrize("kind", ["truncated", "text", "empty", "missing"])
def test_load_rgb_bad_files_raise_bad_image(tmp_path: Path, kind: str) -> None:
    files = _write_broken(tmp_path)
    path = files.get(kind, tmp_path / "missing.JPEG")
    with pytest.raises(BadImageError) as info:
        load_rgb(path)
    assert path.name in str(info.value) and info.value.reason


def test_load_crops_converts_and_skips(tmp_path: Path) -> None:
    broken = _write_broken(tmp_path)
    odd = [
        _save(Image.new("CMYK", (50, 40), (10, 20, 30, 40)), tmp_path / "cmyk.jpg"),
        _save(Image.new("L", (40, 50), 99), tmp_path / "gray.png"),
        _save(Image.fromarray(np.full((30, 30), 40000, np.uint16)), tmp_path / "g16.png"),
        _save(Image.new("RGBA", (30, 60), (1, 2, 3, 4)), tmp_path / "rgba.png"),
        _save(_random_rgb(70, 35), tmp_path / "rgb.jpg"),
    ]
    paths = [
        odd[0], broken["truncated"], odd[1], broken["text"],
        odd[2], broken["empty"], odd[3], odd[4],
    ]  # fmt: skip
    samples = [Sample(p, i) for i, p in enumerate(paths)]
    spec = PreprocessSpec(resize=40, crop=32)
    loaded = load_crops(samples, spec, workers=2)
    assert loaded.crops.shape == (5, 3, 32, 32) and loaded.crops.dtype == np.uint8
    assert loaded.labels.dtype == np.int64 and list(loaded.labels) == [0, 2, 4, 6, 7]
    assert [s.path for s in loaded.kept] == odd
    assert [p for p, _ in loaded.skipped] == [broken["truncated"], broken["text"], broken["empty"]]
    assert all(reason for _, reason in loaded.skipped)
    assert np.all(loaded.crops[2] == 40000 >> 8)
    np.testing.assert_array_equal(loaded.crops[4], crop_uint8(load_rgb(odd[4]), spec))
    assert loaded.normalized(spec).shape == (5, 3, 32, 32)


def test_load_crops_empty_and_progress(tmp_path: Path) -> None:
    spec = PreprocessSpec(resize=16, crop=16)
    empty = load_crops([], spec)
    assert empty.crops.shape == (0, 3, 16, 16) and empty.labels.shape == (0,)
    path = _save(_random_rgb(20, 20), tmp_path / "a.png")
    assert len(load_crops([Sample(path, 0)], spec, progress=True)) == 1


# --------------------------------------------------------------------------------------------
# Readers


def _touch_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path, format="PNG")
    return path


def test_read_image_folder(tmp_path: Path) -> None:
    root = tmp_path / "train"
    names = ["n02000000/b.JPEG", "n02000000/a.jpg", "n01000000/z.png", "n01000000/sub/c.jpeg"]
    for name in names + ["n03/x.JPG"]:
        _touch_image(root / name)
    (root / "n01000000" / "notes.txt").write_text("not an image")
    _touch_image(root / "n01000000" / ".hidden.png")
    _touch_image(root / ".cache" / "y.png")
    _touch_image(root / "n03" / ".thumbs" / "t.png")
    (root / "README").write_text("top-level files are not classes")

    data = read_image_folder(root)
    assert data.classes == ["n01000000", "n02000000", "n03"] and data.class_names == data.classes
    rel = [(s.path.relative_to(root).as_posix(), s.label) for s in data.samples]
    assert rel == [
        ("n01000000/sub/c.jpeg", 0),
        ("n01000000/z.png", 0),
        ("n02000000/a.jpg", 1),
        ("n02000000/b.JPEG", 1),
        ("n03/x.JPG", 2),
    ]

    mapping = tmp_path / "map.txt"
    mapping.write_text("n02000000 goldfish, Carassius auratus\nn01000000 tench, Tinca tinca\n")
    named = read_image_folder(root, synset_mapping=mapping)
    assert named.class_names == ["tench, Tinca tinca", "goldfish, Carassius auratus", "n03"]


def test_read_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nowhere"):
        read_image_folder(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    _touch_image(tmp_path / "flat" / "a.png")
    with pytest.raises(ValueError, match="no class sub-folders"):
        read_image_folder(tmp_path / "flat")
    _touch_image(tmp_path / "set" / "good" / "a.png")
    (tmp_path / "set" / "empty_class").mkdir()
    with pytest.raises(ValueError, match="empty_class"):
        read_image_folder(tmp_path / "set")


def _ilsvrc(tmp_path: Path, rows: list[str], mapping: str | None = None) -> tuple[Path, Path, Path]:
    images = tmp_path / "val"
    for i in range(1, 5):
        _touch_image(images / f"ILSVRC2012_val_{i:08d}.JPEG")
    csv_path = tmp_path / "LOC_val_solution.csv"
    csv_path.write_text("ImageId,PredictionString\n" + "".join(r + "\n" for r in rows))
    map_path = tmp_path / "LOC_synset_mapping.txt"
    # Deliberately not alphabetical: the class index is the line order.
    default = "n09999999 zebra\nn01440764 tench, Tinca tinca\nn01443537 goldfish\n"
    map_path.write_text(mapping or default)
    return images, csv_path, map_path


GOOD_ROWS = [
    "ILSVRC2012_val_00000003,n01440764 10 20 30 40 n01440764 1 2 3 4",
    "ILSVRC2012_val_00000001,n09999999 5 6 7 8 ",
    "ILSVRC2012_val_00000002,n01443537 1 1 5 5",
]


def test_read_ilsvrc_val(tmp_path: Path) -> None:
    images, csv_path, map_path = _ilsvrc(tmp_path, GOOD_ROWS)
    data = read_ilsvrc_val(images, csv_path, map_path)
    assert data.classes == ["n09999999", "n01440764", "n01443537"]
    assert data.class_names == ["zebra", "tench, Tinca tinca", "goldfish"]
    assert [(s.path.name, s.label) for s in data.samples] == [
        ("ILSVRC2012_val_00000001.JPEG", 0),
        ("ILSVRC2012_val_00000002.JPEG", 2),
        ("ILSVRC2012_val_00000003.JPEG", 1),
    ]  # image 4 exists but is not listed: ignored


@pytest.mark.parametrize(
    "rows, mapping, pattern",
    [
        (
            GOOD_ROWS[:2] + ["ILSVRC2012_val_00000002,n00000001 1 1 5 5"],
            None,
            r"LOC_val_solution\.csv:4: wnid n00000001",
        ),
        (
            GOOD_ROWS + ["ILSVRC2012_val_00000001,n01440764 1 1 5 5"],
            None,
            r"\.csv:5: ImageId .* twice",
        ),
        (
            ["ILSVRC2012_val_00000009,n01440764 1 1 5 5"],
            None,
            r"\.csv:2: image .*00000009\.JPEG not found",
        ),
        (["ILSVRC2012_val_00000001,"], None, r"\.csv:2: expected"),
        (GOOD_ROWS, "n09999999 zebra\ntench\n", r"LOC_synset_mapping\.txt:2: expected"),
        (
            GOOD_ROWS,
            "n09999999 zebra\n\nn09999999 again\n",
            r"LOC_synset_mapping\.txt:3: n09999999 already listed on line 1",
        ),
    ],
)
def test_read_ilsvrc_val_errors(tmp_path: Path, rows: list[str], mapping: str | None, pattern: str) -> None:
    images, csv_path, map_path = _ilsvrc(tmp_path, rows, mapping)
    with pytest.raises(ValueError, match=pattern):
        read_ilsvrc_val(images, csv_path, map_path)


def test_read_ilsvrc_val_bad_header_and_missing_files(tmp_path: Path) -> None:
    images, csv_path, map_path = _ilsvrc(tmp_path, GOOD_ROWS)
    csv_path.write_text("id,label\nILSVRC2012_val_00000001,n01440764\n")
    with pytest.raises(ValueError, match=r"LOC_val_solution\.csv:1: expected header"):
        read_ilsvrc_val(images, csv_path, map_path)
    with pytest.raises(ValueError, match="nope.csv: file not found"):
        read_ilsvrc_val(images, tmp_path / "nope.csv", map_path)


# --------------------------------------------------------------------------------------------
# Deterministic subsets


def _fake_set(counts: list[int]) -> LabelledSet:
    """A labelled set of paths only: subset selection never opens the files."""
    classes = [f"k{i}" for i in range(len(counts))]
    samples = [
        Sample(Path(f"/data/{c}/{j:03d}.JPEG"), i) for i, (c, n) in enumerate(zip(classes, counts)) for j in range(n)
    ]
    return LabelledSet(samples=samples, classes=classes, class_names=classes, root=Path("/data"))


def test_stratified_subsets_deterministic_disjoint_stratified() -> None:
    data = _fake_set([20, 25, 30, 12])
    calib, evaluation = stratified_subsets(data, calib_per_class=5, eval_per_class=7, seed=3)
    assert len(calib) == 4 * 5 and len(evaluation) == 4 * 7
    for label in range(4):
        assert sum(s.label == label for s in calib) == 5
        assert sum(s.label == label for s in evaluation) == 7
    assert not {s.path for s in calib} & {s.path for s in evaluation}
    assert all(f"/{data.classes[s.label]}/" in s.path.as_posix() for s in calib + evaluation)
    assert stratified_subsets(data, 5, 7, seed=3) == (calib, evaluation)
    other = stratified_subsets(data, 5, 7, seed=4)
    assert other[0] != calib and other[1] != evaluation
    # The evaluation set does not depend on the calibration size.
    assert stratified_subsets(data, 2, 7, seed=3)[1] == evaluation
    # A class's selection does not depend on the other classes.
    bigger = _fake_set([20, 25, 30, 12, 40])
    assert [s for s in stratified_subsets(bigger, 5, 7, seed=3)[1] if s.label < 4] == evaluation


def test_stratified_subsets_too_few_images() -> None:
    data = _fake_set([20, 9, 30, 5])
    with pytest.raises(ValueError, match=r"3 \+ evaluation 7 = 10 needed.*k1 has 9; k3 has 5"):
        stratified_subsets(data, calib_per_class=3, eval_per_class=7, seed=0)
    with pytest.raises(ValueError, match="seed"):
        stratified_subsets(data, 1, 1, seed=-2)
    with pytest.raises(ValueError, match="calib_per_class"):
        stratified_subsets(data, calib_per_class=-1, eval_per_class=1, seed=0)


def test_split_per_class_fractions_and_counts() -> None:
    data = _fake_set([10, 7])
    train, holdout = split_per_class(data, [0.8, 0.2], seed=0)
    assert len(train) + len(holdout) == 17
    assert sum(s.label == 0 for s in train) == 8 and sum(s.label == 1 for s in train) == 5
    assert not {s.path for s in train} & {s.path for s in holdout}
    parts = split_per_class(data, [1, 2, 3], seed=0)
    assert [len(p) for p in parts] == [2, 4, 6]
    for bad in ([0.5, 0.4], [1, 0.5], [-1, 2], []):
        with pytest.raises(ValueError, match="parts"):
            split_per_class(data, bad, seed=0)


# --------------------------------------------------------------------------------------------
# Subset list files


def test_subset_list_roundtrip_and_hashes(tmp_path: Path) -> None:
    root = tmp_path / "images"
    paths = [_touch_image(root / "a" / "1.png"), _touch_image(root / "b" / "2.png")]
    paths[1].write_bytes(paths[1].read_bytes() + b"\0")  # different bytes, different hash
    samples = [Sample(paths[0], 0), Sample(paths[1], 1)]
    out = tmp_path / "bundle" / "reference" / "eval_set.json"
    write_subset_list(samples, root, out, ["a", "b"], seed=7, method="stratified")

    doc = json.loads(out.read_text())
    assert doc["seed"] == 7 and doc["method"] == "stratified" and doc["classes"] == ["a", "b"]
    assert [e["path"] for e in doc["samples"]] == ["a/1.png", "b/2.png"]
    for entry, p in zip(doc["samples"], paths):
        assert entry["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert str(tmp_path) not in out.read_text()  # nothing absolute
    assert sorted(x.name for x in out.parent.iterdir()) == ["eval_set.json"]  # no temp file left

    back = read_subset_list(out, root=root, verify=True)
    assert back.samples == samples and back.seed == 7 and back.classes == ["a", "b"]
    assert read_subset_list(out).samples[1].path == Path("b/2.png")

    paths[0].write_bytes(b"changed")
    with pytest.raises(ValueError, match=r"a/1\.png"):
        read_subset_list(out, root=root, verify=True)


def test_subset_list_rejects_outside_root(tmp_path: Path) -> None:
    inside = _touch_image(tmp_path / "root" / "a.png")
    outside = _touch_image(tmp_path / "other" / "b.png")
    with pytest.raises(ValueError, match="not inside root"):
        write_subset_list([Sample(inside, 0), Sample(outside, 0)], tmp_path / "root", tmp_path / "l.json", ["a"])
    assert not (tmp_path / "l.json").exists()


# --------------------------------------------------------------------------------------------
# Generated demo set


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> LabelledSet:
    return generate_demo_set(tmp_path_factory.mktemp("demo") / "set", per_class=30, seed=0)


def test_generated_layout(demo: LabelledSet) -> None:
    assert len(demo.classes) == 10 and len(demo.samples) == 300
    assert demo.classes[0] == "c00_circle_stripes" and demo.classes[5] == "c05_circle_dots"
    assert demo.class_names[0] == "circle, stripes"
    shapes = {c.split("_")[1] for c in demo.classes}
    textures = {c.split("_")[2] for c in demo.classes}
    assert len(shapes) == 5 and len(textures) == 2
    with Image.open(demo.samples[0].path) as img:
        assert img.format == "JPEG" and img.size == (224, 224) and img.mode == "RGB"
    assert read_image_folder(demo.root).samples == demo.samples


def test_generated_deterministic(demo: LabelledSet, tmp_path: Path) -> None:
    again = generate_demo_set(tmp_path / "again", per_class=30, seed=0)
    for a, b in zip(demo.samples, again.samples):
        assert a.path.read_bytes() == b.path.read_bytes()
    other = generate_demo_set(tmp_path / "other", per_class=2, seed=1)
    assert other.samples[0].path.read_bytes() != demo.samples[0].path.read_bytes()


def test_generated_not_single_colour(demo: LabelledSet) -> None:
    for s in demo.samples[::7]:
        arr = np.asarray(Image.open(s.path)).reshape(-1, 3).astype(np.int32)
        assert arr.std(axis=0).max() > 15
        coarse = arr // 32  # 8 levels per channel: count clearly different colours
        assert len(np.unique(coarse[:, 0] * 64 + coarse[:, 1] * 8 + coarse[:, 2])) >= 3


def test_generated_not_separable_by_mean_colour(demo: LabelledSet) -> None:
    feats = np.stack([np.asarray(Image.open(s.path), dtype=np.float32).mean(axis=(0, 1)) for s in demo.samples])
    labels = np.array([s.label for s in demo.samples])
    train = np.arange(len(labels)) % 2 == 0
    means = np.stack([feats[train & (labels == k)].mean(axis=0) for k in range(10)])
    dist = ((feats[~train, None, :] - means[None]) ** 2).sum(axis=-1)
    accuracy = float((dist.argmin(axis=1) == labels[~train]).mean())
    assert accuracy < 0.4


def test_generated_reuse_and_conflicts(demo: LabelledSet) -> None:
    before = demo.samples[0].path.stat().st_mtime_ns
    assert generate_demo_set(demo.root, per_class=30, seed=0).samples == demo.samples
    assert demo.samples[0].path.stat().st_mtime_ns == before  # reused, not rewritten
    with pytest.raises(FileExistsError):
        generate_demo_set(demo.root, per_class=30, seed=1)


def test_generated_overwrite(tmp_path: Path) -> None:
    root = tmp_path / "s"
    generate_demo_set(root, per_class=1, seed=0, num_classes=3, size=64)
    data = generate_demo_set(root, per_class=2, seed=0, num_classes=4, size=64, overwrite=True)
    assert len(data.classes) == 4 and len(data.samples) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_generated_interrupted_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = generated_mod.render_image

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(generated_mod, "render_image", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_demo_set(tmp_path / "s", per_class=2, size=64)
    assert list(tmp_path.iterdir()) == []


def test_generated_argument_errors(tmp_path: Path) -> None:
    bad = [{"num_classes": 1}, {"num_classes": 16}, {"per_class": 0}, {"size": 8}, {"seed": -1}]
    for kwargs in bad:
        with pytest.raises(ValueError):
            generate_demo_set(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()
