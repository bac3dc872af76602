"""Latency measurement and choice: the runners of one runtime are timed interleaved, and the
latency choice keeps the simpler precision unless a faster one wins by more than the spread.

Timings are injected (fake runners with fake clocks), so nothing here depends on how fast or
busy this machine is."""

from __future__ import annotations

import json
from typing import Dict, List

import numpy as np
import pytest

from pipeline.backends.base import ClosingRunner
from pipeline.backends.timing import TimedCall, time_interleaved
from pipeline.report.gate import check_gate, choose_precision, fastest_precision
from pipeline.report.views import make_verdict
from pipeline.stages.validate import EvaluationSet, Timing, results_to_json, validate_all


class InjectedClock:
    """A clock whose readings are given: each stop() returns the next one."""

    def __init__(self, readings_ms: List[float]) -> None:
        self.readings = list(readings_ms)

    def start(self) -> None:
        pass

    def stop(self) -> float:
        return self.readings.pop(0)


class FakeRunner(ClosingRunner):
    """Logs every event (open, infer, timed call, close) in a shared list; latency from an injected clock."""

    def __init__(self, name: str, log: List[str], readings_ms: List[float], classes: int = 3) -> None:
        self.name, self.log, self.readings, self.classes = name, log, list(readings_ms), classes
        log.append(f"open {name}")

    def infer(self, images: np.ndarray) -> np.ndarray:
        self.log.append(f"infer {self.name}")
        logits = np.zeros((len(images), self.classes), np.float32)
        logits[:, 0] = 1.0
        return logits

    def timed_call(self, images: np.ndarray) -> TimedCall:
        return TimedCall(
            lambda: self.log.append(f"call {self.name} b{len(images)}"),
            clock=InjectedClock(self.readings),
            settle=lambda: self.log.append(f"settle {self.name}"),
        )

    def describe(self) -> dict:
        return {"backend": "fake"}

    def close(self) -> None:
        self.log.append(f"close {self.name}")


def _evaluation(n: int = 4) -> EvaluationSet:
    reference = np.zeros((n, 3), np.float32)
    reference[:, 0] = 1.0
    return EvaluationSet(np.zeros((n, 3, 2, 2), np.float32), np.zeros(n, np.int64), reference)


def test_time_interleaved_makes_one_call_of_each_per_round_after_every_warm_up():
    log: List[str] = []
    calls = {
        name: TimedCall(
            lambda n=name: log.append(n),
            clock=InjectedClock([1.0, 2.0, 3.0]),
            settle=lambda n=name: log.append(f"settle {n}"),
        )
        for name in ("fp32", "fp16", "int8")
    }
    timed = time_interleaved(calls, warmup=2, runs=3)
    warm_up = ["fp32", "fp32", "settle fp32", "fp16", "fp16", "settle fp16", "int8", "int8", "settle int8"]
    assert log == warm_up + ["fp32", "fp16", "int8"] * 3
    assert {name: ms.tolist() for name, ms in timed.items()} == {name: [1.0, 2.0, 3.0] for name in calls}


def test_validate_all_interleaves_one_runtime_and_times_runtimes_apart():
    log: List[str] = []
    readings = [1.0, 2.0] * 2  # two batch sizes, two runs each
    runtimes = {
        "torch": {"fp32-torch": lambda: FakeRunner("fp32-torch", log, readings)},
        "onnxruntime": {p: (lambda p=p: FakeRunner(p, log, readings)) for p in ("fp32", "fp16", "int8")},
    }
    results = validate_all(runtimes, _evaluation(), Timing((1, 2), warmup=1, runs=2), progress=False)
    assert [r.precision for r in results] == ["fp32-torch", "fp32", "fp16", "int8"]
    # torch is opened, measured and closed before any ONNX Runtime runner is opened
    assert log.index("close fp32-torch") < log.index("open fp32")
    ort = log[log.index("open fp32") :]
    assert ort[:6] == ["open fp32", "infer fp32", "open fp16", "infer fp16", "open int8", "infer int8"]
    timed = [e for e in ort if e.startswith("call")]
    per_round = ["call fp32 b{}", "call fp16 b{}", "call int8 b{}"]
    expected = []
    for batch in (1, 2):  # warm-up of each, then round-robin
        expected += [c.format(batch) for c in per_round] + [c.format(batch) for c in per_round] * 2
    assert timed == expected
    assert ort[-3:] == ["close int8", "close fp16", "close fp32"]
    for result in results:
        assert result.samples_ms == {1: [1.0, 2.0], 2: [1.0, 2.0]} and [lat.batch for lat in result.latency] == [1, 2]


