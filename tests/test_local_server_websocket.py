"""The bundled server's Responses WebSocket endpoint, driven by the SDK's own `responses.connect()`.

Every frame must validate strictly as the SDK's `ResponsesServerEvent`, and the numbers must be the
ones the HTTP stream reports (the cost model's token rules), since the plugin's WebSocket tests
price them.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pydantic
import pytest
from openai.resources.responses import Responses

if not hasattr(Responses, "connect"):
    pytest.skip(f"openai {openai.__version__} has no responses.connect()", allow_module_level=True)
pytest.importorskip("websockets", reason="the SDK's WebSocket mode needs the `websockets` package")

from openai.types.responses import responses_server_event
from websockets.exceptions import ConnectionClosedError

EVENTS = pydantic.TypeAdapter(responses_server_event.ResponsesServerEvent)
# openai 2.x's union has the HTTP stream's `error` event only, not the WebSocket one (3.x's shape).
WS_ERROR_TYPED = hasattr(responses_server_event, "ResponseWsError")
TOOL = {"type": "image_generation", "model": "gpt-image-1", "quality": "low", "partial_images": 1}
FINAL = ("response.completed", "response.failed", "response.incomplete")


def frames_until_final(connection: Any) -> list[dict[str, Any]]:
    """Raw frames of one response, each validated strictly as the SDK's event union."""
    frames: list[dict[str, Any]] = []
    while True:
        raw = connection.recv_bytes()
        frames.append(json.loads(raw))
        if frames[-1]["type"] != "error" or WS_ERROR_TYPED:
            EVENTS.validate_json(raw, strict=True)
        if frames[-1]["type"] in (*FINAL, "error"):
            return frames


def test_one_image_is_streamed_as_the_http_stream_events(client: openai.OpenAI, server: Any) -> None:
    with client.responses.connect() as connection:
        connection.response.create(model="gpt-5", input="a cat", tools=[TOOL])
        frames = frames_until_final(connection)
    types = [frame["type"] for frame in frames]
    assert types[:8] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.image_generation_call.in_progress",
        "response.image_generation_call.generating",
        "response.image_generation_call.partial_image",
        "response.image_generation_call.completed",
        "response.output_item.done",
    ]
    assert types[-1] == "response.completed"
    assert [frame["sequence_number"] for frame in frames] == list(range(len(frames)))
    assert all("stream_id" not in frame for frame in frames)
    response = frames[-1]["response"]
    # revised prompt "A detailed illustration of a cat" (32 chars): ceil(32/4) = 8 text tokens;
    # low 1024x1024 gpt-image-1: 272 image tokens + 100 for the one partial image.
    assert response["tool_usage"]["image_gen"]["input_tokens"] == 8
    assert response["tool_usage"]["image_gen"]["output_tokens"] == 372
    assert response["usage"]["input_tokens"] == 1500 + 2  # base + ceil(len("a cat") / 4)
    assert [(r.method, r.route) for r in server.requests] == [
        ("GET", "/responses"),
        ("WEBSOCKET", "/responses"),
    ]
    assert server.requests[1].body["tools"] == [TOOL]


def test_responses_on_one_connection_come_in_order_and_echo_their_lane(client: openai.OpenAI) -> None:
    with client.responses.connect() as connection:
        # `stream_id` through a plain event: openai 2.x's `response.create()` has no such argument
        connection.send(
            {
                "type": "response.create",
                "model": "gpt-5",
                "input": "two images of a cat",
                "tools": [TOOL],
                "stream_id": "a",
            }
        )  # type: ignore[typeddict-unknown-key]
        connection.response.create(model="gpt-5", input="hello")
        first = frames_until_final(connection)
        second = frames_until_final(connection)
    assert {frame["stream_id"] for frame in first} == {"a"}
    items = [f["item"] for f in first if f["type"] == "response.output_item.done"]
    assert [item["type"] for item in items] == ["image_generation_call"] * 2 + ["message"]
    assert first[-1]["response"]["tool_usage"]["image_gen"]["output_tokens"] == 2 * 372
    assert all("stream_id" not in frame for frame in second)
    assert second[-1]["response"]["output"][0]["type"] == "message"
    assert first[-1]["response"]["id"] != second[-1]["response"]["id"]


def test_a_rejected_create_gets_an_error_event(client: openai.OpenAI, server: Any) -> None:
    with client.responses.connect() as connection:
        server.inject(429, path_prefix="/responses")  # injected before the handshake, it would refuse it
        connection.send({"type": "response.create", "model": "gpt-5", "input": "a cat", "stream_id": "x"})  # type: ignore[typeddict-unknown-key]
        connection.response.create(model="gpt-5", input="a cat", tools=[TOOL], background=True)
        rate_limited = frames_until_final(connection)
        background = frames_until_final(connection)
        connection.response.create(model="gpt-5", input="a cat", tools=[TOOL])
        assert frames_until_final(connection)[-1]["type"] == "response.completed"
    assert rate_limited == [
        {
            "type": "error",
            "error": {
                "message": "Rate limit reached for requests per minute. Please try again in 20ms.",
                "type": "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            },
            "status": 429,
            "stream_id": "x",
        }
    ]
    assert background[0]["error"]["param"] == "background"


def test_cut_stream_drops_the_connection_mid_response(client: openai.OpenAI, server: Any) -> None:
    server.inject("cut_stream", path_prefix="/responses")
    seen: list[str] = []
    with pytest.raises(ConnectionClosedError), client.responses.connect() as connection:
        connection.response.create(model="gpt-5", input="a cat", tools=[TOOL])
        seen.extend(event.type for event in connection)
    assert "response.output_item.done" in seen
    assert not set(seen) & set(FINAL)


def test_short_stream_closes_the_connection_cleanly_mid_response(client: openai.OpenAI, server: Any) -> None:
    server.inject("short_stream", path_prefix="/responses")
    with client.responses.connect() as connection:
        connection.response.create(model="gpt-5", input="a cat", tools=[TOOL])
        seen = [event.type for event in connection]  # the iterator ends at a clean close
    assert seen[-1] == "response.content_part.added"
    assert not set(seen) & set(FINAL)


async def test_async_connect(async_client: openai.AsyncOpenAI) -> None:
    async with async_client.responses.connect() as connection:
        await connection.response.create(model="gpt-5", input="two images", tools=[TOOL])
        async for event in connection:
            if event.type == "response.completed":
                break
    # openai 2.x has no `tool_usage` type: read it as the SDK keeps it on either line
    assert event.response.model_dump()["tool_usage"]["image_gen"]["output_tokens"] == 2 * 372
