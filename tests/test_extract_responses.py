"""Pure extraction for Responses calls: plain JSON in, plain facts out."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from typing import Any

import openai
from openai.types.responses import Response, tool

from otel_image_cost.cost import ImageTokenUsage
from otel_image_cost.extract_responses import (
    ImageTool,
    ResponsesStreamTally,
    TextUsage,
    documented_default_tool_model,
    image_tool,
    response_outcome,
    responses_request,
)

from conftest import RECORDED


def _recording(name: str) -> dict[str, Any]:
    return dict(json.loads((RECORDED / name).read_text()))


def _events(name: str) -> Iterator[dict[str, Any]]:
    for block in _recording(name)["response_sse"].split("\n\n"):
        data = "".join(line[5:].strip() for line in block.split("\n") if line.startswith("data:"))
        if data:
            yield json.loads(data)


def test_image_tool_is_found_among_other_tools() -> None:
    tools = [
        {"type": "web_search"},
        {"type": "image_generation", "model": "gpt-image-1", "partial_images": 2},
    ]
    assert image_tool(tools) == ImageTool(model="gpt-image-1", partial_images=2)
    assert image_tool([{"type": "web_search"}]) is None
    assert image_tool(None) is None


def test_a_one_shot_iterable_of_tools_is_not_consumed() -> None:
    tools = iter([{"type": "image_generation"}])
    assert image_tool(tools) is None
    assert next(tools) == {"type": "image_generation"}


def test_retrieve_takes_the_response_id_positionally() -> None:
    assert responses_request(("resp_1",), {"stream": True}, None).response_id == "resp_1"
    assert responses_request((), {"response_id": "resp_2"}, None).response_id == "resp_2"
    request = responses_request(
        (), {"model": "gpt-5", "input": "draw", "safety_identifier": "u", "tools": []}, None
    )
    assert (request.model, request.tool, request.user, request.prompt) == ("gpt-5", None, "u", "draw")


def test_non_streamed_recording() -> None:
    outcome = response_outcome(_recording("pydantic-ai__responses_gpt-5_tool_jpeg_auto.json")["response"])
    assert (outcome.model, outcome.status, outcome.service_tier) == (
        "gpt-5-2025-08-07",
        "completed",
        "default",
    )
    assert outcome.usage == TextUsage(input_tokens=1889, cached_tokens=0, output_tokens=1434)
    assert outcome.image_usage is None and outcome.image_usage_json is None
    assert outcome.tool is not None and outcome.tool.model is None and outcome.tool.output_format == "jpeg"
    (item,) = outcome.items
    assert (item.status, item.quality, item.size, item.output_format) == (
        "completed",
        "high",
        "1536x1024",
        "jpeg",
    )
    assert outcome.terminal


def test_sdk_model_gives_the_same_outcome_as_json() -> None:
    for name in (
        "pydantic-ai__responses_gpt-5.4_tool_action_generate.json",
        "openai-dotnet__responses_tool_gpt-image-1_high_action.json",
    ):
        data = _recording(name)["response"]
        assert response_outcome(Response.construct(**data)) == response_outcome(data)


def test_streamed_recording_with_tool_usage_and_a_partial_image() -> None:
    tally = ResponsesStreamTally()
    for now, event in enumerate(
        _events("openai-dotnet__responses_tool_gpt-image-1_high_stream_partial_tool_usage.json")
    ):
        tally.add(event, now)
    outcome = tally.outcome()
    assert outcome is not None
    assert outcome.image_usage == ImageTokenUsage(
        input_tokens=72,
        output_tokens=4260,
        input_text_tokens=72,
        input_image_tokens=0,
        output_image_tokens=4260,
        output_text_tokens=0,
    )
    (item,) = outcome.items
    assert (item.partial_images, item.action, item.quality) == (1, "generate", "high")
    # sequence: created 0, in_progress 1, item added 2, call in_progress 3, generating 4, partial 5,
    # keepalive 6, call completed 7
    assert (item.started_ns, item.completed_ns) == (3, 7)


def test_cut_stream_keeps_the_items_it_saw() -> None:
    tally = ResponsesStreamTally()
    events = list(_events("vercel-ai__responses_gpt-5_tool_stream_partial_image.json"))
    for now, event in enumerate(events):
        if event["type"] == "response.completed":
            break
        tally.add(event, now)
    outcome = tally.outcome()
    assert outcome is not None and outcome.usage is None
    (item,) = outcome.items
    assert (item.partial_images, item.quality, item.size) == (1, "low", "1536x1024")


def test_default_tool_model_is_read_from_the_installed_sdk() -> None:
    expected = "gpt-image-2.6-sunburst" if openai.__version__.startswith("3.") else "gpt-image-1"
    assert documented_default_tool_model(inspect.getsource(tool)) == expected
    assert documented_default_tool_model("class X:\n    pass\n") is None
