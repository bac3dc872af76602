#!/usr/bin/env python3
"""Creates the C++ loader's test fixtures.

    make_fixtures.py OUT_DIR [--bundle PATH [--eval-root DIR]] [--pipeline auto|off]
                     [--reference auto|fallback]

OUT_DIR/pipeline-project  with --pipeline auto (the default) and when the project's Python
                        package imports (`import pipeline, torch`): the tiny project of
                        tests/tiny_project.py, built by the pipeline (bundle engines/tiny-cpu,
                        plus `build --target jetson` for a real build_plan.json). Reused while
                        the pipeline's sources are unchanged (.stamp).
OUT_DIR/bundle          the bundle the tests read: a copy of the pipeline-made tiny-cpu bundle;
                        or of PATH with --bundle; or, when the pipeline is not importable, of
                        the synthesized bundle (one printed line says so)
OUT_DIR/synthetic       a bundle written by hand after docs/bundle-format.md (dummy model
                        bytes, real hashes, an fp16 engine entry, a multi-version build plan):
                        the controlled manifest for the negative tests
OUT_DIR/bundle_facts.json  what each manifest says, read with Python's json, for the C++
                        checks: {"bundle": {...}, "synthetic": {...}}; facts["bundle"]
                        ["eval_root"] is the folder the paths of reference/eval_set.json are
                        relative to (null without an evaluation set)
OUT_DIR/pipeline-plan/build_plan.json  the pipeline's build_plan.json for jetson-agx-orin
                        (only with the pipeline project)
OUT_DIR/images/         generated images covering the decoder paths (JPEG RGB/gray/CMYK/
                        progressive, PNG gray/RGBA/palette/16-bit/low bit depth)
OUT_DIR/latency.json    latency samples and their statistics computed with numpy exactly as the
                        pipeline computes them (pipeline/metrics.py latency_metrics:
                        np.percentile with its default linear method, np.mean), for the C++
                        latency_stats() to match bit for bit
OUT_DIR/images/index.json  per preprocessing spec ("synthetic", and "bundle" when it differs)
                        and image: the reference tensor (raw float32 CHW, .bin) and which
                        reference implementation produced it

The reference tensors come from the project's pipeline.data.preprocess when it imports; if it
does not, from the fallback below, which follows docs/bundle-format.md with PIL.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
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
    # The layout pipeline/backends/tensorrt_plan.py writes: one plan per (precision,
    # TensorRT version the target ships).
    def plan(precision: str, trt: str, **over) -> dict:
        typed = trt != "8.6"
        flags = [] if typed else (["FP16"] if precision == "fp16" else
                                  ["INT8", "FP16"] if precision == "int8-trt" else [])
        p = {"target": "jetson-agx-orin", "model": "vit-tiny", "precision": precision,
             "onnx": f"models/model.{precision}.onnx",
             "engine": f"engines/vit-tiny.{precision}.b1-4-8.trt{trt}.sm87.engine",
             "input_chw": [3, 224, 224], "profile": {"min": 1, "opt": 4, "max": 8},
             "workspace_mib": 1024, "tensorrt_version": trt, "strongly_typed": typed,
             "network_flags": ["STRONGLY_TYPED"] if typed and trt.startswith("10") else
                              ([] if typed else ["EXPLICIT_BATCH"]),
             "builder_flags": flags, "dla_core": None, "gpu_fallback": False,
             "timing_cache": f"engines/timing.trt{trt}.sm87.cache", "compute_capability": "8.7",
             "input_name": "images", "output_name": "logits", "format_version": 1}
        p.update(over)
        return p

    plans = {"format_version": 1, "target": "jetson-agx-orin", "plans": [
        plan(precision, trt) for trt in ("8.6", "10.3", "11.x")
        for precision in ("fp32", "fp16", "int8-trt")
    ] + [plan("int8-trt", "10.x", dla_core=0, gpu_fallback=True, workspace_mib=0,
              timing_cache=None, builder_flags=["GPU_FALLBACK"])]}
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
        "format_version": m["format_version"],
        "num_classes": m["model"]["num_classes"],
        "labels": m["labels"],
        "preprocessing": m["preprocessing"],
        "precisions": sorted(m["precisions"]),
        "files": len(m["files"]),
        "engines": len(m["engines"]),
        "rebuild_command": m["rebuild_command"],
        "target": m["target"]["name"],
        "input_shape": m["input"]["shape"],
        "optimized": sorted(k for k, v in m["precisions"].items() if v.get("optimized")),
        "has_eval_crops": "reference/eval_crops.npy" in m["files"],
    }


# --------------------------------------------------------------------------------------


PIPELINE_STAMP_INPUTS = ("pipeline", "tests/tiny_project.py")


def pipeline_available() -> tuple[bool, str]:
    """Whether `import pipeline, torch` works with the repository on the path; the torch
    version (for the stamp) or why not."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    proc = subprocess.run([sys.executable, "-c", "import pipeline, torch; print(torch.__version__)"],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    if proc.returncode == 0:
        return True, proc.stdout.strip()
    last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
    return False, last


