"""`OpenAIImageCostInstrumentor`: patches the `openai` SDK's image entry points.

Each patched method is wrapped by one of two shells (sync or async) that differ only in
`await`; everything else is shared. A call made while another instrumented call is running
(an SDK helper calling `create` inside `stream`) is not tracked twice.

The clients' `request` methods are hooked too, for the calls no method wrapper saw: SDK methods
captured before `instrument()` (a client's cached `with_raw_response` / `with_streaming_response`
holds the methods as they were when first read) still send through `request`. A call a method
wrapper saw (tracked or not) is sent inside it, so the hook leaves it alone: no call is tracked
twice.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Collection
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from opentelemetry import _logs, metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap
from wrapt import wrap_function_wrapper

from . import extract
from .calls import ImagesCall, Runtime, TrackedCall, client_of
from .config import ENV_AZURE_DEPLOYMENTS, ENV_DEFAULT_IMAGE_MODEL, ENV_PRICES, Settings, load_settings
from .extract import given
from .extract_responses import documented_default_tool_model, image_tool, responses_request
from .prices import PriceFileError, PriceTable, load_price_table
from .responses_call import ResponsesCall
from .results import observe_result
from .safety import report_internal_error
from .telemetry import Instruments
from .version import __version__
from .websocket import SOCKET_CLASSES, socket_wrappers

logger = logging.getLogger(__name__)

_INSTRUMENTS = ("openai >= 2.0, < 4",)
_SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"

# Starts tracking a call to a patched method (given the client that sends it, the method's
# arguments), or returns None to leave the call alone.
StartCall = Callable[[Runtime, Any, tuple[Any, ...], dict[str, Any]], TrackedCall | None]


def _images(operation: str) -> StartCall:
    return lambda runtime, client, args, kwargs: ImagesCall(runtime, operation, client, kwargs)


def _responses_create(
    runtime: Runtime, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> TrackedCall | None:
    """`create` / `parse`: tracked only when the request offers the `image_generation` tool."""
    tool = image_tool(given(kwargs, "tools"))
    if tool is None:
        return None
    return ResponsesCall(runtime, client, responses_request(args, kwargs, tool), retrieve=False)


def _responses_retrieve(
    runtime: Runtime, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> TrackedCall | None:
    """`retrieve`: whether it concerns images is known only from the response it returns."""
    return ResponsesCall(runtime, client, responses_request(args, kwargs, None), retrieve=True)


@dataclass(frozen=True, slots=True)
class Patch:
    """One SDK method to wrap, and how to start tracking a call to it."""

    module: str
    owner: str
    method: str
    start: StartCall


PATCHES: tuple[Patch, ...] = (
    *(
        Patch("openai.resources.images", owner, method, _images(operation))
        for owner in ("Images", "AsyncImages")
        for method, operation in (
            ("generate", extract.GENERATE),
            ("edit", extract.EDIT),
            ("create_variation", extract.VARIATION),
        )
    ),
    # `responses.stream(...)` calls `create` (new response) or `retrieve` (resumed stream).
    *(
        Patch(module, owner, method, start)
        for module in ("openai.resources.responses.responses", "openai.resources.beta.responses.responses")
        for owner in ("Responses", "AsyncResponses")
        for method, start in (
            ("create", _responses_create),
            ("parse", _responses_create),
            ("retrieve", _responses_retrieve),
        )
    ),
)

# The call whose SDK request is being sent in this context (None outside our calls).
_inside_call: ContextVar[TrackedCall | None] = ContextVar("otel_image_cost_inside_call", default=None)
# True while a method wrapper sends a call it chose not to track: the request hook leaves it too.
_passed_over: ContextVar[bool] = ContextVar("otel_image_cost_passed_over", default=False)

# Where the SDK's retry loop waits before each retry (never called for a request that needs none).
_RETRY_WAITS = (
    ("openai._base_client", "SyncAPIClient", "_sleep_for_retry"),
    ("openai._base_client", "AsyncAPIClient", "_sleep_for_retry"),
)
# Where every SDK request is sent, whichever method object made it: (module, class, method).
_REQUESTS = (
    ("openai._base_client", "SyncAPIClient", "request"),
    ("openai._base_client", "AsyncAPIClient", "request"),
)
# The image methods' requests, as `request` receives them (before an Azure client adds its
# deployment): POST path -> how to start tracking; GET /responses/{id} is a retrieve.
_POSTS: dict[str, StartCall] = {
    "/images/generations": _images(extract.GENERATE),
    "/images/edits": _images(extract.EDIT),
    "/images/variations": _images(extract.VARIATION),
    "/responses": _responses_create,
}
_RESPONSE_PATH = "/responses/"


class _Active:
    """The runtime of the current instrumentation; None once uninstrumented.

    Wrappers consult it on every call, so an SDK object that captured a wrapped method before
    `uninstrument()` (e.g. a cached `with_raw_response`) stops recording too.
    """

    runtime: Runtime | None = None


def _current_runtime() -> Runtime | None:
    return _Active.runtime


def _begin(patch: Patch, resource: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> TrackedCall | None:
    return _start(patch.start, client_of(resource), args, kwargs, f"{patch.owner}.{patch.method}")


def _start(
    start: StartCall, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any], where: str
) -> TrackedCall | None:
    runtime = _Active.runtime
    if runtime is None or _inside_call.get() is not None or not is_instrumentation_enabled():
        return None
    try:
        return start(runtime, client, args, kwargs)
    except Exception as exc:
        report_internal_error(f"start {where}", exc)
        return None


def _begin_request(client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> TrackedCall | None:
    """Track a request no method wrapper is sending (one made by a method cached unwrapped)."""
    if _Active.runtime is None or _inside_call.get() is not None or _passed_over.get():
        return None  # the common case: a request a method wrapper already saw, or not instrumented
    try:
        options: Any = kwargs.get("options", args[1] if len(args) > 1 else None)
        method, path = str(options.method).lower(), options.url
        if not isinstance(path, str):
            return None
        body = options.json_data if isinstance(options.json_data, dict) else {}
        arguments: dict[str, Any] = {**body, "extra_body": options.extra_json}
        if method == "post" and path in _POSTS:
            return _start(_POSTS[path], client, (), arguments, f"request {path}")
        response_id = path.removeprefix(_RESPONSE_PATH)
        if method == "get" and path.startswith(_RESPONSE_PATH) and response_id and "/" not in response_id:
            query = options.params if isinstance(options.params, dict) else {}
            return _start(_responses_retrieve, client, (response_id,), {**query}, "request retrieve")
    except Exception as exc:
        report_internal_error("request hook", exc)
    return None


def _count_retry(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Note each retry the SDK is about to make for the call being sent (the wait before it).

    Hooked where the SDK waits rather than where it builds each attempt, so that a call that
    needs no retry, nearly every call, pays nothing here. Returns the SDK's own result (for the
    async client, the coroutine the SDK awaits)."""
    call = _inside_call.get()
    if call is not None:
        retries = kwargs.get("retries_taken")
        if isinstance(retries, int) and retries >= call.resend_count:
            call.resend_count = retries + 1
    return wrapped(*args, **kwargs)


