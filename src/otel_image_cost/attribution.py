"""Who a call is for: `billing_context`, Baggage, or the request's own `user`.

The billing context lives in a `ContextVar`, so each thread and each asyncio task sees its own
value (tasks copy the context they were created in), and nested contexts merge key by key.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, TypeVar

from opentelemetry import baggage

USER_ID = "user.id"
TENANT_ID = "tenant.id"

_BAGGAGE_KEYS = (USER_ID, TENANT_ID)
_EMPTY: Mapping[str, str] = {}
_billing: ContextVar[Mapping[str, str]] = ContextVar("otel_image_cost_billing", default=_EMPTY)

_F = TypeVar("_F", bound=Callable[..., Any])


class billing_context:
    """Attribute the image calls made inside it to a user, a tenant and custom attributes.

    Works as `with` / `async with` block and as a decorator of sync and async functions.
    """

    def __init__(
        self,
        *,
        user_id: str | None = None,
        tenant_id: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> None:
        entries = dict(attributes or {})
        if user_id is not None:
            entries[USER_ID] = user_id
        if tenant_id is not None:
            entries[TENANT_ID] = tenant_id
        self._entries = {str(key): str(value) for key, value in entries.items()}
        self._tokens: list[Token[Mapping[str, str]]] = []

    def __enter__(self) -> billing_context:
        self._tokens.append(_billing.set({**_billing.get(), **self._entries}))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _billing.reset(self._tokens.pop())

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
        entries = self._entries

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with billing_context(attributes=entries):
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with billing_context(attributes=entries):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def current_attribution(request_user: str | None) -> dict[str, str]:
    """The attribution of a call about to be made: billing context, then Baggage, then request."""
    found: dict[str, str] = {}
    if request_user:
        found[USER_ID] = request_user
    entries = baggage.get_all()  # the current context's Baggage, read once for both keys
    if entries:
        for key in _BAGGAGE_KEYS:
            value = entries.get(key)
            if value is not None:
                found[key] = str(value)
    billing = _billing.get()
    if billing:
        found.update(billing)
    return found
