"""Fault matrix: every failure an image call can meet, through the real SDK over loopback.

Each cell runs the faulty call once uninstrumented and once instrumented and compares what the
application observes (return type and value, or exception type and message), then checks the
plugin's own record: one span per SDK call, ended once, with the right status; counters that
never count a call twice; no log noise, and internal errors logged once, not per call.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from otel_image_cost import OpenAIImageCostInstrumentor, calls, safety
from otel_image_cost import telemetry as plugin_telemetry
from otel_image_cost.extract import ImagesStreamTally

from conftest import Telemetry

Instrument = Callable[..., OpenAIImageCostInstrumentor]

TIMEOUT_S = 10.0
PROMPT = "a cat"  # 5 characters: 2 input text tokens, as the server and the estimator count them
IMAGE_TOOL: list[Any] = [{"type": "image_generation"}]
# gpt-image-1, medium (the server's answer to `auto`), 1024x1024, one image, prompt "a cat":
# 2 text tokens x $5/M + 1056 image tokens x $40/M, whether reported or estimated.
GPT_IMAGE_1_CAT_USD = 0.04225
# Keys whose values differ between two identical calls (timestamps, server-made ids).
VOLATILE_KEYS = frozenset({"id", "created", "created_at", "completed_at", "item_id", "response_id"})
STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    429: openai.RateLimitError,
    500: openai.InternalServerError,
    503: openai.InternalServerError,
}


# -- what the application observes -------------------------------------------------------------


def normalized(value: Any) -> Any:
    """A model dump with the per-call volatile values replaced, so two runs can be compared."""
    if isinstance(value, dict):
        return {k: "<volatile>" if k in VOLATILE_KEYS else normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalized(item) for item in value]
    return value


def dump(value: Any) -> Any:
    if isinstance(value, list):
        return [dump(item) for item in value]
    model_dump = getattr(value, "model_dump", None)
    return normalized(model_dump()) if callable(model_dump) else value


@dataclass(frozen=True)
class Observed:
    """What the application saw: the class of the result (`__class__`, what `isinstance` uses) and
    its dumped value, and the exception's class and message, if one was raised."""

    result_class: type | None
    result: Any
    error_class: type | None
    error: str | None


def observe(action: Callable[[], Any]) -> Observed:
    try:
        result = action()
    except Exception as exc:
        return Observed(None, None, type(exc), str(exc))
    return Observed(result.__class__, dump(result), None, None)


async def observe_async(action: Callable[[], Awaitable[Any]]) -> Observed:
    try:
        result = await action()
    except Exception as exc:
        return Observed(None, None, type(exc), str(exc))
    return Observed(result.__class__, dump(result), None, None)


@dataclass
class StreamRun:
    """A streamed call consumed by the application: the stream's class, the events it saw, and
    the exception that ended the loop, if any."""

    stream_class: type | None = None
    events: list[Any] | None = None
    error_class: type | None = None
    error: str | None = None

    def record_error(self, exc: BaseException) -> None:
        self.error_class, self.error = type(exc), str(exc)


def consume(start: Callable[[], Any]) -> StreamRun:
    run = StreamRun(events=[])
    try:
        stream = start()
        run.stream_class = stream.__class__
        for event in stream:
            assert run.events is not None
            run.events.append(dump(event))
    except Exception as exc:
        run.record_error(exc)
    return run


async def consume_async(start: Callable[[], Awaitable[Any]]) -> StreamRun:
    run = StreamRun(events=[])
    try:
        stream = await start()
        run.stream_class = stream.__class__
        async for event in stream:
            assert run.events is not None
            run.events.append(dump(event))
    except Exception as exc:
        run.record_error(exc)
    return run


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def srv(server: Any) -> Iterator[Any]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def sync_client(srv: Any) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0, timeout=TIMEOUT_S) as c:
        yield c


@pytest.fixture
def aclient(srv: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0, timeout=TIMEOUT_S)


