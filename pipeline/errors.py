"""The one root of every error the user can fix: the CLI prints these as one line.

Anything else that escapes (a real bug) keeps its traceback.
"""

from __future__ import annotations


class VtEdgeError(Exception):
    """A problem with the user's input, files or machine, already phrased as one line."""


class ConfigError(VtEdgeError):
    """A configuration problem; the message names the file and the key (exit code 2)."""


class BundleError(VtEdgeError):
    """A bundle that cannot be used as it is; the message says which file and why."""


class StageError(VtEdgeError, RuntimeError):
    """A stage could not produce its artifact (export, simplify, precision, engine)."""


class DataError(VtEdgeError, ValueError):
    """An image set, subset list or preprocessing spec that cannot be used as it is."""


class ModelError(VtEdgeError, ValueError):
    """A model spec or checkpoint that cannot build the model."""


class PlanError(VtEdgeError, ValueError):
    """A TensorRT build plan that cannot be made or used on this device."""


class PathEscapeError(VtEdgeError, ValueError):
    """A bundle-relative path that would leave its folder."""
