"""pycuda.driver's calls that the pipeline uses, on host memory (see ../README.md)."""

import atexit
import ctypes
import gc
import json
import os
import time

import numpy as np

_NAME, _CC = os.environ.get("VTEDGE_FAKE_GPU", "Orin:8.7").rsplit(":", 1)
LIVE = {}  # address -> allocation not yet freed


class Error(Exception):
    pass


def init():
    pass


class Device:
    @staticmethod
    def count():
        return 1

    def __init__(self, index):
        self.index = index

    def name(self):
        return _NAME

    def compute_capability(self):
        major, minor = _CC.split(".")
        return int(major), int(minor)

    def total_memory(self):
        return 32 << 30


class DeviceAllocation:
    def __init__(self, nbytes):
        self._memory = np.zeros(max(nbytes, 1), np.uint8)
        self._address = self._memory.ctypes.data
        LIVE[self._address] = nbytes

    def __int__(self):
        return self._address

    def free(self):
        LIVE.pop(self._address, None)


def mem_alloc(nbytes):
    return DeviceAllocation(nbytes)


def pagelocked_empty(shape, dtype):
    return np.empty(shape, dtype)


class Stream:
    def __init__(self):
        self.handle = id(self)

    def synchronize(self):
        pass


class Event:
    def __init__(self):
        self.at = 0.0

    def record(self, stream=None):
        self.at = time.perf_counter()

    def synchronize(self):
        pass

    def time_till(self, other):
        return (other.at - self.at) * 1000.0


def memcpy_htod_async(destination, source, stream=None):
    ctypes.memmove(int(destination), source.ctypes.data, source.nbytes)


def memcpy_dtoh_async(destination, source, stream=None):
    ctypes.memmove(destination.ctypes.data, int(source), destination.nbytes)


def _report_leaks():
    path = os.environ.get("VTEDGE_FAKE_LEAKS")
    if not path:
        return
    gc.collect()
    import sys

    contexts = len(sys.modules["tensorrt"].LIVE_CONTEXTS) if "tensorrt" in sys.modules else 0
    with open(path, "w") as handle:
        json.dump({"allocations": len(LIVE), "contexts": contexts}, handle)


atexit.register(_report_leaks)
