"""One instrumented SDK call, from its start to its single end: span, cost and metrics.

`TrackedCall` owns the lifecycle every call shares (span, clock, attribution, ending exactly
once, failures); `ImagesCall` adds what the Images API asks and answers.
"""

from __future__ import annotations

import functools
import operator
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from contextvars import Token
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import Logger
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from . import telemetry as t
from .attribution import (
    MAX_VALUE_CHARS,
    current_attribution,
    exported_attribution,
    safe_value,
    span_attribution,
    valid_text,
)
from .billing import billing_attributes, emit_billing_record
from .config import Settings
from .cost import Cost, ImageGeneration, price_image_generation
from .extract import (
    IMAGE_REQUEST_ARGUMENTS,
    ImageRequest,
    ImagesOutcome,
    ImagesStreamTally,
    gif_frame_count,
    image_request,
    images_response_outcome,
    request_prompt,
    request_user,
)
from .memo import BoundedMemo
from .prices import PriceTable
from .safety import report_internal_error
from .text_prices import price_svg_author

# What the Images API documents when a call leaves quality or size out (DALL·E only; the GPT
# image models default to `auto`, which the response then resolves).
_DOCUMENTED_DEFAULTS: dict[str, tuple[str | None, str | None]] = {
    "dall-e-2": ("standard", "1024x1024"),
    "dall-e-3": ("standard", "1024x1024"),
}
_AUTO = "auto"
_PRICE_FILE_ERROR = "price_file_error"


class PricedResponses:
    """The ids of responses already priced, so a background response polled again, or a stream
    resumed, is never counted twice. Bounded: the oldest ids are forgotten first."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def first_time(self, response_id: str | None) -> bool:
        if response_id is None:
            return True
        with self._lock:
            if response_id in self._ids:
                return False
            self._ids[response_id] = None
            if len(self._ids) > self._capacity:
                self._ids.popitem(last=False)
            return True


@dataclass(frozen=True, slots=True)
class Runtime:
    """What every call needs, resolved once by `instrument()`."""

    tracer: Tracer
    instruments: t.Instruments
    settings: Settings
    prices: PriceTable | None  # None when the price file could not be loaded: costs stay unknown
    default_tool_model: str | None = None  # the Responses image tool's default, as the SDK documents it
    priced_responses: PricedResponses = field(default_factory=PricedResponses)
    billing: Logger | None = None  # where billing records go; None when they are turned off
    # What each kind of Images call asks for, resolved once per kind (see `images_call_kind`).
    images_call_kinds: BoundedMemo[Hashable, ImagesCallKind] = field(default_factory=lambda: BoundedMemo(256))

    def price(self, generation: ImageGeneration) -> Cost:
        if self.prices is None:
            return Cost(
                source="unknown", components={}, pricing_version=None, unpriced_reason=_PRICE_FILE_ERROR
            )
        return price_image_generation(generation, self.prices)


def client_of(resource: Any) -> Any:
    """The `OpenAI` / `AzureOpenAI` client behind an SDK resource object."""
    return getattr(resource, "_client", None)


def is_azure(client: Any) -> bool:
    return type(client).__name__ in ("AzureOpenAI", "AsyncAzureOpenAI")


def server_of(client: Any) -> tuple[str | None, int | None]:
    """(host, port) of the client's base URL, read once per URL object (the SDK keeps one per
    client; the module-level client's follows `openai.base_url`, so the key is the URL itself)."""
    url = getattr(client, "base_url", None)
    known = _SERVERS.get(id(url))
    if known is not None and known[0] is url:
        return known[1], known[2]
    host, port = getattr(url, "host", None) or None, getattr(url, "port", None)
    _SERVERS.remember(id(url), (url, host, port))  # holding the URL keeps its id from being reused
    return host, port


_SERVERS: BoundedMemo[int, tuple[Any, str | None, int | None]] = BoundedMemo(64)


def resolve_image_model(
    request_model: str | None,
    *,
    azure_deployment: str | None,
    settings: Settings,
    prices: PriceTable | None,
) -> tuple[str | None, str | None, str | None]:
    """(image model, `openai.image.model.source`, unpriced reason) for an Images API call.

    `azure_deployment` is None for the OpenAI client; for Azure it is the deployment the call
    goes to (the client's own deployment, else the `model` argument).
    """
    if azure_deployment is not None:
        mapped = settings.azure_deployments.get(azure_deployment)
        if mapped:
            return mapped, "deployment_map", None
        if prices is not None and prices.lookup(azure_deployment) is not None:
            return azure_deployment, "request", None
        return None, None, "unknown_deployment"
    if request_model:
        return request_model, "request", None
    if settings.default_image_model:
        return settings.default_image_model, "default", None
    return None, None, "no_model"


