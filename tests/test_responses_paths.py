"""Every Responses API code path that can draw with the `image_generation` tool, through the real SDK
over loopback HTTP against the bundled local server, read back from the real OpenTelemetry SDK.

Expected costs are worked out by hand from the price facts (USD per token), never by the plugin:
- image models (docs/cost-model.md): gpt-image-1 text in 5e-6, image in 10e-6, image out 40e-6 (its
  output text is billed as image output); gpt-image-1.5 text in 5e-6, image in 8e-6, image out 32e-6,
  text out 10e-6; gpt-image-2.6-sunburst text in 5e-6, image out 30e-6 (text out as image out), estimates
  from the size formula with the 2.5 factors (medium 24);
- the mainline model gpt-4o-mini (genai-prices 0.2.3, standard tier): in 0.15e-6, cached 0.075e-6, out 0.6e-6.

What the local server reports (examples/local_openai_server.py): mainline input 1500 + ceil(len(text) / 4)
tokens (1024 of them cached with a previous_response_id), output ceil(len(message) / 4) + 20 per image
call; per image ceil(len(revised_prompt) / 4) input text tokens, where the revised prompt is "A detailed
illustration of " + the text (27 + len(text) chars), 194 input image tokens for an edit (gpt-image-1
family), the output image tokens of the quality x size grid (gpt-image-1.5 adds 1/5 as output text
tokens), and 100 output image tokens per streamed partial image. The tool's quality defaults to medium,
its size to 1024x1024, its model to gpt-image-1.5. Messages: one image "Here is the image you asked
for." (32 chars, 8 tokens), two "Here are the 2 images you asked for." (36, 9), none "Sure, no image this
time." (25, 7), moderation "I couldn't create that image: the request was blocked by moderation." (68, 17).

A counter point that received one `add` holds exactly float(cost); sums over several calls are float
additions, compared with a relative tolerance of 1e-12.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pydantic
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from otel_image_cost import billing_context

from conftest import Telemetry
from local_openai_server import TINY_PNG_B64, LocalOpenAIServer

SDK3 = openai.__version__.startswith("3.")
# The tool's documented default model: `gpt-image-2.6-sunburst` in openai 3.5x, `gpt-image-1` in 2.x.
DEFAULT_TOOL_MODEL = "gpt-image-2.6-sunburst" if SDK3 else "gpt-image-1"
MODEL = "gpt-4o-mini"
CALL = f"chat {MODEL}"
CHILD = "execute_tool image_generation"
TIMEOUT = 10.0
PRICING_VERSION = "2026-11-21"
REL = 1e-12

BARE_TOOL: Any = {"type": "image_generation"}  # the server echoes model gpt-image-1.5
LOW_TOOL: Any = {"type": "image_generation", "model": "gpt-image-1", "quality": "low"}

# "Draw a lighthouse" (17 chars, 5 tokens), one image from the echoed gpt-image-1.5, medium 1024x1024:
#   mainline 1505 x 0.15e-6 + 28 x 0.6e-6 = 0.00022575 + 0.0000168 = 0.00024255
#   image (revised 44 chars, 11 tokens; output 1056 image + 211 text):
#   11 x 5e-6 + 1056 x 32e-6 + 211 x 10e-6 = 0.000055 + 0.033792 + 0.00211 = 0.035957
LIGHTHOUSE = "Draw a lighthouse"
LIGHTHOUSE_MAINLINE = 0.00024255
LIGHTHOUSE_IMAGE = 0.035957
LIGHTHOUSE_TOTAL = 0.03619955  # 0.035957 + 0.00024255

# Any 3-token text of 10-12 chars ("Draw a tree"), one low 1024x1024 gpt-image-1 image:
#   mainline 1503 x 0.15e-6 + 28 x 0.6e-6 = 0.00022545 + 0.0000168 = 0.00024225
#   image (revised 38-39 chars, 10 tokens): 10 x 5e-6 + 272 x 40e-6 = 0.00005 + 0.01088 = 0.01093
SHORT_MAINLINE = 0.00024225
LOW_IMAGE = 0.01093
LOW_TOTAL = 0.01117225  # 0.01093 + 0.00024225


@pytest.fixture
def sdk(server: LocalOpenAIServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=TIMEOUT) as client:
        yield client


@pytest.fixture
async def async_sdk(server: LocalOpenAIServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=TIMEOUT
    ) as client:
        yield client


@contextmanager
def served(**options: Any) -> Iterator[openai.OpenAI]:
    """A client of a local server started with `options`, for the duration of the block."""
    with (
        LocalOpenAIServer(**options) as server,
        openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=TIMEOUT) as client,
    ):
        yield client


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def call_spans(telemetry: Telemetry) -> list[ReadableSpan]:
    return [span for span in telemetry.spans() if span.name.startswith("chat")]


def child_spans(telemetry: Telemetry, parent: ReadableSpan | None = None) -> list[ReadableSpan]:
    children = [span for span in telemetry.spans() if span.name == CHILD]
    if parent is None:
        return children
    return [span for span in children if span.parent is not None and span.parent.span_id == parent_id(parent)]


def parent_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def one_call(telemetry: Telemetry) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The only call span and its child spans; every child span has that parent."""
    (call,) = call_spans(telemetry)
    children = child_spans(telemetry)
    assert child_spans(telemetry, call) == children
    return call, children


def image_calls(response: Any) -> list[Any]:
    return [item for item in response.output if item.type == "image_generation_call"]


def cost_totals(telemetry: Telemetry, **where: Any) -> tuple[float, float]:
    """(image part, mainline part) of `openai.image.cost`."""
    return (
        telemetry.total("openai.image.cost", openai__image__cost__part="image", **where),
        telemetry.total("openai.image.cost", openai__image__cost__part="mainline", **where),
    )


def token_sums(telemetry: Telemetry) -> dict[tuple[str, str], int]:
    """Sum of `gen_ai.client.token.usage` per (cost part, token type)."""
    sums: dict[tuple[str, str], int] = {}
    for labels, point in telemetry.points("gen_ai.client.token.usage"):
        key = (labels["openai.image.cost.part"], labels["gen_ai.token.type"])
        sums[key] = sums.get(key, 0) + int(point.sum)
    return sums


def assert_no_cost(span: ReadableSpan, source: str) -> None:
    """No cost on the span; its `openai.image.cost.source` says why."""
    a = attributes(span)
    assert a.pop("openai.image.cost.source") == source, span.name
    if source == "unknown":  # the price table that found nothing to price
        assert a.pop("openai.image.cost.pricing_version") == PRICING_VERSION
    assert not [key for key in a if key.startswith("openai.image.cost.")], span.name
    assert "gen_ai.usage.cost" not in a