@pytest.fixture(autouse=True)
def fresh_error_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Internal errors are logged once per process; each test starts with none seen."""
    monkeypatch.setattr(safety, "_seen", set())


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="otel_image_cost")
    caplog.set_level(logging.WARNING, logger="opentelemetry")
    return caplog


# -- what the plugin recorded ------------------------------------------------------------------


def plugin_records(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("otel_image_cost") and r.levelno >= level]


def assert_clean_lifecycle(caplog: pytest.LogCaptureFixture) -> None:
    """No span was ended (or written to) twice, and the plugin had nothing to complain about."""
    sdk_warnings = [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")]
    assert not [m for m in sdk_warnings if "ended span" in m], sdk_warnings
    assert plugin_records(caplog) == []


def call_spans(telemetry: Telemetry) -> list[ReadableSpan]:
    return [s for s in telemetry.spans() if not s.name.startswith("execute_tool")]


def duration_count(telemetry: Telemetry) -> int:
    return sum(point.count for _, point in telemetry.points("gen_ai.client.operation.duration"))


def assert_failed_call(telemetry: Telemetry, error_class: type | None) -> ReadableSpan:
    """One span, status ERROR with `error.type`; only the duration histogram recorded, once."""
    assert error_class is not None
    span = telemetry.span()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == error_class.__qualname__
    assert duration_count(telemetry) == 1
    durations = telemetry.points("gen_ai.client.operation.duration")
    assert [attributes["error.type"] for attributes, _ in durations] == [error_class.__qualname__]
    for counter in ("openai.image.cost", "openai.image.generated", "openai.image.unpriced"):
        assert telemetry.sums(counter) == [], counter
    assert telemetry.points("gen_ai.client.token.usage") == []
    return span


def assert_ok_call(telemetry: Telemetry, *, images: int, partial_images: int = 0) -> ReadableSpan:
    """One call span, status UNSET, no `error.type`; each counter recorded once."""
    spans = call_spans(telemetry)
    assert len(spans) == 1, [s.name for s in telemetry.spans()]
    span = spans[0]
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes is not None
    assert "error.type" not in span.attributes
    assert span.attributes["openai.image.count"] == images
    assert span.attributes["openai.image.partial_images"] == partial_images
    assert duration_count(telemetry) == 1
    assert telemetry.total("openai.image.generated") == images
    assert telemetry.total("openai.image.partial_images") == partial_images
    return span


def attr(span: ReadableSpan, key: str) -> Any:
    assert span.attributes is not None
    return span.attributes.get(key)


# -- the calls of the matrix -------------------------------------------------------------------


def images_generate(client: openai.OpenAI, **extra: Any) -> Callable[[], Any]:
    return lambda: client.images.generate(model="gpt-image-1", prompt=PROMPT, **extra)


def images_generate_async(client: openai.AsyncOpenAI, **extra: Any) -> Callable[[], Awaitable[Any]]:
    return lambda: client.images.generate(model="gpt-image-1", prompt=PROMPT, **extra)


def responses_create(client: openai.OpenAI, **extra: Any) -> Callable[[], Any]:
    return lambda: client.responses.create(model="gpt-5", input="draw a cat", tools=IMAGE_TOOL, **extra)


def responses_create_async(client: openai.AsyncOpenAI, **extra: Any) -> Callable[[], Awaitable[Any]]:
    return lambda: client.responses.create(model="gpt-5", input="draw a cat", tools=IMAGE_TOOL, **extra)


def twice(
    srv: Any, instrument: Instrument, fault: int | str | None, run: Callable[[], Any], **settings: Any
) -> tuple[Any, Any]:
    """(uninstrumented, instrumented) observations of the same call meeting the same fault."""
    observations = []
    for instrumented in (False, True):
        if instrumented:
            instrument(**settings)
        srv.reset()
        if fault is not None:
            srv.inject(fault)
        observations.append(run())
    return observations[0], observations[1]


async def twice_async(
    srv: Any,
    instrument: Instrument,
    fault: int | str | None,
    run: Callable[[], Awaitable[Any]],
    **settings: Any,
) -> tuple[Any, Any]:
    observations = []
    for instrumented in (False, True):
        if instrumented:
            instrument(**settings)
        srv.reset()
        if fault is not None:
            srv.inject(fault)
        observations.append(await run())
    return observations[0], observations[1]


# -- HTTP errors with the API's error bodies ---------------------------------------------------


# The sync calls a status error can hit, and the name of the span each must end with.
SYNC_CALLS: dict[str, tuple[Callable[[openai.OpenAI], Any], str]] = {
    "images": (lambda client: observe(images_generate(client)), "generate_content gpt-image-1"),
    "images-stream": (
        lambda client: consume(images_generate(client, stream=True)),
        "generate_content gpt-image-1",
    ),
    "responses": (lambda client: observe(responses_create(client)), "chat gpt-5"),
}


@pytest.mark.parametrize("kind", sorted(SYNC_CALLS))
@pytest.mark.parametrize("status", sorted(STATUS_ERRORS))
def test_status_error(
    status: int,
    kind: str,
    srv: Any,
    sync_client: openai.OpenAI,
    instrument: Instrument,
    telemetry: Telemetry,
    logs: pytest.LogCaptureFixture,
) -> None:
    call, span_name = SYNC_CALLS[kind]
    bare, seen = twice(srv, instrument, status, lambda: call(sync_client))
    assert bare.error_class is STATUS_ERRORS[status]
    assert f"Error code: {status}" in str(bare.error)
    assert getattr(bare, "events", None) in (None, [])  # a stream fails before its first event
    assert seen == bare
    span = assert_failed_call(telemetry, bare.error_class)
    assert span.name == span_name
    assert span.status.description == bare.error
    assert_clean_lifecycle(logs)


@pytest.mark.parametrize("status", sorted(STATUS_ERRORS))
async def test_status_error_images_async(
    status: int,
    srv: Any,
    aclient: openai.AsyncOpenAI,
    instrument: Instrument,
    telemetry: Telemetry,
    logs: pytest.LogCaptureFixture,
) -> None:
    bare, seen = await twice_async(
        srv, instrument, status, lambda: observe_async(images_generate_async(aclient))
    )
    assert bare.error_class is STATUS_ERRORS[status]
    assert seen == bare
    assert_failed_call(telemetry, bare.error_class)
    assert_clean_lifecycle(logs)


@pytest.mark.parametrize("status", sorted(STATUS_ERRORS))
async def test_status_error_responses_stream_async(
    status: int,
    srv: Any,
    aclient: openai.AsyncOpenAI,
    instrument: Instrument,
    telemetry: Telemetry,
    logs: pytest.LogCaptureFixture,
) -> None:
    bare, seen = await twice_async(
        srv, instrument, status, lambda: consume_async(responses_create_async(aclient, stream=True))
    )
    assert bare.error_class is STATUS_ERRORS[status]
    assert seen == bare
    assert_failed_call(telemetry, bare.error_class)
    assert_clean_lifecycle(logs)


# -- the network ---------------------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_connection_refused(
    instrument: Instrument, telemetry: Telemetry, logs: pytest.LogCaptureFixture
) -> None:
    port = closed_port()
    with openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test", max_retries=0, timeout=TIMEOUT_S
    ) as refused:
        bare = observe(images_generate(refused))
        instrument()
        seen = observe(images_generate(refused))
    assert bare.error_class is openai.APIConnectionError
    assert seen == bare
    assert_failed_call(telemetry, openai.APIConnectionError)
    assert_clean_lifecycle(logs)


async def test_connection_refused_responses_async(
    instrument: Instrument, telemetry: Telemetry, logs: pytest.LogCaptureFixture
) -> None:
    refused = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{closed_port()}/v1", api_key="sk-test", max_retries=0, timeout=TIMEOUT_S
    )
    bare = await observe_async(responses_create_async(refused))
    instrument()
    seen = await observe_async(responses_create_async(refused))
    assert bare.error_class is openai.APIConnectionError
    assert seen == bare
    assert_failed_call(telemetry, openai.APIConnectionError)
    assert_clean_lifecycle(logs)


def test_read_timeout(
    srv: Any, instrument: Instrument, telemetry: Telemetry, logs: pytest.LogCaptureFixture
) -> None:
    with openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0, timeout=0.2) as impatient:
        bare, seen = twice(srv, instrument, "delay:1", lambda: observe(images_generate(impatient)))
    assert bare.error_class is openai.APITimeoutError
    assert bare.error == "Request timed out."
    assert seen == bare
    assert_failed_call(telemetry, openai.APITimeoutError)
    assert_clean_lifecycle(logs)


async def test_read_timeout_async_stream(
    srv: Any, instrument: Instrument, telemetry: Telemetry, logs: pytest.LogCaptureFixture
) -> None:
    impatient = openai.AsyncOpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0, timeout=0.2)
    bare, seen = await twice_async(
        srv, instrument, "delay:1", lambda: consume_async(images_generate_async(impatient, stream=True))
    )
    assert bare.error_class is openai.APITimeoutError
    assert seen == bare
    assert_failed_call(telemetry, openai.APITimeoutError)
    assert_clean_lifecycle(logs)


# -- SDK retries: one span per SDK call, not per attempt ------------------------------------------


def test_retries_that_succeed_make_one_span_and_count_once(
    srv: Any, instrument: Instrument, telemetry: Telemetry, logs: pytest.LogCaptureFixture
) -> None:
    with openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=2, timeout=TIMEOUT_S) as patient:

        def run() -> Observed:
            srv.inject(429, count=2)  # answered with retry-after-ms 20, so the retries are quick
            return observe(images_generate(patient))

        bare, seen = twice(srv, instrument, None, run)
    assert bare.error_class is None
    assert seen == bare
    assert [r.headers.get("x-stainless-retry-count") for r in srv.requests] == ["0", "1", "2"]
    span = assert_ok_call(telemetry, images=1)
    assert attr(span, "gen_ai.usage.cost") == GPT_IMAGE_1_CAT_USD
    assert telemetry.sums("openai.image.cost") == [
        (telemetry.sums("openai.image.cost")[0][0], GPT_IMAGE_1_CAT_USD)
    ]
    assert_clean_lifecycle(logs)


async def test_retries_exhausted_async_make_one_failed_span(
    srv: Any, instrument: Instrument, telemetry: Telemetry, logs: pytest.LogCaptureFixture
) -> None:
    patient = openai.AsyncOpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=1, timeout=TIMEOUT_S)

    async def run() -> Observed:
        srv.inject(429, count=2)
        return await observe_async(responses_create_async(patient))

    bare, seen = await twice_async(srv, instrument, None, run)
    assert bare.error_class is openai.RateLimitError
    assert seen == bare
    assert len(srv.requests) == 2
    assert_failed_call(telemetry, openai.RateLimitError)
    assert_clean_lifecycle(logs)


def test_retries_are_recorded_on_the_span(
    srv: Any, instrumented: OpenAIImageCostInstrumentor, telemetry: Telemetry
) -> None:
    with openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=2, timeout=TIMEOUT_S) as patient:
        srv.inject(429, count=2)
        patient.images.generate(model="gpt-image-1", prompt=PROMPT)
    assert attr(telemetry.span(), "http.request.resend_count") == 2


def test_retries_are_recorded_when_the_call_finally_fails(
    srv: Any, instrumented: OpenAIImageCostInstrumentor, telemetry: Telemetry
) -> None:
    with openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=1, timeout=TIMEOUT_S) as patient:
        srv.inject(503, count=2)
        with pytest.raises(openai.InternalServerError):
            patient.images.generate(model="gpt-image-1", prompt=PROMPT)
    span = telemetry.span()
    assert (attr(span, "http.request.resend_count"), attr(span, "error.type")) == (1, "InternalServerError")
    assert len(srv.requests) == 2


def test_a_call_without_retries_has_no_resend_count(
    srv: Any, instrumented: OpenAIImageCostInstrumentor, telemetry: Telemetry
) -> None:
    with openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=2, timeout=TIMEOUT_S) as patient:
        patient.images.generate(model="gpt-image-1", prompt=PROMPT)
    assert "http.request.resend_count" not in dict(telemetry.span().attributes or {})


# -- malformed and unusual answers ---------------------------------------------------------------


def test_malformed_json(
    srv: Any, sync_client: openai.OpenAI, instrument: Instrument, telemetry: Telemetry, logs: Any
) -> None:
    bare, seen = twice(srv, instrument, "malformed_json", lambda: observe(images_generate(sync_client)))
    assert bare.error_class is not None
    assert issubclass(bare.error_class, ValueError)  # the SDK lets json's JSONDecodeError through
    assert seen == bare
    assert_failed_call(telemetry, bare.error_class)
    assert_clean_lifecycle(logs)


def test_malformed_json_responses(
    srv: Any, sync_client: openai.OpenAI, instrument: Instrument, telemetry: Telemetry, logs: Any
) -> None:
    bare, seen = twice(srv, instrument, "malformed_json", lambda: observe(responses_create(sync_client)))
    assert bare.error_class is not None
    assert issubclass(bare.error_class, ValueError)
    assert seen == bare
    assert_failed_call(telemetry, bare.error_class)
    assert_clean_lifecycle(logs)


def test_malformed_json_event_in_stream(
    srv: Any, sync_client: openai.OpenAI, instrument: Instrument, telemetry: Telemetry, logs: Any
) -> None:
    run = lambda: consume(images_generate(sync_client, stream=True, partial_images=1))  # noqa: E731
    bare, seen = twice(srv, instrument, "malformed_json", run)
    assert bare.error_class is not None
    assert issubclass(bare.error_class, ValueError)
    assert bare.events == []
    assert seen == bare
    assert_failed_call(telemetry, bare.error_class)
    assert_clean_lifecycle(logs)


def test_missing_usage_is_estimated(
    srv: Any, sync_client: openai.OpenAI, instrument: Instrument, telemetry: Telemetry, logs: Any
) -> None:
    bare, seen = twice(srv, instrument, "missing_usage", lambda: observe(images_generate(sync_client)))
    assert bare.result_class is openai.types.ImagesResponse
    assert bare.result["usage"] is None
    assert seen == bare
    span = assert_ok_call(telemetry, images=1)
    assert attr(span, "openai.image.cost.source") == "estimate"
    assert attr(span, "gen_ai.usage.cost") == GPT_IMAGE_1_CAT_USD
    assert attr(span, "gen_ai.usage.input_tokens") is None
    assert telemetry.total("openai.image.cost", openai__image__cost__source="estimate") == GPT_IMAGE_1_CAT_USD
    assert len(telemetry.sums("openai.image.cost")) == 1
    assert telemetry.points("gen_ai.client.token.usage") == []
    assert_clean_lifecycle(logs)


def test_missing_usage_in_stream(
    srv: Any, sync_client: openai.OpenAI, instrument: Instrument, telemetry: Telemetry, logs: Any
) -> None:
    run = lambda: consume(images_generate(sync_client, stream=True, partial_images=1))  # noqa: E731
    bare, seen = twice(srv, instrument, "missing_usage", run)
    assert bare.error_class is None
    assert bare.events is not None
    assert [event["type"] for event in bare.events] == [
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert seen == bare
    span = assert_ok_call(telemetry, images=1, partial_images=1)
    assert attr(span, "openai.image.cost.source") == "estimate"
    # The estimate adds 100 image output tokens per partial image: 0.04225 + 100 x $40/M.
    assert attr(span, "gen_ai.usage.cost") == 0.04625
    assert telemetry.total("openai.image.cost") == 0.04625
    assert_clean_lifecycle(logs)


def test_missing_usage_responses(
    srv: Any, sync_client: openai.OpenAI, instrument: Instrument, telemetry: Telemetry, logs: Any
) -> None:
    bare, seen = twice(srv, instrument, "missing_usage", lambda: observe(responses_create(sync_client)))
    assert bare.result_class is openai.types.responses.Response
    assert bare.result["usage"] is None
    assert seen == bare
    span = assert_ok_call(telemetry, images=1)
    assert attr(span, "openai.image.cost.source") == "estimate"
    assert attr(span, "openai.image.cost.mainline") is None  # no usage: the text model's share is unknown
    assert telemetry.total("openai.image.cost", openai__image__cost__part="mainline") == 0
    assert len(telemetry.sums("openai.image.cost")) == 1
    assert_clean_lifecycle(logs)


def test_unknown_extra_fields(
    srv: Any, sync_client: openai.OpenAI, instrument: Instrument, telemetry: Telemetry, logs: Any
) -> None:
    bare, seen = twice(srv, instrument, "extra_fields", lambda: observe(images_generate(sync_client)))
    assert bare.result["x_unreleased_field"] == "extra"
    assert seen == bare
    span = assert_ok_call(telemetry, images=1)
    assert attr(span, "openai.image.cost.source") == "usage"
    assert attr(span, "gen_ai.usage.cost") == GPT_IMAGE_1_CAT_USD
    assert attr(span, "gen_ai.usage.input_tokens") == 2
    assert_clean_lifecycle(logs)


async def test_unknown_extra_fields_responses_stream_async(
    srv: Any, aclient: openai.AsyncOpenAI, instrument: Instrument, telemetry: Telemetry, logs: Any
) -> None:
    run = lambda: consume_async(responses_create_async(aclient, stream=True))  # noqa: E731
    bare, seen = await twice_async(srv, instrument, "extra_fields", run)
    assert bare.error_class is None
    assert bare.events is not None
    assert all(event["x_unreleased_field"] == "extra" for event in bare.events)
    assert seen == bare
    span = assert_ok_call(telemetry, images=1)
    assert attr(span, "openai.image.cost.source") == "usage"
    assert [s.name for s in telemetry.spans()].count("execute_tool image_generation") == 1
    assert_clean_lifecycle(logs)


# -- streams that end badly ------------------------------------------------------------------------


def test_stream_cut_midway(
    srv: Any, sync_client: openai.OpenAI, instrument: Instrument, telemetry: Telemetry, logs: Any
) -> None:
    run = lambda: consume(images_generate(sync_client, stream=True, partial_images=1))  # noqa: E731
    bare, seen = twice(srv, instrument, "cut_stream", run)
    assert bare.error_class is not None
    assert bare.events is not None
    assert [event["type"] for event in bare.events] == ["image_generation.partial_image"]
    assert seen == bare
    assert_failed_call(telemetry, bare.error_class)
    assert telemetry.sums("openai.image.partial_images") == []
    assert_clean_lifecycle(logs)


async def test_stream_cut_midway_async_responses(
    srv: Any, aclient: openai.AsyncOpenAI, instrument: Instrument, telemetry: Telemetry, logs: Any
) -> None:
    run = lambda: consume_async(responses_create_async(aclient, stream=True))  # noqa: E731
    bare, seen = await twice_async(srv, instrument, "cut_stream", run)
    assert bare.error_class is not None
    assert bare.events
    assert seen == bare
    assert_failed_call(telemetry, bare.error_class)
    assert [s.name for s in telemetry.spans()] == ["chat gpt-5"]  # no image child span: nothing priced
    assert_clean_lifecycle(logs)


def test_stream_ending_cleanly_without_its_completed_event(
    srv: Any, sync_client: openai.OpenAI, instrument: Instrument, telemetry: Telemetry, logs: Any
) -> None:
    run = lambda: consume(images_generate(sync_client, stream=True, partial_images=1))  # noqa: E731
    bare, seen = twice(srv, instrument, "short_stream", run)
    assert bare.error_class is None
    assert bare.events is not None
    assert [event["type"] for event in bare.events] == ["image_generation.partial_image"]
    assert seen == bare
    span = assert_ok_call(telemetry, images=0, partial_images=1)
    # No completed event, so no reported usage: the estimate prices the images received (none)
    # plus the partial preview: 100 image tokens x $40/M + the prompt's 2 text tokens x $5/M.
    assert attr(span, "openai.image.cost.source") == "estimate"
    assert attr(span, "gen_ai.usage.cost") == 0.00401
    assert_clean_lifecycle(logs)


@pytest.mark.parametrize("how", ["close", "with_break"])
def test_stream_closed_early_by_the_app(
    how: str,
    srv: Any,
    sync_client: openai.OpenAI,
    instrument: Instrument,
    telemetry: Telemetry,
    logs: Any,
) -> None:
    def run() -> StreamRun:
        seen = StreamRun(events=[])
        stream = sync_client.images.generate(
            model="gpt-image-1", prompt=PROMPT, stream=True, partial_images=2
        )
        seen.stream_class = stream.__class__
        if how == "close":
            seen.events = [dump(next(iter(stream)))]
            assert telemetry.spans() == []  # open until the app closes it
            stream.close()
        else:
            with stream:
                for event in stream:
                    seen.events = [dump(event)]
                    break
        return seen

    bare, seen = twice(srv, instrument, None, run)
    assert bare.events is not None
    assert [event["type"] for event in bare.events] == ["image_generation.partial_image"]
    assert seen == bare
    assert_ok_call(telemetry, images=0, partial_images=1)
    assert_clean_lifecycle(logs)


async def test_async_stream_closed_early_by_the_app(
    srv: Any, aclient: openai.AsyncOpenAI, instrument: Instrument, telemetry: Telemetry, logs: Any
) -> None:
    async def run() -> StreamRun:
        seen = StreamRun(events=[])
        stream = await aclient.responses.create(
            model="gpt-5", input="draw two images of a cat", tools=IMAGE_TOOL, stream=True
        )
        seen.stream_class = stream.__class__
        async for event in stream:
            assert seen.events is not None
            seen.events.append(dump(event))
            if event.type == "response.image_generation_call.completed":
                break
        await stream.close()
        return seen

    bare, seen = await twice_async(srv, instrument, None, run)
    assert seen == bare
    spans = call_spans(telemetry)
    assert len(spans) == 1
    assert spans[0].status.status_code is StatusCode.UNSET
    assert duration_count(telemetry) == 1
    assert_clean_lifecycle(logs)


def test_stream_dropped_without_close_ends_on_garbage_collection(
    srv: Any,
    sync_client: openai.OpenAI,
    instrumented: OpenAIImageCostInstrumentor,
    telemetry: Telemetry,
    logs: Any,
) -> None:
    stream = sync_client.images.generate(model="gpt-image-1", prompt=PROMPT, stream=True, partial_images=2)
    first = next(iter(stream))
    assert first.type == "image_generation.partial_image"
    assert telemetry.spans() == []  # still open: the app may read on
    del stream
    gc.collect()
    assert_ok_call(telemetry, images=0, partial_images=1)
    assert_clean_lifecycle(logs)


async def test_async_stream_dropped_without_close_ends_on_garbage_collection(
    srv: Any,
    aclient: openai.AsyncOpenAI,
    instrumented: OpenAIImageCostInstrumentor,
    telemetry: Telemetry,
    logs: Any,
) -> None:
    stream = await aclient.images.generate(model="gpt-image-1", prompt=PROMPT, stream=True, partial_images=2)
    async for _ in stream:
        break
    assert telemetry.spans() == []
    del stream
    gc.collect()
    assert_ok_call(telemetry, images=0, partial_images=1)
    assert_clean_lifecycle(logs)


class AppError(Exception):
    """An exception of the application's own, raised while it reads a stream."""


