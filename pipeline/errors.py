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


class ModelFileError(ModelError):
    """A model file that cannot be read as a model: empty, truncated, corrupt, refused by the ONNX
    checker or refused as unsafe to unpickle. The same exit code (1) for every kind of model
    file: it is a bad input file, like any other."""


class ModelInputError(ConfigError, ModelError):
    """A model file, labels file or factory setting that does not fit (exit code 2): the message
    names the file or key and what to change."""


class PlanError(VtEdgeError, ValueError):
    """A TensorRT build plan that cannot be made or used on this device."""


class PathEscapeError(VtEdgeError, ValueError):
    """A bundle-relative path that would leave its folder."""


class LockError(VtEdgeError):
    """Another process holds a bundle or cache entry this one must write; the message names it."""


def describe_validation(error: dict) -> str:
    """One pydantic error (an item of `ValidationError.errors()`) as `key 'a.b': message`."""
    # pydantic names the branch of a union it tried ("dict[...]", "tagged-union[...]"): not a key
    location = ".".join(str(part) for part in error["loc"] if part != "validate_" and "[" not in str(part))
    if error["type"] == "extra_forbidden":
        return f"unknown key '{location}'"
    message = error["msg"]
    if message.startswith("Value error, "):  # raised by our own validators: the text says it all
        message = message[len("Value error, ") :]
    return f"key '{location}': {message}" if location else message


def first_validation_error(exc: Exception) -> str:
    """A pydantic ValidationError as one line: its first error, and how many more there are."""
    errors = exc.errors()  # type: ignore[attr-defined]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return describe_validation(errors[0]) + more
