"""Configuration and data errors of the RPO patch: reported as one line, before training starts."""

from __future__ import annotations

import sys
from types import TracebackType


class RPOError(ValueError):
    """A config or dataset problem the user must fix; printed without a traceback."""


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(exc_type, RPOError):
        print(f"[rpo] error: {exc}", file=sys.stderr)
    else:
        _previous_hook(exc_type, exc, tb)


_previous_hook = sys.excepthook


def install_excepthook() -> None:
    if sys.excepthook is not _excepthook:
        sys.excepthook = _excepthook
