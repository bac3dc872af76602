"""Progress of long work (calibration, fine-tune, the fallback search), told through a callback.

Stages print nothing: they call a `ProgressFn` with a `Step` (what runs, how far it is). The CLI
renders the steps as a rich progress bar with the time left, or as one line a step when the
output is no terminal or `--no-progress` is given; library callers pass nothing and hear nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class Step:
    """`done` of `total` units of the task `task` (e.g. "int8: ranking modules", 12 of 41)."""

    task: str
    done: int
    total: int
    detail: str = ""  # what the last unit found, e.g. "logit error 0.012"

    @property
    def finished(self) -> bool:
        return self.done >= self.total


ProgressFn = Callable[[Step], None]


def silent(step: Step) -> None:
    """The default: nobody listens."""


def or_silent(progress: Optional[ProgressFn]) -> ProgressFn:
    """`progress`, or `silent` when none is given (None or False)."""
    return progress if callable(progress) else silent


def quiet(text: str) -> None:
    """The default line sink of library functions: a caller that wants the news passes its own
    (the CLI prints; pipeline.api callers pass a StageLog)."""