def assert_lighthouse(telemetry: Telemetry, response: Any, *, stream: bool) -> None:
    """Spans and metrics of one "Draw a lighthouse" call with the bare tool."""
    call, (child,) = one_call(telemetry)
    assert call.name == CALL
    (item,) = image_calls(response)
    a = attributes(call)
    usage_raw = {
        "input_tokens": 11,
        "input_tokens_details": {"image_tokens": 0, "text_tokens": 11},
        "output_tokens": 1267,
        "total_tokens": 1278,
        "output_tokens_details": {"image_tokens": 1056, "text_tokens": 211},
    }
    assert isinstance(a["server.port"], int)
    assert json.loads(str(a.pop("openai.image.usage.raw"))) == usage_raw  # key order is the SDK's
    request_id = a.pop("openai.request.id")
    assert isinstance(request_id, str) and request_id.startswith("req_")  # the server's x-request-id
    if getattr(response, "_request_id", None) is not None:  # a parsed response, not one from a stream
        assert request_id == response._request_id
    assert {k: v for k, v in a.items() if k != "server.port"} == {
        "gen_ai.provider.name": "openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.output.type": "image",
        "gen_ai.request.model": MODEL,
        "gen_ai.response.model": MODEL,
        "gen_ai.response.id": response.id,
        "gen_ai.usage.input_tokens": 1505,
        "gen_ai.usage.output_tokens": 28,
        "gen_ai.usage.cost": LIGHTHOUSE_TOTAL,
        "server.address": "127.0.0.1",
        "openai.response.status": "completed",
        "openai.image.operation": "responses_tool",
        "openai.image.stream": stream,
        "openai.image.action": "generate",
        "openai.image.model": "gpt-image-1.5",
        "openai.image.model.source": "response",
        "openai.image.quality": "medium",
        "openai.image.size": "1024x1024",
        "openai.image.count": 1,
        "openai.image.partial_images": 0,
        "openai.image.cost.source": "usage",
        "openai.image.cost.pricing_version": PRICING_VERSION,
        "openai.image.cost.input_text": 0.000055,  # 11 x 5e-6
        "openai.image.cost.output_image": 0.033792,  # 1056 x 32e-6
        "openai.image.cost.output_text": 0.00211,  # 211 x 10e-6
        "openai.image.cost.mainline": LIGHTHOUSE_MAINLINE,
        "openai.image.usage.input_text_tokens": 11,
        "openai.image.usage.input_image_tokens": 0,
        "openai.image.usage.output_image_tokens": 1056,
        "openai.image.usage.output_text_tokens": 211,
        "openai.image.outcome": "ok",
    }
    assert call.kind.name == "CLIENT" and call.status.status_code is StatusCode.UNSET
    c = attributes(child)
    assert c == {
        "gen_ai.provider.name": "openai",
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "image_generation",
        "gen_ai.tool.call.id": item.id,
        "openai.image.operation": "responses_tool",
        "openai.image.model": "gpt-image-1.5",
        "openai.image.model.source": "response",
        "openai.image.quality": "medium",
        "openai.image.size": "1024x1024",
        "openai.image.background": "opaque",
        "openai.image.output_format": "png",
        "openai.image.action": "generate",
        "openai.image.status": "completed",
        "openai.image.count": 1,
        "openai.image.partial_images": 0,
        "openai.image.cost.source": "usage",
        "openai.image.cost.pricing_version": PRICING_VERSION,
        "openai.image.cost.input_text": 0.000055,
        "openai.image.cost.output_image": 0.033792,
        "openai.image.cost.output_text": 0.00211,
        "gen_ai.usage.cost": LIGHTHOUSE_IMAGE,
    }
    assert child.status.status_code is StatusCode.UNSET
    labels = {
        "gen_ai.provider.name": "openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": MODEL,
        "openai.image.model": "gpt-image-1.5",
        "openai.image.operation": "responses_tool",
        "openai.image.quality": "medium",
        "openai.image.size": "1024x1024",
    }
    assert sorted(
        ((labels_, value) for labels_, value in telemetry.sums("openai.image.cost")),
        key=lambda pair: str(pair[0]["openai.image.cost.part"]),
    ) == [
        (
            {**labels, "openai.image.cost.source": "usage", "openai.image.cost.part": "image"},
            LIGHTHOUSE_IMAGE,
        ),
        (
            {**labels, "openai.image.cost.source": "usage", "openai.image.cost.part": "mainline"},
            LIGHTHOUSE_MAINLINE,
        ),
    ]
    assert telemetry.sums("openai.image.generated") == [({**labels, "openai.image.cost.source": "usage"}, 1)]
    assert telemetry.points("openai.image.partial_images") == []
    assert telemetry.points("openai.image.unpriced") == []
    assert token_sums(telemetry) == {
        ("mainline", "input"): 1505,
        ("mainline", "output"): 28,
        ("image", "input"): 11,
        ("image", "output"): 1267,
    }


# -- 1. every code path -----------------------------------------------------------------------------


def test_create(telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI) -> None:
    response = sdk.responses.create(model=MODEL, input=LIGHTHOUSE, tools=[BARE_TOOL])
    assert response.status == "completed"
    assert_lighthouse(telemetry, response, stream=False)


async def test_create_async(
    telemetry: Telemetry, instrumented: object, async_sdk: openai.AsyncOpenAI
) -> None:
    response = await async_sdk.responses.create(model=MODEL, input=LIGHTHOUSE, tools=[BARE_TOOL])
    assert_lighthouse(telemetry, response, stream=False)


def test_create_stream(telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI) -> None:
    events: list[Any] = list(
        sdk.responses.create(model=MODEL, input=LIGHTHOUSE, tools=[BARE_TOOL], stream=True)
    )
    assert events[-1].type == "response.completed"
    assert_lighthouse(telemetry, events[-1].response, stream=True)


async def test_create_stream_async(
    telemetry: Telemetry, instrumented: object, async_sdk: openai.AsyncOpenAI
) -> None:
    stream = await async_sdk.responses.create(model=MODEL, input=LIGHTHOUSE, tools=[BARE_TOOL], stream=True)
    events: list[Any] = [event async for event in stream]
    assert_lighthouse(telemetry, events[-1].response, stream=True)


