"""Billing records: one log record per finished call, through the real SDK over loopback and the
real OpenTelemetry SDK's Logs pipeline (in-memory exporter).

Costs are computed by hand from docs/cost-model.md (the local server's prompt tokens are
ceil(len / 4)).
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import http.client
import json
import re
from collections.abc import Callable
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from otel_image_cost import OpenAIImageCostInstrumentor, billing_context

from conftest import BILLING_EVENT, Telemetry
from local_openai_server import LocalOpenAIServer

Instrument = Callable[..., OpenAIImageCostInstrumentor]
FOX = "a red fox"  # 9 chars: 3 prompt tokens
# gpt-image-1 low 1024x1024, usage 3 text in, 272 image out: 3 x 5e-6 + 272 x 40e-6 = 0.000015 + 0.01088
FOX_COST = 0.010895
LOW_TOOL: Any = {"type": "image_generation", "model": "gpt-image-1", "quality": "low"}
RESPONSES_MODEL = "gpt-4o-mini"


def span_ids(span: Any) -> tuple[int, int]:
    return span.context.trace_id, span.context.span_id


def record_ids(telemetry: Telemetry) -> tuple[int, int]:
    (record,) = telemetry.records()
    return record.trace_id, record.span_id


def test_a_priced_call_has_one_record_with_what_its_span_says(
    telemetry: Telemetry, instrumented: object, client: openai.OpenAI
) -> None:
    with billing_context(user_id="u-1", tenant_id="t-1", attributes={"plan": "pro"}):
        response = client.images.generate(model="gpt-image-1", prompt=FOX, quality="low")
    span = telemetry.span()
    (log_record,) = telemetry.records()
    assert log_record.event_name == BILLING_EVENT
    assert (log_record.trace_id, log_record.span_id) == span_ids(span)
    record = telemetry.record()
    assert record == dict(span.attributes or {})  # every attribute of the span, nothing else
    assert record["openai.request.id"] == response._request_id
    assert str(record["openai.request.id"]).startswith("req_")
    assert {key: record[key] for key in ("user.id", "tenant.id", "plan")} == {
        "user.id": "u-1",
        "tenant.id": "t-1",
        "plan": "pro",
    }
    assert record["gen_ai.usage.cost"] == FOX_COST
    assert (record["openai.image.cost.input_text"], record["openai.image.cost.output_image"]) == (
        0.000015,
        0.01088,
    )
    assert record["openai.image.outcome"] == "ok"
    assert record["openai.image.cost.source"] == "usage"
    assert record["openai.image.cost.pricing_version"] == "2026-11-21"
    assert record["openai.image.usage.raw"] == (
        '{"input_tokens":3,"input_tokens_details":{"image_tokens":0,"text_tokens":3},'
        '"output_tokens":272,"total_tokens":275,"output_tokens_details":{"image_tokens":272,"text_tokens":0}}'
    )
    assert "openai.image.unpriced.reason" not in record


def test_records_leave_prompts_out_even_when_spans_capture_them(
    telemetry: Telemetry, instrument: Instrument, client: openai.OpenAI
) -> None:
    instrument(capture_message_content=True)
    client.images.generate(model="gpt-image-1", prompt=FOX, quality="low")
    assert dict(telemetry.span().attributes or {})["openai.image.prompt"] == FOX
    record = telemetry.record()
    assert "openai.image.prompt" not in record and "openai.image.revised_prompts" not in record
    assert FOX not in [value for value in record.values() if isinstance(value, str)]


def test_a_record_for_a_call_the_sampler_dropped(
    telemetry: Telemetry, instrument: Instrument, client: openai.OpenAI
) -> None:
    """ALWAYS_OFF: no span is exported, the record still carries the (unsampled) span's ids."""
    telemetry.tracer_provider = TracerProvider(sampler=ALWAYS_OFF)
    instrument()
    with billing_context(user_id="u-2"):
        client.images.generate(model="gpt-image-1", prompt=FOX, quality="low")
    assert telemetry.spans() == []
    (log_record,) = telemetry.records()
    assert log_record.trace_id != 0 and log_record.span_id != 0
    assert not log_record.trace_flags.sampled
    record = telemetry.record()
    assert (record["gen_ai.usage.cost"], record["user.id"], record["openai.image.count"]) == (
        FOX_COST,
        "u-2",
        1,
    )