def pipeline_stamp(torch_version: str) -> str:
    """Hash of what the tiny project depends on: the pipeline's sources, tiny_project.py,
    Python and torch versions."""
    h = hashlib.sha256(f"{sys.version}\n{torch_version}\n".encode())
    for top in PIPELINE_STAMP_INPUTS:
        base = REPO_ROOT / top
        files = [base] if base.is_file() else sorted(
            p for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for f in files:
            h.update(str(f.relative_to(REPO_ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def build_pipeline_project(project: Path, torch_version: str) -> None:
    """tests/tiny_project.py PROJECT (engines/tiny-cpu) and `pipeline build --target jetson`
    (engines/tiny-jetson-agx-orin/build_plan.json); skipped when the stamp is unchanged."""
    stamp = pipeline_stamp(torch_version)
    stamp_file = project / ".stamp"
    built = [project / "engines" / "tiny-cpu" / "manifest.json",
             project / "engines" / "tiny-jetson-agx-orin" / "build_plan.json"]
    if stamp_file.exists() and stamp_file.read_text() == stamp and all(p.is_file() for p in built):
        print(f"make_fixtures: pipeline project up to date in {project}")
        return
    if project.exists():
        shutil.rmtree(project)
    project.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONHASHSEED": "0"}
    steps = [
        ("tiny project", [sys.executable, str(REPO_ROOT / "tests" / "tiny_project.py"), str(project)],
         REPO_ROOT),
        ("jetson build plan", [sys.executable, "-m", "pipeline", "build", "--target", "jetson",
                               "--no-progress"], project),
    ]
    log = project.parent / "pipeline-project.log"
    start = time.monotonic()
    with log.open("w") as out:
        for what, cmd, cwd in steps:
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
            if proc.returncode != 0:
                tail = log.read_text().splitlines()[-15:]
                sys.exit(f"make_fixtures: the pipeline failed to build the {what} (exit code "
                         f"{proc.returncode}; full log: {log}):\n" + "\n".join(tail) +
                         "\n(configure with -DVTEDGE_FIXTURE_PIPELINE=OFF to test the loader on "
                         "the synthesized bundle only)")
    stamp_file.write_text(stamp)
    print(f"make_fixtures: pipeline project built in {time.monotonic() - start:.1f} s ({project})")


def write_reference_tensors(images: Path, names: list[str], specs: dict[str, dict],
                            reference_mode: str) -> None:
    index = {"specs": specs, "images": []}
    projects = {key: (project_reference(pp) if reference_mode == "auto" else None)
                for key, pp in specs.items()}
    for name in names:
        entry = {"file": name, "mode": Image.open(images / name).mode, "tensors": {}}
        for key, pp in specs.items():
            project = projects[key]
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
            file = f"{name}.{key}.bin"
            tensor.tofile(images / file)
            entry["tensors"][key] = {"file": file, "shape": list(tensor.shape),
                                     "reference": reference}
        index["images"].append(entry)
    (images / "index.json").write_text(json.dumps(index, indent=2))


def write_latency_cases(path: Path) -> None:
    """Latency samples (ms) of several sizes and shapes, with numpy's statistics of them."""
    rng = np.random.default_rng(20240610)
    samples = [
        [4.0],
        [3.0, 1.0],
        [1.25, 1.5, 1.0, 2.0, 1.75, 1.5, 1.5],                 # ties, fewer than 8 values
        list(rng.gamma(2.0, 0.4, 8) + 0.5),
        list(rng.gamma(2.0, 0.4, 9) + 0.5),
        list(rng.gamma(3.0, 0.25, 50) + 1.2),                 # vt_infer's default --runs
        list(rng.lognormal(0.0, 0.3, 100)),
        list(rng.gamma(2.0, 0.4, 129) + 0.5),                 # past numpy's 128-value block
        list(rng.lognormal(1.0, 0.5, 1000) * 1e-3),
        list(rng.normal(7.5, 0.8, 4099)),
    ]
    cases = []
    for values in samples:
        a = np.asarray(values, dtype=np.float64)
        cases.append({
            "samples": [float(v) for v in a],
            # pipeline/metrics.py latency_metrics
            "p50_ms": float(np.percentile(a, 50)),
            "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)),
            "mean_ms": float(np.mean(a)),
            "percentiles": {str(q): float(np.percentile(a, q)) for q in (0, 12.5, 37.5, 75, 99.9, 100)},
        })
    path.write_text(json.dumps({"numpy": np.__version__, "cases": cases}, indent=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--bundle", type=Path, help="copy this pipeline-made bundle instead of "
                    "building the tiny project's")
    ap.add_argument("--eval-root", type=Path, help="with --bundle: the folder the paths of its "
                    "reference/eval_set.json are relative to (default: PATH/../../data/val)")
    ap.add_argument("--pipeline", choices=("auto", "off"), default="auto",
                    help="auto: build the tiny project with the pipeline when `import pipeline, "
                    "torch` works; off: use the synthesized bundle")
    ap.add_argument("--reference", choices=("auto", "fallback"), default="auto",
                    help="auto: pipeline.data.preprocess when it imports; fallback: the PIL "
                    "implementation in this script")
    args = ap.parse_args()
    if args.bundle and not (args.bundle / "manifest.json").is_file():
        sys.exit(f"make_fixtures: --bundle {args.bundle} (VTEDGE_FIXTURE_BUNDLE) is not a bundle "
                 "folder with a manifest.json")

    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    project = out / "pipeline-project"
    for child in out.iterdir():  # everything but the (cached) pipeline project
        if child != project:
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()

    synthetic = out / "synthetic"
    synthetic.mkdir()
    synthesize_bundle(synthetic)

    bundle = out / "bundle"
    eval_root: Path | None = None
    if args.bundle:
        source = "copied"
        shutil.copytree(args.bundle, bundle, symlinks=True)
        eval_root = args.eval_root or args.bundle.resolve().parent.parent / "data" / "val"
    else:
        importable, detail = (False, "") if args.pipeline == "off" else pipeline_available()
        if importable:
            build_pipeline_project(project, detail)
            source = "pipeline"
            shutil.copytree(project / "engines" / "tiny-cpu", bundle, symlinks=True)
            eval_root = project / "data" / "val"
            plan = project / "engines" / "tiny-jetson-agx-orin" / "build_plan.json"
            (out / "pipeline-plan").mkdir()
            shutil.copy2(plan, out / "pipeline-plan" / "build_plan.json")
        else:
            source = "synthesized"
            why = ("the pipeline bundle is turned off (--pipeline off)" if args.pipeline == "off"
                   else f"the project's Python pipeline is not importable ({detail})")
            print(f"make_fixtures: {why}; testing the loader on the synthesized bundle only")
            if project.exists():
                shutil.rmtree(project)
            shutil.copytree(synthetic, bundle, symlinks=True)

    facts = {"bundle": bundle_facts(bundle), "synthetic": bundle_facts(synthetic)}
    facts["bundle"]["source"] = source
    facts["synthetic"]["source"] = "synthesized"
    has_eval = facts["bundle"]["has_eval_crops"] and eval_root is not None and eval_root.is_dir()
    facts["bundle"]["eval_root"] = str(eval_root) if has_eval else None
    facts["synthetic"]["eval_root"] = None
    (out / "bundle_facts.json").write_text(json.dumps(facts, indent=2))
    write_latency_cases(out / "latency.json")

    specs = {"synthetic": facts["synthetic"]["preprocessing"]}
    if facts["bundle"]["preprocessing"] != specs["synthetic"]:
        specs["bundle"] = facts["bundle"]["preprocessing"]
    images = out / "images"
    names = make_images(images)
    write_reference_tensors(images, names, specs, args.reference)
    print(f"make_fixtures: {len(names)} images x {len(specs)} spec(s), bundle {source}"
          f"{' with evaluation set' if has_eval else ''}, in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
