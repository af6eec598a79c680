"""The plugin never breaks the application: its own errors are logged once and swallowed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger("otel_image_cost")

_seen: set[tuple[str, str]] = set()
_seen_lock = threading.Lock()


def report_internal_error(where: str, exc: BaseException) -> None:
    """Log an error of ours with its traceback the first time it happens at `where`, then quietly."""
    key = (where, type(exc).__name__)
    with _seen_lock:
        first = key not in _seen
        _seen.add(key)
    if first:
        logger.warning(
            "otel-image-cost: internal error in %s; telemetry for this call may be incomplete",
            where,
            exc_info=exc,
        )
    else:
        logger.debug("otel-image-cost: internal error in %s again: %r", where, exc)


@contextmanager
def swallowed(where: str) -> Iterator[None]:
    """Run plugin code whose failure must not reach the application."""
    try:
        yield
    except Exception as exc:
        report_internal_error(where, exc)
