"""Transparent proxies around what the SDK returns when the result arrives later.

A proxy is an `isinstance` match for the SDK object it wraps and forwards every attribute, so
the application (and the SDK's own helpers that read e.g. `.response`) see no difference. It
reports each event to its call as it passes and ends the call exactly once: when the stream is
exhausted, fails, is closed, leaves its `with` block, or is garbage-collected unclosed (the last
three `stop` the call: abandoned if its final event had not arrived). The SDK's
stream helpers (`responses.stream(...)`) close a stream through its HTTP `.response`, so that is
proxied too.
"""

from __future__ import annotations

import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import wrapt

if TYPE_CHECKING:
    ProxyBase = wrapt.ObjectProxy[Any]
else:  # wrapt 1.x proxies are not subscriptable at run time
    ProxyBase = wrapt.ObjectProxy


class CallObserver(Protocol):
    """The side of a tracked call that a proxy reports to. None of these methods raises."""

    def observe_event(self, event: Any) -> None: ...
    def observe_response(self, response: Any) -> None: ...
    def observe_request_id(self, request_id: Any) -> None: ...
    def fail(self, exc: BaseException) -> None: ...
    def finish(self) -> None: ...
    def stop(self) -> None: ...


def _end_when_collected(proxy: object, call: CallObserver) -> None:
    weakref.finalize(proxy, call.stop)


class ObservedHTTPResponse(ProxyBase):
    """A stream's `httpx.Response`: closing it (as the SDK's stream helpers do) ends the call."""

    def __init__(self, response: Any, call: CallObserver) -> None:
        super().__init__(response)
        self._self_call = call

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_call.stop()

    async def aclose(self) -> None:
        try:
            await self.__wrapped__.aclose()
        finally:
            self._self_call.stop()


class ObservedStream(ProxyBase):
    """A `Stream` whose events are counted on the way to the application."""

    def __init__(self, stream: Any, call: CallObserver) -> None:
        super().__init__(stream)
        self._self_call = call
        _end_when_collected(self, call)

    @property
    def response(self) -> Any:
        return ObservedHTTPResponse(self.__wrapped__.response, self._self_call)

    def __iter__(self) -> ObservedStream:
        return self

    def __next__(self) -> Any:
        try:
            event = self.__wrapped__.__next__()
        except StopIteration:
            self._self_call.finish()
            raise
        except Exception as exc:
            self._self_call.fail(exc)
            raise
        self._self_call.observe_event(event)
        return event

    def __enter__(self) -> ObservedStream:
        self.__wrapped__.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            return self.__wrapped__.__exit__(exc_type, exc, tb)
        finally:
            self._self_call.stop()

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_call.stop()


class AsyncObservedStream(ProxyBase):
    """An `AsyncStream` whose events are counted on the way to the application."""

    def __init__(self, stream: Any, call: CallObserver) -> None:
        super().__init__(stream)
        self._self_call = call
        _end_when_collected(self, call)

    @property
    def response(self) -> Any:
        return ObservedHTTPResponse(self.__wrapped__.response, self._self_call)

    def __aiter__(self) -> AsyncObservedStream:
        return self

    async def __anext__(self) -> Any:
        try:
            event = await self.__wrapped__.__anext__()
        except StopAsyncIteration:
            self._self_call.finish()
            raise
        except Exception as exc:
            self._self_call.fail(exc)
            raise
        self._self_call.observe_event(event)
        return event

    async def __aenter__(self) -> AsyncObservedStream:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            return await self.__wrapped__.__aexit__(exc_type, exc, tb)
        finally:
            self._self_call.stop()

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_call.stop()