@pytest.mark.parametrize("inside_with", [True, False])
def test_exception_raised_inside_the_apps_stream_loop(
    inside_with: bool,
    srv: Any,
    sync_client: openai.OpenAI,
    instrument: Instrument,
    telemetry: Telemetry,
    logs: Any,
) -> None:
    def loop() -> None:
        stream = sync_client.images.generate(
            model="gpt-image-1", prompt=PROMPT, stream=True, partial_images=2
        )
        if inside_with:
            with stream:
                for event in stream:
                    raise AppError(f"app failed on {event.type}")
        else:
            for event in stream:
                raise AppError(f"app failed on {event.type}")

    bare, seen = twice(srv, instrument, None, lambda: observe(loop))
    assert bare.error_class is AppError
    assert bare.error == "app failed on image_generation.partial_image"
    assert seen == bare
    gc.collect()  # without `with`, the dropped stream ends its span when collected
    # The SDK call itself succeeded: the app's exception is not the call's failure.
    assert_ok_call(telemetry, images=0, partial_images=1)
    assert_clean_lifecycle(logs)


async def test_exception_raised_inside_the_apps_async_stream_loop(
    srv: Any, aclient: openai.AsyncOpenAI, instrument: Instrument, telemetry: Telemetry, logs: Any
) -> None:
    async def loop() -> None:
        stream = await aclient.images.generate(
            model="gpt-image-1", prompt=PROMPT, stream=True, partial_images=2
        )
        async with stream:
            async for event in stream:
                raise AppError(f"app failed on {event.type}")

    bare, seen = await twice_async(srv, instrument, None, lambda: observe_async(loop))
    assert bare.error_class is AppError
    assert seen == bare
    assert_ok_call(telemetry, images=0, partial_images=1)
    assert_clean_lifecycle(logs)


