"""Run a serialized TensorRT engine: the Runner the validate stage uses on a GPU target.

The name-based execution API (python/src/infer/pyCore.cpp of each release branch):
`num_io_tensors`, `get_tensor_name/mode/dtype`, `set_input_shape`, `set_tensor_address`,
`execute_async_v3(stream)`. Present from 8.5 on and the only one in 10.x and 11.x, so every
version a target ships uses it (the binding-index API of 8.4 and older serves no target).

Device buffers come from pycuda where it imports (the usual library on Jetson) and cuda-python
otherwise, behind the small `_DeviceMemory` interface.
"""

from __future__ import annotations

import ctypes
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.backends.base import ClosingRunner
from pipeline.backends.tensorrt_env import (
    TensorRTError,
    TensorRTInfo,
    TensorRTUnavailable,
    gpu_device,
    import_cudart,
    require_tensorrt,
)
from pipeline.backends.timing import TimedCall
from pipeline.names import OUTPUT_NAME

# Every TensorRT attribute the runner touches, per object. Tests check these names against the
# TensorRT 11.4 runtime module and check that the code below uses no attribute not listed here.
RUNNER_API_10: dict[str, tuple[str, ...]] = {
    "tensorrt": ("Logger", "Runtime", "TensorIOMode", "nptype"),
    "Logger": ("WARNING",),
    "TensorIOMode": ("INPUT",),
    "Runtime": ("deserialize_cuda_engine",),
    "ICudaEngine": (
        "num_io_tensors",
        "get_tensor_name",
        "get_tensor_mode",
        "get_tensor_dtype",
        "get_tensor_profile_shape",
        "create_execution_context",
    ),
    "IExecutionContext": ("set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async_v3"),
}


class RunnerError(TensorRTError):
    """The engine could not be loaded or run; the message is one line."""


# --- device memory ----------------------------------------------------------------------------


@dataclass
class _Buffer:
    device: int  # device pointer
    host: np.ndarray  # page-locked uint8 staging buffer of the same size
    owner: Any = None  # the library object that keeps the allocation alive


class _DeviceMemory(Protocol):
    library: str
    stream_handle: int

    def allocate(self, nbytes: int) -> _Buffer: ...
    def release(self, buffer: _Buffer) -> None: ...
    def to_device(self, buffer: _Buffer, nbytes: int) -> None: ...  # async on the stream
    def to_host(self, buffer: _Buffer, nbytes: int) -> None: ...  # async on the stream
    def synchronize(self) -> None: ...
    def start_timer(self) -> None: ...
    def stop_timer(self) -> float: ...  # ms since start_timer, after the stream got there
    def close(self) -> None: ...


class _PyCudaMemory:
    """pycuda: `pycuda.autoinit` creates and makes current a context on device 0, which
    TensorRT's runtime calls then use."""

    library = "pycuda"

    def __init__(self) -> None:
        importlib.import_module("pycuda.autoinit")
        self._cuda = importlib.import_module("pycuda.driver")
        self._stream = self._cuda.Stream()
        self.stream_handle = int(self._stream.handle)
        self._start, self._end = self._cuda.Event(), self._cuda.Event()

    def allocate(self, nbytes: int) -> _Buffer:
        allocation = self._cuda.mem_alloc(nbytes)
        return _Buffer(int(allocation), self._cuda.pagelocked_empty(nbytes, np.uint8), allocation)

    def release(self, buffer: _Buffer) -> None:
        buffer.owner.free()

    def to_device(self, buffer: _Buffer, nbytes: int) -> None:
        self._cuda.memcpy_htod_async(buffer.device, buffer.host[:nbytes], self._stream)

    def to_host(self, buffer: _Buffer, nbytes: int) -> None:
        self._cuda.memcpy_dtoh_async(buffer.host[:nbytes], buffer.device, self._stream)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def start_timer(self) -> None:
        self._start.record(self._stream)

    def stop_timer(self) -> float:
        self._end.record(self._stream)
        self._end.synchronize()
        return float(self._start.time_till(self._end))

    def close(self) -> None:
        self._stream.synchronize()