def effective(reported: str | None, requested: str | None, default: str | None) -> str:
    """The contract's rule: reported, else requested, else documented default, else `auto`."""
    return reported or requested or default or _AUTO


class TrackedCall:
    """The lifecycle shared by every instrumented call.

    The span normally starts with the call. A `deferred` call (a `responses.retrieve`, which
    may or may not concern images) opens its span only when the response shows it does, with
    the call's real start time.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        operation_name: str,
        image_operation: str,
        request_model: str | None,
        request_user: str | None,
        prompt: str | None,
        client: Any,
        streaming: bool,
        attributes: t.Attributes,
        deferred: bool = False,
    ) -> None:
        """`attributes` are the call kind's own request attributes; the shared ones are added here."""
        attributes.update(
            {
                t.PROVIDER_NAME: t.PROVIDER_AZURE if is_azure(client) else t.PROVIDER_OPENAI,
                t.OPERATION_NAME: operation_name,
                t.OUTPUT_TYPE: t.OUTPUT_IMAGE,
                t.IMAGE_OPERATION: image_operation,
                t.IMAGE_STREAM: streaming,
            }
        )
        if request_model is not None:
            attributes[t.REQUEST_MODEL] = request_model
        if runtime.settings.capture_message_content and prompt is not None:
            attributes[t.IMAGE_PROMPT] = valid_text(prompt)
        self.runtime = runtime
        self.streaming = streaming
        self.attributes = attributes
        self.attribution = current_attribution(request_user, trust_baggage=runtime.settings.trust_baggage)
        self.span_name = f"{operation_name} {request_model}" if request_model else operation_name
        self._ended = threading.Lock()
        self.outcome = t.OUTCOME_OK
        self.request_id: str | None = None
        self._unpriced_reasons: tuple[str, ...] = ()
        self._exported: dict[str, str] | None = None  # the attribution as exported, made once
        self._unsent: t.Attributes = {}  # set since the span started; sent to it once, at its end
        self.resend_count = 0  # HTTP attempts the SDK retried, noted by the instrumentor
        self._started = time.perf_counter()
        self.started_ns = time.time_ns()
        host, port = server_of(client)
        self._server_address = host
        if host is not None:
            attributes[t.SERVER_ADDRESS] = host
            if port is not None:
                attributes[t.SERVER_PORT] = port
        self.span: Span | None = None if deferred else self.open_span()

    def open_span(self) -> Span:
        self.span = self.runtime.tracer.start_span(
            self.span_name,
            kind=SpanKind.CLIENT,
            attributes=self.span_attributes(self.attributes),
            start_time=self.started_ns,
        )
        self._unsent = {}
        return self.span

    def span_attributes(self, attributes: t.Attributes) -> t.Attributes:
        """`attributes` with the attribution: custom keys first, so that ours win a name clash
        and are never the ones the SDK's attribute limit evicts (it drops the oldest)."""
        if not self.attribution:
            return attributes
        attribution = span_attribution(self.attribution, self.runtime.settings)
        return {**{k: v for k, v in attribution.items() if k not in attributes}, **attributes}

    def exported_attribution(self) -> dict[str, str]:
        """The attribution as metrics and billing records carry it (pseudonymised), made once,
        when the call is recorded (a retrieve learns its user from the response)."""
        if self._exported is None:
            self._exported = exported_attribution(self.attribution, self.runtime.settings)
        return self._exported

    def activate(self) -> Token[Context] | None:
        """Make the span current while the SDK sends the request (HTTP spans nest under it).

        Returns the token for `deactivate` (a plain pair of calls: a generator context manager
        costs ~1.5 µs per call)."""
        if self.span is None:
            return None
        return otel_context.attach(trace.set_span_in_context(self.span))

    def deactivate(self, token: Token[Context] | None) -> None:
        if token is not None:
            otel_context.detach(token)

    @property
    def ended(self) -> bool:
        return self._ended.locked()

    def observe_response(self, response: Any) -> None:
        """The final response object (or its JSON) arrived."""

    def observe_event(self, event: Any) -> None:
        """One stream event passed on its way to the application."""

    def observe_request_id(self, request_id: Any) -> None:
        """The `x-request-id` of the HTTP response that carries the result (a header: untrusted)."""
        if isinstance(request_id, str) and request_id:
            self.request_id = safe_value(request_id)

    def final_event_seen(self) -> bool:
        """Whether a stream delivered its final event (call kinds with streams say when)."""
        return True

    def partial_images_seen(self) -> int | None:
        """Partial images a stream delivered so far; None for a call that does not stream."""
        return None

    def fail(self, exc: BaseException) -> None:
        """The SDK raised: record the failure, cost nothing, end the span."""
        if not self._ended.acquire(blocking=False) or self.span is None:
            return
        try:  # plain try/except, not `with swallowed(...)`: the same guard, ~0.8 µs cheaper
            error_type = safe_value(type(exc).__qualname__)
            self.outcome = t.OUTCOME_ERROR
            self.observe_request_id(getattr(exc, "request_id", None))  # an `APIStatusError`'s
            attributes: t.Attributes = {t.ERROR_TYPE: error_type}
            partials = self.partial_images_seen()
            if partials is not None:
                attributes[t.IMAGE_PARTIAL_IMAGES] = partials  # seen before the stream broke
            self.set_attributes(attributes)
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, str(exc) or error_type))
            labels = {**self.metric_labels(), t.ERROR_TYPE: error_type}
            t.record_failure(self.runtime.instruments, self._histogram_labels(labels), self.elapsed())
        except Exception as error:
            report_internal_error("fail", error)
        finally:
            self._end()

    def finish(self) -> None:
        """The call is over (response read, stream ended, closed or dropped): record it once."""
        if not self._ended.acquire(blocking=False):
            return
        try:
            self.record()
        except Exception as exc:
            report_internal_error(f"{type(self).__name__}.finish", exc)
        finally:
            self._end()

    def stop(self) -> None:
        """The application closed or dropped the result: abandoned when a stream's final event
        had not arrived (cost-model rule 12), else the same as `finish`."""
        if self.ended:
            return
        try:
            if self.streaming and not self.final_event_seen():
                self.outcome = t.OUTCOME_ABANDONED
        except Exception as exc:
            report_internal_error(f"{type(self).__name__}.stop", exc)
        self.finish()

    def _end(self) -> None:
        """Write the outcome, emit the billing record, end the span. A span processor may raise
        in `end` (the SDK runs them synchronously and does not catch their errors); that must not
        replace the application's result or exception."""
        span = self.span
        if span is None:
            return  # a retrieve that turned out not to concern images: not our call
        try:
            ending: t.Attributes = {t.IMAGE_OUTCOME: self.outcome}
            if self.request_id is not None:
                ending[t.REQUEST_ID] = self.request_id
            if self.resend_count:
                ending[t.HTTP_RESEND_COUNT] = self.resend_count
            self.set_attributes(ending)
            unsent, self._unsent = self._unsent, {}
            span.set_attributes(unsent)  # everything the call learnt, in one pass of the SDK
            billing = self.runtime.billing
            if billing is not None:
                attribution = self.exported_attribution()
                record = billing_attributes(self.attributes, attribution, self._unpriced_reasons)
                emit_billing_record(billing, span, record)
        except Exception as exc:
            report_internal_error("billing record", exc)
        try:
            span.end()
        except Exception as exc:
            report_internal_error("end span", exc)

    def record(self) -> None:
        """Set the span's result attributes and record the metrics (subclasses)."""

    def elapsed(self) -> float:
        return time.perf_counter() - self._started

    def set_attributes(self, attributes: t.Attributes) -> None:
        """Note attributes for the call's span; they reach it when it ends (the span is exported
        only then, and one `set_attributes` of the SDK costs less than several)."""
        self.attributes.update(attributes)
        self._unsent.update(attributes)

    def metric_labels(self) -> dict[str, Any]:
        """The bounded label set: call attributes of the contract plus the chosen attribution keys."""
        attribution = self.exported_attribution() if self.attribution else {}
        return t.metric_labels(self.attributes, attribution, self.runtime.settings.metric_attributes)

    def _histogram_labels(self, labels: Mapping[str, Any]) -> dict[str, Any]:
        if self._server_address is None:
            return dict(labels)
        return {**labels, t.SERVER_ADDRESS: safe_value(self._server_address)}

    def record_metrics(
        self,
        *,
        parts: Mapping[str, Cost] | None = None,
        images: int = 0,
        partial_images: int = 0,
        tokens: tuple[tuple[str, str, int], ...] = (),
    ) -> None:
        """Record a call that returned: one point per cost part, its counters once each, the histograms."""
        self._unpriced_reasons = tuple(
            cost.unpriced_reason
            for cost in (parts or {}).values()
            if cost.total is None and cost.unpriced_reason
        )
        labels = self.metric_labels()
        t.record_success(
            self.runtime.instruments,
            labels,
            self._histogram_labels(labels),
            parts=parts or {},
            images=images,
            partial_images=partial_images,
            tokens=tokens,
            duration_s=self.elapsed(),
        )


