"""vt-edge: from a trained Visual Transformer checkpoint to a validated inference engine bundle.

Importing the package is cheap: torch, onnxruntime and TensorRT are imported only by the
stages and backends that use them.
"""

__version__ = "0.1.0"
