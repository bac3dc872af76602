"""An ONNX classifier exported elsewhere, checked and brought to the pipeline's I/O contract.

The contract every later stage, engine plan and the C++ loader rely on: one float input
`images` in NCHW with a dynamic batch, one float output `logits` of shape [batch, classes].
Read from the graph: the input's name, layout (NCHW, or NHWC: a Transpose is put in front) and
size (it must be `[preprocessing] crop`); the output's width. A fixed batch is made dynamic
when the graph allows it (Reshape targets that copy the fixed batch are made to copy the
input's); whether it did is checked by running the graph at two batch sizes against the file
as given, and the build says what was changed. Anything else is refused in one line.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np

from pipeline.artifacts import sha256_file, sha256_json, write_bytes_atomic
from pipeline.bundle.paths import path_problem
from pipeline.errors import ModelFileError, ModelInputError
from pipeline.graphs.constant_size import check_constant_size
from pipeline.names import INPUT_NAME, OUTPUT_NAME

MIN_OPSET = 13  # per-axis QuantizeLinear (per-channel INT8 weights) needs opset 13
UPGRADE_OPSET = 17
# Graph outputs may differ from the file as given by float noise only.
IMPORT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class GraphIO:
    """What the graph's single input and output look like."""

    input_name: str
    output_name: str
    layout: str  # "NCHW" or "NHWC"
    size: Tuple[Any, Any]  # (H, W): ints, or names of dynamic dimensions
    batch: Any  # an int (fixed) or a dimension name / None (dynamic)
    classes: int


def _dims(value_info: Any) -> List[Any]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim]