@dataclass(slots=True)
class ImagesCallKind:
    """What every Images call with the same arguments (but prompt and user) shares: the request,
    the image model it resolves to, and its request attributes."""

    request: ImageRequest
    image_model: str | None
    unresolved_reason: str | None
    default_quality: str | None
    default_size: str | None
    attributes: Mapping[str, AttributeValue]


def images_call_kind(
    runtime: Runtime, operation: str, client: Any, kwargs: Mapping[str, Any]
) -> ImagesCallKind:
    """The kind of an Images call, read once per distinct set of arguments (apps repeat a few).

    The key holds each argument's type beside its value (`True == 1`, but `stream=1` is no
    stream). Only small values are kept as keys (short text, word-sized integers, flags, the SDK's
    sentinels): anything else (`extra_body`, a dict; a megabyte string) makes the kind read
    afresh, so the memo holds at most 256 small keys."""
    values = tuple(map(kwargs.get, IMAGE_REQUEST_ARGUMENTS))
    if not all(map(_small, filter(_GIVEN, values))):
        return _read_images_call_kind(runtime, operation, client, kwargs)
    key = (
        operation,
        type(client),
        getattr(client, "_azure_deployment", None),
        values,
        tuple(map(type, values)),
    )
    memo = runtime.images_call_kinds
    known = memo.get(key)
    if known is not None:
        return known
    return memo.remember(key, _read_images_call_kind(runtime, operation, client, kwargs))