async def test_cancelled_async_call_ends_its_span(
    srv: Any,
    aclient: openai.AsyncOpenAI,
    instrumented: OpenAIImageCostInstrumentor,
    telemetry: Telemetry,
    logs: Any,
) -> None:
    srv.inject("delay:1")
    task = asyncio.ensure_future(aclient.images.generate(model="gpt-image-1", prompt=PROMPT))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_failed_call(telemetry, asyncio.CancelledError)
    assert_clean_lifecycle(logs)


# -- a broken telemetry pipeline -------------------------------------------------------------------


class BrokenSpanExporter(SpanExporter):
    def __init__(self) -> None:
        self.attempts = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.attempts += 1
        raise RuntimeError("span exporter is down")

    def shutdown(self) -> None:
        pass


class BrokenSpanProcessor(SpanProcessor):
    """A processor that breaks the SDK's rule that `on_end` must not raise."""

    def __init__(self) -> None:
        self.ends = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.ends += 1
        raise RuntimeError("span processor is down")


class BrokenMetricExporter(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.attempts += 1
        raise RuntimeError("metric exporter is down")

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def mixed_calls(client: openai.OpenAI, srv: Any) -> list[Any]:
    """A plain call, a stream, a Responses call and a failing call, as the app observes them."""
    srv.reset()
    observed: list[Any] = [
        observe(images_generate(client)),
        consume(images_generate(client, stream=True, partial_images=1)),
        observe(responses_create(client)),
    ]
    srv.inject(500)
    observed.append(observe(images_generate(client)))
    return observed


@pytest.mark.parametrize("broken", ["exporter", "processor"])
def test_broken_telemetry_pipeline_leaves_the_app_unaffected(
    broken: str, srv: Any, sync_client: openai.OpenAI, logs: Any
) -> None:
    bare = mixed_calls(sync_client, srv)
    tracer_provider = TracerProvider()
    span_exporter = BrokenSpanExporter()
    span_processor = BrokenSpanProcessor()
    if broken == "exporter":
        tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    else:
        tracer_provider.add_span_processor(span_processor)
    metric_exporter = BrokenMetricExporter()
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=60_000)
    meter_provider = MeterProvider(metric_readers=[reader])
    instrumentor = OpenAIImageCostInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        seen = mixed_calls(sync_client, srv)
        reader.collect()  # an export attempt now, rather than on the reader's timer
    finally:
        instrumentor.uninstrument()
        meter_provider.shutdown()
    assert seen == bare
    assert bare[0].result_class is openai.types.ImagesResponse
    assert bare[3].error_class is openai.InternalServerError
    # The pipeline really was exercised, and broke, on every span (3 calls + 1 image tool span).
    assert (span_exporter.attempts if broken == "exporter" else span_processor.ends) == 5
    assert metric_exporter.attempts >= 1


