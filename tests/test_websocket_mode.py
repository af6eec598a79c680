"""Responses WebSocket mode (`client.responses.connect()`), sync and async, through the real SDK
and the bundled server's WebSocket endpoint.

Prices (docs/cost-model.md): gpt-image-1 text in $5, image out $40 per 1M tokens; gpt-5 (from
genai-prices) in $1.25, out $10 per 1M. The server's numbers for `TOOL` (low 1024x1024, one partial
image per image): per image 8 input text tokens (revised prompt "A detailed illustration of a cat",
32 chars) and 272 + 100 output image tokens; gpt-5 mainline 1500 + ceil(len(input)/4) input,
ceil(len(message)/4) + 20 per image + 64 reasoning output tokens.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai.resources.responses import Responses
from openai.types.responses import ResponseCompletedEvent
from opentelemetry import trace

from otel_image_cost import billing_context

from conftest import Telemetry

if not hasattr(Responses, "connect"):
    pytest.skip(f"openai {openai.__version__} has no responses.connect()", allow_module_level=True)
pytest.importorskip("websockets", reason="the SDK's WebSocket mode needs the `websockets` package")

from websockets.exceptions import ConnectionClosedError

TOOL = {"type": "image_generation", "model": "gpt-image-1", "quality": "low", "partial_images": 1}
FINAL = ("response.completed", "response.failed", "response.incomplete")
COST = "openai.image.cost"
UNPRICED = "openai.image.unpriced"

# One image for "a cat": image 8 x 5e-6 + 372 x 40e-6 = 0.00004 + 0.01488 = 0.01492;
# gpt-5: input 1500 + 2 = 1502 x 1.25e-6 = 0.0018775, output ("Here is the image you asked for."
# 32 chars -> 8) 8 + 20 + 64 = 92 x 10e-6 = 0.00092; mainline 0.0027975.
ONE_IMAGE = 0.01492
ONE_IMAGE_MAINLINE = 0.0027975
# Two images for "two images of a cat": revised prompt "A detailed illustration of two images of a
# cat" (46 chars -> 12 tokens) per image: image 24 x 5e-6 + 744 x 40e-6 = 0.00012 + 0.02976 = 0.02988
# (0.01494 per image); gpt-5: input 1500 + 5 = 1505
# x 1.25e-6 = 0.00188125, output ("Here are the 2 images you asked for." 36 chars -> 9) 9 + 40 + 64
# = 113 x 10e-6 = 0.00113; mainline 0.00301125.
TWO_IMAGES = 0.02988
TWO_IMAGES_MAINLINE = 0.00301125


def drain(connection: Any, responses: int = 1) -> list[Any]:
    """Read events until `responses` responses have ended (what an app's loop does)."""
    events, ended = [], 0
    for event in connection:
        events.append(event)
        ended += event.type in (*FINAL, "error")
        if ended == responses:
            break
    return events


async def drain_async(connection: Any, responses: int = 1) -> list[Any]:
    events, ended = [], 0
    async for event in connection:
        events.append(event)
        ended += event.type in (*FINAL, "error")
        if ended == responses:
            break
    return events


def call_spans(telemetry: Telemetry) -> list[Any]:
    return [span for span in telemetry.spans() if span.name.startswith("chat")]


def test_one_image_sync(telemetry: Telemetry, instrumented: object, client: openai.OpenAI) -> None:
    tracer = telemetry.tracer_provider.get_tracer("app")
    with client.responses.connect() as connection:
        with (
            tracer.start_as_current_span("handler") as handler,
            billing_context(user_id="alice", tenant_id="acme"),
        ):
            connection.response.create(model="gpt-5", input="a cat", tools=[TOOL])
        events = drain(connection)  # read outside the context: attribution is the sender's
    assert isinstance(events[-1], ResponseCompletedEvent)  # the SDK's own objects
    (span,) = call_spans(telemetry)
    attributes = dict(span.attributes or {})
    assert span.name == "chat gpt-5"
    assert span.parent is not None and span.parent.span_id == handler.get_span_context().span_id
    assert attributes["user.id"] == "alice" and attributes["tenant.id"] == "acme"
    assert attributes["gen_ai.usage.cost"] == ONE_IMAGE + ONE_IMAGE_MAINLINE == 0.0177175
    assert attributes["openai.image.cost.source"] == "usage"
    assert attributes["openai.image.count"] == 1
    assert attributes["openai.image.partial_images"] == 1
    assert attributes["gen_ai.response.id"] == events[-1].response.id
    assert "openai.request.id" not in attributes
    assert (attributes["server.address"], attributes["server.port"]) == ("127.0.0.1", client.base_url.port)
    (child,) = [s for s in telemetry.spans() if s.name == "execute_tool image_generation"]
    assert child.parent is not None and child.parent.span_id == span.context.span_id
    assert telemetry.total(COST, user__id="alice", openai__image__cost__part="image") == ONE_IMAGE
    assert telemetry.total(COST, user__id="alice", openai__image__cost__part="mainline") == ONE_IMAGE_MAINLINE
    assert telemetry.total("openai.image.generated") == 1
    assert telemetry.total("openai.image.partial_images") == 1
    record = telemetry.record()  # the call's billing record: the ledger line
    assert record["openai.image.outcome"] == attributes["openai.image.outcome"] == "ok"
    assert (record["gen_ai.usage.cost"], record["user.id"]) == (0.0177175, "alice")
    assert record["gen_ai.response.id"] == events[-1].response.id
    assert "openai.request.id" not in record  # a WebSocket carries none


async def test_two_images_async(
    telemetry: Telemetry, instrumented: object, async_client: openai.AsyncOpenAI
) -> None:
    async with async_client.responses.connect() as connection:
        with billing_context(user_id="bob"):
            await connection.response.create(model="gpt-5", input="two images of a cat", tools=[TOOL])
        await drain_async(connection)
    (span,) = call_spans(telemetry)
    attributes = dict(span.attributes or {})
    assert attributes["user.id"] == "bob"
    assert attributes["gen_ai.usage.cost"] == TWO_IMAGES + TWO_IMAGES_MAINLINE == 0.03289125
    assert attributes["openai.image.count"] == 2
    assert attributes["openai.image.partial_images"] == 2
    shares = [
        s.attributes["gen_ai.usage.cost"] for s in telemetry.spans() if s.name.startswith("execute_tool")
    ]
    assert shares == [0.01494, 0.01494]
    assert telemetry.total(COST, user__id="bob") == TWO_IMAGES + TWO_IMAGES_MAINLINE
    assert telemetry.total("openai.image.generated", user__id="bob") == 2


def test_several_responses_on_one_connection(
    telemetry: Telemetry, instrumented: object, client: openai.OpenAI
) -> None:
    """Creates sent back to back, one without the tool between them and one on its own lane: each
    event belongs to its own create, and the create without the tool records nothing."""
    with client.responses.connect() as connection:
        with billing_context(user_id="u1"):
            connection.response.create(model="gpt-5", input="a cat", tools=[TOOL])
        connection.response.create(model="gpt-5", input="hello")  # no tool: no span
        with billing_context(user_id="u2"):
            # `stream_id` through a plain event: openai 2.x's `response.create()` has no such argument
            lane_b = {
                "type": "response.create",
                "model": "gpt-5",
                "input": "two images of a cat",
                "stream_id": "b",
            }
            connection.send({**lane_b, "tools": [TOOL]})  # type: ignore[typeddict-item]
        with billing_context(user_id="u3"):
            connection.response.create(model="gpt-5", input="a cat", tools=[TOOL])
        drain(connection, responses=4)
    spans = {span.attributes["user.id"]: span for span in call_spans(telemetry)}
    assert sorted(spans) == ["u1", "u2", "u3"]
    assert [spans[u].attributes["openai.image.count"] for u in ("u1", "u2", "u3")] == [1, 2, 1]
    assert telemetry.total(COST, user__id="u1") == ONE_IMAGE + ONE_IMAGE_MAINLINE
    assert telemetry.total(COST, user__id="u2") == TWO_IMAGES + TWO_IMAGES_MAINLINE
    assert telemetry.total(COST, user__id="u3") == ONE_IMAGE + ONE_IMAGE_MAINLINE
    assert len(telemetry.spans()) == 3 + 4  # three calls, four images
    assert telemetry.total("openai.image.generated") == 4
    records = {r.attributes["user.id"]: r.attributes["gen_ai.usage.cost"] for r in telemetry.records()}
    assert records == {user: telemetry.total(COST, user__id=user) for user in ("u1", "u2", "u3")}


@pytest.mark.parametrize("connection_api", ["sync", "async"])
async def test_a_create_without_the_tool_is_left_alone(
    telemetry: Telemetry,
    instrumented: object,
    client: openai.OpenAI,
    async_client: openai.AsyncOpenAI,
    connection_api: str,
) -> None:
    if connection_api == "sync":
        with client.responses.connect() as connection:
            connection.response.create(model="gpt-5", input="hello")
            drain(connection)
    else:
        async with async_client.responses.connect() as connection:
            await connection.response.create(model="gpt-5", input="hello")
            await drain_async(connection)
    assert telemetry.spans() == []
    assert telemetry.points(COST) == []


def test_connection_dropped_mid_response(
    telemetry: Telemetry, instrumented: object, client: openai.OpenAI, server: Any
) -> None:
    """The app gets the SDK's own error; the image whose item was seen is estimated (rule 12):
    (272 + 100 partial) x 40e-6 + ceil(32/4) = 8 x 5e-6 = 0.01492."""
    server.inject("cut_stream", path_prefix="/responses")
    with pytest.raises(ConnectionClosedError), client.responses.connect() as connection:
        with billing_context(user_id="carol"):
            connection.response.create(model="gpt-5", input="a cat", tools=[TOOL])
        drain(connection)
    (span,) = call_spans(telemetry)
    attributes = dict(span.attributes or {})
    assert attributes["openai.image.cost.source"] == "estimate"
    assert attributes["openai.image.count"] == 1
    assert attributes["openai.image.outcome"] == "abandoned"
    assert telemetry.total(COST, user__id="carol", openai__image__cost__part="image") == 0.01492
    assert telemetry.total(COST, openai__image__cost__part="mainline") == 0
    # the mainline part: no usage was seen
    assert [
        (a["openai.image.cost.part"], a["openai.image.unpriced.reason"], v)
        for a, v in telemetry.sums(UNPRICED)
    ] == [("mainline", "stream_abandoned", 1)]
    record = telemetry.record()
    assert (record["gen_ai.usage.cost"], record["openai.image.unpriced.reason"]) == (
        0.01492,
        "stream_abandoned",
    )
    assert "openai.request.id" not in record  # a WebSocket carries none


async def test_connection_closed_by_the_app_mid_response(
    telemetry: Telemetry, instrumented: object, async_client: openai.AsyncOpenAI
) -> None:
    """The app stops reading and closes: the open call ends at the close, nothing seen of it."""
    # Unbounded queue: `websockets` otherwise stops reading after 16 unread frames and waits
    # 10 s for the server's answer to the close.
    options: Any = {"max_queue": None}
    async with async_client.responses.connect(websocket_connection_options=options) as connection:
        with billing_context(user_id="dave"):
            await connection.response.create(model="gpt-5", input="a cat", tools=[TOOL])
    (span,) = call_spans(telemetry)
    assert span.end_time is not None
    assert span.attributes is not None and span.attributes["user.id"] == "dave"
    assert telemetry.points(COST) == []
    # abandoned before any image began: both parts unpriced, and the span still says so (rule 12)
    assert (span.attributes["openai.image.outcome"], span.attributes["openai.image.cost.source"]) == (
        "abandoned",
        "unknown",
    )
    assert sorted(
        (a["openai.image.cost.part"], a["openai.image.unpriced.reason"], v)
        for a, v in telemetry.sums(UNPRICED)
    ) == [("image", "stream_abandoned", 1), ("mainline", "stream_abandoned", 1)]
    assert "gen_ai.usage.cost" not in telemetry.record()


def test_an_error_event_fails_its_call(
    telemetry: Telemetry, instrumented: object, client: openai.OpenAI, server: Any
) -> None:
    with client.responses.connect() as connection:
        server.inject(429, path_prefix="/responses")
        connection.response.create(model="gpt-5", input="a cat", tools=[TOOL])
        connection.response.create(model="gpt-5", input="a cat", tools=[TOOL])
        events = drain(connection, responses=2)
    assert [e.type for e in events if e.type in (*FINAL, "error")] == ["error", "response.completed"]
    failed, priced = call_spans(telemetry)
    assert failed.attributes is not None and failed.attributes["error.type"] == "ResponseWsError"
    assert failed.status.status_code == trace.StatusCode.ERROR
    assert "gen_ai.usage.cost" not in failed.attributes
    assert priced.attributes is not None and priced.attributes["gen_ai.usage.cost"] == 0.0177175
    assert telemetry.total(COST) == ONE_IMAGE + ONE_IMAGE_MAINLINE
    outcomes = [
        (r.attributes["openai.image.outcome"], r.attributes.get("gen_ai.usage.cost"))
        for r in telemetry.records()
    ]
    assert outcomes == [("error", None), ("ok", 0.0177175)]


def test_uninstrument_stops_recording(
    telemetry: Telemetry, instrument: Callable[..., Any], client: openai.OpenAI
) -> None:
    instrument().uninstrument()
    with client.responses.connect() as connection:
        connection.response.create(model="gpt-5", input="a cat", tools=[TOOL])
        drain(connection)
    assert telemetry.spans() == []


def test_a_raw_websockets_client_with_binary_frames(
    telemetry: Telemetry, instrumented: object, server: Any
) -> None:
    """What openai-agents does: its own `websockets` connection to `/v1/responses`. Frames that
    are not JSON (or not UTF-8) pass through untouched and a create sent as bytes is tracked."""
    from websockets.sync.client import connect

    url = server.base_url.replace("http://", "ws://") + "/responses"
    create = {"type": "response.create", "model": "gpt-5", "input": "a cat", "tools": [TOOL]}
    with connect(url) as socket, billing_context(user_id="erin"):
        socket.send(b"\xff\xfe not json")
        assert json.loads(socket.recv())["type"] == "error"  # the server's answer to garbage
        socket.send(json.dumps(create).encode())
        while json.loads(socket.recv())["type"] not in FINAL:
            pass
    (span,) = call_spans(telemetry)
    assert span.attributes is not None and span.attributes["user.id"] == "erin"
    assert telemetry.total(COST, user__id="erin") == ONE_IMAGE + ONE_IMAGE_MAINLINE


def test_session_lanes_and_a_create_queued_before_the_socket_opened(
    telemetry: Telemetry, instrumented: object, client: openai.OpenAI
) -> None:
    """The SDK's session writes lane creates to the socket directly, and `connect().send()` queues
    a create until the socket opens: both are seen (the queued one in the context that opened it)."""
    session_module = pytest.importorskip(
        "openai.lib.responses_websocket", reason=f"openai {openai.__version__} has no WebSocket sessions"
    )
    create = {"type": "response.create", "model": "gpt-5", "tools": [TOOL]}

    limits = session_module.ResponsesWebSocketLimits(  # budgets for this test's few small events
        max_lanes=4, max_events_per_lane=256, max_events=512, max_bytes_per_lane=1 << 24, max_bytes=1 << 25
    )
    manager = client.responses.connect()
    manager.send({**create, "input": "a cat"})  # type: ignore[arg-type]
    with billing_context(user_id="frank"), manager as connection:
        drain(connection)
    with (
        client.responses.connect() as connection,
        session_module.ResponsesWebSocketSession(connection, limits=limits) as session,
    ):
        lane = session.lane("drawing")
        with billing_context(user_id="grace"):
            lane.send({**create, "input": "two images of a cat"})
        response = lane.get_final_response(timeout=10)
    assert response.status == "completed"
    assert telemetry.total(COST, user__id="frank") == ONE_IMAGE + ONE_IMAGE_MAINLINE
    assert telemetry.total(COST, user__id="grace") == TWO_IMAGES + TWO_IMAGES_MAINLINE
    assert len(call_spans(telemetry)) == 2