_GIVEN = functools.partial(operator.is_not, None)  # most arguments are not passed: skipped in C


def _small(value: object) -> bool:
    """A (passed) argument value small enough to be kept in a memo key, and hashable."""
    kind = type(value)
    if kind is str:
        return len(value) <= MAX_VALUE_CHARS  # type: ignore[arg-type]
    if kind is int:
        return value in t.INT64
    return kind is bool or kind.__name__ in ("Omit", "NotGiven")


def _read_images_call_kind(
    runtime: Runtime, operation: str, client: Any, kwargs: Mapping[str, Any]
) -> ImagesCallKind:
    request = image_request(operation, kwargs)
    deployment = (getattr(client, "_azure_deployment", None) or request.model) if is_azure(client) else None
    model, source, reason = resolve_image_model(
        request.model, azure_deployment=deployment, settings=runtime.settings, prices=runtime.prices
    )
    default_quality, default_size = _DOCUMENTED_DEFAULTS.get(model or "", (None, None))
    attributes: t.Attributes = {
        t.IMAGE_QUALITY: effective(None, request.quality, default_quality),
        t.IMAGE_SIZE: effective(None, request.size, default_size),
        **t.present(
            {
                t.IMAGE_N: request.n,
                t.IMAGE_MODEL: model,
                t.IMAGE_MODEL_SOURCE: source,
                t.IMAGE_PARTIAL_IMAGES_REQUESTED: request.partial_images,
                t.IMAGE_BACKGROUND: request.background,
                t.IMAGE_OUTPUT_FORMAT: request.output_format,
                t.IMAGE_MODERATION: request.moderation,
                t.IMAGE_INPUT_FIDELITY: request.input_fidelity,
                t.IMAGE_COMPLEXITY: request.complexity,
                t.IMAGE_FRAME_COUNT: gif_frame_count(request.output_format, request.frame_count),
            }
        ),
    }
    return ImagesCallKind(request, model, reason, default_quality, default_size, MappingProxyType(attributes))


