"""node_cost: what each module of a graph costs in time on the target's CPU runtime.

The FP32 fallback keeps modules in FP32 to buy accuracy, and each one it keeps costs speed: the
difference between its nodes' time in the FP32 graph and in the fully quantized graph. ONNX
Runtime's and OpenVINO's profilers give every node's time in one run of a graph, so two profiled
runs (the FP32 graph and the INT8 graph) price every module at once; no graph per module is needed.

OpenVINO names a layer after the ONNX node it was made from, with a suffix for what its passes
did (`/stem/stem.0/Conv/WithoutBiases`; a Q/DQ pair becomes a FakeQuantize named after its
QuantizeLinear), or after the tensor it writes (`logits`): a layer is found by its name, by the
node writing a tensor of that name, or by the longest `/`-prefix that names a node. Layout
conversions between layers (Reorder, named after both ends) belong to no module and are left out.

ONNX Runtime's graphs are profiled at ONNX Runtime's "extended" level, where a fused node keeps the name
of the node it was made from (a QDQ-fused `QLinearConv` or a Conv+ReLU `FusedConv` is named
after its Conv; at the "all" level the layout pass renames them after tensors), so each profiled
node is found among a module's nodes by name. A QuantizeLinear or DequantizeLinear left
standing (named `<tensor>_QuantizeLinear` by ONNX Runtime's quantizer) belongs to the modules
whose quantized nodes read that tensor: keeping them in FP32 removes it. The "all" level's layout
pass speeds FP32 convolutions more than INT8 ones, so these costs are relative: they order the
modules; the validate stage measures what the graph that ships costs.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

import numpy as np

from pipeline.graphs.query import read_graph, tensor_readers


@dataclass(frozen=True)
class ModuleCost:
    """Per module, milliseconds a batch-1 run spends in its nodes: as FP32, as INT8, and what
    keeping it in FP32 costs (negative: INT8 is slower there, keeping it in FP32 is a gain)."""

    module: str
    fp32_ms: float
    int8_ms: float

    @property
    def kept_fp32_ms(self) -> float:
        return self.fp32_ms - self.int8_ms


def profile_node_ms(onnx_path: Path, image: np.ndarray, runs: int = 20, threads: int = 0) -> Dict[str, float]:
    """Median kernel milliseconds per node of one batch-1 call, from ONNX Runtime's profiler at
    the "extended" level (the median over `runs` calls leaves out the first calls' allocations)."""
    import onnxruntime as ort

    from pipeline.backends.onnxruntime import session_options

    options = session_options(threads, level="extended", spinning=False)
    with tempfile.TemporaryDirectory(prefix="vt-edge-profile.") as folder:
        options.enable_profiling = True  # every run, until end_profiling()
        options.profile_file_prefix = os.path.join(folder, "profile")
        session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(image[:1], dtype=np.float32)}
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    return _kernel_ms(events)


def openvino_node_ms(onnx_path: Path, image: np.ndarray, runs: int = 20, threads: int = 0) -> Dict[str, float]:
    """Median milliseconds per ONNX node of one batch-1 call, from OpenVINO's per-layer counters
    (`PERF_COUNT`), each layer found among the graph's nodes by name (see the module's note)."""
    import openvino

    from pipeline.backends.openvino import OpenVinoSettings

    core = openvino.Core()
    properties = {**OpenVinoSettings(threads=threads).properties(), "PERF_COUNT": True}
    request = core.compile_model(core.read_model(str(onnx_path)), "CPU", properties).create_infer_request()
    feed = {0: np.ascontiguousarray(image[:1], dtype=np.float32)}
    layers: Dict[str, List[float]] = {}
    for _ in range(runs):
        request.infer(feed)
        for layer in request.profiling_info:
            layers.setdefault(layer.node_name, []).append(layer.real_time.total_seconds() * 1000.0)
    graph = read_graph(onnx_path)
    names = {node.name for node in graph.node}
    writers = {tensor: node.name for node in graph.node for tensor in node.output}
    per_node: Dict[str, float] = {}
    for layer, ms in layers.items():
        node = onnx_node_of(layer, names, writers)
        if node is not None:
            per_node[node] = per_node.get(node, 0.0) + float(np.median(ms))
    return per_node