class _CudaPythonMemory:
    """cuda-python's runtime API (`cuda.bindings.runtime`): every call returns (error, *values)."""

    library = "cuda-python"

    def __init__(self, cudart: Any) -> None:
        self._rt = cudart
        self._stream = self._call(cudart.cudaStreamCreate())
        self.stream_handle = int(self._stream)
        self._start = self._call(cudart.cudaEventCreate())
        self._end = self._call(cudart.cudaEventCreate())

    def _call(self, result: tuple) -> Any:
        err, *values = result
        if err != self._rt.cudaError_t.cudaSuccess:
            name = self._rt.cudaGetErrorName(err)[1]
            raise RunnerError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
        return values[0] if len(values) == 1 else None

    def allocate(self, nbytes: int) -> _Buffer:
        device = self._call(self._rt.cudaMalloc(nbytes))
        host_ptr = self._call(self._rt.cudaMallocHost(nbytes))
        host = np.ctypeslib.as_array((ctypes.c_ubyte * nbytes).from_address(host_ptr))
        return _Buffer(int(device), host, host_ptr)

    def release(self, buffer: _Buffer) -> None:
        self._call(self._rt.cudaFree(buffer.device))
        self._call(self._rt.cudaFreeHost(buffer.owner))

    def _copy(self, dst: int, src: int, nbytes: int, kind: Any) -> None:
        self._call(self._rt.cudaMemcpyAsync(dst, src, nbytes, kind, self._stream))

    def to_device(self, buffer: _Buffer, nbytes: int) -> None:
        self._copy(buffer.device, buffer.host.ctypes.data, nbytes, self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice)

    def to_host(self, buffer: _Buffer, nbytes: int) -> None:
        self._copy(buffer.host.ctypes.data, buffer.device, nbytes, self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost)

    def synchronize(self) -> None:
        self._call(self._rt.cudaStreamSynchronize(self._stream))

    def start_timer(self) -> None:
        self._call(self._rt.cudaEventRecord(self._start, self._stream))

    def stop_timer(self) -> float:
        self._call(self._rt.cudaEventRecord(self._end, self._stream))
        self._call(self._rt.cudaEventSynchronize(self._end))
        return float(self._call(self._rt.cudaEventElapsedTime(self._start, self._end)))

    def close(self) -> None:
        self.synchronize()
        for event in (self._start, self._end):
            self._call(self._rt.cudaEventDestroy(event))
        self._call(self._rt.cudaStreamDestroy(self._stream))


def open_device_memory() -> _DeviceMemory:
    """pycuda where it imports and finds a GPU, cuda-python otherwise."""
    pycuda_problem = None
    try:
        return _PyCudaMemory()
    except ImportError as exc:
        pycuda_problem = f"pycuda not installed ({exc})"
    except Exception as exc:  # noqa: BLE001 - pycuda.driver.Error without a usable driver/GPU
        pycuda_problem = f"pycuda: {exc}"
    cudart = import_cudart()
    if cudart is None:
        raise TensorRTUnavailable(
            f"no CUDA buffer library: {pycuda_problem}, cuda-python not installed; "
            "install pycuda (Jetson) or cuda-python"
        )
    return _CudaPythonMemory(cudart)


# --- engine I/O -------------------------------------------------------------------------------


class _TensorIO:
    """The name-based I/O API (TensorRT 8.5+, the only one in 10.x / 11.x)."""

    api = "tensor names, execute_async_v3"

    def __init__(self, trt: Any, engine: Any, context: Any) -> None:
        self._engine, self._context = engine, context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}

    def dtype(self, name: str) -> np.dtype:
        return self._dtypes[name]

    def batch_range(self, name: str) -> tuple[int, int]:
        low, _, high = self._engine.get_tensor_profile_shape(name, 0)
        return int(low[0]), int(high[0])

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        return bool(self._context.set_input_shape(name, shape))

    def output_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._context.get_tensor_shape(name))

    def set_address(self, name: str, pointer: int) -> None:
        self._context.set_tensor_address(name, pointer)

    def execute(self, stream_handle: int) -> bool:
        return bool(self._context.execute_async_v3(stream_handle))


# --- runner -----------------------------------------------------------------------------------


def _deserialize(trt: Any, engine_path: Path, version: str) -> tuple[Any, Any]:
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    if engine is None:
        raise RunnerError(
            f"{engine_path.name}: TensorRT {version} cannot load it (an engine runs only on the "
            "TensorRT version and GPU it was built with; rebuild it on this device)"
        )
    return runtime, engine


class _EventClock:
    """CUDA events on the runner's stream: what `time_interleaved` reads instead of the host clock."""

    def __init__(self, memory: _DeviceMemory) -> None:
        self.start, self.stop = memory.start_timer, memory.stop_timer