def test_a_failed_call_has_a_record_with_the_error_and_its_request_id(
    telemetry: Telemetry, instrumented: object, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    server.inject(500)
    with pytest.raises(openai.InternalServerError) as raised:
        client.images.generate(model="gpt-image-1", prompt=FOX, quality="low")
    record = telemetry.record()
    assert record["openai.image.outcome"] == "error"
    assert record["error.type"] == "InternalServerError"
    assert record["openai.request.id"] == raised.value.request_id
    assert not [key for key in record if key.startswith("openai.image.cost.") or key == "gen_ai.usage.cost"]
    assert record_ids(telemetry) == span_ids(telemetry.span())


def test_a_stream_cut_after_a_partial_image_records_that_partial(
    telemetry: Telemetry, instrumented: object, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    server.inject("cut_stream")
    stream = client.images.generate(
        model="gpt-image-1", prompt=FOX, quality="low", stream=True, partial_images=2
    )
    events = []
    with pytest.raises(Exception) as raised:  # the SDK's (3.x) or httpx's (2.x) error for a cut body
        for event in stream:
            events.append(event.type)
    assert events == ["image_generation.partial_image"]
    span_attributes = dict(telemetry.span().attributes or {})
    record = telemetry.record()
    for attributes in (span_attributes, record):
        assert attributes["openai.image.partial_images"] == 1
        assert attributes["openai.image.outcome"] == "error"
        assert attributes["error.type"] == type(raised.value).__qualname__
    assert telemetry.points("openai.image.partial_images") == []  # a failed call adds to no counter


def test_a_stream_record_carries_the_request_id_of_its_http_response(
    telemetry: Telemetry, instrumented: object, client: openai.OpenAI
) -> None:
    stream = client.images.generate(model="gpt-image-1", prompt=FOX, quality="low", stream=True)
    header = stream.response.headers["x-request-id"]
    assert [event.type for event in stream] == ["image_generation.completed"]
    record = telemetry.record()
    assert record["openai.request.id"] == header
    assert (record["gen_ai.usage.cost"], record["openai.image.outcome"]) == (FOX_COST, "ok")


def test_an_images_stream_abandoned_before_its_image(
    telemetry: Telemetry, instrumented: object, client: openai.OpenAI
) -> None:
    """Rule 12: the n=2 images asked for are estimated, plus the partial received, at `abandoned`:
    2 x 272 x 40e-6 = 0.02176; partial 100 x 40e-6 = 0.004; prompt 2 x 3 x 5e-6 = 0.00003: 0.02579."""
    with billing_context(user_id="u-3"):
        stream = client.images.generate(
            model="gpt-image-1", prompt=FOX, quality="low", n=2, stream=True, partial_images=1
        )
    with stream:
        assert next(stream).type == "image_generation.partial_image"
    record = telemetry.record()
    assert record == dict(telemetry.span().attributes or {})
    assert (record["openai.image.outcome"], record["openai.image.cost.source"]) == ("abandoned", "estimate")
    assert (record["openai.image.count"], record["openai.image.partial_images"]) == (0, 1)
    assert record["gen_ai.usage.cost"] == 0.02579
    assert [
        (labels["openai.image.cost.part"], labels["openai.image.cost.source"], labels["user.id"], value)
        for labels, value in telemetry.sums("openai.image.cost")
    ] == [("image", "estimate", "u-3", 0.02579)]
    assert telemetry.points("openai.image.unpriced") == []


@pytest.mark.parametrize("until", ["response.image_generation_call.in_progress", "response.created"])
def test_a_responses_stream_abandoned(
    until: str, telemetry: Telemetry, instrumented: object, client: openai.OpenAI
) -> None:
    """Rule 12: an image whose generation had begun is estimated (low 1024x1024 gpt-image-1: 272 x
    40e-6 = 0.01088; its revised prompt never arrived: no input tokens); none begun: the image part is
    unpriced. The mainline part is unpriced either way (no usage was seen). Rule 13: the call's
    `gen_ai.usage.cost` is the priced part, absent when no part was priced."""
    with client.responses.create(
        model=RESPONSES_MODEL, input="Draw a tree", tools=[LOW_TOOL], stream=True
    ) as stream:
        for event in stream:
            if event.type == until:
                break
    record = telemetry.record()
    assert record["openai.image.outcome"] == "abandoned"
    assert "openai.image.cost.mainline" not in record
    unpriced = sorted(
        (labels["openai.image.cost.part"], labels["openai.image.unpriced.reason"], value)
        for labels, value in telemetry.sums("openai.image.unpriced")
    )
    if until == "response.created":
        assert record["openai.image.cost.source"] == "unknown"
        assert "gen_ai.usage.cost" not in record
        assert record["openai.image.unpriced.reason"] == "stream_abandoned"
        assert unpriced == [("image", "stream_abandoned", 1), ("mainline", "stream_abandoned", 1)]
        assert telemetry.points("openai.image.cost") == []
        return
    assert (record["openai.image.cost.source"], record["gen_ai.usage.cost"]) == ("estimate", 0.01088)
    assert (record["openai.image.count"], record["openai.image.cost.output_image"]) == (0, 0.01088)
    assert record["openai.image.unpriced.reason"] == "stream_abandoned"  # the mainline part
    assert unpriced == [("mainline", "stream_abandoned", 1)]
    assert [
        (labels["openai.image.cost.part"], value) for labels, value in telemetry.sums("openai.image.cost")
    ] == [("image", 0.01088)]
    (child,) = [span for span in telemetry.spans() if span.name == "execute_tool image_generation"]
    assert dict(child.attributes or {})["gen_ai.usage.cost"] == 0.01088


async def test_an_async_responses_stream_dropped_unclosed(
    telemetry: Telemetry, instrumented: object, async_client: openai.AsyncOpenAI
) -> None:
    stream = await async_client.responses.create(
        model=RESPONSES_MODEL, input="Draw a tree", tools=[LOW_TOOL], stream=True
    )
    async for event in stream:
        if event.type == "response.image_generation_call.in_progress":
            break
    del stream
    gc.collect()
    record = telemetry.record()
    assert (record["openai.image.outcome"], record["gen_ai.usage.cost"]) == ("abandoned", 0.01088)


def test_a_stream_read_to_its_final_event_then_closed_is_not_abandoned(
    telemetry: Telemetry, instrumented: object, client: openai.OpenAI
) -> None:
    with client.images.generate(model="gpt-image-1", prompt=FOX, quality="low", stream=True) as stream:
        for event in stream:
            if event.type == "image_generation.completed":
                break  # left before the stream's own end, after its final event
    record = telemetry.record()
    assert (record["openai.image.outcome"], record["gen_ai.usage.cost"]) == ("ok", FOX_COST)


@pytest.mark.parametrize("how", ["environment", "keyword"])
def test_billing_records_can_be_turned_off(
    how: str,
    telemetry: Telemetry,
    instrument: Instrument,
    client: openai.OpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if how == "environment":
        monkeypatch.setenv("OTEL_IMAGE_COST_BILLING_RECORDS", "false")
        instrument()
    else:
        monkeypatch.setenv("OTEL_IMAGE_COST_BILLING_RECORDS", "true")
        instrument(billing_records=False)
    client.images.generate(model="gpt-image-1", prompt=FOX, quality="low")
    assert dict(telemetry.span().attributes or {})["gen_ai.usage.cost"] == FOX_COST
    assert telemetry.records() == []


def test_an_exporter_that_raises_never_reaches_the_app(
    telemetry: Telemetry, instrument: Instrument, client: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def get_logger(self, *args: Any, **kwargs: Any) -> Any:
            return self

        def emit(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("log pipeline down")

    instrument(logger_provider=Broken())
    response = client.images.generate(model="gpt-image-1", prompt=FOX, quality="low")
    assert len(response.data or []) == 1
    assert dict(telemetry.span().attributes or {})["gen_ai.usage.cost"] == FOX_COST  # the span still ends
    assert "internal error in billing record" in caplog.text


def test_records_carry_the_pseudonyms_the_metrics_carry(
    telemetry: Telemetry, instrument: Instrument, client: openai.OpenAI
) -> None:
    instrument(pseudonymize="user.id", pseudonym_key="k3y")
    with billing_context(user_id="alice@example.com", tenant_id="t-1"):
        client.images.generate(model="gpt-image-1", prompt=FOX, quality="low")
    pseudonym = hmac.new(b"k3y", b"alice@example.com", hashlib.sha256).hexdigest()[:16]
    ((labels, _),) = telemetry.sums("openai.image.cost")
    record = telemetry.record()
    assert record["user.id"] == labels["user.id"] == pseudonym
    assert record["tenant.id"] == "t-1"
    assert dict(telemetry.span().attributes or {})["user.id"] == "alice@example.com"  # spans stay raw
    assert "alice@example.com" not in [value for value in record.values() if isinstance(value, str)]


def test_a_responses_call_without_usage_has_its_mainline_part_unpriced(
    telemetry: Telemetry, instrumented: object, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    """Every part is priced or unpriced: with no `usage` and no `tool_usage`, the image is estimated
    (revised prompt 38-39 chars, 10 tokens: 10 x 5e-6 + 272 x 40e-6 = 0.01093) and the mainline part
    is unpriced `no_usage`."""
    server.inject("missing_usage")
    client.responses.create(model=RESPONSES_MODEL, input="Draw a tree", tools=[LOW_TOOL])
    record = telemetry.record()
    assert (record["openai.image.cost.source"], record["gen_ai.usage.cost"]) == ("estimate", 0.01093)
    assert (record["openai.image.unpriced.reason"], record["openai.image.outcome"]) == ("no_usage", "ok")
    unpriced = [
        (labels["openai.image.unpriced.reason"], value)
        for labels, value in telemetry.sums("openai.image.unpriced")
    ]
    assert unpriced == [("no_usage", 1)]


def test_every_answer_of_the_local_server_has_its_own_request_id(server: LocalOpenAIServer) -> None:
    """JSON, event streams, errors and the WebSocket handshake: each answer a fresh `x-request-id`."""

    def answer(method: str, path: str, body: str | None, headers: dict[str, str]) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            connection.request(method, path, body, headers)
            response = connection.getresponse()
            return response.status, response.getheader("x-request-id", "")
        finally:
            connection.close()

    json_headers = {"Content-Type": "application/json", "Authorization": "Bearer k"}
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    image = json.dumps({"model": "gpt-image-1", "prompt": "x"})
    answers = [
        answer("POST", "/v1/images/generations", image, json_headers),
        answer("POST", "/v1/images/generations", json.dumps({"prompt": "x", "stream": True}), json_headers),
        answer("POST", "/v1/images/generations", "{not json", json_headers),
        answer("GET", "/v1/responses", None, upgrade),
    ]
    assert [status for status, _ in answers] == [200, 200, 400, 101]
    ids = [request_id for _, request_id in answers]
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", request_id) for request_id in ids), ids
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    ("author", "cost", "unpriced"),
    [
        # image part 6 x 5e-6 + 272 x 40e-6 = 0.01091; author gpt-5-mini 506 x 0.25e-6 + 1200 x 2e-6
        # = 0.0025265; both: 0.0134365
        ("gpt-5-mini", 0.0134365, None),
        ("svg-author-unreleased", 0.01091, "unknown_svg_model"),  # the image part alone
    ],
)
def test_a_third_cost_part_flows_into_the_record(
    author: str,
    cost: float,
    unpriced: str | None,
    telemetry: Telemetry,
    instrumented: object,
    client: openai.OpenAI,
) -> None:
    client.images.generate(
        model="gpt-image-1",
        prompt="a red fox in the snow",
        quality="low",
        size="1024x1024",
        output_format="svg",
        extra_body={"svg": {"model": author}},
    )
    record = telemetry.record()
    assert record["gen_ai.usage.cost"] == cost
    assert record.get("openai.image.cost.svg_author") == (0.0025265 if unpriced is None else None)
    assert record.get("openai.image.unpriced.reason") == unpriced
    assert telemetry.total("openai.image.cost") == pytest.approx(cost, abs=1e-12)