def test_stream_helper(telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI) -> None:
    with sdk.responses.stream(model=MODEL, input=LIGHTHOUSE, tools=[BARE_TOOL]) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert types[-1] == "response.completed"
    assert final.output_text == "Here is the image you asked for."
    assert_lighthouse(telemetry, final, stream=True)


async def test_stream_helper_async(
    telemetry: Telemetry, instrumented: object, async_sdk: openai.AsyncOpenAI
) -> None:
    async with async_sdk.responses.stream(model=MODEL, input=LIGHTHOUSE, tools=[BARE_TOOL]) as stream:
        types = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert types[-1] == "response.completed"
    assert_lighthouse(telemetry, final, stream=True)


def test_stream_helper_left_early_ends_the_call(
    telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI
) -> None:
    """The helper closes its stream through `.response`: leaving its block ends the call at once
    (not when the garbage collector gets to it), abandoned before any image generation began:
    both parts unpriced (cost-model rule 12)."""
    with sdk.responses.stream(model=MODEL, input=LIGHTHOUSE, tools=[BARE_TOOL]) as stream:
        first = next(iter(stream))
    assert first.type == "response.created"
    assert stream is not None  # still referenced: nothing may depend on collection
    (call,) = telemetry.spans()
    assert call.name == CALL
    assert_no_cost(call, "unknown")
    assert attributes(call)["openai.image.outcome"] == "abandoned"
    assert telemetry.points("openai.image.cost") == []
    assert sorted(
        (a["openai.image.cost.part"], a["openai.image.unpriced.reason"], v)
        for a, v in telemetry.sums("openai.image.unpriced")
    ) == [("image", "stream_abandoned", 1), ("mainline", "stream_abandoned", 1)]


async def test_stream_helper_async_left_early_ends_the_call(
    telemetry: Telemetry, instrumented: object, async_sdk: openai.AsyncOpenAI
) -> None:
    async with async_sdk.responses.stream(model=MODEL, input=LIGHTHOUSE, tools=[BARE_TOOL]) as stream:
        first = await stream.__anext__()
    assert first.type == "response.created"
    assert stream is not None
    (call,) = telemetry.spans()
    assert_no_cost(call, "unknown")
    assert attributes(call)["openai.image.outcome"] == "abandoned"


class Caption(pydantic.BaseModel):
    title: str


def test_parse_with_text_format(telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI) -> None:
    parsed = sdk.responses.parse(model=MODEL, input="Caption a fox", tools=[LOW_TOOL], text_format=Caption)
    assert parsed.output_parsed == Caption(title="")
    call, (child,) = one_call(telemetry)
    a = attributes(call)
    # the message is '{"title": ""}' (13 chars, 4 tokens); "Caption a fox" is 13 chars, 4 tokens:
    # mainline 1504 x 0.15e-6 + 24 x 0.6e-6 = 0.0002256 + 0.0000144 = 0.00024
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (1504, 24)
    assert a["openai.image.cost.mainline"] == 0.00024
    assert (a["openai.image.model"], a["openai.image.model.source"]) == ("gpt-image-1", "request")
    assert (a["openai.image.quality"], a["openai.image.size"]) == ("low", "1024x1024")
    # revised 40 chars, 10 tokens: 10 x 5e-6 + 272 x 40e-6 = 0.01093; total 0.01093 + 0.00024 = 0.01117
    assert attributes(child)["gen_ai.usage.cost"] == LOW_IMAGE
    assert a["gen_ai.usage.cost"] == 0.01117
    assert cost_totals(telemetry) == (LOW_IMAGE, 0.00024)


@pytest.mark.skipif(
    not hasattr(openai.OpenAI(api_key="k").beta, "responses"), reason="this SDK version has no beta.responses"
)
def test_beta_responses(telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI) -> None:
    response = sdk.beta.responses.create(model=MODEL, input=LIGHTHOUSE, tools=[BARE_TOOL])
    assert_lighthouse(telemetry, response, stream=False)


def test_with_raw_response(telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI) -> None:
    raw = sdk.responses.with_raw_response.create(model=MODEL, input=LIGHTHOUSE, tools=[BARE_TOOL])
    assert raw.headers["x-request-id"].startswith("req_")
    response = raw.parse()
    assert_lighthouse(telemetry, response, stream=False)


def test_with_raw_response_stream(telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI) -> None:
    raw = sdk.responses.with_raw_response.create(
        model=MODEL, input=LIGHTHOUSE, tools=[BARE_TOOL], stream=True
    )
    assert telemetry.spans() == []  # nothing read yet
    events: list[Any] = list(raw.parse())
    assert_lighthouse(telemetry, events[-1].response, stream=True)


def test_with_streaming_response(telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI) -> None:
    with sdk.responses.with_streaming_response.create(
        model=MODEL, input=LIGHTHOUSE, tools=[BARE_TOOL]
    ) as streamed:
        assert streamed.http_response.status_code == 200
        response = streamed.parse()
    assert_lighthouse(telemetry, response, stream=False)


def test_with_streaming_response_stream(
    telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI
) -> None:
    with sdk.responses.with_streaming_response.create(
        model=MODEL, input=LIGHTHOUSE, tools=[BARE_TOOL], stream=True
    ) as streamed:
        events: list[Any] = list(streamed.parse())
    assert_lighthouse(telemetry, events[-1].response, stream=True)


async def test_with_raw_and_streaming_response_async(
    telemetry: Telemetry, instrumented: object, async_sdk: openai.AsyncOpenAI
) -> None:
    raw = await async_sdk.responses.with_raw_response.create(model=MODEL, input=LIGHTHOUSE, tools=[BARE_TOOL])
    assert_lighthouse(telemetry, raw.parse(), stream=False)
    telemetry.span_exporter.clear()
    async with async_sdk.responses.with_streaming_response.create(
        model=MODEL, input=LIGHTHOUSE, tools=[BARE_TOOL]
    ) as streamed:
        response = await streamed.parse()
    call, _ = one_call(telemetry)
    assert attributes(call)["gen_ai.response.id"] == response.id
    assert attributes(call)["gen_ai.usage.cost"] == LIGHTHOUSE_TOTAL
    # two calls: float sums
    assert cost_totals(telemetry) == pytest.approx((2 * LIGHTHOUSE_IMAGE, 2 * LIGHTHOUSE_MAINLINE), rel=REL)


