"""Reading and reordering ONNX graphs: the graph's structure (its nodes and names, never its
weights' external data), node tables, op histograms, who reads a tensor, topological order.

Every reader of a graph's structure goes through `read_graph`; a reader that needs the weights
(the FP16 writer, the twin, the simplifier) loads the model whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import StageError


def read_graph(path: Path) -> Any:
    """The graph (an onnx GraphProto) at `path`, its structure: external weight data stays on disk."""
    import onnx

    return onnx.load(str(path), load_external_data=False).graph


def tensor_readers(graph: Any) -> dict[str, list[Any]]:
    """Tensor name -> the nodes that read it, in graph order."""
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def onnx_node_table(path: Path) -> list[dict[str, Any]]:
    """Name, op type, inputs and outputs of every node, in graph order."""
    graph = read_graph(path)
    return [{"name": n.name, "op": n.op_type, "inputs": list(n.input), "outputs": list(n.output)} for n in graph.node]


def op_histogram(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx_node_table(path):
        counts[node["op"]] = counts.get(node["op"], 0) + 1
    return dict(sorted(counts.items()))


def rename_tensor(graph: Any, old: str, new: str) -> None:
    """Every node that reads or writes tensor `old` uses `new` instead (graph I/O entries are
    the caller's to rename)."""
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]


def topological_sort(graph: Any) -> None:
    """Reorder `graph.node` (an onnx GraphProto) so every node follows its inputs' producers."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise StageError("graph has a cycle or a dangling input after inserting Q/DQ")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)
