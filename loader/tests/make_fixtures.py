#!/usr/bin/env python3
"""Creates the C++ loader's test fixtures.

    make_fixtures.py OUT_DIR [--bundle PATH] [--reference auto|fallback]

OUT_DIR/bundle          a valid bundle: synthesized by hand after docs/bundle-format.md, or a
                        copy of PATH (a bundle made by the pipeline) with --bundle
OUT_DIR/bundle_facts.json  what the manifest says, read with Python's json, for the C++ checks
OUT_DIR/images/         generated images covering the decoder paths (JPEG RGB/gray/CMYK/
                        progressive, PNG gray/RGBA/palette/16-bit/low bit depth)
OUT_DIR/images/index.json  per image: the reference tensor (raw float32 CHW, .bin) and which
                        reference implementation produced it

The reference tensors come from the project's pipeline.data.preprocess when it imports; if it
does not, from the fallback below, which follows docs/bundle-format.md with PIL.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

DEFAULT_PREPROCESSING = {
    "color": "RGB",
    "resize": 256,
    "interpolation": "bilinear",
    "crop": 224,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "scale": 255.0,
}
LABELS = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead",
          "electric ray", "stingray", "cock", "hen", "ostrich"]


# --------------------------------------------------------------------------------------
# Reference preprocessing


def fallback_preprocess(path: Path, pp: dict) -> np.ndarray:
    """docs/bundle-format.md with PIL, float32 arithmetic in the documented order.

    Conversion to RGB as pipeline.data.preprocess.load_rgb: 16-bit gray keeps the high byte
    (PIL's convert would clip it at 255), alpha is dropped.
    """
    img = Image.open(path)
    if img.mode.startswith("I;16"):
        gray = (np.asarray(img).astype(np.int64) >> 8).astype(np.uint8)
        img = Image.fromarray(np.stack([gray] * 3, axis=-1))
    img = img.convert("RGB")
    w, h = img.size
    resize, crop = int(pp["resize"]), int(pp["crop"])
    if w <= h:
        new_w, new_h = resize, h * resize // w
    else:
        new_w, new_h = w * resize // h, resize
    img = img.resize((new_w, new_h), Image.BILINEAR)
    left, top = (new_w - crop) // 2, (new_h - crop) // 2
    img = img.crop((left, top, left + crop, top + crop))
    arr = np.asarray(img, dtype=np.float32) / np.float32(pp["scale"])
    mean = np.asarray(pp["mean"], dtype=np.float32)
    std = np.asarray(pp["std"], dtype=np.float32)
    arr = (arr - mean) / std
    if pp.get("color", "RGB") == "BGR":
        arr = arr[:, :, ::-1]
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)


def project_reference(pp: dict):
    """The pipeline's own preprocess_image, or None when it cannot be imported."""
    try:
        from pipeline.data.preprocess import PreprocessSpec, preprocess_image
    except Exception as exc:  # noqa: BLE001 - any import problem means: use the fallback
        print(f"make_fixtures: pipeline.data.preprocess unavailable ({exc!r}); using the fallback")
        return None
    spec = PreprocessSpec(resize=int(pp["resize"]), crop=int(pp["crop"]),
                          mean=tuple(pp["mean"]), std=tuple(pp["std"]), color=pp["color"],
                          interpolation=pp["interpolation"], scale=float(pp["scale"]))
    return lambda path: np.asarray(preprocess_image(path, spec), dtype=np.float32)


# --------------------------------------------------------------------------------------
# Images


def write_png(path: Path, rows: np.ndarray, color_type: int, bit_depth: int,
              palette: bytes | None = None, trns: bytes | None = None) -> None:
    """Minimal PNG writer for layouts PIL does not save (16-bit RGB, 16-bit LA, 2-bit gray)."""
    h = rows.shape[0]
    if bit_depth == 16:
        raw = rows.astype(">u2").reshape(h, -1).tobytes()
        stride = len(raw) // h
    elif bit_depth < 8:
        per_byte = 8 // bit_depth
        packed = []
        for row in rows.reshape(h, -1):
            padded = np.zeros(-(-row.size // per_byte) * per_byte, dtype=np.uint8)
            padded[: row.size] = row
            grouped = padded.reshape(-1, per_byte)
            value = np.zeros(grouped.shape[0], dtype=np.uint16)
            for k in range(per_byte):
                value = (value << bit_depth) | grouped[:, k]
            packed.append(value.astype(np.uint8).tobytes())
        raw = b"".join(packed)
        stride = len(packed[0])
    else:
        raw = rows.astype(np.uint8).reshape(h, -1).tobytes()
        stride = len(raw) // h
    width = rows.shape[1]
    scanlines = b"".join(b"\x00" + raw[y * stride:(y + 1) * stride] for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, h, bit_depth, color_type, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    if palette is not None:
        out += chunk(b"PLTE", palette)
    if trns is not None:
        out += chunk(b"tRNS", trns)
    out += chunk(b"IDAT", zlib.compress(scanlines, 9)) + chunk(b"IEND", b"")
    path.write_bytes(out)


def smooth_rgb(w: int, h: int, seed: int) -> np.ndarray:
    """Gradients plus texture plus a few hard edges: exercises both passes of the filter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 127 + 120 * np.sin(x / 23.0) * np.cos(y / 31.0)
    g = 255 * x / max(w - 1, 1)
    b = 255 * y / max(h - 1, 1)
    img = np.stack([r, g, b], axis=-1) + rng.normal(0, 18, (h, w, 3))
    img[h // 3: h // 3 + 20, :, :] = [250, 10, 10]
    img[:, w // 2: w // 2 + 3, :] = 0
    return np.clip(img, 0, 255).astype(np.uint8)


def make_images(out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    made = []

    def keep(name: str) -> None:
        made.append(name)

    Image.fromarray(smooth_rgb(640, 427, 1)).save(out / "rgb_large.jpg", quality=90)
    keep("rgb_large.jpg")  # downscaling, landscape, 4:2:0
    Image.fromarray(smooth_rgb(300, 250, 2)).save(out / "rgb_small.jpg", quality=85, subsampling=0)
    keep("rgb_small.jpg")  # upscaling, 4:4:4
    Image.fromarray(smooth_rgb(480, 360, 3)).save(out / "rgb_progressive.jpg", quality=80,
                                                  progressive=True)
    keep("rgb_progressive.jpg")
    Image.fromarray(smooth_rgb(360, 500, 4)[:, :, 1]).save(out / "gray.jpg", quality=90)
    keep("gray.jpg")
    Image.fromarray(smooth_rgb(500, 400, 5)).convert("CMYK").save(out / "cmyk.jpg", quality=90)
    keep("cmyk.jpg")
    Image.fromarray(smooth_rgb(500, 375, 6)[:, :, 0]).save(out / "gray.png")
    keep("gray.png")
    rgba = np.dstack([smooth_rgb(400, 300, 7), np.linspace(0, 255, 400 * 300).reshape(300, 400)])
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(out / "rgba.png")
    keep("rgba.png")
    Image.fromarray(smooth_rgb(333, 500, 8)).quantize(colors=200).save(out / "palette.png")
    keep("palette.png")
    pal = Image.fromarray(smooth_rgb(260, 300, 9)).quantize(colors=64)
    pal.save(out / "palette_trns.png", transparency=3)
    keep("palette_trns.png")
    gray16 = (np.linspace(0, 1000, 300 * 400).reshape(400, 300)).astype(np.uint16)
    Image.fromarray(gray16 * 60).save(out / "gray16.png")  # full 16-bit range
    keep("gray16.png")
    rgb16 = smooth_rgb(310, 240, 10).astype(np.uint16) * 257 + 77
    write_png(out / "rgb16.png", rgb16, color_type=2, bit_depth=16)
    keep("rgb16.png")
    la16 = np.dstack([smooth_rgb(280, 280, 11)[:, :, 2], np.full((280, 280), 128)]).astype(np.uint16)
    write_png(out / "la16.png", la16 * 257 + 11, color_type=4, bit_depth=16)
    keep("la16.png")
    gray2 = (smooth_rgb(300, 260, 12)[:, :, 0] >> 6).astype(np.uint8)
    write_png(out / "gray2.png", gray2, color_type=0, bit_depth=2)
    keep("gray2.png")
    gray1 = (smooth_rgb(240, 320, 13)[:, :, 1] >> 7).astype(np.uint8)
    write_png(out / "gray1.png", gray1, color_type=0, bit_depth=1)
    keep("gray1.png")
    return made


# --------------------------------------------------------------------------------------
# Bundle


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def synthesize_bundle(bundle: Path) -> None:
    """A bundle written by hand after docs/bundle-format.md (the model files are dummies)."""
    files = {
        "models/model.fp32.onnx": b"dummy fp32 onnx model\n" * 64,
        "models/model.fp16.onnx": b"dummy fp16 onnx model\n" * 32,
        "models/model.int8-trt.onnx": b"dummy int8 q/dq onnx model\n" * 16,
        "engines/model.fp16.engine": b"dummy serialized engine\n" * 8,
        "reference/eval_set.json": json.dumps({"images": []}).encode(),
    }
    plans = {"plans": [
        {"onnx": "models/model.fp16.onnx", "precision": "fp16",
         "profile": {"min": 1, "opt": 4, "max": 8}, "workspace_mib": 1024, "dla_core": None,
         "strongly_typed": True, "timing_cache": "timing.cache"},
        {"onnx": "models/model.int8-trt.onnx", "precision": "int8-trt",
         "profile": {"min": 1, "opt": 1, "max": 1}, "workspace_mib": 0, "dla_core": 0,
         "strongly_typed": True, "timing_cache": None},
    ]}
    files["build_plan.json"] = json.dumps(plans, indent=2).encode()
    for rel, data in files.items():
        (bundle / rel).parent.mkdir(parents=True, exist_ok=True)
        (bundle / rel).write_bytes(data)

    engine_sha = sha256(bundle / "engines/model.fp16.engine")
    manifest = {
        "format_version": 1,
        "name": "fixture",
        "created_utc": "2025-01-01T00:00:00Z",
        "target": {"name": "jetson-agx-orin", "backend": "tensorrt", "compute_capability": "8.7",
                   "tensorrt_majors": [10]},
        "model": {"name": "vit-tiny", "arch": "vit", "num_classes": len(LABELS),
                  "spec": {"patch_size": 16, "embed_dim": 192, "depth": 12, "heads": 3}},
        "input": {"name": "images", "dtype": "float32", "layout": "NCHW",
                  "shape": [-1, 3, 224, 224]},
        "output": {"name": "logits", "dtype": "float32", "shape": [-1, len(LABELS)]},
        "preprocessing": DEFAULT_PREPROCESSING,
        "labels": LABELS,
        "precisions": {
            "fp32": {"onnx": "models/model.fp32.onnx", "optimized": None},
            "fp16": {"onnx": "models/model.fp16.onnx", "optimized": None},
            "int8-trt": {"onnx": "models/model.int8-trt.onnx", "optimized": None},
        },
        "engines": [{"path": "engines/model.fp16.engine", "precision": "fp16",
                     "tensorrt_version": "10.3.0", "compute_capability": "8.7",
                     "device_name": "Orin", "profile": {"min": 1, "opt": 4, "max": 8},
                     "sha256": engine_sha}],
        "files": {rel: {"sha256": sha256(bundle / rel), "bytes": (bundle / rel).stat().st_size}
                  for rel in sorted(files)},
        "versions": {"torch": "2.4.0", "onnx": "1.16.0", "tensorrt": "10.3.0"},
        "host": {"platform": "Linux", "machine": "x86_64", "cpu": "test", "cpu_count": 8,
                 "python": "3.11.7"},
        "rebuild_command": "python -m pipeline build --target jetson-agx-orin --bundle engines/fixture",
        "pending": ["engine:int8-trt"],
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def bundle_facts(bundle: Path) -> dict:
    m = json.loads((bundle / "manifest.json").read_text())
    return {
        "name": m["name"],
        "num_classes": m["model"]["num_classes"],
        "labels": m["labels"],
        "preprocessing": m["preprocessing"],
        "precisions": sorted(m["precisions"]),
        "files": len(m["files"]),
        "engines": len(m["engines"]),
        "rebuild_command": m["rebuild_command"],
        "synthesized": not (bundle / ".copied").exists(),
    }


# --------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--bundle", type=Path, help="copy this pipeline-made bundle instead of "
                    "synthesizing one")
    ap.add_argument("--reference", choices=("auto", "fallback"), default="auto",
                    help="auto: pipeline.data.preprocess when it imports; fallback: the PIL "
                    "implementation in this script")
    args = ap.parse_args()

    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    bundle = out / "bundle"
    if args.bundle:
        shutil.copytree(args.bundle, bundle, symlinks=True)
        facts = bundle_facts(bundle)
        facts["synthesized"] = False
    else:
        bundle.mkdir(parents=True)
        synthesize_bundle(bundle)
        facts = bundle_facts(bundle)
    (out / "bundle_facts.json").write_text(json.dumps(facts, indent=2))

    pp = facts["preprocessing"]
    images = out / "images"
    names = make_images(images)
    project = project_reference(pp) if args.reference == "auto" else None
    index = {"preprocessing": pp, "images": []}
    for name in names:
        reference = "pipeline.data.preprocess"
        try:
            tensor = project(images / name) if project else None
        except Exception as exc:  # noqa: BLE001 - recorded, and the fallback is used
            print(f"make_fixtures: pipeline preprocess_image failed on {name}: {exc!r}")
            tensor, reference = None, f"fallback (pipeline raised {type(exc).__name__})"
        if tensor is None:
            tensor = fallback_preprocess(images / name, pp)
            reference = reference if reference.startswith("fallback") else "fallback"
        tensor = np.ascontiguousarray(tensor, dtype=np.float32)
        tensor.tofile(images / (name + ".bin"))
        index["images"].append({"file": name, "tensor": name + ".bin", "shape": list(tensor.shape),
                                "mode": Image.open(images / name).mode, "reference": reference})
    (images / "index.json").write_text(json.dumps(index, indent=2))
    print(f"make_fixtures: {len(names)} images, bundle {'copied' if args.bundle else 'synthesized'}"
          f" in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
