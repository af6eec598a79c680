"""Every recorded Images API exchange, replayed to the real SDK over loopback.

Each expected cost is worked out by hand from the price facts in docs/cost-model.md
(USD per token: gpt-image-1 text in 5e-6, image in 10e-6, image out 40e-6; gpt-image-1.5 text in
5e-6, image in 8e-6, image out 32e-6, text out 10e-6; gpt-image-2 text in 5e-6, image in 8e-6,
image out 30e-6; DALL·E per image).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from conftest import RECORDED, Telemetry
from replay import ReplayServer, load_recording

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAAC0lEQVR4nGNgAAIAAAUAAXpeqz8AAAAASUVORK5CYII="
)


@dataclass(frozen=True)
class Case:
    file: str
    cost: float
    source: str
    quality: str
    size: str
    count: int
    usage: dict[str, int]


CASES = [
    # dall-e-3, n=1, 1024x1024, quality omitted -> documented default standard: 0.040
    Case("dd-trace-js__gen_dall-e-3_b64_json.json", 0.04, "per_image", "standard", "1024x1024", 1, {}),
    # 45 x 5e-6 + 194 x 10e-6 + 1056 x 40e-6 = 0.000225 + 0.00194 + 0.04224
    Case(
        "openai-dotnet__edit_gpt-image-1_multipart_medium.json",
        0.044405,
        "usage",
        "medium",
        "1024x1024",
        1,
        {
            "input_text_tokens": 45,
            "input_image_tokens": 194,
            "output_image_tokens": 1056,
            "output_text_tokens": 0,
        },
    ),
    # 90 x 5e-6 + 388 x 10e-6 + 8320 x 40e-6 = 0.00045 + 0.00388 + 0.3328
    Case(
        "openai-dotnet__edit_gpt-image-1_multipart_n2_high.json",
        0.33713,
        "usage",
        "high",
        "1024x1024",
        2,
        {
            "input_text_tokens": 90,
            "input_image_tokens": 388,
            "output_image_tokens": 8320,
            "output_text_tokens": 0,
        },
    ),
    # dall-e-3 standard, size omitted -> 1024x1024: 0.040
    Case(
        "openai-dotnet__gen_dall-e-3_standard_natural.json", 0.04, "per_image", "standard", "1024x1024", 1, {}
    ),
    # 11 x 5e-6 + 6240 x 40e-6 = 0.000055 + 0.2496
    Case(
        "openai-dotnet__gen_gpt-image-1_default_params.json",
        0.249655,
        "usage",
        "high",
        "1024x1536",
        1,
        {
            "input_text_tokens": 11,
            "input_image_tokens": 0,
            "output_image_tokens": 6240,
            "output_text_tokens": 0,
        },
    ),
    # 22 x 5e-6 + 2112 x 40e-6 = 0.00011 + 0.08448
    Case(
        "openai-dotnet__gen_gpt-image-1_n2_1024_medium.json",
        0.08459,
        "usage",
        "medium",
        "1024x1024",
        2,
        {
            "input_text_tokens": 22,
            "input_image_tokens": 0,
            "output_image_tokens": 2112,
            "output_text_tokens": 0,
        },
    ),
    # 22 x 5e-6 + 12480 x 40e-6 = 0.00011 + 0.4992
    Case(
        "openai-dotnet__gen_gpt-image-1_n2_webp_transparent_resolved_high.json",
        0.49931,
        "usage",
        "high",
        "1024x1536",
        2,
        {
            "input_text_tokens": 22,
            "input_image_tokens": 0,
            "output_image_tokens": 12480,
            "output_text_tokens": 0,
        },
    ),
    # 22 x 5e-6 + 3168 x 40e-6 = 0.00011 + 0.12672
    Case(
        "openai-dotnet__gen_gpt-image-1_n2_webp_transparent_resolved_medium.json",
        0.12683,
        "usage",
        "medium",
        "1024x1536",
        2,
        {
            "input_text_tokens": 22,
            "input_image_tokens": 0,
            "output_image_tokens": 3168,
            "output_text_tokens": 0,
        },
    ),
    # dall-e-2 256x256: 0.016 (quality: documented default standard)
    Case("openllmetry__gen_dall-e-2_256.json", 0.016, "per_image", "standard", "256x256", 1, {}),
    Case("ruby-openai__edit_dall-e-2_multipart_256.json", 0.016, "per_image", "standard", "256x256", 1, {}),
    # dall-e-3 hd 1024x1792: 0.120
    Case("ruby-openai__gen_dall-e-3_hd_1024x1792.json", 0.12, "per_image", "hd", "1024x1792", 1, {}),
    # 43 x 5e-6 + 388 x 8e-6 + 1056 x 32e-6 + 308 x 10e-6 = 0.000215 + 0.003104 + 0.033792 + 0.00308
    Case(
        "ruby_llm__edit_gpt-image-1.5_json_2images.json",
        0.040191,
        "usage",
        "medium",
        "1024x1024",
        1,
        {
            "input_text_tokens": 43,
            "input_image_tokens": 388,
            "output_image_tokens": 1056,
            "output_text_tokens": 308,
        },
    ),
    # no output details: all 4160 output tokens are image tokens.
    # 46 x 5e-6 + 388 x 10e-6 + 4160 x 40e-6 = 0.00023 + 0.00388 + 0.1664
    # no echo: the requested size, and quality auto
    Case(
        "ruby_llm__edit_gpt-image-1_multipart_2images_2025-04.json",
        0.17051,
        "usage",
        "auto",
        "1024x1024",
        1,
        {"input_text_tokens": 46, "input_image_tokens": 388},
    ),
    # 12 x 5e-6 + 64 x 8e-6 + 120 x 30e-6 = 0.00006 + 0.000512 + 0.0036
    Case(
        "ruby_llm__edit_gpt-image-2_json_1536x864_low.json",
        0.004172,
        "usage",
        "low",
        "1536x864",
        1,
        {
            "input_text_tokens": 12,
            "input_image_tokens": 64,
            "output_image_tokens": 120,
            "output_text_tokens": 0,
        },
    ),
    # dall-e-3 1792x1024, quality omitted -> standard: 0.080
    Case("ruby_llm__gen_dall-e-3_1792x1024.json", 0.08, "per_image", "standard", "1792x1024", 1, {}),
    # 20 x 5e-6 + 3168 x 32e-6 + 669 x 10e-6 = 0.0001 + 0.101376 + 0.00669
    Case(
        "ruby_llm__gen_gpt-image-1.5_n2_1024x1536_medium_text_tokens.json",
        0.108166,
        "usage",
        "medium",
        "1024x1536",
        2,
        {
            "input_text_tokens": 20,
            "input_image_tokens": 0,
            "output_image_tokens": 3168,
            "output_text_tokens": 669,
        },
    ),
    # 10 x 5e-6 + 1056 x 40e-6 = 0.00005 + 0.04224
    Case(
        "ruby_llm__gen_gpt-image-1_2025-05_no_echo_fields.json",
        0.04229,
        "usage",
        "auto",
        "1024x1024",
        1,
        {"input_text_tokens": 10, "input_image_tokens": 0},
    ),
    # 10 x 5e-6 + 4160 x 40e-6 = 0.00005 + 0.1664
    Case(
        "ruby_llm__gen_gpt-image-1_2026-08_high.json",
        0.16645,
        "usage",
        "high",
        "1024x1024",
        1,
        {
            "input_text_tokens": 10,
            "input_image_tokens": 0,
            "output_image_tokens": 4160,
            "output_text_tokens": 0,
        },
    ),
]


@pytest.fixture(scope="module")
def replay() -> Iterator[ReplayServer]:
    with ReplayServer() as server:
        yield server


def call_as_recorded(client: openai.OpenAI, recording: dict[str, Any]) -> Any:
    """Make the SDK call the recording was made with (its arguments, not its bytes)."""
    request = recording["request"]
    if recording["path"].endswith("/generations"):
        return client.images.generate(**request)
    if "fields" in request:
        kwargs: dict[str, Any] = {name: value for name, value in request["fields"]}
        if "n" in kwargs:
            kwargs["n"] = int(kwargs["n"])
        images = [(f["filename"], PNG) for f in request["files"] if f["name"].startswith("image")]
        kwargs["image"] = images[0] if len(images) == 1 and request["files"][0]["name"] == "image" else images
        if any(f["name"] == "mask" for f in request["files"]):
            kwargs["mask"] = ("mask.png", PNG)
        return client.images.edit(**kwargs)
    kwargs = {key: value for key, value in request.items() if key != "images"}
    kwargs["image"] = [("input.png", PNG) for _ in request["images"]]
    return client.images.edit(**kwargs)


@pytest.mark.parametrize("case", CASES, ids=[c.file.removesuffix(".json") for c in CASES])
def test_recorded_images_call_is_priced_exactly(
    case: Case, replay: ReplayServer, telemetry: Telemetry, instrumented: object
) -> None:
    recording = load_recording(RECORDED / case.file)
    replay.enqueue(recording)
    client = openai.OpenAI(base_url=replay.base_url, api_key="sk-test", max_retries=0)

    result = call_as_recorded(client, recording)

    assert isinstance(result, openai.types.ImagesResponse)
    span = telemetry.span()
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.usage.cost"] == case.cost
    assert attributes["openai.image.cost.source"] == case.source
    assert attributes["openai.image.quality"] == case.quality
    assert attributes["openai.image.size"] == case.size
    assert attributes["openai.image.count"] == case.count
    request = recording["request"]
    assert attributes["openai.image.model"] == request.get(
        "model", dict(request.get("fields", [])).get("model")
    )
    usage = {
        k.removeprefix("openai.image.usage."): v
        for k, v in attributes.items()
        if k.startswith("openai.image.usage.") and k != "openai.image.usage.raw"
    }
    assert usage == case.usage
    assert telemetry.total("openai.image.cost") == case.cost
    assert telemetry.total("openai.image.generated") == case.count
    if "usage" in recording["response"]:
        assert attributes["gen_ai.usage.input_tokens"] == recording["response"]["usage"]["input_tokens"]
        assert attributes["gen_ai.usage.output_tokens"] == recording["response"]["usage"]["output_tokens"]
    else:
        assert "openai.image.usage.raw" not in attributes
