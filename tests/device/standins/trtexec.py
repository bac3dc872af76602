"""A stand-in for trtexec (see README.md): the options the printed lines use, as the release
in VTEDGE_FAKE_TRT_VERSION parses them; writes an engine the stand-in runtime loads."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tensorrt  # noqa: E402  the stand-in beside this folder

MAJOR, MINOR = (int(p) for p in tensorrt.__version__.split(".")[:2])
FLAGS = {"--int8", "--fp16", "--allowGPUFallback", "--stronglyTyped"}
FLAGS |= {"--buildOnly"} if MAJOR < 10 else set()  # deprecated by 8.6, gone in 10
FLAGS |= {"--skipInference"} if (MAJOR, MINOR) >= (8, 6) else set()
VALUED = {
    "--onnx",
    "--saveEngine",
    "--minShapes",
    "--optShapes",
    "--maxShapes",
    "--memPoolSize",
    "--timingCacheFile",
    "--useDLACore",
}


def fail(message):
    print(f"[E] {message}", file=sys.stderr)
    print(f"&&&& FAILED TensorRT.trtexec [TensorRT v{tensorrt.__version__}] # trtexec", file=sys.stderr)
    sys.exit(1)


def workspace_mib(spec):
    """MiB that --memPoolSize=workspace:SPEC sets, as each release computes it."""
    value = spec.split(":", 1)[1]
    suffix = value[-1].upper() if value[-1].isalpha() else ""
    number = float(value[:-1] if suffix else value)
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[suffix]
    if MAJOR < 10:
        return number  # std::stod: the suffix is ignored, the number is MiB
    if (MAJOR, MINOR) == (10, 0):
        return number * scale  # bytes-with-suffix, then multiplied by 2^20 once more
    return number * scale / 2**20 if suffix else number  # 10.1+: a default M


def main(argv):
    options, flags = {}, set()
    for arg in argv:
        name, _, value = arg.partition("=")
        if name in VALUED and value:
            options[name] = value
        elif arg in FLAGS:
            flags.add(arg)
        else:
            fail(f"Unknown option: {arg}")
    if not os.path.isfile(options.get("--onnx", "")):
        fail(f"Cannot open ONNX file {options.get('--onnx')}")
    engine = options["--saveEngine"]
    if not os.path.isdir(os.path.dirname(engine) or "."):
        fail(f"Cannot open engine file: {engine}")
    shapes = [[int(d) for d in options[k].split(":")[1].split("x")] for k in ("--minShapes", "--maxShapes")]
    dla = int(options["--useDLACore"]) if "--useDLACore" in options else None
    precision = [f.lstrip("-").upper() for f in ("--int8", "--fp16") if f in flags]
    network = ["STRONGLY_TYPED"] if "--stronglyTyped" in flags else []
    data = tensorrt.serialize(
        {
            "built_by": "trtexec",
            "network_flags": network,
            "builder_flags": precision,
            "workspace_mib": workspace_mib(options["--memPoolSize"]),
            "batch": [shapes[0][0], shapes[1][0]],
            "chw": shapes[0][1:],
            "dla_core": dla,
        }
    )
    with open(engine, "wb") as handle:
        handle.write(data)
    if "--timingCacheFile" in options:
        with open(options["--timingCacheFile"], "wb") as handle:
            handle.write(f"timing cache of {tensorrt.__version__}".encode())
    print(f"&&&& PASSED TensorRT.trtexec [TensorRT v{tensorrt.__version__}] # trtexec")


if __name__ == "__main__":
    main(sys.argv[1:])