def _load(path: Path) -> Any:
    import onnx

    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: the ONNX file is empty (0 bytes)")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # a protobuf that does not parse: not an ONNX model
        raise ModelFileError(f"{path}: not a readable ONNX model (corrupt or truncated: {_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _check_valid(path: Path) -> None:
    """The ONNX checker's verdict on the file (by path: a model over 2 GB cannot be checked in
    memory), e.g. an initializer that declares more data than it holds, with strict shape and type
    inference (a MatMul of mismatched shapes, an integer weight fed to a float op): the graph the
    import writes is held to the same check, so a fault of the file as given is named here."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a valid ONNX model ({_first_line(exc)})") from None


def all_tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of `graph`: initializers, sparse initializers and node attributes,
    subgraphs (If, Loop, Scan bodies) included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for subgraph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                yield from all_tensors(subgraph)


def model_files(path: Path) -> List[Path]:
    """The files an ONNX model reads: `path` and every external data file its tensors name,
    each checked to lie in the model's folder before anything opens it."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelInputError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    folder = path.parent.resolve()
    files = [path]
    for tensor in all_tensors(model.graph):
        if not uses_external_data(tensor):
            continue
        location = ExternalDataInfo(tensor).location
        data = path.parent / location
        if path_problem(location) is not None or folder not in data.resolve().parents:
            raise ModelInputError(
                f"{path}: tensor '{tensor.name}' keeps its data at {location!r}, outside the model's folder; refused"
            )
        if not data.is_file():
            raise ModelInputError(f"{path}: tensor '{tensor.name}' keeps its data in {data}, which is missing")
        if data not in files:
            files.append(data)
    return files


def model_sha256(path: Path) -> str:
    """The SHA-256 of what the model is: the .onnx file alone when it holds its weights, else
    of the .onnx and every external data file it reads (a changed weight file changes it)."""
    files = model_files(path)
    if len(files) == 1:
        return sha256_file(path)
    return sha256_json(
        {
            "onnx": sha256_file(path),
            "external_data": {f.relative_to(path.parent).as_posix(): sha256_file(f) for f in files[1:]},
        }
    )


def read_io(model: Any, path: Path) -> GraphIO:
    """The single image input and single [batch, classes] output, or a one-line refusal."""
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelInputError(
            f"{path}: not a classifier graph: {len(inputs)} inputs and {len(graph.output)} outputs "
            "(vt-edge takes one image input and one [batch, classes] output)"
        )
    source, result = inputs[0], graph.output[0]
    in_dims, out_dims = _dims(source), _dims(result)
    if len(out_dims) != 2 or not isinstance(out_dims[1], int) or out_dims[1] < 1:
        raise ModelInputError(
            f"{path}: not a classifier: output '{result.name}' has shape {out_dims}, not [batch, classes]"
        )
    if len(in_dims) != 4 or 3 not in (in_dims[1], in_dims[3]):
        raise ModelInputError(
            f"{path}: input '{source.name}' has shape {in_dims}; vt-edge takes images as NCHW or NHWC with 3 channels"
        )
    layout = "NCHW" if in_dims[1] == 3 else "NHWC"
    size = (in_dims[2], in_dims[3]) if layout == "NCHW" else (in_dims[1], in_dims[2])
    return GraphIO(source.name, result.name, layout, size, in_dims[0], out_dims[1])


def inspect_onnx(path: Path, crop: int, max_constant_mb: float) -> GraphIO:
    """The ONNX file's I/O, checked against the configured crop before any work is done, and
    its constants' size (before anything folds them: see pipeline.graphs.constant_size)."""
    model = _load(path)
    _check_valid(path)
    io = read_io(model, path)
    if any(isinstance(d, int) and d != crop for d in io.size):
        raise ModelInputError(
            f"{path}: the model takes {io.size[0]}x{io.size[1]} images but [preprocessing] crop is {crop}: "
            f"set crop = {io.size[0]} (and resize) in the config"
        )
    check_constant_size(model.graph, path, max_constant_mb)
    return io


def normalise_onnx(source: Path, destination: Path, images: np.ndarray) -> Tuple[List[str], float]:
    """Write `source` under the pipeline's contract at `destination`; returns what was changed
    and the largest logit difference from the file as given on `images` (preprocessed NCHW)."""
    import onnx

    model = _load(source)
    io = read_io(model, source)
    notes = _upgrade_opset(model, source)
    if io.layout == "NHWC":
        _transpose_input(model, io)
        notes.append("NHWC input: a Transpose from NCHW `images` put in front")
    _rename_io(model, io)
    fixed = io.batch if isinstance(io.batch, int) else None
    if fixed is not None:
        _make_batch_dynamic(model, fixed)
        notes.append(f"fixed batch {fixed} made dynamic")
    if (io.input_name, io.output_name) != (INPUT_NAME, OUTPUT_NAME):
        notes.append(
            f"input '{io.input_name}' and output '{io.output_name}' renamed to '{INPUT_NAME}' and '{OUTPUT_NAME}'"
        )
    write_bytes_atomic(destination, model.SerializeToString())
    onnx.checker.check_model(str(destination), full_check=True)
    return notes, _check_same_answers(source, destination, io, images, fixed)


def default_opset(path: Path) -> int:
    """The graph's ai.onnx opset."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _upgrade_opset(model: Any, path: Path) -> List[str]:
    from onnx import version_converter

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset >= MIN_OPSET:
        return []
    try:
        upgraded = version_converter.convert_version(model, UPGRADE_OPSET)
    except Exception as exc:
        raise ModelInputError(
            f"{path}: opset {opset} is below {MIN_OPSET} and cannot be converted ({type(exc).__name__}); "
            "re-export with opset 17"
        ) from None
    model.CopyFrom(upgraded)
    return [f"opset {opset} converted to {UPGRADE_OPSET}"]


def _transpose_input(model: Any, io: GraphIO) -> None:
    """A new NCHW input feeding a Transpose to the graph's NHWC one."""
    from onnx import helper

    from pipeline.graphs.query import rename_tensor

    graph = model.graph
    old = next(i for i in graph.input if i.name == io.input_name)
    dims = _dims(old)
    nhwc_name = f"{io.input_name}_nhwc"
    rename_tensor(graph, io.input_name, nhwc_name)
    graph.node.insert(
        0, helper.make_node("Transpose", [io.input_name], [nhwc_name], name="images_to_nhwc", perm=[0, 2, 3, 1])
    )
    nchw = [dims[0], dims[3], dims[1], dims[2]]
    old.type.tensor_type.shape.Clear()
    for d in nchw:
        entry = old.type.tensor_type.shape.dim.add()
        if isinstance(d, int):
            entry.dim_value = d
        elif d:
            entry.dim_param = d


def _rename_io(model: Any, io: GraphIO) -> None:
    from pipeline.graphs.query import rename_tensor

    graph = model.graph
    for old, new in ((io.input_name, INPUT_NAME), (io.output_name, OUTPUT_NAME)):
        if old != new:
            rename_tensor(graph, old, new)
    graph.input[[i.name for i in graph.input].index(io.input_name)].name = INPUT_NAME
    graph.output[0].name = OUTPUT_NAME


def _make_batch_dynamic(model: Any, fixed: int) -> None:
    """Batch dimension named on the I/O, intermediate shapes dropped (inference redoes them), and
    constant Reshape targets whose first entry is the fixed batch made to copy the input's (0)."""
    from onnx import numpy_helper

    graph = model.graph
    for value in (graph.input[[i.name for i in graph.input].index(INPUT_NAME)], graph.output[0]):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = "batch"
    del graph.value_info[:]
    for tensor in _reshape_shapes(graph):
        target = numpy_helper.to_array(tensor)
        if target.ndim == 1 and len(target) > 1 and target[0] == fixed:
            target = target.copy()
            target[0] = 0
            tensor.CopyFrom(numpy_helper.from_array(target, tensor.name))


def _reshape_shapes(graph: Any) -> List[Any]:
    """The constant shape tensors (initializers or Constant values) only Reshape nodes read."""
    targets = {n.input[1] for n in graph.node if n.op_type == "Reshape" and len(n.input) > 1}
    other_uses = {name for n in graph.node if n.op_type != "Reshape" for name in n.input}
    found = [(init, init.name) for init in graph.initializer]
    found += [
        (a.t, n.output[0]) for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"
    ]
    return [tensor for tensor, name in found if name in targets and name not in other_uses]


@contextmanager
def _runtime_refusal(source: Path) -> Iterator[None]:
    """ONNX Runtime refusing the file as given (an operator of a custom domain, a graph it cannot
    build) is a model vt-edge cannot run: one line naming the file and ONNX Runtime's reason."""
    from pipeline.backends.onnxruntime import runtime_error_line

    try:
        yield
    except Exception as exc:
        reason = runtime_error_line(exc)
        if reason is None:
            raise
        raise ModelInputError(
            f"{source}: ONNX Runtime cannot run this model ({reason}); vt-edge takes graphs of standard ONNX operators"
        ) from None


def _check_same_answers(source: Path, normalised: Path, io: GraphIO, images: np.ndarray, fixed: Optional[int]) -> float:
    """The normalised graph, run on a whole batch, gives the file's own answers (in the file's
    batch size when it is fixed); a graph whose fixed batch is baked in deeper fails here.
    Returns the largest difference in logits."""
    from pipeline.backends.onnxruntime import cpu_session, run_batched

    if len(images) < 2:  # a batch of one proves nothing about a dynamic batch
        images = np.concatenate([images, images])
    usable = images[: len(images) // fixed * fixed] if fixed else images
    given = usable.transpose(0, 2, 3, 1).copy() if io.layout == "NHWC" else usable
    with _runtime_refusal(source):
        session = cpu_session(source)
        reference = run_batched(session, given, batch=fixed or len(usable)) if len(usable) else None
    try:
        produced = run_batched(cpu_session(normalised), images, batch=len(images))
    except Exception as exc:
        if fixed is None:
            raise
        raise ModelInputError(
            f"{source}: the batch size {fixed} is fixed inside the graph ({type(exc).__name__} at batch "
            f"{len(images)}); re-export it with a dynamic batch axis (torch.onnx.export(..., dynamic_axes="
            "{'<input>': {0: 'batch'}, '<output>': {0: 'batch'}}))"
        ) from None
    if reference is None:
        return 0.0
    diff = float(np.max(np.abs(produced[: len(reference)] - reference)))
    if diff > IMPORT_TOLERANCE:
        raise ModelInputError(
            f"{source}: with a dynamic batch the graph no longer gives its own answers (max |diff| {diff:.2e}); "
            "re-export it with a dynamic batch axis"
        )
    return diff