# -- the plugin's own configuration and pricing at call time ---------------------------------------


def test_bad_price_file(
    srv: Any,
    sync_client: openai.OpenAI,
    instrument: Instrument,
    telemetry: Telemetry,
    logs: Any,
    tmp_path: Path,
) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("models: [this is: not, {a valid: table\n")

    def three_calls() -> list[Any]:
        return [observe(images_generate(sync_client)) for _ in range(3)]

    bare, seen = twice(srv, instrument, None, three_calls, prices_path=str(prices))
    assert seen == bare
    assert all(o.result_class is openai.types.ImagesResponse for o in bare)
    errors = plugin_records(logs)
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].levelno == logging.ERROR
    assert str(prices) in errors[0].getMessage()
    spans = telemetry.spans()
    assert len(spans) == 3
    for span in spans:
        assert span.status.status_code is StatusCode.UNSET
        assert attr(span, "openai.image.cost.source") == "unknown"
        assert attr(span, "openai.image.unpriced.reason") == "price_file_error"
        assert attr(span, "gen_ai.usage.cost") is None
    assert telemetry.total("openai.image.unpriced", openai__image__unpriced__reason="price_file_error") == 3
    assert telemetry.sums("openai.image.cost") == []
    assert telemetry.total("openai.image.generated") == 3