def _send(
    call: TrackedCall, wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Send a tracked call: while the SDK sends, this call is the one being sent, its span
    current. Plain try/finally pairs rather than generator context managers (~1.5 µs each per call)."""
    sending = _inside_call.set(call)
    try:
        active = call.activate()
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        finally:
            call.deactivate(active)
    finally:
        _inside_call.reset(sending)
    return observe_result(call, result, streaming=call.streaming)


async def _send_async(
    call: TrackedCall, wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """`_send` for a coroutine method."""
    sending = _inside_call.set(call)
    try:
        active = call.activate()
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        finally:
            call.deactivate(active)
    finally:
        _inside_call.reset(sending)
    return observe_result(call, result, streaming=call.streaming)


def _sync_wrapper(patch: Patch) -> Callable[..., Any]:
    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        call = _begin(patch, instance, args, kwargs)
        if call is None:
            passing = _passed_over.set(True)
            try:
                return wrapped(*args, **kwargs)
            finally:
                _passed_over.reset(passing)
        return _send(call, wrapped, args, kwargs)

    return _ours(wrapper)


def _async_wrapper(patch: Patch) -> Callable[..., Any]:
    async def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        call = _begin(patch, instance, args, kwargs)
        if call is None:
            passing = _passed_over.set(True)
            try:
                return await wrapped(*args, **kwargs)
            finally:
                _passed_over.reset(passing)
        return await _send_async(call, wrapped, args, kwargs)

    return _ours(wrapper)


def _sync_request(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    call = _begin_request(instance, args, kwargs)
    if call is None:
        return wrapped(*args, **kwargs)
    return _send(call, wrapped, args, kwargs)


async def _async_request(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    call = _begin_request(instance, args, kwargs)
    if call is None:
        return await wrapped(*args, **kwargs)
    return await _send_async(call, wrapped, args, kwargs)


_OURS = "_otel_image_cost_wrapper"


def _ours(wrapper: Callable[..., Any]) -> Callable[..., Any]:
    setattr(wrapper, _OURS, True)
    return wrapper


def _remove_our_layer(owner: Any, method: str) -> None:
    """Take our wrapper out of `owner.method`, wherever it sits among other instrumentations'.

    `opentelemetry.instrumentation.utils.unwrap` pops the outermost wrapper, which is another
    plugin's when it instrumented after us; this splices out our own layer and leaves theirs.
    """
    node = owner.__dict__.get(method)
    if _is_our_layer(node):
        unwrap(owner, method)
        return
    while hasattr(node, "_self_wrapper"):  # a wrapt function wrapper, ours or another plugin's
        inner = node.__wrapped__
        if _is_our_layer(inner):
            node.__wrapped__ = inner.__wrapped__
            return
        node = inner


def _is_our_layer(value: Any) -> bool:
    return bool(getattr(getattr(value, "_self_wrapper", None), _OURS, False))


def _sdk_class(module: str, name: str) -> Any:
    """An SDK class by module and name; None when this SDK version does not have it."""
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def _owner(patch: Patch) -> Any:
    return _sdk_class(patch.module, patch.owner)


def _available(patches: tuple[Patch, ...]) -> list[Patch]:
    return [p for p in patches if hasattr(_owner(p), p.method)]


def _sdk_default_tool_model() -> str | None:
    try:
        from openai.types.responses import tool

        return documented_default_tool_model(inspect.getsource(tool))
    except (ImportError, OSError, TypeError):
        return None


def _load_prices(settings: Settings) -> PriceTable | None:
    try:
        prices = load_price_table(settings.prices_path)
    except Exception as exc:  # PriceFileError, or anything a hostile file provokes: never raise
        exc = exc if isinstance(exc, PriceFileError) else PriceFileError(f"{type(exc).__name__}")
        logger.error(
            "otel-image-cost: ignoring %s=%r: %s; expected a readable YAML or JSON price file with the "
            "schema of the built-in prices.yaml; image costs will be reported as unknown",
            ENV_PRICES,
            settings.prices_path,
            exc,
        )
        return None
    _check_models(settings, prices)
    return prices


def configured_models_unpriced(settings: Settings, prices: PriceTable) -> list[tuple[str, str]]:
    """(setting, model) for every model a setting names that the price table cannot price."""
    configured = [(ENV_DEFAULT_IMAGE_MODEL, settings.default_image_model)]
    configured += [(ENV_AZURE_DEPLOYMENTS, model) for model in settings.azure_deployments.values()]
    return [(setting, model) for setting, model in configured if model and prices.lookup(model) is None]


def _check_models(settings: Settings, prices: PriceTable) -> None:
    """Warn about configured models the price table cannot price (their calls stay unpriced)."""
    for setting, model in configured_models_unpriced(settings, prices):
        logger.warning(
            "otel-image-cost: %s names %r, which the price table does not know; expected one of %s; "
            "its calls will be reported as unpriced (unknown_model)",
            setting,
            model,
            ", ".join(sorted(prices.models)),
        )


class OpenAIImageCostInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Prices every OpenAI image call and attributes it to a user and tenant.

    Keyword arguments of `instrument()`: `tracer_provider`, `meter_provider`, `logger_provider`
    (billing records; default: the global one), and the settings of `config.Settings`
    (`prices_path`, `metric_attributes`, `azure_deployments`, `default_image_model`,
    `capture_message_content`, `billing_records`), which override the environment.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _INSTRUMENTS

    def _instrument(self, **kwargs: Any) -> None:
        settings = load_settings(kwargs)
        tracer = trace.get_tracer(
            __name__, __version__, kwargs.get("tracer_provider"), schema_url=_SCHEMA_URL
        )
        meter = metrics.get_meter(__name__, __version__, kwargs.get("meter_provider"), schema_url=_SCHEMA_URL)
        billing = None
        if settings.billing_records:
            billing = _logs.get_logger(
                __name__, __version__, kwargs.get("logger_provider"), schema_url=_SCHEMA_URL
            )
        _Active.runtime = Runtime(
            tracer=tracer,
            instruments=Instruments.create(meter),
            settings=settings,
            prices=_load_prices(settings),
            default_tool_model=_sdk_default_tool_model(),
            billing=billing,
        )
        for patch in _available(PATCHES):
            shell = _async_wrapper if patch.owner.startswith("Async") else _sync_wrapper
            wrap_function_wrapper(patch.module, f"{patch.owner}.{patch.method}", shell(patch))
        for module, owner, method in _RETRY_WAITS:
            if hasattr(_sdk_class(module, owner), method):
                wrap_function_wrapper(module, f"{owner}.{method}", _ours(_count_retry))
        for (module, owner, method), hook in zip(_REQUESTS, (_sync_request, _async_request), strict=True):
            if hasattr(_sdk_class(module, owner), method):
                wrap_function_wrapper(module, f"{owner}.{method}", _ours(hook))
        for module, owner, asynchronous in SOCKET_CLASSES:
            if _sdk_class(module, owner) is not None:
                wrappers = socket_wrappers(_current_runtime, asynchronous=asynchronous)
                for method, wrapper in wrappers.items():
                    wrap_function_wrapper(module, f"{owner}.{method}", _ours(wrapper))

    def _uninstrument(self, **kwargs: Any) -> None:
        _Active.runtime = None
        for patch in _available(PATCHES):
            _remove_our_layer(_owner(patch), patch.method)
        for module, owner, method in (*_RETRY_WAITS, *_REQUESTS):
            if hasattr(hooked := _sdk_class(module, owner), method):
                _remove_our_layer(hooked, method)
        for module, owner, _ in SOCKET_CLASSES:
            if (socket_class := _sdk_class(module, owner)) is not None:
                for method in ("send", "recv", "close"):
                    _remove_our_layer(socket_class, method)
