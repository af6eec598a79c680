"""Who a call is for: `billing_context`, trusted Baggage, or the request's own `user`.

The billing context lives in a `ContextVar`, so each thread and each asyncio task sees its own
value (tasks copy the context they were created in), and nested contexts merge key by key.
Every value is made safe (`safe_value`) before it can reach a span, a metric or a record.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import inspect
import logging
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TypeVar

from opentelemetry import baggage

from .config import Settings

logger = logging.getLogger(__name__)

USER_ID = "user.id"
TENANT_ID = "tenant.id"

MAX_VALUE_CHARS: Final = 128
MAX_CUSTOM_ATTRIBUTES: Final = 32
PSEUDONYM_HEX_DIGITS: Final = 16

_BAGGAGE_KEYS = (USER_ID, TENANT_ID)
_SURROGATES = re.compile("[\ud800-\udfff]")

_F = TypeVar("_F", bound=Callable[..., Any])


def safe_value(value: object) -> str:
    """`value` as telemetry may carry it: a string, valid UTF-8 (lone surrogates become U+FFFD),
    at most 128 characters. Never raises (an object whose `str()` fails becomes `<TypeName>`)."""
    if type(value) is str and len(value) <= MAX_VALUE_CHARS and value.isascii():
        return value  # the common case, checked in well under a microsecond
    return valid_text(_as_text(value)[:MAX_VALUE_CHARS])


def valid_text(value: object) -> str:
    """`value` whole, as text every exporter can encode: lone surrogates become U+FFFD. For the
    prompts captured on request, which are not cut."""
    text = _as_text(value)
    return text if text.isascii() else _SURROGATES.sub("\ufffd", text)


def _as_text(value: object) -> str:
    try:
        return value if isinstance(value, str) else str(value)
    except Exception:  # str() of a hostile object, or an int past Python's digit limit
        return f"<{type(value).__name__}>"


@dataclass(frozen=True, slots=True)
class _Frame:
    """One entered `billing_context` in one context: its merged entries and what it replaced."""

    entries: Mapping[str, str]
    parent: _Frame | None
    owner: billing_context


_billing: ContextVar[_Frame | None] = ContextVar("otel_image_cost_billing", default=None)


class billing_context:
    """Attribute the image calls made inside it to a user, a tenant and custom attributes.

    Works as `with` / `async with` block and as a decorator of sync and async functions. One
    instance may be entered by many threads or tasks at once: each entry is undone only in the
    context that made it (a frame of the context's own chain, never a shared token), so an exit
    in another context (a streaming generator resumed in a copied context) is harmless.
    """

    def __init__(
        self,
        *,
        user_id: object = None,
        tenant_id: object = None,
        attributes: Mapping[object, object] | None = None,
    ) -> None:
        self._entries = _custom_entries(attributes or {})
        if user_id is not None:
            self._entries[USER_ID] = safe_value(user_id)
        if tenant_id is not None:
            self._entries[TENANT_ID] = safe_value(tenant_id)

    def __enter__(self) -> billing_context:
        current = _billing.get()
        merged = {**current.entries, **self._entries} if current is not None else self._entries
        _billing.set(_Frame(merged, current, self))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Undo this instance's innermost entry in this context; a context that never saw it
        # (another thread's copy) has nothing to undo.
        frame = _billing.get()
        while frame is not None and frame.owner is not self:
            frame = frame.parent
        if frame is not None:
            _billing.set(frame.parent)

    async def __aenter__(self) -> billing_context:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: _F) -> _F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def _custom_entries(attributes: Mapping[object, object]) -> dict[str, str]:
    """The first 32 custom attributes, made safe; more are dropped with one log line."""
    entries: dict[str, str] = {}
    for count, (key, value) in enumerate(attributes.items()):
        if count == MAX_CUSTOM_ATTRIBUTES:
            logger.warning(
                "otel-image-cost: billing_context got %d custom attributes; keeping the first %d",
                len(attributes),
                MAX_CUSTOM_ATTRIBUTES,
            )
            break
        name = safe_value(key)
        if name:  # an empty name is no attribute (OpenTelemetry drops it with a warning per span)
            entries[name] = safe_value(value)
    return entries


def current_attribution(request_user: str | None, *, trust_baggage: bool = False) -> dict[str, str]:
    """The attribution of a call about to be made, per key: the billing context, then Baggage
    (only when trusted: a request's `baggage` header is written by whoever sends it), then the
    request's own `safety_identifier` / `user`."""
    found: dict[str, str] = {}
    if request_user:
        found[USER_ID] = safe_value(request_user)
    if trust_baggage:
        entries = baggage.get_all()  # the current context's Baggage, read once for both keys
        for key in _BAGGAGE_KEYS:
            value = entries.get(key)
            if value is not None:
                found[key] = safe_value(value)
    frame = _billing.get()
    if frame is not None:
        found.update(frame.entries)
    return found


def pseudonym(key: bytes, value: str) -> str:
    """The keyed pseudonym of a value: HMAC-SHA256, its first 16 hex digits."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_DIGITS]


def exported_attribution(attribution: Mapping[str, str], settings: Settings) -> dict[str, str]:
    """The attribution as it goes to metrics and billing records: the keys chosen by
    `OTEL_IMAGE_COST_PSEUDONYMIZE` replaced by their keyed pseudonyms."""
    exported = dict(attribution)
    key = settings.pseudonym_key
    if key is not None:
        for name in settings.pseudonymize:
            value = exported.get(name)
            if value is not None:
                exported[name] = pseudonym(key, value)
    return exported


def span_attribution(attribution: Mapping[str, str], settings: Settings) -> Mapping[str, str]:
    """The attribution as it goes on spans: raw, unless `OTEL_IMAGE_COST_PSEUDONYMIZE_SPANS`."""
    return exported_attribution(attribution, settings) if settings.pseudonymize_spans else attribution