def _report(samples: Dict[str, List[float]], budget_ms=None) -> dict:
    """A report whose precisions have these timed calls at batch 1 (all within accuracy budgets)."""
    runtimes = {"onnxruntime": {p: (lambda p=p, s=s: FakeRunner(p, [], s)) for p, s in samples.items()}}
    runs = len(next(iter(samples.values())))
    results = results_to_json(validate_all(runtimes, _evaluation(), Timing((1,), warmup=0, runs=runs), progress=False))
    report = json.loads(
        json.dumps({"results": results, "latency_budget_ms": budget_ms, "budgets": {}})
    )  # as report.json holds it
    return report


def _around(p50: float, spread: float, n: int = 9) -> List[float]:
    """n timed calls with this median and this interquartile range (evenly spaced)."""
    return list(np.linspace(p50 - spread, p50 + spread, n))


def test_a_faster_precision_within_the_spread_leaves_the_choice_at_fp32():
    report = _report({"fp32": _around(10.0, 1.0), "fp16": _around(9.6, 1.0), "int8": _around(9.8, 0.2)})
    assert fastest_precision(report)[0] == "fp16"  # by p50 alone, fp16 would be picked
    choice = choose_precision(report)
    assert (choice.precision, choice.fastest) == ("fp32", "fp16") and choice.spread_ms == pytest.approx(1.0)
    sentence = make_verdict(report).choice
    assert "**fp32**" in sentence and "fp16 measured 9.600 ms, within the 1.000 ms spread" in sentence


def test_a_precision_that_clearly_wins_is_chosen():
    report = _report({"fp32": _around(10.0, 1.0), "fp16": _around(9.6, 1.0), "int8": _around(5.0, 0.5)})
    choice = choose_precision(report)
    assert choice.precision == choice.fastest == "int8"
    assert "Chosen precision: **int8**, the fastest" in make_verdict(report).choice


def test_the_simpler_of_two_close_precisions_wins_once_fp32_is_clearly_beaten():
    report = _report({"fp32": _around(10.0, 0.5), "fp16": _around(6.0, 0.5), "int8": _around(5.8, 0.5)})
    assert choose_precision(report).precision == "fp16"


def test_a_precision_outside_its_accuracy_budget_is_not_chosen():
    report = _report({"fp32": _around(10.0, 0.5), "int8": _around(5.0, 0.5)})
    assert choose_precision(report, excluded={"int8"}).precision == "fp32"


def test_the_choice_is_among_the_precisions_that_meet_the_latency_budget():
    report = _report({"fp32": _around(10.2, 1.0), "fp16": _around(9.8, 1.0)}, budget_ms=10.0)
    choice = choose_precision(report)
    assert choice.precision == "fp16"  # fp32 is within the spread but misses the budget
    assert "it meets the target's 10 ms latency budget" in make_verdict(report).choice
    assert not [f for f in check_gate(report) if f.precision == "latency"]


def test_a_report_without_timed_calls_falls_back_to_the_lowest_p50():
    report = _report({"fp32": _around(10.0, 1.0), "fp16": _around(9.6, 1.0)})
    for result in report["results"]:
        del result["samples_ms"]  # written before timed calls were recorded
    assert choose_precision(report).precision == "fp16"
