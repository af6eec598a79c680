"""Clients that cached SDK methods before `instrument()` (litellm and LangChain keep their clients).

`client.images.with_raw_response` is a cached property holding wrappers bound to the methods as
they were when it was first read: a client used before `instrument()` keeps calling the
unwrapped methods. The plugin also sees every SDK request where the SDK sends it, so those calls
are tracked there; a call its method wrappers already track is never tracked again.

Every number is exact: gpt-image-1 low 1024x1024 with the prompt FOX (21 chars, 6 text tokens)
costs 6 x 5e-6 + 272 x 40e-6 = 0.00003 + 0.01088 = 0.01091 (docs/cost-model.md); a Responses call
"Draw a tree" with a low gpt-image-1 tool costs image 0.01093 + mainline 0.00024225 = 0.01117225
(see tests/test_responses_paths.py for the arithmetic).
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
import wrapt
from openai._base_client import AsyncAPIClient, SyncAPIClient

from conftest import Telemetry
from local_openai_server import LocalOpenAIServer

FOX = "a red fox in the snow"
IMAGE_CALL = 0.01091
RESPONSES_CALL = 0.01117225
LOW: dict[str, Any] = {"model": "gpt-image-1", "prompt": FOX, "quality": "low", "size": "1024x1024"}
TOOL: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "input": "Draw a tree",
    "tools": [{"type": "image_generation", "model": "gpt-image-1", "quality": "low"}],
}
CLIENT: dict[str, Any] = {"api_key": "sk-test", "max_retries": 0, "timeout": 10}


def counted(telemetry: Telemetry) -> tuple[list[str], int, float]:
    """(call span names, images counted, total cost counted)."""
    names = sorted(span.name for span in telemetry.spans() if not span.name.startswith("execute_tool"))
    return names, int(telemetry.total("openai.image.generated")), telemetry.total("openai.image.cost")


def sync_calls(client: openai.OpenAI) -> None:
    """One call through each cached wrapper and one plain call."""
    client.images.with_raw_response.generate(**LOW).parse()
    with client.images.with_streaming_response.generate(**LOW) as streamed:
        streamed.parse()
    client.responses.with_raw_response.create(**TOOL).parse()
    with client.responses.with_streaming_response.create(**TOOL) as streamed:
        streamed.parse()
    client.images.generate(**LOW)


async def async_calls(client: openai.AsyncOpenAI) -> None:
    (await client.images.with_raw_response.generate(**LOW)).parse()
    async with client.images.with_streaming_response.generate(**LOW) as streamed:
        await streamed.parse()
    (await client.responses.with_raw_response.create(**TOOL)).parse()
    async with client.responses.with_streaming_response.create(**TOOL) as streamed:
        await streamed.parse()
    await client.images.generate(**LOW)


EXPECTED = (
    sorted(["chat gpt-4o-mini"] * 2 + ["generate_content gpt-image-1"] * 3),
    5,
    pytest.approx(3 * IMAGE_CALL + 2 * RESPONSES_CALL, rel=1e-12),  # 0.05507450
)


def test_sync_methods_cached_before_instrument_are_counted_once(
    server: LocalOpenAIServer, telemetry: Telemetry, instrument: Any
) -> None:
    with openai.OpenAI(base_url=server.base_url, **CLIENT) as client:
        sync_calls(client)  # before instrument(): the wrappers cache the unwrapped methods
        assert telemetry.spans() == []
        instrument()
        sync_calls(client)
        assert counted(telemetry) == EXPECTED
        # A client first used after instrument() caches wrapped methods: still once.
        with openai.OpenAI(base_url=server.base_url, **CLIENT) as fresh:
            fresh.images.with_raw_response.generate(**LOW).parse()
        names, images, cost = counted(telemetry)
        assert (len(names), images) == (6, 6)
        assert cost == pytest.approx(4 * IMAGE_CALL + 2 * RESPONSES_CALL, rel=1e-12)
    assert len(server.requests) == 11  # 5 before, 5 after, 1 fresh: nothing sent twice


async def test_async_methods_cached_before_instrument_are_counted_once(
    server: LocalOpenAIServer, telemetry: Telemetry, instrument: Any
) -> None:
    async with openai.AsyncOpenAI(base_url=server.base_url, **CLIENT) as client:
        await async_calls(client)
        assert telemetry.spans() == []
        instrument()
        await async_calls(client)
        assert counted(telemetry) == EXPECTED


def test_cached_methods_stop_recording_after_uninstrument(
    server: LocalOpenAIServer, telemetry: Telemetry, instrument: Any
) -> None:
    with openai.OpenAI(base_url=server.base_url, **CLIENT) as client:
        client.images.with_raw_response.generate(**LOW).parse()
        instrumentor = instrument()
        client.images.with_raw_response.generate(**LOW).parse()
        instrumentor.uninstrument()
        client.images.with_raw_response.generate(**LOW).parse()
        with client.images.with_streaming_response.generate(**LOW) as streamed:
            streamed.parse()
    assert counted(telemetry) == (["generate_content gpt-image-1"], 1, IMAGE_CALL)
    # The request hooks are gone: the SDK's own functions are back in place.
    for cls in (SyncAPIClient, AsyncAPIClient):
        assert not isinstance(vars(cls)["request"], wrapt.ObjectProxy), cls


def test_retrieve_through_a_cached_method_is_priced_once(
    server: LocalOpenAIServer, telemetry: Telemetry, instrument: Any
) -> None:
    with openai.OpenAI(base_url=server.base_url, **CLIENT) as client:
        response = client.responses.with_raw_response.create(**TOOL).parse()  # before instrument()
        instrument()
        for _ in range(2):
            assert client.responses.with_raw_response.retrieve(response.id).parse().id == response.id
    spans = [span for span in telemetry.spans() if span.name == "chat gpt-4o-mini"]
    assert len(spans) == 2
    assert dict(spans[0].attributes or {})["openai.image.cost.source"] == "usage"
    assert "gen_ai.usage.cost" not in dict(spans[1].attributes or {})  # the repeat is not priced again
    assert telemetry.total("openai.image.cost") == pytest.approx(RESPONSES_CALL, rel=1e-12)


def test_requests_that_are_not_image_calls_stay_untracked(
    server: LocalOpenAIServer, telemetry: Telemetry, instrument: Any
) -> None:
    """The request hook tracks only what the method wrappers would: no tool, no span."""
    with openai.OpenAI(base_url=server.base_url, **CLIENT) as client:
        plain = {"model": "gpt-4o-mini", "input": "hello"}
        response = client.responses.with_raw_response.create(**plain).parse()
        instrument()
        client.responses.with_raw_response.create(**plain).parse()  # no image tool
        client.responses.with_raw_response.retrieve(response.id).parse()  # a response without the tool
        with pytest.raises(openai.NotFoundError):  # GET /responses/{id}/input_items: not a retrieve
            client.responses.input_items.with_raw_response.list(response.id)
    assert telemetry.spans() == []
    assert telemetry.sums("openai.image.cost") == []
    assert telemetry.sums("openai.image.unpriced") == []
