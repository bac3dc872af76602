"""What this machine is and which tools made an artifact: recorded in reports and manifests."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# CPU features that decide how fast INT8 (and BF16/FP16) inference can be, by the names Linux
# gives them in /proc/cpuinfo: `flags` on x86, `Features` on Arm.
X86_FEATURES = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
ARM_FEATURES = ("asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2")
# An 8-bit dot product instruction (4 products summed into 32 bits per lane, no 16-bit step).
INT8_DOT = {
    "amx_int8": "AMX-INT8",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "i8mm": "Arm i8mm",
    "asimddp": "Arm dotprod",
}


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_isa(cpuinfo: str, machine: str) -> dict[str, Any]:
    """The INT8-relevant instruction sets a CPU has.

    `int8_dot` names the best 8-bit dot-product instruction (VNNI, AMX, Arm dotprod/i8mm) or is
    None. Without one (x86 with AVX2 only), ONNX Runtime's INT8 kernels multiply u8 by s8 and add
    each pair of products in 16 bits (vpmaddubsw), then widen (vpmaddwd): about twice FP32's
    arithmetic rate where a dot-product instruction gives four times or more, and the 16-bit
    step saturates, which is why the `int8` graph uses 7-bit weights. `int8_kernel` says which.
    """
    flags: set = set()
    for line in cpuinfo.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("flags", "features") and ":" in line:
            flags = set(line.split(":", 1)[1].split())
            break
    known = X86_FEATURES if machine.lower() in ("x86_64", "amd64", "i686", "i386") else ARM_FEATURES
    present = [name for name in known if name in flags]
    dot = next((label for name, label in INT8_DOT.items() if name in flags), None)
    if dot is not None:
        kernel = f"{dot} (8-bit dot product, 32-bit sums)"
    elif "avx2" in flags:
        kernel = "AVX2 vpmaddubsw (16-bit pair sums: saturate without 7-bit weights)"
    else:
        kernel = "no 8-bit dot product"
    return {"features": present, "int8_dot": dot, "int8_kernel": kernel}


def host_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    text = _cpuinfo()
    for line in text.splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpu_isa": cpu_isa(text, platform.machine()),
        "python": platform.python_version(),
    }


def tool_versions(names: Iterable[str]) -> dict[str, str]:
    """Versions of the installed tools among `names` (absent ones are left out)."""
    from importlib import metadata

    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
