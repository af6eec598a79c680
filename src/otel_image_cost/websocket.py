"""Responses WebSocket mode: each `response.create` sent with the image tool is one call.

Every way of using the mode writes and reads JSON text frames on a `websockets` client
connection to `.../responses`: the SDK's `responses.connect()` (sync and async, on both SDK
lines), the SDK's session lanes (which write to the socket directly) and its queue of sends made
before the socket opened, and clients that open the socket themselves (openai-agents). That
connection's `send`, `recv` and `close` are the one place that sees every frame, so they are
what is wrapped; the frames pass through unchanged.

On one connection, responses are answered in order per lane (`stream_id`; none is the default
lane), so each create sent is queued on its lane and the lane's events belong to the oldest
create not yet answered. A create without the image tool is queued too (its events must not be
taken for the next one's) but is not tracked. A call ends at its `response.completed` /
`.failed` / `.incomplete` event (priced like an HTTP stream, by the same `ResponsesCall`), at an
`error` event answering it (failed, no cost), or when the connection closes first.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from .calls import Runtime
from .extract import field, text
from .extract_responses import FINAL_EVENTS, image_tool, responses_request
from .responses_call import ResponsesCall
from .safety import report_internal_error

_CREATE = "response.create"
_ERROR = "error"
_RESPONSES_PATH_END = "/responses"

# The `websockets` client connection classes whose frames are observed: (module, class, asyncio).
SOCKET_CLASSES = (
    ("websockets.sync.client", "ClientConnection", False),
    ("websockets.asyncio.client", "ClientConnection", True),
)


class ResponseWsError(Exception):
    """An `error` event answering a `response.create` (named after the SDK's event model)."""


@dataclass(frozen=True, slots=True)
class _Address:
    host: str | None
    port: int | None


@dataclass(frozen=True, slots=True)
class SocketClient:
    """Stands for the SDK client of a WebSocket call: what `calls.server_of` reads (`base_url`)."""

    base_url: _Address


class SocketCalls:
    """The creates sent on one connection and not yet answered, per lane, oldest first."""

    __slots__ = ("_lanes", "_lock")

    def __init__(self) -> None:
        self._lanes: dict[str | None, deque[ResponsesCall | None]] = {}
        self._lock = threading.Lock()

    def sent(self, runtime: Runtime, payload: dict[str, Any], client: SocketClient) -> ResponsesCall | None:
        """A `response.create` left for the service: a call when it offers the image tool."""
        call = None
        tool = image_tool(payload.get("tools"))
        if tool is not None:
            # Over a WebSocket every response streams its events (`stream` is implicit).
            request = responses_request((), {**payload, "stream": True}, tool)
            call = ResponsesCall(runtime, client, request, retrieve=False)
        lane = payload.get("stream_id")
        with self._lock:
            self._lanes.setdefault(lane if isinstance(lane, str) else None, deque()).append(call)
        return call

    def unsent(self, call: ResponsesCall) -> None:
        """The send raised: the create never left, so nothing will answer it."""
        with self._lock:
            for queue in self._lanes.values():
                if call in queue:
                    queue.remove(call)

    @property
    def waiting(self) -> bool:
        with self._lock:
            return any(self._lanes.values())

    def received(self, event: dict[str, Any]) -> None:
        """One event: it belongs to the oldest unanswered create of its lane."""
        lane = event.get("stream_id")
        kind = text(event.get("type"))
        with self._lock:
            queue = self._lanes.get(lane if isinstance(lane, str) else None)
            if not queue:
                return
            call = queue[0]
            if kind in FINAL_EVENTS or kind == _ERROR:
                queue.popleft()
        if call is None:
            return
        if kind == _ERROR:
            error = field(event, "error")
            call.fail(ResponseWsError(text(field(error, "message")) or "error event"))
            return
        call.observe_event(event)
        if kind in FINAL_EVENTS:
            call.finish()

    def closed(self) -> None:
        """The connection closed: every create still unanswered ends with what was seen of it,
        abandoned before its final event (cost-model rule 12)."""
        with self._lock:
            calls = [call for queue in self._lanes.values() for call in queue if call is not None]
            self._lanes.clear()
        for call in calls:
            call.stop()


_connections: weakref.WeakKeyDictionary[Any, SocketCalls] = weakref.WeakKeyDictionary()
_connections_lock = threading.Lock()


def _calls_of(connection: Any, *, create: bool) -> SocketCalls | None:
    """The calls of a Responses connection; None for any other socket (or none yet, unless `create`)."""
    calls = _connections.get(connection)
    if calls is not None or not create:
        return calls
    request = getattr(connection, "request", None)
    path = str(getattr(request, "path", "") or "").partition("?")[0].rstrip("/")
    if not path.endswith(_RESPONSES_PATH_END):
        return None
    with _connections_lock:
        return _connections.setdefault(connection, SocketCalls())


def _json_object(frame: Any) -> dict[str, Any] | None:
    """A text or binary frame's JSON object; None for anything else (frames are the peer's)."""
    if not isinstance(frame, str | bytes):
        return None
    try:
        value = json.loads(frame)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _create_payload(frame: Any) -> dict[str, Any] | None:
    """The `response.create` a frame sends, if it is one (a cheap look before parsing)."""
    if isinstance(frame, str):
        if _CREATE not in frame:
            return None
    elif not isinstance(frame, bytes) or _CREATE.encode() not in frame:
        return None
    payload = _json_object(frame)
    return payload if payload is not None and payload.get("type") == _CREATE else None


def _client_of(connection: Any) -> SocketClient:
    """The server the handshake named (its `Host` header, as an HTTP call's base URL names it)."""
    headers = getattr(getattr(connection, "request", None), "headers", None)
    host = headers.get("Host") if headers is not None else None
    if not isinstance(host, str) or not host:
        return SocketClient(_Address(None, None))
    url = urlsplit("//" + host)
    try:
        port = url.port
    except ValueError:
        port = None
    return SocketClient(_Address(url.hostname, port))


def _start(
    runtime: Runtime | None, connection: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[SocketCalls | None, ResponsesCall | None]:
    """(calls, call) for a frame about to be sent; (None, None) when it is not a tracked create."""
    if runtime is None or not is_instrumentation_enabled():
        return None, None
    try:
        calls = _calls_of(connection, create=True)
        payload = _create_payload(args[0] if args else kwargs.get("message")) if calls is not None else None
        if calls is None or payload is None:
            return None, None
        return calls, calls.sent(runtime, payload, _client_of(connection))
    except Exception as exc:
        report_internal_error("websocket send", exc)
        return None, None


def _unsent(calls: SocketCalls | None, call: ResponsesCall | None, exc: BaseException) -> None:
    if calls is not None and call is not None:
        calls.unsent(call)
        call.fail(exc)


def _received(connection: Any, frame: Any) -> None:
    calls = _calls_of(connection, create=False)
    if calls is None or not calls.waiting:
        return
    try:
        event = _json_object(frame)
        if event is not None:
            calls.received(event)
    except Exception as exc:
        report_internal_error("websocket recv", exc)


def _closed(connection: Any) -> None:
    calls = _calls_of(connection, create=False)
    if calls is not None:
        try:
            calls.closed()
        except Exception as exc:
            report_internal_error("websocket close", exc)


def _recv_failed(connection: Any, exc: BaseException) -> None:
    """A receive raised: when because the connection closed, its unanswered creates end."""
    if type(exc).__module__.startswith("websockets") and any(
        base.__name__ == "ConnectionClosed" for base in type(exc).__mro__
    ):
        _closed(connection)


Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]
Args = tuple[Any, ...]
Kwargs = dict[str, Any]


def socket_wrappers(runtime_of: Callable[[], Runtime | None], *, asynchronous: bool) -> dict[str, Wrapper]:
    """The `send`, `recv` and `close` wrappers of a `websockets` client connection class."""
    if asynchronous:

        async def send_async(wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs) -> Any:
            calls, call = _start(runtime_of(), instance, args, kwargs)
            try:
                return await wrapped(*args, **kwargs)
            except BaseException as exc:
                _unsent(calls, call, exc)
                raise

        async def recv_async(wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs) -> Any:
            try:
                frame = await wrapped(*args, **kwargs)
            except BaseException as exc:
                _recv_failed(instance, exc)
                raise
            _received(instance, frame)
            return frame

        async def close_async(wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs) -> Any:
            try:
                return await wrapped(*args, **kwargs)
            finally:
                _closed(instance)

        return {"send": send_async, "recv": recv_async, "close": close_async}

    def send(wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs) -> Any:
        calls, call = _start(runtime_of(), instance, args, kwargs)
        try:
            return wrapped(*args, **kwargs)
        except BaseException as exc:
            _unsent(calls, call, exc)
            raise

    def recv(wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs) -> Any:
        try:
            frame = wrapped(*args, **kwargs)
        except BaseException as exc:
            _recv_failed(instance, exc)
            raise
        _received(instance, frame)
        return frame

    def close(wrapped: Callable[..., Any], instance: Any, args: Args, kwargs: Kwargs) -> Any:
        try:
            return wrapped(*args, **kwargs)
        finally:
            _closed(instance)

    return {"send": send, "recv": recv, "close": close}
