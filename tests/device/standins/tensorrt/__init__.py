"""A stand-in for TensorRT's Python module (see ../README.md). Not TensorRT."""

import json
import os
import weakref

import numpy as np

__version__ = os.environ.get("VTEDGE_FAKE_TRT_VERSION", "10.3.0.30")
_MAJOR = int(__version__.split(".")[0])
_MAGIC = "vtedge-fake-tensorrt"
LIVE_CONTEXTS = weakref.WeakSet()


def _enum(name, members):
    return type(name, (), {m: i for i, m in enumerate(members)})


if _MAJOR < 10:
    NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", ["EXPLICIT_BATCH", "EXPLICIT_PRECISION"])
    BuilderFlag = _enum("BuilderFlag", ["FP16", "INT8", "DEBUG", "GPU_FALLBACK"])
elif _MAJOR == 10:
    NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", ["EXPLICIT_BATCH", "STRONGLY_TYPED"])
    BuilderFlag = _enum("BuilderFlag", ["FP16", "INT8", "DEBUG", "GPU_FALLBACK"])
else:  # 11.x: strongly typed only, no precision flags
    NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", ["PREFER_AOT_PYTHON_PLUGINS"])
    BuilderFlag = _enum("BuilderFlag", ["DEBUG", "GPU_FALLBACK"])
MemoryPoolType = _enum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM"])
DeviceType = _enum("DeviceType", ["GPU", "DLA"])
TensorIOMode = _enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
DataType = _enum("DataType", ["FLOAT", "HALF", "INT8"])


def nptype(dtype):
    return {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8}[dtype]


class ILogger:
    Severity = _enum("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"])

    def __init__(self):
        pass


class Logger(ILogger):
    WARNING = 2

    def __init__(self, severity=WARNING):
        super().__init__()


def _lookup():
    path = os.environ.get("VTEDGE_FAKE_LOOKUP")
    return np.load(path) if path else None


def input_chw():
    table = _lookup()
    return tuple(int(d) for d in table["crops"].shape[1:]) if table is not None else (3, 8, 8)


def serialize(settings):
    """The bytes of a stand-in engine: JSON of what the build asked for."""
    return json.dumps({"magic": _MAGIC, "tensorrt": __version__, **settings}, sort_keys=True).encode()


# --- build --------------------------------------------------------------------------------


class _Tensor:
    def __init__(self, name, shape):
        self.name, self.shape = name, shape


class _Network:
    def __init__(self, flags):
        self.flags = [
            name
            for name, bit in vars(NetworkDefinitionCreationFlag).items()
            if not name.startswith("_") and flags >> bit & 1
        ]
        self.inputs = []

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_input(self, index):
        return self.inputs[index]


class OnnxParser:
    num_errors = 0

    def __init__(self, network, logger):
        self.network = network

    def parse_from_file(self, path):
        if not os.path.isfile(path):
            return False
        self.network.inputs = [_Tensor("images", (-1, *input_chw()))]
        return True

    def get_error(self, index):
        raise IndexError(index)


class _Profile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, low, opt, high):
        self.shapes[name] = [list(low), list(opt), list(high)]


class _TimingCache:
    def __init__(self, data):
        self.data = bytes(data)

    def serialize(self):
        return self.data or f"timing cache of {__version__}".encode()


class _Config:
    def __init__(self):
        self.flags, self.profiles, self.pools, self.cache = [], [], {}, None
        self.default_device_type, self.DLA_core = DeviceType.GPU, -1

    def set_memory_pool_limit(self, pool, size):
        self.pools[pool] = size

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_flag(self, flag):
        self.flags.append(next(n for n, v in vars(BuilderFlag).items() if v == flag and not n.startswith("_")))

    def create_timing_cache(self, data):
        return _TimingCache(data)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache


class Builder:
    def __init__(self, logger):
        self.num_DLA_cores = 2 if os.environ.get("VTEDGE_FAKE_GPU", "Orin:8.7").endswith("8.7") else 0

    def create_network(self, flags=0):
        return _Network(flags)

    def create_builder_config(self):
        return _Config()

    def create_optimization_profile(self):
        return _Profile()

    def build_serialized_network(self, network, config):
        (low, _, high) = config.profiles[0].shapes["images"]
        dla = config.DLA_core if config.default_device_type == DeviceType.DLA else None
        return serialize(
            {
                "built_by": "builder",
                "network_flags": network.flags,
                "builder_flags": config.flags,
                "workspace_mib": config.pools.get(MemoryPoolType.WORKSPACE, 0) / 2**20,
                "batch": [low[0], high[0]],
                "chw": list(low[1:]),
                "dla_core": dla,
            }
        )


# --- run ----------------------------------------------------------------------------------


class Runtime:
    def __init__(self, logger):
        pass

    def deserialize_cuda_engine(self, data):
        try:
            settings = json.loads(bytes(data).decode())
        except ValueError:
            return None
        if settings.get("magic") != _MAGIC or settings.get("tensorrt") != __version__:
            return None  # like TensorRT: an engine of another version does not load
        return _Engine(settings)


class _Engine:
    num_io_tensors = 2

    def __init__(self, settings):
        self.settings = settings
        table = _lookup()
        self.classes = int(table["logits"].shape[1]) if table is not None else 5

    def get_tensor_name(self, index):
        return ("images", "logits")[index]

    def get_tensor_mode(self, name):
        return TensorIOMode.INPUT if name == "images" else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return DataType.FLOAT

    def get_tensor_profile_shape(self, name, profile):
        low, high = self.settings["batch"]
        return (low, *self.settings["chw"]), (low, *self.settings["chw"]), (high, *self.settings["chw"])

    def create_execution_context(self):
        return _Context(self)


class _Context:
    def __init__(self, engine):
        self.engine, self.shape, self.addresses = engine, None, {}
        self.table = _lookup()
        LIVE_CONTEXTS.add(self)

    def set_input_shape(self, name, shape):
        low, high = self.engine.settings["batch"]
        self.shape = tuple(shape)
        return low <= shape[0] <= high and list(shape[1:]) == self.engine.settings["chw"]

    def get_tensor_shape(self, name):
        return self.shape if name == "images" else (self.shape[0], self.engine.classes)

    def set_tensor_address(self, name, pointer):
        self.addresses[name] = int(pointer)

    def execute_async_v3(self, stream_handle):
        import ctypes

        images = np.empty(self.shape, np.float32)
        ctypes.memmove(images.ctypes.data, self.addresses["images"], images.nbytes)
        logits = np.stack([self._logits(image) for image in images]).astype(np.float32)
        ctypes.memmove(self.addresses["logits"], logits.ctypes.data, logits.nbytes)
        return True

    def _logits(self, image):
        """The host's FP32 logits of the bundled crop this image equals (NaN when none does)."""
        crops = self.table["crops"].astype(np.float32) / 255.0
        mean, std = self.table["mean"].reshape(1, 3, 1, 1), self.table["std"].reshape(1, 3, 1, 1)
        distance = np.abs((crops - mean) / std - image[None]).reshape(len(crops), -1).max(axis=1)
        best = int(np.argmin(distance))
        if distance[best] > 1e-4:
            return np.full(self.engine.classes, np.nan)
        return self.table["logits"][best]
