"""`OpenAIImageCostInstrumentor`: patches the `openai` SDK's image entry points.

Each patched method is wrapped by one of two shells (sync or async) that differ only in
`await`; everything else is shared. A call made while another instrumented call is running
(an SDK helper calling `create` inside `stream`) is not tracked twice.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Collection
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap
from wrapt import wrap_function_wrapper

from . import extract
from .calls import ImagesCall, Runtime, TrackedCall, client_of
from .config import ENV_AZURE_DEPLOYMENTS, ENV_DEFAULT_IMAGE_MODEL, ENV_PRICES, Settings, load_settings
from .extract import given
from .extract_responses import documented_default_tool_model, image_tool
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

# Starts tracking a call to a patched method, or returns None to leave the call alone.
StartCall = Callable[[Runtime, Any, tuple[Any, ...], dict[str, Any]], TrackedCall | None]


def _images(operation: str) -> StartCall:
    return lambda runtime, resource, args, kwargs: ImagesCall(runtime, operation, resource, kwargs)


def _responses_create(
    runtime: Runtime, resource: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> TrackedCall | None:
    """`create` / `parse`: tracked only when the request offers the `image_generation` tool."""
    if image_tool(given(kwargs, "tools")) is None:
        return None
    return ResponsesCall(runtime, client_of(resource), args, kwargs, retrieve=False)


def _responses_retrieve(
    runtime: Runtime, resource: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> TrackedCall | None:
    """`retrieve`: whether it concerns images is known only from the response it returns."""
    return ResponsesCall(runtime, client_of(resource), args, kwargs, retrieve=True)


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

# Where the SDK builds each HTTP attempt of a request (its retry loop calls it once per attempt).
_ATTEMPTS = ("openai._base_client", "BaseClient", "_build_request")


class _Active:
    """The runtime of the current instrumentation; None once uninstrumented.

    Wrappers consult it on every call, so an SDK object that captured a wrapped method before
    `uninstrument()` (e.g. a cached `with_raw_response`) stops recording too.
    """

    runtime: Runtime | None = None


def _current_runtime() -> Runtime | None:
    return _Active.runtime


def _begin(patch: Patch, resource: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> TrackedCall | None:
    runtime = _Active.runtime
    if runtime is None or _inside_call.get() is not None or not is_instrumentation_enabled():
        return None
    try:
        return patch.start(runtime, resource, args, kwargs)
    except Exception as exc:
        report_internal_error(f"start {patch.owner}.{patch.method}", exc)
        return None


def _count_attempt(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Note the retry number of each HTTP attempt the SDK makes for the call being sent."""
    call = _inside_call.get()
    if call is not None:
        retries = kwargs.get("retries_taken")
        if isinstance(retries, int) and retries > call.resend_count:
            call.resend_count = retries
    return wrapped(*args, **kwargs)


def _sync_wrapper(patch: Patch) -> Callable[..., Any]:
    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        call = _begin(patch, instance, args, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        # While the SDK sends: this call is the one being sent, its span current. Plain
        # try/finally pairs rather than generator context managers (~1.5 µs each per call).
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

    return _ours(wrapper)


def _async_wrapper(patch: Patch) -> Callable[..., Any]:
    async def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        call = _begin(patch, instance, args, kwargs)
        if call is None:
            return await wrapped(*args, **kwargs)
        # While the SDK sends: this call is the one being sent, its span current. Plain
        # try/finally pairs rather than generator context managers (~1.5 µs each per call).
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

    return _ours(wrapper)


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

    Keyword arguments of `instrument()`: `tracer_provider`, `meter_provider`, and the settings
    of `config.Settings` (`prices_path`, `metric_attributes`, `azure_deployments`,
    `default_image_model`, `capture_message_content`), which override the environment.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _INSTRUMENTS

    def _instrument(self, **kwargs: Any) -> None:
        settings = load_settings(kwargs)
        tracer = trace.get_tracer(
            __name__, __version__, kwargs.get("tracer_provider"), schema_url=_SCHEMA_URL
        )
        meter = metrics.get_meter(__name__, __version__, kwargs.get("meter_provider"), schema_url=_SCHEMA_URL)
        _Active.runtime = Runtime(
            tracer=tracer,
            instruments=Instruments.create(meter),
            settings=settings,
            prices=_load_prices(settings),
            default_tool_model=_sdk_default_tool_model(),
        )
        for patch in _available(PATCHES):
            shell = _async_wrapper if patch.owner.startswith("Async") else _sync_wrapper
            wrap_function_wrapper(patch.module, f"{patch.owner}.{patch.method}", shell(patch))
        module, owner, method = _ATTEMPTS
        if hasattr(_sdk_class(module, owner), method):
            wrap_function_wrapper(module, f"{owner}.{method}", _ours(_count_attempt))
        for module, owner, asynchronous in SOCKET_CLASSES:
            if _sdk_class(module, owner) is not None:
                wrappers = socket_wrappers(_current_runtime, asynchronous=asynchronous)
                for method, wrapper in wrappers.items():
                    wrap_function_wrapper(module, f"{owner}.{method}", _ours(wrapper))

    def _uninstrument(self, **kwargs: Any) -> None:
        _Active.runtime = None
        for patch in _available(PATCHES):
            _remove_our_layer(_owner(patch), patch.method)
        module, owner, method = _ATTEMPTS
        if hasattr(attempts := _sdk_class(module, owner), method):
            _remove_our_layer(attempts, method)
        for module, owner, _ in SOCKET_CLASSES:
            if (socket_class := _sdk_class(module, owner)) is not None:
                for method in ("send", "recv", "close"):
                    _remove_our_layer(socket_class, method)