def test_unknown_image_model(
    srv: Any, sync_client: openai.OpenAI, instrument: Instrument, telemetry: Telemetry, logs: Any
) -> None:
    def run() -> Observed:
        # The server draws with it (a gpt-image-2.5 variant); the price table does not know it.
        return observe(lambda: sync_client.images.generate(model="gpt-image-2.5-nova", prompt=PROMPT))

    bare, seen = twice(srv, instrument, None, run)
    assert bare.result_class is openai.types.ImagesResponse
    assert seen == bare
    span = assert_ok_call(telemetry, images=1)
    assert attr(span, "openai.image.model") == "gpt-image-2.5-nova"
    assert attr(span, "openai.image.cost.source") == "unknown"
    assert attr(span, "openai.image.unpriced.reason") == "unknown_model"
    assert attr(span, "gen_ai.usage.cost") is None
    assert telemetry.sums("openai.image.cost") == []
    assert telemetry.total("openai.image.unpriced", openai__image__unpriced__reason="unknown_model") == 1
    assert_clean_lifecycle(logs)


def test_unknown_image_tool_model_in_responses(
    srv: Any, sync_client: openai.OpenAI, instrument: Instrument, telemetry: Telemetry, logs: Any
) -> None:
    tools: list[Any] = [{"type": "image_generation", "model": "gpt-image-2.5-nova"}]

    def run() -> Observed:
        return observe(lambda: sync_client.responses.create(model="gpt-5", input="draw a cat", tools=tools))

    bare, seen = twice(srv, instrument, None, run)
    assert seen == bare
    span = assert_ok_call(telemetry, images=1)
    assert attr(span, "openai.image.cost.source") == "unknown"
    assert attr(span, "openai.image.unpriced.reason") == "unknown_model"
    assert telemetry.total("openai.image.unpriced", openai__image__unpriced__reason="unknown_model") == 1
    assert telemetry.total("openai.image.cost", openai__image__cost__part="image") == 0
    assert_clean_lifecycle(logs)


