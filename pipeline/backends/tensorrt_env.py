"""What this machine offers the TensorRT backend: the TensorRT Python module and a CUDA GPU.

Everything here imports lazily and answers "not available" instead of raising, so the rest of
the pipeline (and `--dry-run` on a host without a GPU) never needs TensorRT or CUDA.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from types import ModuleType

from pipeline.errors import VtEdgeError


class TensorRTError(VtEdgeError, RuntimeError):
    """A TensorRT backend problem, phrased as one line for the user."""


class TensorRTUnavailable(TensorRTError):
    """TensorRT (or the CUDA library the runner needs) is not installed here."""


@dataclass(frozen=True)
class TensorRTInfo:
    """The imported TensorRT Python module and its version."""

    version: str  # as the module reports it, e.g. "10.3.0.30"
    major: int
    minor: int
    patch: int
    module: ModuleType


@dataclass(frozen=True)
class GpuInfo:
    """The CUDA device a build or run would use (device 0 of the visible devices)."""

    name: str
    compute_capability: str  # "major.minor", e.g. "8.7" (Orin), "8.9" (Ada)
    total_memory_bytes: int
    library: str  # which CUDA binding answered: "cuda-python" or "pycuda"


_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")

_INSTALL_HINT = (
    "on Jetson it comes with JetPack (python3-libnvinfer); elsewhere `pip install tensorrt` "
    "(`pip install -e .[tensorrt]`)"
)


def parse_version(version: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a TensorRT version string like "10.3.0.30"; None if it is none."""
    match = _VERSION.match(version.strip())
    if not match:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def info_from_module(module: ModuleType) -> TensorRTInfo | None:
    """TensorRTInfo for an imported module, or None when it carries no usable `__version__`.

    Installing the `tensorrt-stubs` typing package leaves an empty `tensorrt` package behind:
    it imports, but has no `__version__` and no API, so it must count as "not installed".
    """
    version = getattr(module, "__version__", None)
    if not isinstance(version, str):
        return None
    parsed = parse_version(version)
    if parsed is None:
        return None
    return TensorRTInfo(version, *parsed, module=module)


def _probe_tensorrt() -> tuple[TensorRTInfo | None, str]:
    try:
        module = importlib.import_module("tensorrt")
    except ImportError as exc:
        return None, f"TensorRT is not installed ({exc})"
    except Exception as exc:  # noqa: BLE001 - a broken install (missing libnvinfer, ...) must not crash the CLI
        return None, f"TensorRT is installed but fails to import: {type(exc).__name__}: {exc}"
    info = info_from_module(module)
    if info is None:
        where = getattr(module, "__file__", None) or "a namespace package"
        return None, f"`tensorrt` at {where} has no version (an empty or stub package, e.g. left by tensorrt-stubs)"
    return info, f"TensorRT {info.version} ({getattr(module, '__file__', '?')})"


def find_tensorrt() -> TensorRTInfo | None:
    """The importable TensorRT, or None meaning "TensorRT not installed"."""
    return _probe_tensorrt()[0]


def tensorrt_status() -> str:
    """One line saying which TensorRT is importable here, or why none is."""
    return _probe_tensorrt()[1]


def require_tensorrt(info: TensorRTInfo | None = None) -> TensorRTInfo:
    """`info`, or the importable TensorRT; TensorRTUnavailable with a one-line reason otherwise."""
    if info is not None:
        return info
    found, status = _probe_tensorrt()
    if found is None:
        raise TensorRTUnavailable(f"{status}; {_INSTALL_HINT}")
    return found


# --- GPU --------------------------------------------------------------------------------------


def import_cudart() -> ModuleType | None:
    """cuda-python's runtime module: `cuda.bindings.runtime` (cuda-python >= 12.6, the only name
    in 13.x), `cuda.cudart` in older 12.x releases. None when cuda-python is absent."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def _gpu_from_cuda_python() -> GpuInfo | None:
    cudart = import_cudart()
    if cudart is None:
        return None
    success = cudart.cudaError_t.cudaSuccess
    # Without a driver this returns (cudaErrorInsufficientDriver, None) rather than raising.
    err, count = cudart.cudaGetDeviceCount()
    if err != success or not count:
        return None
    err, prop = cudart.cudaGetDeviceProperties(0)
    if err != success:
        return None
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return GpuInfo(name.rstrip("\x00"), f"{prop.major}.{prop.minor}", int(prop.totalGlobalMem), "cuda-python")


def _gpu_from_pycuda() -> GpuInfo | None:
    try:
        driver = importlib.import_module("pycuda.driver")
        driver.init()
        if driver.Device.count() == 0:
            return None
        device = driver.Device(0)
        major, minor = device.compute_capability()
        return GpuInfo(device.name(), f"{major}.{minor}", int(device.total_memory()), "pycuda")
    except Exception:  # noqa: BLE001 - ImportError, or pycuda.driver.Error without a driver
        return None


def gpu_device() -> GpuInfo | None:
    """The first visible CUDA GPU through cuda-python or pycuda; None when there is none (or no
    library to ask)."""
    try:
        found = _gpu_from_cuda_python()
    except Exception:  # noqa: BLE001 - a cuda-python that cannot load libcuda at all
        found = None
    return found or _gpu_from_pycuda()