def onnx_node_of(layer: str, names: Set[str], writers: Dict[str, str]) -> Optional[str]:
    """The ONNX node an OpenVINO layer was made from: by its name, by the tensor it writes, or by
    the longest `/`-prefix of its name that names a node; None for a layer of no node (Reorder)."""
    candidate = layer
    while candidate:
        if candidate in names:
            return candidate
        if candidate in writers:
            return writers[candidate]
        candidate = candidate.rsplit("/", 1)[0] if "/" in candidate.lstrip("/") else ""
    return None


NODE_PROFILERS = {"onnxruntime": profile_node_ms, "openvino": openvino_node_ms}


def _kernel_ms(events: List[Dict[str, Any]]) -> Dict[str, float]:
    durations: Dict[str, List[float]] = {}
    suffix = "_kernel_time"
    for event in events:
        if event.get("cat") == "Node" and str(event.get("name", "")).endswith(suffix):
            durations.setdefault(event["name"][: -len(suffix)], []).append(float(event.get("dur", 0)) / 1000.0)
    return {node: float(np.median(ms)) for node, ms in durations.items()}


Q_SUFFIXES = ("_QuantizeLinear", "_DequantizeLinear")


def module_ms(
    node_ms: Dict[str, float], groups: Dict[str, List[str]], readers: Dict[str, List[str]]
) -> Dict[str, float]:
    """Per module (`groups`: module -> its quantizable nodes), the milliseconds of its profiled
    nodes and its share of the Q/DQ nodes on the tensors they read (`readers`: tensor -> nodes)."""
    owner = {node: module for module, nodes in groups.items() for node in nodes}
    owned = {module: 0.0 for module in groups}
    for node, ms in node_ms.items():
        if node in owner:
            owned[owner[node]] += ms
            continue
        tensor = next((node[: -len(s)] for s in Q_SUFFIXES if node.endswith(s)), None)
        modules = sorted({owner[r] for r in readers.get(tensor, []) if r in owner}) if tensor else []
        for module in modules:
            owned[module] += ms / len(modules)
    return owned


@dataclass(frozen=True)
class Profiling:
    """How the graphs are profiled: on which CPU runtime, for how many calls, with how many threads."""

    runtime: str = "onnxruntime"
    runs: int = 20
    threads: int = 0


def module_costs(
    fp32_path: Path, int8_path: Path, groups: Dict[str, List[str]], image: np.ndarray, how: Profiling = Profiling()
) -> Dict[str, ModuleCost]:
    """What keeping each module in FP32 costs on `how.runtime`, from one profiled run of each graph."""

    def profile(path: Path) -> Dict[str, float]:
        return NODE_PROFILERS[how.runtime](path, image, how.runs, how.threads)

    readers = {tensor: [node.name for node in nodes] for tensor, nodes in tensor_readers(read_graph(fp32_path)).items()}
    fp32 = module_ms(profile(fp32_path), groups, readers)
    int8 = module_ms(profile(int8_path), groups, readers)
    return {m: ModuleCost(m, fp32[m], int8[m]) for m in groups}


def latency_order(gains: Dict[str, float], kept_ms: Optional[Dict[str, float]], floor_ms: float) -> List[str]:
    """Modules in the order the fallback keeps them in FP32: logit error removed per
    millisecond lost (`kept_ms`: module -> what keeping it in FP32 costs; a module INT8 does not
    speed up costs nothing, and `floor_ms` stands in so the order among those follows the error
    they remove). Modules that remove no error come last, the cheapest first. Without costs, by
    error alone."""

    def key(module: str) -> float:
        gain = gains[module]
        if kept_ms is None or gain <= 0:
            return gain
        return gain / max(kept_ms.get(module, 0.0), floor_ms)

    helpful = sorted((m for m in gains if gains[m] > 0), key=key, reverse=True)
    useless = sorted(
        (m for m in gains if gains[m] <= 0), key=lambda m: (-gains[m], kept_ms.get(m, 0.0) if kept_ms else 0.0)
    )
    return helpful + useless