# -- internal errors of the plugin: logged once, never reach the app -------------------------------


def fail_inside(monkeypatch: pytest.MonkeyPatch, target: Any, name: str) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("plugin bug")

    monkeypatch.setattr(target, name, broken)


def test_internal_error_reading_a_response_is_logged_once(
    srv: Any,
    sync_client: openai.OpenAI,
    instrument: Instrument,
    telemetry: Telemetry,
    logs: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fail_inside(monkeypatch, calls, "images_response_outcome")
    calls_made = 4
    bare, seen = twice(
        srv, instrument, None, lambda: [observe(images_generate(sync_client)) for _ in range(calls_made)]
    )
    assert seen == bare
    assert all(o.result_class is openai.types.ImagesResponse for o in seen)
    warnings = plugin_records(logs)
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert warnings[0].name == "otel_image_cost"
    assert "ImagesCall.observe_response" in warnings[0].getMessage()
    assert warnings[0].exc_info is not None and warnings[0].exc_info[0] is KeyError
    # Every call still got its one span, ended once.
    assert len(telemetry.spans()) == calls_made
    assert duration_count(telemetry) == calls_made
    assert not [r for r in logs.records if "ended span" in r.getMessage()]


def test_internal_error_reading_stream_events_is_logged_once(
    srv: Any,
    sync_client: openai.OpenAI,
    instrument: Instrument,
    telemetry: Telemetry,
    logs: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fail_inside(monkeypatch, ImagesStreamTally, "add")
    run = lambda: [consume(images_generate(sync_client, stream=True, partial_images=1)) for _ in range(3)]  # noqa: E731
    bare, seen = twice(srv, instrument, None, run)
    assert seen == bare
    assert [len(r.events or []) for r in seen] == [2, 2, 2]
    warnings = plugin_records(logs)
    assert len(warnings) == 1
    assert "ImagesCall.observe_event" in warnings[0].getMessage()
    assert len(telemetry.spans()) == 3
    assert duration_count(telemetry) == 3


def test_internal_error_starting_a_call_leaves_it_untracked_and_is_logged_once(
    srv: Any,
    sync_client: openai.OpenAI,
    instrument: Instrument,
    telemetry: Telemetry,
    logs: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fail_inside(monkeypatch, calls, "image_request")
    bare, seen = twice(
        srv, instrument, None, lambda: [observe(images_generate(sync_client)) for _ in range(3)]
    )
    assert seen == bare
    warnings = plugin_records(logs)
    assert len(warnings) == 1
    assert "start Images.generate" in warnings[0].getMessage()
    assert telemetry.spans() == []
    assert duration_count(telemetry) == 0


async def test_internal_error_while_recording_is_logged_once_async(
    srv: Any,
    aclient: openai.AsyncOpenAI,
    instrument: Instrument,
    telemetry: Telemetry,
    logs: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fail_inside(monkeypatch, plugin_telemetry, "record_success")

    async def run() -> list[Observed]:
        return [await observe_async(responses_create_async(aclient)) for _ in range(3)]

    bare, seen = await twice_async(srv, instrument, None, run)
    assert seen == bare
    warnings = plugin_records(logs)
    assert len(warnings) == 1
    assert "ResponsesCall.finish" in warnings[0].getMessage()
    spans = call_spans(telemetry)
    assert len(spans) == 3
    assert all(s.status.status_code is StatusCode.UNSET for s in spans)