def test_background_priced_once_on_retrieve(
    telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI
) -> None:
    """Queued create: no cost. Retrieve still in progress: no cost. Retrieve completed: priced once.
    Retrieve again: a span without cost, without child spans, counters unchanged."""
    queued = sdk.responses.create(model=MODEL, input="Draw a bird", tools=[LOW_TOOL], background=True)
    assert queued.status == "queued"
    (create,) = telemetry.spans()
    assert create.name == CALL
    assert attributes(create)["openai.response.status"] == "queued"
    assert_no_cost(create, "deferred")
    assert attributes(create)["openai.image.count"] == 0
    assert telemetry.points("openai.image.cost") == telemetry.points("openai.image.generated") == []
    assert token_sums(telemetry) == {}

    in_progress = sdk.responses.retrieve(queued.id)
    completed = sdk.responses.retrieve(queued.id)
    assert (in_progress.status, completed.status) == ("in_progress", "completed")
    assert [span.name for span in telemetry.spans()] == [CALL, CALL, CHILD, CALL]
    _, polled, child, priced = telemetry.spans()
    assert attributes(polled)["openai.response.status"] == "in_progress"
    assert_no_cost(polled, "deferred")
    assert child.parent is not None and child.parent.span_id == parent_id(priced)
    a = attributes(priced)
    assert "gen_ai.request.model" not in a  # retrieve names no model
    assert (a["gen_ai.response.id"], a["gen_ai.response.model"]) == (queued.id, MODEL)
    # "Draw a bird": 11 chars, 3 tokens, revised 38 chars, 10 tokens (LOW_TOTAL)
    assert (a["gen_ai.usage.cost"], a["openai.image.cost.mainline"]) == (LOW_TOTAL, SHORT_MAINLINE)
    assert (a["openai.image.model"], a["openai.image.model.source"]) == ("gpt-image-1", "response")
    assert attributes(child)["gen_ai.usage.cost"] == LOW_IMAGE
    assert cost_totals(telemetry) == (LOW_IMAGE, SHORT_MAINLINE)
    assert telemetry.total("openai.image.generated") == 1
    tokens = token_sums(telemetry)

    again = sdk.responses.retrieve(queued.id)
    assert again.status == "completed"
    assert [span.name for span in telemetry.spans()] == [CALL, CALL, CHILD, CALL, CALL]
    last = telemetry.spans()[-1]
    assert attributes(last)["gen_ai.response.id"] == queued.id
    assert_no_cost(last, "already_counted")

    # ... but still describes the response (cost-model rule 8): model, quality, size, count, tokens
    def description(span: ReadableSpan) -> dict[str, Any]:
        return {
            k: v
            for k, v in attributes(span).items()
            if not k.startswith("openai.image.cost.") and k not in ("gen_ai.usage.cost", "openai.request.id")
        }

    assert description(last) == description(priced)
    assert {"openai.image.model", "openai.image.count", "gen_ai.usage.input_tokens"} <= set(description(last))
    assert cost_totals(telemetry) == (LOW_IMAGE, SHORT_MAINLINE)
    assert telemetry.total("openai.image.generated") == 1
    assert token_sums(telemetry) == tokens


def test_background_stream_resumed_with_the_helper(
    telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI
) -> None:
    """A background stream left after 5 events costs nothing; resuming it with
    `responses.stream(response_id=..., starting_after=...)` prices it; a later retrieve does not."""
    tool: Any = {**LOW_TOOL, "partial_images": 2}
    seen: list[Any] = []
    with sdk.responses.create(
        model=MODEL, input="Draw a fish", tools=[tool], background=True, stream=True
    ) as stream:
        for event in stream:
            seen.append(event)
            if len(seen) == 5:
                break
    response_id = seen[0].response.id
    (create,) = telemetry.spans()
    assert_no_cost(create, "deferred")  # left early, but a background response goes on
    assert attributes(create)["openai.image.outcome"] == "abandoned"
    assert telemetry.points("openai.image.unpriced") == []
    assert telemetry.points("openai.image.cost") == []

    with sdk.responses.stream(response_id=response_id, starting_after=4) as helper:
        assert helper._response.status_code == 200  # the SDK helper reads the raw stream's `.response`
        numbers = [event.sequence_number for event in helper]
        final = helper.get_final_response()
    assert numbers[0] == 5 and final.status == "completed" and final.id == response_id
    resumed = telemetry.spans()[-1]
    (child,) = child_spans(telemetry, resumed)
    a = attributes(resumed)
    # "Draw a fish" (11 chars, 3 tokens): mainline SHORT_MAINLINE; tool_usage output 272 + 2 x 100 = 472:
    # 10 x 5e-6 + 472 x 40e-6 = 0.00005 + 0.01888 = 0.01893; total 0.01893 + 0.00024225 = 0.01917225
    assert (a["gen_ai.usage.cost"], a["openai.image.cost.source"]) == (0.01917225, "usage")
    assert (a["openai.image.partial_images"], attributes(child)["openai.image.partial_images"]) == (2, 2)
    assert attributes(child)["gen_ai.usage.cost"] == 0.01893
    assert cost_totals(telemetry) == (0.01893, SHORT_MAINLINE)
    assert telemetry.total("openai.image.partial_images") == 2

    assert sdk.responses.retrieve(response_id).status == "completed"
    assert_no_cost(telemetry.spans()[-1], "already_counted")
    assert len(child_spans(telemetry)) == 1
    assert cost_totals(telemetry) == (0.01893, SHORT_MAINLINE)
    assert telemetry.total("openai.image.generated") == 1


async def test_background_async_stream_resumed_then_retrieved(
    telemetry: Telemetry, instrumented: object, async_sdk: openai.AsyncOpenAI
) -> None:
    seen: list[Any] = []
    stream = await async_sdk.responses.create(
        model=MODEL, input="Draw a fish", tools=[LOW_TOOL], background=True, stream=True
    )
    async with stream:
        async for event in stream:
            seen.append(event)
            if len(seen) == 3:
                break
    response_id = seen[0].response.id
    assert_no_cost(telemetry.spans()[0], "deferred")
    async with async_sdk.responses.stream(response_id=response_id, starting_after=2) as helper:
        numbers = [event.sequence_number async for event in helper]
        final = await helper.get_final_response()
    assert numbers[0] == 3 and final.status == "completed"
    resumed = telemetry.spans()[-1]
    assert (resumed.name, attributes(resumed)["gen_ai.response.id"]) == (CALL, response_id)
    # "Draw a fish", no partial images asked: LOW_IMAGE + SHORT_MAINLINE
    assert attributes(resumed)["gen_ai.usage.cost"] == LOW_TOTAL
    retrieved = await async_sdk.responses.retrieve(response_id)
    assert retrieved.status == "completed"
    assert_no_cost(telemetry.spans()[-1], "already_counted")
    assert len(child_spans(telemetry)) == 1
    assert cost_totals(telemetry) == (LOW_IMAGE, SHORT_MAINLINE)
    assert telemetry.total("openai.image.generated") == 1


