"""What a cold build costs, stage by stage: seconds, CPU-seconds and peak memory.

    python benchmarks/build_cost.py                      # demo, ViT and paper size
    python benchmarks/build_cost.py --cases demo vit     # some of them
    python benchmarks/build_cost.py --nncf               # and NNCF's accuracy control beside each

Cases, each a `python -m pipeline build --target cpu --no-progress --no-gate` in a fresh process
with an empty cache of its own (so nothing is reused between them or from earlier builds):
- demo: the shipped demo VT and pipeline.toml as they are;
- vit: the shipped ViT and configs/vit_cifar10.toml as they are;
- paper: VT-ResNet-18 at the paper's size (224x224, 16 tokens of 1024 channels, 16 heads; random
  weights, 10 classes: cost does not depend on the values) calibrated on 500 and evaluated on
  200 of the shipped real photos resized 256 / cropped 224, `[validate] runs = 20` at batch 1
  and 8, with INT8 budgets that force the whole search (min_agreement 0.999).
Per stage: wall seconds and CPU-seconds (every thread of the build process) from the stage log
the build records in its report; per build: wall, CPU-seconds and peak resident memory of the
process (os.wait4). `--nncf` (demo and ViT): OpenVINO + NNCF `quantize_with_accuracy_control` on the build's
own FP32 graph, with the same calibration photos as its validation set (the project decides on
calibration photos too; the evaluation photos stay unseen), agreement with FP32 as its metric
and the INT8 agreement budget as its maximum drop: time, operations reverted, agreement on the
evaluation photos. Run it on idle cores: beside another job the numbers come out several times worse.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from projects import case_config, paper_checkpoint  # noqa: E402


def cases(folder: Path) -> Dict[str, Path]:
    heldout = ROOT / "datasets" / "cifar10-heldout"
    classes = sorted(p.name for p in heldout.iterdir() if p.is_dir())
    forcing = {"max_top1_drop": 0.3, "min_agreement": 0.999}
    made = {}
    for name, base, overrides in (
        ("demo", ROOT / "pipeline.toml", {}),
        ("vit", ROOT / "configs" / "vit_cifar10.toml", {}),
        (
            "paper",
            ROOT / "pipeline.toml",
            {
                "model": {"name": "vt_resnet18_paper", "checkpoint": "PAPER"},
                "data": {"calib_per_class": 50, "eval_per_class": 20},
                "preprocessing": {"resize": 256, "crop": 224},
                "validate": {"runs": 20, "batch_sizes": [1, 8]},
                "precision": {"finetune_patience": 3},  # the default (pipeline.toml's demo setting is 15)
                "budgets": {"int8": forcing, "int8-trt": forcing},
            },
        ),
    ):
        (folder / name).mkdir()
        if name == "paper":
            overrides["model"]["checkpoint"] = str(paper_checkpoint(folder / name, classes))
        made[name] = case_config(base, folder / name, overrides)
    return made


def run_build(config: Path) -> Dict[str, Any]:
    """One cold build in its own process: its stage log, wall and CPU time, peak memory."""
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "build",
        "--target",
        "cpu",
        "--config",
        str(config),
        "--no-progress",
        "--no-gate",
    ]
    log = config.parent / "build.log"
    started = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"build failed ({config}): see {log}")
    report = json.loads(next((config.parent / "engines").glob("*/report/report.json")).read_text())
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_gib": usage.ru_maxrss / 2**20,
        "stages": report["stages"],
        "report": report,
        "bundle": next((config.parent / "engines").glob("*-cpu")),
    }


def int8_summary(report: Dict[str, Any]) -> Dict[str, str]:
    """Per INT8 graph: agreement on the evaluation photos, FP32 modules kept, probes."""
    rows = {}
    for flavour in ("int8", "int8-trt"):
        details = report.get("precision_details", {}).get(flavour) or {}
        result = next((r for r in report["results"] if r["precision"] == flavour), None)
        if result is None:
            continue
        agreement = 100 * result["accuracy"]["agreement"]
        probes = details.get("probes", {})
        rows[flavour] = (
            f"{agreement:.2f} % agreement, drop {100 * (_top1(report, 'fp32') - result['accuracy']['top1']):+.2f}, "
            f"{len(details.get('fp32_layers', []))} FP32 modules, probes {sum(probes.values())}"
        )
    return rows


def _top1(report: Dict[str, Any], precision: str) -> float:
    return next(r["accuracy"]["top1"] for r in report["results"] if r["precision"] == precision)


def nncf_accuracy_control(bundle: Path, config: Path, min_agreement: float) -> Dict[str, Any]:
    """NNCF's accuracy control on the bundle's FP32 graph; see the module docstring."""
    import nncf
    import numpy as np
    import openvino as ov

    calib, evaluation, reference = _photos(bundle, config)
    model = ov.Core().read_model(str(bundle / "models" / "model.fp32.onnx"))
    fp32 = ov.Core().compile_model(model, "CPU")
    calib_reference = np.concatenate([fp32(calib[i : i + 1])[0] for i in range(len(calib))])

    def agreement(compiled: Any, items: Any) -> float:
        answers = np.concatenate([compiled(item)[0] for item in items]).argmax(1)
        return float(np.mean(answers == calib_reference[: len(answers)].argmax(1)))

    records = _LogRecords()
    logging.getLogger("nncf").addHandler(records)
    started = time.perf_counter()
    quantized = nncf.quantize_with_accuracy_control(
        model,
        nncf.Dataset([calib[i : i + 1] for i in range(len(calib))]),
        nncf.Dataset([calib[i : i + 1] for i in range(len(calib))]),
        agreement,
        max_drop=1.0 - min_agreement,
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=len(calib),
    )
    seconds = time.perf_counter() - started
    compiled = ov.Core().compile_model(quantized, "CPU")
    answers = np.concatenate([compiled(evaluation[i : i + 8])[0] for i in range(0, len(evaluation), 8)]).argmax(1)
    reverted = re.search(r"(\d+) out of (\d+) were reverted", records.text)
    return {
        "seconds": seconds,
        "reverted": f"{reverted.group(1)} of {reverted.group(2)} ops" if reverted else "0 (or all)",
        "agreement": 100 * float(np.mean(answers == reference.argmax(1))),
    }


class _LogRecords(logging.Handler):
    """Keeps what NNCF logs (it names the operations it reverted)."""

    def __init__(self) -> None:
        super().__init__()
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.text += record.getMessage() + "\n"


def _photos(bundle: Path, config: Path):
    """(calibration photos, evaluation photos, FP32 logits of the evaluation photos), normalised."""
    import numpy as np

    from pipeline import api
    from pipeline.data import normalize

    cfg = api.load(config)
    data = api.graphs("cpu", config).data  # the build's host stages, from its cache
    spec = cfg.preprocessing.spec()
    reference = np.load(bundle / "reference" / "fp32_logits.npy")
    return (
        np.ascontiguousarray(normalize(data.calib.crops, spec)),
        np.ascontiguousarray(normalize(data.evaluation.crops, spec)),
        reference,
    )


def print_case(name: str, measured: Dict[str, Any], peer: Optional[Dict[str, Any]]) -> None:
    print(
        f"\n## {name}: wall {measured['wall_s']:.0f} s, CPU {measured['cpu_s']:.0f} s, peak "
        f"{measured['peak_gib']:.2f} GiB"
    )
    print("| stage | wall s | CPU s |")
    print("|---|---|---|")
    for stage in measured["stages"]:
        print(f"| {stage['stage']} | {stage['wall_s']:.1f} | {stage.get('cpu_s', 0.0):.1f} |")
    for flavour, line in int8_summary(measured["report"]).items():
        print(f"- {flavour}: {line}")
    if peer:
        print(
            f"- NNCF quantize_with_accuracy_control: {peer['seconds']:.0f} s, reverted {peer['reverted']}, "
            f"{peer['agreement']:.2f} % agreement on the evaluation photos"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=("demo", "vit", "paper"), default=["demo", "vit", "paper"])
    parser.add_argument(
        "--nncf", action="store_true", help="also run NNCF's accuracy control on the demo's and the ViT's FP32 graph"
    )
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vt-edge-cost.") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        configs = cases(folder)
        print(f"CPU: {_cpu_line()}")
        for name in args.cases:
            measured = run_build(configs[name])
            # At paper size the budget forces NNCF through every operation: hours on 2 cores.
            peer = (
                nncf_accuracy_control(measured["bundle"], configs[name], _budget(measured["report"]))
                if args.nncf and name != "paper"
                else None
            )
            print_case(name, measured, peer)
    return 0


def _budget(report: Dict[str, Any]) -> float:
    return float(report.get("budgets", {}).get("int8", {}).get("min_agreement", 0.99))


def _cpu_line() -> str:
    from pipeline.host import host_info

    host = host_info()
    isa = host.get("cpu_isa", {})
    return f"{host.get('cpu', '?')}, {os.cpu_count()} cores, {isa.get('int8_kernel', '') or isa}"


if __name__ == "__main__":
    sys.exit(main())