class TensorRTRunner(ClosingRunner):
    """Runner for one TensorRT engine: float32 NCHW `images` in, float32 `logits` out."""

    def __init__(self, engine_path: Path, trt: TensorRTInfo | None = None, *, name: str | None = None) -> None:
        self.engine_path = Path(engine_path)
        if not self.engine_path.is_file():
            raise RunnerError(f"{self.engine_path}: engine not found")
        self._trt = require_tensorrt(trt)
        self.name = name or f"tensorrt:{self.engine_path.name}"
        self._buffers: dict[str, _Buffer] = {}
        self._shape: tuple[int, ...] | None = None
        self._out_shape: tuple[int, ...] = ()
        self._io: Any = None
        self._context = self._engine = self._runtime = None
        self._memory = open_device_memory()  # before TensorRT: pycuda makes its context current
        try:
            self._open()
        except BaseException:
            self.close()  # a constructor that fails is never entered: free the stream and events here
            raise

    def _open(self) -> None:
        trt_module = self._trt.module
        self._runtime, self._engine = _deserialize(trt_module, self.engine_path, self._trt.version)
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise RunnerError(f"{self.engine_path.name}: could not create an execution context (GPU memory?)")
        self._io = _TensorIO(trt_module, self._engine, self._context)
        if len(self._io.inputs) != 1 or not self._io.outputs:
            raise RunnerError(
                f"{self.engine_path.name}: expected one input and an output, got {self._io.inputs} / {self._io.outputs}"
            )
        self._input = self._io.inputs[0]
        self._output = OUTPUT_NAME if OUTPUT_NAME in self._io.outputs else self._io.outputs[0]

    # -- preparation

    def _buffer(self, name: str, nbytes: int) -> _Buffer:
        current = self._buffers.get(name)
        if current is None or current.host.nbytes < nbytes:
            if current is not None:
                self._memory.release(current)
            current = self._buffers[name] = self._memory.allocate(nbytes)
            self._io.set_address(name, current.device)
        return current

    def _prepare(self, shape: tuple[int, ...]) -> None:
        if shape == self._shape:
            return
        low, high = self._io.batch_range(self._input)
        if not low <= shape[0] <= high:
            raise RunnerError(f"batch {shape[0]} is outside the engine's profile ({low}..{high})")
        if not self._io.set_input_shape(self._input, shape):
            raise RunnerError(f"the engine rejects input shape {shape}")
        self._buffer(self._input, int(np.prod(shape)) * self._io.dtype(self._input).itemsize)
        for name in self._io.outputs:
            out_shape = self._io.output_shape(name)
            self._buffer(name, int(np.prod(out_shape)) * self._io.dtype(name).itemsize)
        self._out_shape = self._io.output_shape(self._output)
        self._shape = shape

    def _stage(self, images: np.ndarray) -> np.ndarray:
        if images.ndim != 4:
            raise RunnerError(f"images must be NCHW, got shape {images.shape}")
        batch = np.ascontiguousarray(images, dtype=self._io.dtype(self._input))
        self._prepare(tuple(int(d) for d in batch.shape))
        host = self._buffers[self._input].host
        host[: batch.nbytes] = batch.reshape(-1).view(np.uint8)
        return batch

    def _enqueue(self, nbytes_in: int) -> None:
        """H2D copy, execution and D2H copy of the output, all queued on the stream."""
        self._memory.to_device(self._buffers[self._input], nbytes_in)
        if not self._io.execute(self._memory.stream_handle):
            raise RunnerError(f"{self.engine_path.name}: execution failed")
        self._memory.to_host(self._buffers[self._output], self._output_nbytes())

    def _output_nbytes(self) -> int:
        return int(np.prod(self._out_shape)) * self._io.dtype(self._output).itemsize

    # -- Runner protocol

    def infer(self, images: np.ndarray) -> np.ndarray:
        batch = self._stage(images)
        self._enqueue(batch.nbytes)
        self._memory.synchronize()
        raw = self._buffers[self._output].host[: self._output_nbytes()]
        return raw.view(self._io.dtype(self._output)).reshape(self._out_shape).astype(np.float32)

    def timed_call(self, images: np.ndarray) -> TimedCall:
        """Copy-in, execute and copy-out, timed by CUDA events on this runner's stream."""
        batch = self._stage(images)
        return TimedCall(
            lambda: self._enqueue(batch.nbytes), clock=_EventClock(self._memory), settle=self._memory.synchronize
        )

    def describe(self) -> dict:
        gpu = gpu_device()
        low, high = self._io.batch_range(self._input)
        return {
            "backend": "tensorrt",
            "tensorrt": self._trt.version,
            "engine": self.engine_path.name,
            "device": gpu.name if gpu else None,
            "compute_capability": gpu.compute_capability if gpu else None,
            "io_api": self._io.api,
            "cuda_library": self._memory.library,
            "input": {"name": self._input, "dtype": str(self._io.dtype(self._input)), "batch_range": [low, high]},
            "timing": "CUDA events around host-to-device copy, execute and device-to-host copy",
        }

    def close(self) -> None:
        """Wait for the stream, drop the execution context, engine and runtime (in that order),
        then free the device buffers, the stream and its events (idempotent)."""
        memory, self._memory = getattr(self, "_memory", None), None
        if memory is None:
            return
        memory.synchronize()
        self._io = None  # it refers to the context and engine too
        self._context = self._engine = self._runtime = None
        for buffer in self._buffers.values():
            memory.release(buffer)
        self._buffers.clear()
        memory.close()
