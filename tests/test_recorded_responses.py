"""Every recorded Responses API exchange with the image tool, replayed to the real SDK.

Expected costs are worked out by hand (USD per token):
- image models, from docs/cost-model.md: gpt-image-1 text in 5e-6, image out 40e-6; gpt-image-1-mini
  text in 2e-6 and low square 0.005 per image; gpt-image-2.6-sunburst text in 5e-6, image out 30e-6,
  tokens from the size formula with the 2.5 factors (low 16, high 48);
- text (mainline) models, from genai-prices 0.2.3: gpt-4o-mini in 0.15e-6 out 0.6e-6; gpt-5 in 1.25e-6
  cached 0.125e-6 out 10e-6; gpt-5-nano in 0.05e-6 out 0.4e-6; gpt-5.4 in 2.5e-6 out 15e-6.
Without `tool_usage` an image is estimated: its tokens plus ceil(len(revised_prompt) / 4) text tokens,
plus 100 image tokens per partial image.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from conftest import RECORDED, Telemetry
from replay import ReplayServer, load_recording

SDK3 = openai.__version__.startswith("3.")
# The tool's documented default model: `gpt-image-2.6-sunburst` in openai 3.5x, `gpt-image-1` in 2.x.
DEFAULT_TOOL_MODEL = "gpt-image-2.6-sunburst" if SDK3 else "gpt-image-1"


@dataclass(frozen=True)
class Case:
    file: str
    image_model: str
    model_source: str
    image_cost: float
    mainline: float
    total: float
    source: str
    quality: str
    size: str
    partial_images: int = 0


CASES = [
    # low square gpt-image-1-mini: 0.005 + ceil(199/4)=50 x 2e-6 = 0.0051
    # mainline 28691 x 0.15e-6 + 57 x 0.6e-6 = 0.00433785
    Case(
        "openai-dotnet__responses_tool_gpt-image-1-mini_low_mask.json",
        "gpt-image-1-mini",
        "request",
        0.0051,
        0.00433785,
        0.00943785,
        "estimate",
        "low",
        "1024x1024",
    ),
    # 4160 x 40e-6 + ceil(298/4)=75 x 5e-6 = 0.166775; mainline 3195 x 0.15e-6 + 80 x 0.6e-6 = 0.00052725
    Case(
        "openai-dotnet__responses_tool_gpt-image-1_high_action.json",
        "gpt-image-1",
        "request",
        0.166775,
        0.00052725,
        0.16730225,
        "estimate",
        "high",
        "1024x1024",
    ),
    # tool_usage: 72 x 5e-6 + 4260 x 40e-6 = 0.17076 (the partial image is already in 4260)
    # mainline 6042 x 0.15e-6 + 100 x 0.6e-6 = 0.0009663
    Case(
        "openai-dotnet__responses_tool_gpt-image-1_high_stream_partial_tool_usage.json",
        "gpt-image-1",
        "request",
        0.17076,
        0.0009663,
        0.1717263,
        "usage",
        "high",
        "1024x1024",
        partial_images=1,
    ),
    # echoed tool model gpt-image-1, high 1024x1536: 6240 x 40e-6 + ceil(172/4)=43 x 5e-6 = 0.249815
    # mainline 2281 x 2.5e-6 + 56 x 15e-6 = 0.0065425
    Case(
        "pydantic-ai__responses_gpt-5.4_tool_action_generate.json",
        "gpt-image-1",
        "response",
        0.249815,
        0.0065425,
        0.2563575,
        "estimate",
        "high",
        "1024x1536",
    ),
    # default model, high 1536x1024, + ceil(626/4)=157 x 5e-6 = 0.000785;
    # 2.6-sunburst: s = round(48 x 1024/1536) = 32,
    #   ceil(48 x 32 x (2e6 + 1572864) / 4e6) = 1372 x 30e-6 = 0.04116
    # gpt-image-1: 6208 x 40e-6 = 0.24832; mainline 1889 x 1.25e-6 + 1434 x 10e-6 = 0.01670125
    Case(
        "pydantic-ai__responses_gpt-5_tool_jpeg_auto.json",
        DEFAULT_TOOL_MODEL,
        "default",
        0.041945 if SDK3 else 0.249105,
        0.01670125,
        0.05864625 if SDK3 else 0.26580625,
        "estimate",
        "high",
        "1536x1024",
    ),
    # default model, low 1024x1024, + ceil(113/4)=29 x 5e-6 = 0.000145;
    # 2.6-sunburst: ceil(16 x 16 x 3048576 / 4e6) = 196 x 30e-6 = 0.00588; gpt-image-1: 272 x 40e-6 = 0.01088
    # mainline 3151 x 0.05e-6 + 1970 x 0.4e-6 = 0.00094555
    Case(
        "vercel-ai__responses_gpt-5-nano_tool_webp_low.json",
        DEFAULT_TOOL_MODEL,
        "default",
        0.006025 if SDK3 else 0.011025,
        0.00094555,
        0.00697055 if SDK3 else 0.01197055,
        "estimate",
        "low",
        "1024x1024",
    ),
    # default model, low 1536x1024, 1 partial, + ceil(1007/4)=252 x 5e-6 = 0.00126;
    # 2.6-sunburst: s = round(16 x 1024/1536) = 11, ceil(16 x 11 x 3572864 / 4e6) = 158 x 30e-6 = 0.00474,
    #   partial 100 x 30e-6 = 0.003; gpt-image-1: 400 x 40e-6 = 0.016, partial 100 x 40e-6 = 0.004
    # mainline (2941 - 1920) x 1.25e-6 + 1920 x 0.125e-6 + 1249 x 10e-6 = 0.01400625
    Case(
        "vercel-ai__responses_gpt-5_tool_stream_partial_image.json",
        DEFAULT_TOOL_MODEL,
        "default",
        0.009 if SDK3 else 0.02126,
        0.01400625,
        0.02300625 if SDK3 else 0.03526625,
        "estimate",
        "low",
        "1536x1024",
        partial_images=1,
    ),
]


def request_of(recording: dict[str, Any]) -> dict[str, Any]:
    """The recorded request; vercel/ai kept only responses: rebuild the tool entry from the echo,
    without its model, as the app sent it (the SDK's default model then applies)."""
    if recording.get("request"):
        request = dict(recording["request"])
        request.pop("stream", None)
        return request
    if "response" in recording:
        response = recording["response"]
    else:
        created = next(e for e in _events(recording["response_sse"]) if e["type"] == "response.created")
        response = created["response"]
    tool = {k: v for k, v in response["tools"][0].items() if k != "model"}
    return {"model": response["model"], "input": "draw", "tools": [tool]}


def _events(sse: str) -> Iterator[dict[str, Any]]:
    for block in sse.split("\n\n"):
        data = "".join(line[5:].strip() for line in block.split("\n") if line.startswith("data:"))
        if data:
            yield json.loads(data)


@pytest.fixture(scope="module")
def replay() -> Iterator[ReplayServer]:
    with ReplayServer() as server:
        yield server


@pytest.mark.parametrize("case", CASES, ids=[c.file.removesuffix(".json") for c in CASES])
def test_recorded_responses_call_is_priced_exactly(
    case: Case, replay: ReplayServer, telemetry: Telemetry, instrumented: object
) -> None:
    recording = load_recording(RECORDED / case.file)
    replay.enqueue(recording)
    client = openai.OpenAI(base_url=replay.base_url, api_key="sk-test", max_retries=0)
    request = request_of(recording)

    if "response_sse" in recording:
        with client.responses.stream(**request) as stream:
            for _ in stream:
                pass
            final = stream.get_final_response()
    else:
        final = client.responses.create(**request)

    assert final.status == "completed"
    spans = telemetry.spans()
    (call,) = [s for s in spans if s.name.startswith("chat ")]
    (image,) = [s for s in spans if s.name == "execute_tool image_generation"]
    assert image.parent is not None and image.parent.span_id == call.context.span_id
    a = dict(call.attributes or {})
    assert a["gen_ai.operation.name"] == "chat"
    assert a["openai.image.operation"] == "responses_tool"
    assert a["gen_ai.request.model"] == request["model"]
    assert a["gen_ai.response.model"] == final.model
    assert a["gen_ai.response.id"] == final.id
    assert a["openai.image.model"] == case.image_model
    assert a["openai.image.model.source"] == case.model_source
    assert a["openai.image.cost.source"] == case.source
    assert a["openai.image.cost.mainline"] == case.mainline
    assert a["gen_ai.usage.cost"] == case.total
    assert a["openai.image.count"] == 1
    assert a["openai.image.partial_images"] == case.partial_images
    assert (a["openai.image.quality"], a["openai.image.size"]) == (case.quality, case.size)
    assert a["gen_ai.usage.input_tokens"] == final.usage.input_tokens
    image_attributes = dict(image.attributes or {})
    (drawn,) = [item for item in final.output if item.type == "image_generation_call"]
    assert image_attributes["gen_ai.tool.call.id"] == drawn.id
    assert image_attributes["gen_ai.usage.cost"] == case.image_cost
    assert image_attributes["openai.image.partial_images"] == case.partial_images
    assert telemetry.total("openai.image.cost", openai__image__cost__part="image") == case.image_cost
    assert telemetry.total("openai.image.cost", openai__image__cost__part="mainline") == case.mainline
    assert telemetry.total("openai.image.generated") == 1
