"""`OpenAIImageCostInstrumentor`: patches the `openai` SDK's image entry points.

Each patched method is wrapped by one of two shells (sync or async) that differ only in
`await`; everything else is shared. A call made while another instrumented call is running
(an SDK helper calling `create` inside `stream`) is not tracked twice.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap
from wrapt import wrap_function_wrapper

from . import extract
from .calls import ImagesCall, Runtime, TrackedCall
from .config import Settings, load_settings
from .prices import PriceFileError, PriceTable, load_price_table
from .results import observe_result
from .safety import report_internal_error
from .telemetry import Instruments
from .version import __version__

logger = logging.getLogger(__name__)

_INSTRUMENTS = ("openai >= 2.0, < 4",)
_SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"

StartCall = Callable[[Runtime, Any, dict[str, Any]], TrackedCall]


def _images(operation: str) -> StartCall:
    return lambda runtime, resource, kwargs: ImagesCall(runtime, operation, resource, kwargs)


@dataclass(frozen=True, slots=True)
class Patch:
    """One SDK method to wrap, and how to start tracking a call to it."""

    module: str
    owner: str
    method: str
    start: StartCall


PATCHES: tuple[Patch, ...] = tuple(
    Patch("openai.resources.images", owner, method, _images(operation))
    for owner in ("Images", "AsyncImages")
    for method, operation in (
        ("generate", extract.GENERATE),
        ("edit", extract.EDIT),
        ("create_variation", extract.VARIATION),
    )
)

_inside_call: ContextVar[bool] = ContextVar("otel_image_cost_inside_call", default=False)


class _Active:
    """The runtime of the current instrumentation; None once uninstrumented.

    Wrappers consult it on every call, so an SDK object that captured a wrapped method before
    `uninstrument()` (e.g. a cached `with_raw_response`) stops recording too.
    """

    runtime: Runtime | None = None


def _begin(patch: Patch, resource: Any, kwargs: dict[str, Any]) -> TrackedCall | None:
    runtime = _Active.runtime
    if runtime is None or _inside_call.get() or not is_instrumentation_enabled():
        return None
    try:
        return patch.start(runtime, resource, kwargs)
    except Exception as exc:
        report_internal_error(f"start {patch.owner}.{patch.method}", exc)
        return None


@contextmanager
def _sending(call: TrackedCall) -> Iterator[None]:
    token = _inside_call.set(True)
    try:
        with call.activated():
            yield
    finally:
        _inside_call.reset(token)


def _sync_wrapper(patch: Patch) -> Callable[..., Any]:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = _begin(patch, instance, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        with _sending(call):
            try:
                result = wrapped(*args, **kwargs)
            except BaseException as exc:
                call.fail(exc)
                raise
        return observe_result(call, result, streaming=call.streaming)

    return wrapper


def _async_wrapper(patch: Patch) -> Callable[..., Any]:
    async def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        call = _begin(patch, instance, kwargs)
        if call is None:
            return await wrapped(*args, **kwargs)
        with _sending(call):
            try:
                result = await wrapped(*args, **kwargs)
            except BaseException as exc:
                call.fail(exc)
                raise
        return observe_result(call, result, streaming=call.streaming)

    return wrapper


def _owner(patch: Patch) -> Any:
    return getattr(importlib.import_module(patch.module), patch.owner)


def _load_prices(settings: Settings) -> PriceTable | None:
    try:
        return load_price_table(settings.prices_path)
    except PriceFileError as exc:
        logger.error("otel-image-cost: %s; image costs will be reported as unknown", exc)
        return None


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
        )
        for patch in PATCHES:
            shell = _async_wrapper if patch.owner.startswith("Async") else _sync_wrapper
            wrap_function_wrapper(patch.module, f"{patch.owner}.{patch.method}", shell(patch))

    def _uninstrument(self, **kwargs: Any) -> None:
        _Active.runtime = None
        for patch in PATCHES:
            unwrap(_owner(patch), patch.method)
