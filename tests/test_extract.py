"""Extraction is pure: plain JSON in, plain facts out; an SDK model gives the same facts."""

from __future__ import annotations

import json

import pytest
from openai.types import ImagesResponse

from otel_image_cost.cost import ImageTokenUsage
from otel_image_cost.extract import (
    ImagesOutcome,
    ImagesStreamTally,
    image_request,
    image_token_usage,
    images_response_outcome,
    request_prompt,
    request_user,
)

from conftest import RECORDED

IMAGES_RECORDINGS = sorted(
    p.name for p in RECORDED.glob("*.json") if "/images/" in json.loads(p.read_text())["path"]
)


def test_request_arguments_and_sdk_sentinels() -> None:
    from openai import NOT_GIVEN, omit

    request = image_request(
        "generate",
        {
            "prompt": "a cat",
            "model": "gpt-image-1",
            "n": 3,
            "quality": NOT_GIVEN,
            "size": omit,
            "partial_images": 2,
            "stream": True,
            "user": "u",
            "safety_identifier": "s",
        },
    )
    assert (request.model, request.n, request.quality, request.size) == ("gpt-image-1", 3, None, None)
    assert (request.partial_images, request.stream) == (2, True)
    assert (request_user({"user": "u", "safety_identifier": "s"}), request_prompt({"prompt": "a cat"})) == (
        "s",
        "a cat",
    )
    assert image_request("edit", {"prompt": "x"}).n == 1
    assert request_user({"prompt": "x", "user": "u"}) == "u"
    assert (request_user({"safety_identifier": omit}), request_prompt({"prompt": NOT_GIVEN})) == (None, None)


def test_edit_response_with_full_details() -> None:
    recording = json.loads((RECORDED / "openai-dotnet__edit_gpt-image-1_multipart_n2_high.json").read_text())
    outcome = images_response_outcome(recording["response"])
    assert outcome == ImagesOutcome(
        images=2,
        quality="high",
        size="1024x1024",
        background="opaque",
        output_format="png",
        usage=ImageTokenUsage(
            input_tokens=478,
            output_tokens=8320,
            input_text_tokens=90,
            input_image_tokens=388,
            output_image_tokens=8320,
            output_text_tokens=0,
        ),
        usage_json=json.dumps(recording["response"]["usage"], separators=(",", ":")),
    )


def test_2025_shape_without_output_details() -> None:
    recording = json.loads((RECORDED / "ruby_llm__gen_gpt-image-1_2025-05_no_echo_fields.json").read_text())
    outcome = images_response_outcome(recording["response"])
    assert (outcome.quality, outcome.size, outcome.images) == (None, None, 1)
    assert outcome.usage == ImageTokenUsage(
        input_tokens=10, output_tokens=1056, input_text_tokens=10, input_image_tokens=0
    )


def test_cached_details_are_read_where_present() -> None:
    usage = {
        "input_tokens": 300,
        "output_tokens": 100,
        "input_tokens_details": {
            "text_tokens": 100,
            "image_tokens": 200,
            "cached_tokens": 150,
            "cached_tokens_details": {"cached_text_tokens": 50, "cached_image_tokens": 100},
        },
    }
    assert image_token_usage(usage) == ImageTokenUsage(
        input_tokens=300,
        output_tokens=100,
        input_text_tokens=100,
        input_image_tokens=200,
        cached_tokens=150,
        cached_text_tokens=50,
        cached_image_tokens=100,
    )
    assert image_token_usage({"output_tokens": 1}) is None


def test_revised_prompts_only_when_capturing() -> None:
    recording = json.loads((RECORDED / "ruby-openai__gen_dall-e-3_hd_1024x1792.json").read_text())
    assert images_response_outcome(recording["response"]).revised_prompts == ()
    captured = images_response_outcome(recording["response"], capture_content=True).revised_prompts
    assert captured == (recording["response"]["data"][0]["revised_prompt"],)


@pytest.mark.parametrize("name", IMAGES_RECORDINGS)
def test_sdk_model_and_plain_json_give_the_same_outcome(name: str) -> None:
    response = json.loads((RECORDED / name).read_text())["response"]
    model = ImagesResponse.construct(**response)  # as the SDK builds it: without validation
    from_model = images_response_outcome(model, capture_content=True)
    from_json = images_response_outcome(response, capture_content=True)
    assert from_model.usage == from_json.usage
    assert from_model.usage_json is not None or from_json.usage_json is None
    assert json.loads(from_model.usage_json or "null") == json.loads(from_json.usage_json or "null")
    assert (from_model.images, from_model.quality, from_model.size, from_model.revised_prompts) == (
        from_json.images,
        from_json.quality,
        from_json.size,
        from_json.revised_prompts,
    )


def _event(kind: str, **fields: object) -> dict[str, object]:
    base = {
        "type": kind,
        "b64_json": "AAAA",
        "background": "opaque",
        "created_at": 1,
        "output_format": "png",
        "quality": "high",
        "size": "1024x1024",
    }
    return {**base, **fields}


def test_stream_tally_counts_partials_and_sums_per_image_usage() -> None:
    usage = {
        "input_tokens": 10,
        "output_tokens": 4260,
        "total_tokens": 4270,
        "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
    }
    tally = ImagesStreamTally()
    for event in (
        _event("image_generation.partial_image", partial_image_index=0),
        _event("image_generation.completed", usage=usage),
        _event("image_generation.partial_image", partial_image_index=0),
        _event("image_generation.completed", usage=usage),
        {"type": "keepalive"},
    ):
        tally.add(event)
    outcome = tally.outcome()
    assert (outcome.images, outcome.partial_images, outcome.quality, outcome.size) == (
        2,
        2,
        "high",
        "1024x1024",
    )
    assert outcome.usage == ImageTokenUsage(
        input_tokens=20, output_tokens=8520, input_text_tokens=20, input_image_tokens=0
    )
    single = json.dumps(usage, separators=(",", ":"))
    assert outcome.usage_json == f"[{single},{single}]"


def test_edit_stream_events_count_the_same_way() -> None:
    tally = ImagesStreamTally()
    tally.add(_event("image_edit.partial_image", partial_image_index=0))
    tally.add(
        _event(
            "image_edit.completed",
            quality="medium",
            usage={
                "input_tokens": 5,
                "output_tokens": 1156,
                "input_tokens_details": {"text_tokens": 5, "image_tokens": 0},
            },
        )
    )
    outcome = tally.outcome()
    assert (outcome.images, outcome.partial_images, outcome.quality) == (1, 1, "medium")
    assert outcome.usage is not None and outcome.usage.output_tokens == 1156
    assert outcome.usage_json is not None and outcome.usage_json.startswith('{"input_tokens":5')