class ImagesCall(TrackedCall):
    """An `images.generate` / `edit` / `create_variation` call."""

    def __init__(self, runtime: Runtime, operation: str, client: Any, kwargs: Mapping[str, Any]) -> None:
        kind = images_call_kind(runtime, operation, client, kwargs)
        self.request = request = kind.request
        self.image_model = kind.image_model
        self.unresolved_reason = kind.unresolved_reason
        self._outcome: ImagesOutcome | None = None
        self._tally: ImagesStreamTally | None = ImagesStreamTally() if request.stream else None
        self._default_quality, self._default_size = kind.default_quality, kind.default_size
        self.prompt = prompt = request_prompt(kwargs)
        super().__init__(
            runtime,
            operation_name=t.OPERATION_IMAGES,
            image_operation=operation,
            request_model=request.model,
            request_user=request_user(kwargs),
            prompt=prompt,
            client=client,
            streaming=request.stream,
            attributes=dict(kind.attributes),
        )

    def observe_response(self, response: Any) -> None:
        if self.ended:
            return
        try:
            capture = self.runtime.settings.capture_message_content
            self._outcome = images_response_outcome(response, capture_content=capture)
        except Exception as exc:
            report_internal_error("ImagesCall.observe_response", exc)

    def observe_event(self, event: Any) -> None:
        if self._tally is not None and not self.ended:
            try:  # per event: a plain try costs nothing, a `with swallowed(...)` block ~0.8 µs
                self._tally.add(event)
            except Exception as exc:
                report_internal_error("ImagesCall.observe_event", exc)

    def final_event_seen(self) -> bool:
        return self._tally is None or self._tally.images >= self.request.n

    def partial_images_seen(self) -> int | None:
        return self._tally.partial_images if self._tally is not None else None

    def record(self) -> None:
        request = self.request
        outcome = self._outcome or (self._tally.outcome() if self._tally is not None else None)
        received = outcome.images if outcome is not None else 0
        quality = effective(outcome.quality if outcome else None, request.quality, self._default_quality)
        size = effective(outcome.size if outcome else None, request.size, self._default_size)
        partials = outcome.partial_images if outcome is not None else 0
        usage = outcome.usage if outcome is not None else None
        # An abandoned stream is estimated at the images asked for (rule 12): they were being drawn.
        abandoned = self.outcome == t.OUTCOME_ABANDONED
        generation = ImageGeneration(
            model=self.image_model,
            quality=quality,
            size=size,
            images=request.n if outcome is None or abandoned else received,
            partial_images=partials,
            prompt_chars=len(self.prompt) if self.prompt is not None else None,
            usage=None if abandoned else usage,
            output_format=(outcome.output_format if outcome else None) or request.output_format,
            unpriced_reason=self.unresolved_reason,
        )
        parts = {t.PART_IMAGE: self.runtime.price(generation)}
        svg_usage = outcome.svg_usage if outcome is not None else None
        if svg_usage is not None:
            parts[t.PART_SVG_AUTHOR] = price_svg_author(svg_usage)
        attributes: t.Attributes = {
            t.IMAGE_QUALITY: quality,
            t.IMAGE_SIZE: size,
            t.IMAGE_COUNT: received,
            t.IMAGE_PARTIAL_IMAGES: partials,
            **t.parts_attributes(parts),
        }
        if outcome is not None:
            attributes.update(_outcome_attributes(outcome))
        self.set_attributes(attributes)
        self.record_metrics(
            parts=parts,
            images=received,
            partial_images=partials,
            tokens=t.token_points(t.PART_IMAGE, usage) + t.token_points(t.PART_SVG_AUTHOR, svg_usage),
        )


def _outcome_attributes(outcome: ImagesOutcome) -> t.Attributes:
    usage = outcome.usage
    attributes = t.present(
        {
            t.IMAGE_BACKGROUND: outcome.background,
            t.IMAGE_OUTPUT_FORMAT: outcome.output_format,
            t.IMAGE_REVISED_PROMPTS: [valid_text(p) for p in outcome.revised_prompts] or None,
        }
    )
    attributes.update(t.token_attributes(usage))
    attributes.update(t.usage_attributes(usage, outcome.usage_json))
    attributes.update(t.svg_attributes(outcome.svg_usage))
    return attributes