# -- 2. calls that concern no image -----------------------------------------------------------------


def test_without_the_image_tool_nothing_is_recorded(
    telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI
) -> None:
    plain = sdk.responses.create(model=MODEL, input="Say hello")
    assert plain.output_text == "Hello from the local OpenAI server."
    list(sdk.responses.create(model=MODEL, input="Say hello", stream=True))
    with sdk.responses.stream(model=MODEL, input="Say hello") as stream:
        stream.get_final_response()
    queued = sdk.responses.create(model=MODEL, input="Say hello", background=True)
    for _ in range(3):
        sdk.responses.retrieve(queued.id)
    sdk.responses.parse(model=MODEL, input="Say hello", text_format=Caption)
    assert telemetry.spans() == []
    for name in ("openai.image.cost", "openai.image.generated", "gen_ai.client.token.usage"):
        assert telemetry.points(name) == [], name
    assert telemetry.points("gen_ai.client.operation.duration") == []


def test_tool_offered_but_nothing_drawn(
    telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI
) -> None:
    response = sdk.responses.create(model=MODEL, input="Say hi, no image please", tools=[LOW_TOOL])
    assert image_calls(response) == []
    call, children = one_call(telemetry)
    assert children == []
    a = attributes(call)
    # 23 chars, 6 tokens; "Sure, no image this time." 7 tokens, no image call:
    # mainline 1506 x 0.15e-6 + 7 x 0.6e-6 = 0.0002259 + 0.0000042 = 0.0002301, and no image cost
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (1506, 7)
    assert (a["openai.image.count"], a["openai.image.partial_images"]) == (0, 0)
    assert a["openai.image.cost.mainline"] == 0.0002301
    assert a["gen_ai.usage.cost"] == 0.0002301
    assert [k for k in a if k.startswith("openai.image.cost.") and k != "openai.image.cost.mainline"] == [
        "openai.image.cost.source",
        "openai.image.cost.pricing_version",
    ]
    assert cost_totals(telemetry) == (0.0, 0.0002301)
    assert telemetry.points("openai.image.generated") == []


# -- 3. what the model drew -------------------------------------------------------------------------


def test_two_images_share_tool_usage_by_estimated_tokens(
    telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI
) -> None:
    """The second image is 1024x1536: tool_usage is split 272 : 408 (= 2 : 3) between the children."""
    text = "Make two images of a boat, one tall"  # 35 chars, 9 tokens; revised 62 chars, 16 tokens
    response = sdk.responses.create(model=MODEL, input=text, tools=[LOW_TOOL])
    first, second = image_calls(response)
    assert (first.size, second.size) == ("1024x1024", "1024x1536")
    call, children = one_call(telemetry)
    by_id = {attributes(child)["gen_ai.tool.call.id"]: attributes(child) for child in children}
    a = attributes(call)
    # tool_usage: input 2 x 16 = 32 text, output 272 + 408 = 680:
    #   32 x 5e-6 + 680 x 40e-6 = 0.00016 + 0.0272 = 0.02736
    # mainline 1509 x 0.15e-6 + (9 + 40) x 0.6e-6 = 0.00022635 + 0.0000294 = 0.00025575
    assert (a["openai.image.cost.input_text"], a["openai.image.cost.output_image"]) == (0.00016, 0.0272)
    assert a["openai.image.cost.mainline"] == 0.00025575
    assert a["gen_ai.usage.cost"] == 0.02761575  # 0.02736 + 0.00025575
    assert (a["openai.image.count"], a["openai.image.quality"], a["openai.image.size"]) == (2, "low", "mixed")
    # shares 2/5 and 3/5 of every component
    assert by_id[first.id]["openai.image.cost.input_text"] == 0.000064  # 0.00016 x 2/5
    assert by_id[first.id]["openai.image.cost.output_image"] == 0.01088  # 0.0272 x 2/5
    assert by_id[first.id]["gen_ai.usage.cost"] == 0.010944
    assert by_id[second.id]["openai.image.cost.input_text"] == 0.000096  # 0.00016 x 3/5
    assert by_id[second.id]["openai.image.cost.output_image"] == 0.01632  # 0.0272 x 3/5
    assert by_id[second.id]["gen_ai.usage.cost"] == 0.016416
    assert (by_id[first.id]["openai.image.size"], by_id[second.id]["openai.image.size"]) == (
        "1024x1024",
        "1024x1536",
    )
    assert cost_totals(telemetry) == (0.02736, 0.00025575)
    assert telemetry.total("openai.image.generated") == 2


def test_two_equal_images_share_equally(
    telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI
) -> None:
    response = sdk.responses.create(model=MODEL, input="Draw two images of a lighthouse", tools=[BARE_TOOL])
    assert len(image_calls(response)) == 2
    call, children = one_call(telemetry)
    # 31 chars, 8 tokens; revised 58 chars, 15 tokens; gpt-image-1.5 medium square twice:
    #   2 x 15 x 5e-6 + 2 x 1056 x 32e-6 + 2 x 211 x 10e-6 = 0.00015 + 0.067584 + 0.00422 = 0.071954
    # mainline 1508 x 0.15e-6 + 49 x 0.6e-6 = 0.0002262 + 0.0000294 = 0.0002556
    assert [attributes(child)["gen_ai.usage.cost"] for child in children] == [0.035977, 0.035977]
    assert attributes(call)["gen_ai.usage.cost"] == 0.0722096  # 0.071954 + 0.0002556
    assert cost_totals(telemetry) == (0.071954, 0.0002556)


