"""The stages, in build order. Each module holds one stage whole: `run_<stage>(ctx, inputs)`
(a pipeline.context.BuildContext and the stage's typed inputs; it returns the stage's artifact)
and `summary(artifact)`, its one line in the build log. pipeline.build wires them.
"""

from __future__ import annotations

import importlib
from typing import Any

# stage name -> the module that runs it
STAGE_MODULES = {
    "data": "dataset",
    "export": "export",
    "simplify": "simplify",
    "calibrate": "calibrate",
    "precision": "precision",
    "engine": "engine",
    "validate": "validate",
    "report": "bundle",
}


def summary(stage: str, artifact: Any) -> str:
    """A finished stage's line in the build log ("" for a stage this package does not run)."""
    module = STAGE_MODULES.get(stage)
    return importlib.import_module(f"pipeline.stages.{module}").summary(artifact) if module else ""
