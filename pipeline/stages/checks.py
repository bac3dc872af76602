"""Small helpers the stages share: normalising crops, running ONNX on the CPU, comparing outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Config


def normalised_batch(crops: np.ndarray, config: Config) -> np.ndarray:
    """uint8 NCHW crops -> float32 model input, with the manifest's preprocessing contract."""
    from pipeline.data import PreprocessSpec, normalize

    pp = config.preprocessing
    return np.ascontiguousarray(normalize(crops, PreprocessSpec(resize=pp.resize, crop=pp.crop, mean=pp.mean, std=pp.std)))


def cpu_session(model: Path | bytes, threads: int = 0, optimized_path: Path | None = None, level: str = "all"):
    """An ONNX Runtime CPU session; optionally saves the optimized graph it runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def run_batched(session: Any, images: np.ndarray, batch: int = 32) -> np.ndarray:
    input_name = session.get_inputs()[0].name
    outputs = [session.run(None, {input_name: images[i : i + batch]})[0] for i in range(0, len(images), batch)]
    return np.concatenate(outputs, axis=0).astype(np.float32)


def compare_onnx_with(onnx_path: Path, images: np.ndarray, reference: np.ndarray) -> float:
    """Max abs difference between the ONNX model's logits (ONNX Runtime CPU) and `reference`."""
    logits = run_batched(cpu_session(onnx_path), images)
    return float(np.max(np.abs(logits - reference)))


def onnx_node_table(path: Path) -> list[dict[str, Any]]:
    """Name, op type, inputs and outputs of every node, in graph order."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [
        {"name": n.name, "op": n.op_type, "inputs": list(n.input), "outputs": list(n.output)} for n in graph.node
    ]


def op_histogram(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx_node_table(path):
        counts[node["op"]] = counts.get(node["op"], 0) + 1
    return dict(sorted(counts.items()))