def test_failed_moderation_call(telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI) -> None:
    text = "moderation: draw something violent"  # 34 chars, 9 tokens; revised 61 chars, 16 tokens
    response = sdk.responses.create(model=MODEL, input=text, tools=[BARE_TOOL])
    (item,) = image_calls(response)
    assert (response.status, item.status) == ("completed", "failed")
    call, (child,) = one_call(telemetry)
    c = attributes(child)
    assert child.status.status_code is StatusCode.ERROR
    assert child.status.description == "moderation_blocked"
    assert (c["error.type"], c["openai.image.error.code"], c["openai.image.status"]) == (
        "moderation_blocked",
        "moderation_blocked",
        "failed",
    )
    assert c["openai.image.moderation.categories"] == ("violence",)
    assert (c["openai.image.count"], c["gen_ai.tool.call.id"]) == (0, item.id)
    # tool_usage bills the blocked call's input only: 16 x 5e-6 = 0.00008 (rule 6)
    assert (c["gen_ai.usage.cost"], c["openai.image.cost.input_text"]) == (0.00008, 0.00008)
    a = attributes(call)
    assert call.status.status_code is StatusCode.UNSET
    assert a["openai.image.count"] == 0
    # mainline 1509 x 0.15e-6 + (17 + 20) x 0.6e-6 = 0.00022635 + 0.0000222 = 0.00024855
    assert a["openai.image.cost.mainline"] == 0.00024855
    assert a["gen_ai.usage.cost"] == 0.00032855  # 0.00008 + 0.00024855
    assert cost_totals(telemetry) == (0.00008, 0.00024855)
    assert telemetry.points("openai.image.generated") == []


def test_failed_moderation_call_estimated_costs_nothing(telemetry: Telemetry, instrumented: object) -> None:
    with served(tool_usage=False) as client:
        response = client.responses.create(
            model=MODEL, input="moderation: draw something violent", tools=[BARE_TOOL]
        )
    assert image_calls(response)[0].status == "failed"
    call, (child,) = one_call(telemetry)
    assert child.status.status_code is StatusCode.ERROR
    assert attributes(child)["gen_ai.usage.cost"] == 0.0
    assert attributes(child)["openai.image.cost.source"] == "estimate"
    assert attributes(call)["gen_ai.usage.cost"] == 0.00024855  # the mainline only
    assert cost_totals(telemetry) == (0.0, 0.00024855)


@pytest.mark.parametrize("tool_usage", [True, False], ids=["tool_usage", "estimate"])
def test_tool_without_model_and_no_echo_uses_the_sdk_default(
    tool_usage: bool, telemetry: Telemetry, instrumented: object
) -> None:
    with served(echo_tool_model=False, tool_usage=tool_usage) as client:
        response = client.responses.create(model=MODEL, input="Draw a cat", tools=[BARE_TOOL])
    assert "model" not in response.tools[0].model_dump(exclude_none=True)
    call, (child,) = one_call(telemetry)
    a = attributes(call)
    assert (a["openai.image.model"], a["openai.image.model.source"]) == (DEFAULT_TOOL_MODEL, "default")
    assert (attributes(child)["openai.image.model"], attributes(child)["openai.image.model.source"]) == (
        DEFAULT_TOOL_MODEL,
        "default",
    )
    # "Draw a cat": 10 chars, 3 tokens (SHORT_MAINLINE); revised 37 chars, 10 tokens: 0.00005 of text.
    # tool_usage (the server drew with gpt-image-1.5: 1056 image + 211 text output), priced as the default:
    #   2.6-sunburst (text out billed as image out): 0.00005 + 1267 x 30e-6 = 0.00005 + 0.03801 = 0.03806
    #   gpt-image-1: 0.00005 + 1267 x 40e-6 = 0.00005 + 0.05068 = 0.05073
    # estimate, medium 1024x1024:
    #   2.6-sunburst: s = round(24 x 1) = 24, ceil(24 x 24 x 3048576 / 4e6) = 439;
    #     0.00005 + 439 x 30e-6 = 0.00005 + 0.01317 = 0.01322
    #   gpt-image-1: 0.00005 + 1056 x 40e-6 = 0.00005 + 0.04224 = 0.04229
    if tool_usage:
        image = 0.03806 if SDK3 else 0.05073
        total = 0.03830225 if SDK3 else 0.05097225
    else:
        image = 0.01322 if SDK3 else 0.04229
        total = 0.01346225 if SDK3 else 0.04253225
    assert a["openai.image.cost.source"] == ("usage" if tool_usage else "estimate")
    assert (attributes(child)["gen_ai.usage.cost"], a["gen_ai.usage.cost"]) == (image, total)
    assert cost_totals(telemetry) == (image, SHORT_MAINLINE)


def test_tool_usage_is_read_on_both_sdk_lines(
    telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI
) -> None:
    """openai 2.x's Response declares no `tool_usage`: it arrives as an extra field and is still priced."""
    response = sdk.responses.create(model=MODEL, input=LIGHTHOUSE, tools=[BARE_TOOL])
    assert ("tool_usage" in type(response).model_fields) is SDK3
    if not SDK3:
        assert (response.model_extra or {})["tool_usage"]["image_gen"]["output_tokens"] == 1267
    call, (child,) = one_call(telemetry)
    for span in (call, child):
        assert attributes(span)["openai.image.cost.source"] == "usage"
    assert attributes(call)["openai.image.usage.output_text_tokens"] == 211
    assert cost_totals(telemetry) == (LIGHTHOUSE_IMAGE, LIGHTHOUSE_MAINLINE)


def test_tool_without_model_echoed_by_the_response(
    telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI
) -> None:
    sdk.responses.create(model=MODEL, input=LIGHTHOUSE, tools=[BARE_TOOL])
    call, (child,) = one_call(telemetry)
    for span in (call, child):
        assert (attributes(span)["openai.image.model"], attributes(span)["openai.image.model.source"]) == (
            "gpt-image-1.5",
            "response",
        )


def input_with_image(text: str) -> Any:
    return [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": text},
                {"type": "input_image", "image_url": "data:image/png;base64," + TINY_PNG_B64},
            ],
        }
    ]


def test_action_auto_resolved_to_edit(telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI) -> None:
    tool: Any = {**LOW_TOOL, "action": "auto"}
    response = sdk.responses.create(model=MODEL, input=input_with_image("Make it night"), tools=[tool])
    (item,) = image_calls(response)
    assert item.action == "edit"
    call, (child,) = one_call(telemetry)
    c = attributes(child)
    assert c["openai.image.action"] == "edit"
    assert attributes(call)["openai.image.action"] == "edit"  # sent `auto`; the response says what it became
    # edit, input image 194 tokens (revised 40 chars, 10 tokens):
    #   10 x 5e-6 + 194 x 10e-6 + 272 x 40e-6 = 0.00005 + 0.00194 + 0.01088 = 0.01287
    assert (c["openai.image.cost.input_image"], c["gen_ai.usage.cost"]) == (0.00194, 0.01287)
    assert attributes(call)["openai.image.usage.input_image_tokens"] == 194
    # "Make it night": 13 chars, 4 tokens: 1504 x 0.15e-6 + 28 x 0.6e-6 = 0.0002256 + 0.0000168 = 0.0002424
    assert attributes(call)["gen_ai.usage.cost"] == 0.0131124  # 0.01287 + 0.0002424
    assert cost_totals(telemetry) == (0.01287, 0.0002424)


