"""Hand an SDK call's return value to its tracked call, and back to the application unchanged.

What the SDK returns decides when the call ends:
- a parsed model (`ImagesResponse`, `Response`): now;
- a `Stream` / `AsyncStream`: when the stream ends (see `streams`);
- `with_raw_response` (`LegacyAPIResponse`): the body is already read, so it is parsed now; the
  SDK caches the parse, so the application's own `.parse()` gets the very same object. A raw
  *stream* is observed when the application parses it;
- `with_streaming_response` (`APIResponse`): the body is unread; it is observed when the
  application parses it, or the call ends when the response is closed.

Each also tells the call its `x-request-id`: the SDK keeps it on a raw response (`request_id`), on
a parsed model (`_request_id`) and in a stream's HTTP response headers.
"""

from __future__ import annotations

from typing import Any

from openai import AsyncStream, Stream
from openai._legacy_response import LegacyAPIResponse
from openai._response import APIResponse, AsyncAPIResponse

from .safety import report_internal_error
from .streams import AsyncObservedStream, CallObserver, ObservedStream, ProxyBase

_REQUEST_ID_HEADER = "x-request-id"
_RAW_RESPONSES = (LegacyAPIResponse, APIResponse, AsyncAPIResponse)  # a tuple: the fastest `isinstance`
_STREAMS = (Stream, AsyncStream)


def observe_result(call: CallObserver, result: Any, *, streaming: bool) -> Any:
    """What the application gets back: `result` itself, or a transparent proxy of it."""
    try:
        if not isinstance(result, _RAW_RESPONSES):
            return observe_parsed(call, result)
        call.observe_request_id(result.request_id)
        if isinstance(result, LegacyAPIResponse) and not streaming:
            call.observe_response(result.parse())
            call.finish()
            return result
        if isinstance(result, LegacyAPIResponse | APIResponse):
            return ObservedRawResponse(result, call)
        return AsyncObservedRawResponse(result, call)
    except Exception as exc:
        report_internal_error("observe_result", exc)
        call.finish()
        return result


def observe_parsed(call: CallObserver, parsed: Any) -> Any:
    """A parsed result: streams get a proxy, a final response ends the call now."""
    if isinstance(parsed, _STREAMS):
        call.observe_request_id(parsed.response.headers.get(_REQUEST_ID_HEADER))
        if isinstance(parsed, Stream):
            return ObservedStream(parsed, call)
        return AsyncObservedStream(parsed, call)
    call.observe_request_id(getattr(parsed, "_request_id", None))
    call.observe_response(parsed)
    call.finish()
    return parsed


class ObservedRawResponse(ProxyBase):
    """A raw response whose `.parse()` result is observed (once, however often it is parsed)."""

    def __init__(self, response: Any, call: CallObserver) -> None:
        super().__init__(response)
        self._self_call = call
        self._self_parsed: dict[Any, Any] = {}

    def parse(self, **kwargs: Any) -> Any:
        parsed = self.__wrapped__.parse(**kwargs)
        return _observed_once(self._self_call, self._self_parsed, kwargs.get("to"), parsed)

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_call.stop()


class AsyncObservedRawResponse(ProxyBase):
    """The async twin of `ObservedRawResponse` (its `.parse()` and `.close()` are coroutines)."""

    def __init__(self, response: Any, call: CallObserver) -> None:
        super().__init__(response)
        self._self_call = call
        self._self_parsed: dict[Any, Any] = {}

    async def parse(self, **kwargs: Any) -> Any:
        parsed = await self.__wrapped__.parse(**kwargs)
        return _observed_once(self._self_call, self._self_parsed, kwargs.get("to"), parsed)

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_call.stop()


def _observed_once(call: CallObserver, seen: dict[Any, Any], to: Any, parsed: Any) -> Any:
    """Observe a parse result; the SDK caches parses, so a repeated parse returns the same proxy."""
    if to not in seen:
        try:
            seen[to] = observe_parsed(call, parsed)
        except Exception as exc:
            report_internal_error("observe_parsed", exc)
            seen[to] = parsed
    return seen[to]
