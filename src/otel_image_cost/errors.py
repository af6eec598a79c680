"""The one error the `otel-image-cost` command reports as bad input (exit 2, one line, no traceback)."""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """An argument, file or record the command cannot use; the message names it and the problem."""