def test_multi_turn_follow_up(telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI) -> None:
    first = sdk.responses.create(model=MODEL, input="Draw a tree", tools=[LOW_TOOL])
    follow_up = sdk.responses.create(
        model=MODEL, input="Now add stars", tools=[LOW_TOOL], previous_response_id=first.id
    )
    assert follow_up.usage is not None and follow_up.usage.input_tokens_details.cached_tokens == 1024
    (item,) = image_calls(follow_up)
    assert item.action == "edit"
    calls = call_spans(telemetry)
    assert [attributes(span)["gen_ai.response.id"] for span in calls] == [first.id, follow_up.id]
    (child,) = child_spans(telemetry, calls[1])
    assert attributes(calls[0])["gen_ai.usage.cost"] == LOW_TOTAL
    # "Now add stars" (13 chars, 4 tokens), 1024 of 1504 input tokens cached:
    #   480 x 0.15e-6 + 1024 x 0.075e-6 + 28 x 0.6e-6 = 0.000072 + 0.0000768 + 0.0000168 = 0.0001656
    # an edit of the previous image: 10 x 5e-6 + 194 x 10e-6 + 272 x 40e-6 = 0.01287
    a = attributes(calls[1])
    assert a["openai.image.cost.mainline"] == 0.0001656
    assert (attributes(child)["gen_ai.usage.cost"], attributes(child)["openai.image.action"]) == (
        0.01287,
        "edit",
    )
    assert a["gen_ai.usage.cost"] == 0.0130356  # 0.01287 + 0.0001656
    assert cost_totals(telemetry) == pytest.approx((0.01093 + 0.01287, SHORT_MAINLINE + 0.0001656), rel=REL)


def timed_events(stream: Any) -> list[tuple[int, Any, int]]:
    """(clock before, event, clock after) for every event, reading the stream one `next` at a time."""
    timed: list[tuple[int, Any, int]] = []
    iterator = iter(stream)
    while True:
        before = time.time_ns()
        try:
            event = next(iterator)
        except StopIteration:
            return timed
        timed.append((before, event, time.time_ns()))


def test_streamed_partial_images_per_item_and_child_timing(
    telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI
) -> None:
    tool: Any = {**LOW_TOOL, "partial_images": 1}
    stream = sdk.responses.create(
        model=MODEL, input="Make two images of a boat, one tall", tools=[tool], stream=True
    )
    timed = timed_events(stream)
    final = timed[-1][1].response
    call, children = one_call(telemetry)
    by_id = {attributes(child)["gen_ai.tool.call.id"]: child for child in children}
    assert len(by_id) == 2
    for item in image_calls(final):
        child = by_id[item.id]
        assert attributes(child)["openai.image.partial_images"] == 1
        (started,) = [
            (b, a)
            for b, e, a in timed
            if e.type == "response.image_generation_call.in_progress" and e.item_id == item.id
        ]
        (completed,) = [
            (b, a)
            for b, e, a in timed
            if e.type == "response.image_generation_call.completed" and e.item_id == item.id
        ]
        assert child.start_time is not None and child.end_time is not None
        assert started[0] <= child.start_time <= started[1]
        assert completed[0] <= child.end_time <= completed[1]
        assert call.start_time is not None and call.end_time is not None
        assert call.start_time <= child.start_time < child.end_time <= call.end_time
    first, second = (by_id[item.id] for item in image_calls(final))
    assert first.end_time is not None and second.start_time is not None
    assert first.end_time <= second.start_time  # the server draws them one after the other
    a = attributes(call)
    assert a["openai.image.partial_images"] == 2
    # tool_usage includes the partials: output (272 + 100) + (408 + 100) = 880, input 32 text:
    #   32 x 5e-6 + 880 x 40e-6 = 0.00016 + 0.0352 = 0.03536, split 2 : 3 (272 : 408):
    #   0.000064 + 0.01408 = 0.014144 and 0.000096 + 0.02112 = 0.021216
    assert [attributes(child)["gen_ai.usage.cost"] for child in (first, second)] == [0.014144, 0.021216]
    assert a["gen_ai.usage.cost"] == 0.03561575  # 0.03536 + 0.00025575 (mainline as two images above)
    assert "openai.image.cost.partial_images" not in a  # never added again to reported usage
    assert telemetry.total("openai.image.partial_images") == 2
    assert cost_totals(telemetry) == (0.03536, 0.00025575)


def test_estimate_without_tool_usage_adds_partial_images(telemetry: Telemetry, instrumented: object) -> None:
    tool: Any = {**LOW_TOOL, "partial_images": 2}
    with served(tool_usage=False) as client:
        events: list[Any] = list(
            client.responses.create(model=MODEL, input="Draw a fish", tools=[tool], stream=True)
        )
    assert sum(event.type.endswith("partial_image") for event in events) == 2
    call, (child,) = one_call(telemetry)
    a = attributes(call)
    assert a["openai.image.cost.source"] == "estimate"
    assert "openai.image.usage.raw" not in a
    # "Draw a fish": 10 x 5e-6 + 272 x 40e-6 + 2 x 100 x 40e-6 = 0.00005 + 0.01088 + 0.008 = 0.01893
    assert (a["openai.image.cost.input_text"], a["openai.image.cost.output_image"]) == (0.00005, 0.01088)
    assert a["openai.image.cost.partial_images"] == 0.008
    assert attributes(child)["gen_ai.usage.cost"] == 0.01893
    assert attributes(child)["openai.image.cost.partial_images"] == 0.008
    assert a["gen_ai.usage.cost"] == 0.01917225  # 0.01893 + 0.00024225
    assert cost_totals(telemetry) == (0.01893, SHORT_MAINLINE)
    assert token_sums(telemetry) == {("mainline", "input"): 1503, ("mainline", "output"): 28}


def test_high_quality_stream_with_tool_usage(
    telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI
) -> None:
    tool: Any = {"type": "image_generation", "model": "gpt-image-1", "quality": "high", "partial_images": 2}
    events: list[Any] = list(
        sdk.responses.create(model=MODEL, input="Draw a river", tools=[tool], stream=True)
    )
    assert events[-1].type == "response.completed"
    call, (child,) = one_call(telemetry)
    a = attributes(call)
    # "Draw a river" (12 chars, 3 tokens; revised 39 chars, 10 tokens), tool_usage output 4160 + 200:
    #   10 x 5e-6 + 4360 x 40e-6 = 0.00005 + 0.1744 = 0.17445; total 0.17445 + 0.00024225 = 0.17469225
    assert (a["openai.image.quality"], a["openai.image.partial_images.requested"]) == ("high", 2)
    assert (attributes(child)["gen_ai.usage.cost"], a["gen_ai.usage.cost"]) == (0.17445, 0.17469225)
    assert token_sums(telemetry)[("image", "output")] == 4360


# -- 4. metrics across calls and users --------------------------------------------------------------


def test_metrics_per_user_match_the_spans(
    telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI
) -> None:
    with billing_context(user_id="alice", tenant_id="acme"):
        sdk.responses.create(model=MODEL, input=LIGHTHOUSE, tools=[BARE_TOOL])
        sdk.responses.create(model=MODEL, input="moderation: draw something violent", tools=[BARE_TOOL])
    with billing_context(user_id="bob", tenant_id="acme"):
        sdk.responses.create(model=MODEL, input="Make two images of a boat, one tall", tools=[LOW_TOOL])
        sdk.responses.create(model=MODEL, input="Say hi, no image please", tools=[LOW_TOOL])
    spent: dict[str, float] = {}
    for span in call_spans(telemetry):
        user = str(attributes(span)["user.id"])
        spent[user] = spent.get(user, 0.0) + float(attributes(span)["gen_ai.usage.cost"])
    # alice: 0.03619955 + 0.00032855 = 0.0365281 (image 0.035957 + 0.00008, mainline 0.00024255 + 0.00024855)
    # bob: 0.02761575 + 0.0002301 = 0.02784585 (image 0.02736, mainline 0.00025575 + 0.0002301)
    assert spent == pytest.approx({"alice": 0.0365281, "bob": 0.02784585}, rel=REL)
    for user, image, mainline in (("alice", 0.036037, 0.0004911), ("bob", 0.02736, 0.00048585)):
        assert cost_totals(telemetry, user__id=user) == pytest.approx((image, mainline), rel=REL)
        assert sum(cost_totals(telemetry, user__id=user)) == pytest.approx(spent[user], rel=REL)
    parts = {labels["openai.image.cost.part"] for labels, _ in telemetry.sums("openai.image.cost")}
    assert parts == {"image", "mainline"}
    assert telemetry.total("openai.image.generated", user__id="alice") == 1  # the blocked call drew nothing
    assert telemetry.total("openai.image.generated", user__id="bob") == 2
    assert telemetry.total("openai.image.generated", tenant__id="acme") == 3
    assert token_sums(telemetry) == {
        ("mainline", "input"): 1505 + 1509 + 1509 + 1506,
        ("mainline", "output"): 28 + 37 + 49 + 7,
        ("image", "input"): 11 + 16 + 32 + 0,
        ("image", "output"): 1267 + 0 + 680 + 0,
    }
    for labels, _ in telemetry.points("gen_ai.client.token.usage"):
        assert labels["user.id"] in ("alice", "bob") and labels["tenant.id"] == "acme"


# -- 5. attribution -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("billing_context", {"user.id": "u-ctx", "tenant.id": "t-ctx"}),
        ("user", {"user.id": "u-req"}),
        ("safety_identifier", {"user.id": "u-safe"}),
    ],
)
def test_attribution_reaches_spans_children_and_metrics(
    how: str, expected: dict[str, str], telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI
) -> None:
    text = "Make two images of a boat, one tall"
    if how == "billing_context":
        with billing_context(user_id="u-ctx", tenant_id="t-ctx"):
            sdk.responses.create(model=MODEL, input=text, tools=[LOW_TOOL])
    elif how == "user":
        sdk.responses.create(model=MODEL, input=text, tools=[LOW_TOOL], user="u-req")
    else:
        sdk.responses.create(model=MODEL, input=text, tools=[LOW_TOOL], safety_identifier="u-safe")
    call, children = one_call(telemetry)
    for span in (call, *children):
        assert {k: v for k, v in attributes(span).items() if k in ("user.id", "tenant.id")} == expected
    for name in ("openai.image.cost", "openai.image.generated", "gen_ai.client.token.usage"):
        points = telemetry.points(name)
        assert points, name
        for labels, _ in points:
            assert {k: v for k, v in labels.items() if k in ("user.id", "tenant.id")} == expected, name
    assert cost_totals(telemetry, user__id=expected["user.id"]) == (0.02736, 0.00025575)


def test_attribution_of_a_background_response_priced_on_retrieve(
    telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI
) -> None:
    with billing_context(user_id="u-ctx", tenant_id="t-ctx"):
        queued = sdk.responses.create(model=MODEL, input="Draw a bird", tools=[LOW_TOOL], background=True)
        sdk.responses.retrieve(queued.id)
        sdk.responses.retrieve(queued.id)
    priced = telemetry.spans()[-1]
    (child,) = child_spans(telemetry, priced)
    for span in (priced, child):
        assert (attributes(span)["user.id"], attributes(span)["tenant.id"]) == ("u-ctx", "t-ctx")
    assert cost_totals(telemetry, user__id="u-ctx", tenant__id="t-ctx") == (LOW_IMAGE, SHORT_MAINLINE)


def test_background_response_keeps_the_request_safety_identifier(
    telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI
) -> None:
    queued = sdk.responses.create(
        model=MODEL, input="Draw a bird", tools=[LOW_TOOL], background=True, safety_identifier="u-safe"
    )
    completed = sdk.responses.retrieve(queued.id)
    completed = sdk.responses.retrieve(queued.id)
    assert completed.safety_identifier == "u-safe"
    assert attributes(telemetry.spans()[-1])["user.id"] == "u-safe"
    assert cost_totals(telemetry, user__id="u-safe") == (LOW_IMAGE, SHORT_MAINLINE)


def test_no_cost_recorded_twice_after_collection(
    telemetry: Telemetry, instrumented: object, sdk: openai.OpenAI
) -> None:
    """A stream read to its end, then dropped and collected, is recorded once."""
    stream = sdk.responses.create(model=MODEL, input=LIGHTHOUSE, tools=[BARE_TOOL], stream=True)
    events: list[Any] = list(stream)
    del stream
    gc.collect()
    assert_lighthouse(telemetry, events[-1].response, stream=True)
