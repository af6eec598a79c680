"""The bundled local OpenAI server, driven by the real ``openai`` SDK over HTTP (openai 2.x and 3.x).

Every answer must parse into the SDK's declared types (checked strictly, not just leniently as the SDK
does) and carry the exact token numbers of the cost model (docs/cost-model.md), since the demo and the
plugin's tests rely on both.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pydantic
import pytest
from openai.types import ImagesResponse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from local_openai_server import LocalOpenAIServer, png_b64

OPENAI_MAJOR = int(openai.__version__.split(".")[0])
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_TOOL: dict[str, Any] = {"type": "image_generation"}


@pytest.fixture(scope="module")
def local_server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer() as running:
        yield running


@pytest.fixture
def srv(local_server: LocalOpenAIServer) -> LocalOpenAIServer:
    local_server.reset()
    return local_server


@pytest.fixture
def sdk(srv: LocalOpenAIServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=srv.base_url, api_key="sk-local", max_retries=0) as client:
        yield client


@pytest.fixture
async def async_sdk(srv: LocalOpenAIServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="sk-local", max_retries=0) as client:
        yield client


def strict(model: Any) -> Any:
    """Validate what the SDK built leniently (``construct``) against the type it declares."""
    return type(model).model_validate(model.to_dict(warnings=False))


def raw(model: Any) -> dict[str, Any]:
    result: dict[str, Any] = model.to_dict(warnings=False)
    return result


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def usage_numbers(usage: Any) -> tuple[int, int, int, int, int]:
    """(input text, input image, output image, output text, total) of an image usage object or dict."""
    data = usage if isinstance(usage, dict) else raw(usage)
    out = data.get("output_tokens_details") or {"image_tokens": data["output_tokens"], "text_tokens": 0}
    assert data["input_tokens"] == sum(data["input_tokens_details"].values())
    assert data["output_tokens"] == out["image_tokens"] + out["text_tokens"]
    assert data["total_tokens"] == data["input_tokens"] + data["output_tokens"]
    details = data["input_tokens_details"]
    return (
        details["text_tokens"],
        details["image_tokens"],
        out["image_tokens"],
        out["text_tokens"],
        data["total_tokens"],
    )


def is_png_b64(text: str) -> bool:
    return base64.b64decode(text, validate=True).startswith(PNG_SIGNATURE)


# -- Images API: generations -----------------------------------------------------------------------


def test_generate_gpt_image_1_high_n2(srv: LocalOpenAIServer, sdk: openai.OpenAI) -> None:
    prompt = "a red fox in the snow"
    result = strict(sdk.images.generate(model="gpt-image-1", prompt=prompt, quality="high", n=2))
    assert isinstance(result, ImagesResponse)
    assert (result.quality, result.size, result.background, result.output_format) == (
        "high",
        "1024x1024",
        "opaque",
        "png",
    )
    assert result.usage.output_tokens == 8320
    assert usage_numbers(result.usage) == (2 * text_tokens(prompt), 0, 8320, 0, 8320 + 12)
    assert [is_png_b64(image.b64_json) for image in result.data] == [True, True]
    [request] = srv.requests
    assert (request.method, request.path, request.route) == (
        "POST",
        "/v1/images/generations",
        "/images/generations",
    )
    assert request.body == {"model": "gpt-image-1", "prompt": prompt, "quality": "high", "n": 2}
    assert request.headers["authorization"] == "Bearer sk-local"


@pytest.mark.parametrize(
    ("model", "quality", "size", "per_image"),
    [
        ("gpt-image-1", "low", "1024x1024", 272),
        ("gpt-image-1", "medium", "1536x1024", 1568),
        ("gpt-image-1", "high", "1024x1536", 6240),
        ("gpt-image-1-mini", "high", "1536x1024", 6208),
        ("gpt-image-1-2025-04-15", "low", "1024x1536", 408),
        ("gpt-image-2", "medium", "1024x1024", 1756),
        ("gpt-image-2", "low", "1536x864", 120),
        ("gpt-image-2", "high", "1024x1536", 5488),
        ("gpt-image-2-2026-04-21", "medium", "1024x1024", 1756),
        ("gpt-image-2.5-sunburst-2026-09-08", "xhigh", "1024x1024", 3122),
        ("gpt-image-2.5-flare", "medium", "2048x1152", 367),
        ("gpt-image-2.6-flare", "high", "1536x1024", 1372),
    ],
)
def test_output_tokens_follow_the_cost_model(
    sdk: openai.OpenAI, model: str, quality: Any, size: str, per_image: int
) -> None:
    result = sdk.images.generate(model=model, prompt="p", quality=quality, size=size, n=3)
    if OPENAI_MAJOR >= 3:  # openai 2.x declares only the three standard sizes and low/medium/high
        strict(result)
    assert (result.quality, result.size) == (quality, size)
    assert usage_numbers(result.usage) == (3, 0, 3 * per_image, 0, 3 + 3 * per_image)


def test_auto_and_absent_options_resolve_deterministically(
    srv: LocalOpenAIServer, sdk: openai.OpenAI
) -> None:
    defaults = strict(sdk.images.generate(prompt="no model given"))  # answered as gpt-image-1
    auto = strict(
        sdk.images.generate(model="gpt-image-1", prompt="x", quality="auto", size="auto", background="auto")
    )
    for result in (defaults, auto):
        assert (result.quality, result.size, result.background) == ("medium", "1024x1024", "opaque")
        assert result.usage.output_tokens == 1056
    assert "model" not in srv.requests[0].body


def test_gpt_image_1_5_reports_text_output_tokens(sdk: openai.OpenAI) -> None:
    result = strict(sdk.images.generate(model="gpt-image-1.5", prompt="a siamese cat", n=2, size="1024x1536"))
    assert usage_numbers(result.usage) == (2 * 4, 0, 3168, 2 * 316, 8 + 3168 + 632)
    latest = sdk.images.generate(model="chatgpt-image-latest", prompt="x")
    assert usage_numbers(latest.usage)[2:4] == (1056, 211)


@pytest.mark.parametrize(
    ("shape", "has_details", "has_echo", "has_usage"),
    [
        ("2026", True, True, True),
        ("2025", False, True, True),
        ("no_echo", False, False, True),
        ("none", False, True, False),
    ],
)
def test_usage_shapes(shape: Any, has_details: bool, has_echo: bool, has_usage: bool) -> None:
    with (
        LocalOpenAIServer(usage_shape=shape) as server,
        openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client,
    ):
        body = raw(strict(client.images.generate(model="gpt-image-1", prompt="x", quality="high")))
    assert ("usage" in body) is has_usage
    assert ("output_tokens_details" in body.get("usage", {})) is has_details
    assert all((key in body) is has_echo for key in ("quality", "size", "background", "output_format"))
    if has_usage:
        assert body["usage"]["output_tokens"] == 4160


def test_dall_e_answers_per_image_without_usage(sdk: openai.OpenAI) -> None:
    dalle3 = strict(sdk.images.generate(model="dall-e-3", prompt="a capybara", response_format="b64_json"))
    assert raw(dalle3).keys() == {"created", "data"}
    assert is_png_b64(dalle3.data[0].b64_json)
    assert dalle3.data[0].revised_prompt == "A detailed rendering of a capybara"
    dalle2 = strict(sdk.images.generate(model="dall-e-2", prompt="x", n=2, size="256x256"))
    assert raw(dalle2).keys() == {"created", "data"}
    assert [image.revised_prompt for image in dalle2.data] == [None, None]
    with urllib.request.urlopen(dalle2.data[0].url, timeout=5) as download:
        assert download.read().startswith(PNG_SIGNATURE)


def test_rejections_use_real_error_bodies(sdk: openai.OpenAI) -> None:
    cases = [
        ({"model": "gpt-image-1", "prompt": "moderation test"}, 400, "moderation_blocked", None),
        ({"model": "gpt-image-1", "prompt": "x", "quality": "xhigh"}, 400, "invalid_value", "quality"),
        ({"model": "gpt-image-1", "prompt": "x", "size": "512x512"}, 400, "invalid_value", "size"),
        ({"model": "gpt-image-2", "prompt": "x", "size": "1000x1000"}, 400, "invalid_value", "size"),
        ({"model": "not-an-image-model", "prompt": "x"}, 400, "invalid_value", "model"),
        ({"model": "gpt-image-1", "prompt": "x", "n": 11}, 400, "invalid_value", "n"),
        ({"model": "gpt-image-1", "prompt": ""}, 400, "missing_required_parameter", "prompt"),
    ]
    for params, status, code, param in cases:
        with pytest.raises(openai.APIStatusError) as caught:
            sdk.images.generate(**params)
        assert (caught.value.status_code, caught.value.code, caught.value.param) == (status, code, param)
        assert caught.value.body["message"]


# -- Images API: edits and variations -------------------------------------------------------------


def test_edit_multipart_single_image_and_mask(srv: LocalOpenAIServer, sdk: openai.OpenAI) -> None:
    prompt = "add a hat"
    result = strict(
        sdk.images.edit(
            model="gpt-image-1",
            image=("room.png", b"\x89PNG" + bytes(2000), "image/png"),
            mask=("mask.png", bytes(50), "image/png"),
            prompt=prompt,
            quality="medium",
        )
    )
    assert usage_numbers(result.usage) == (text_tokens(prompt), 194, 1056, 0, 3 + 194 + 1056)
    [request] = srv.requests
    assert request.fields == {"prompt": prompt, "model": "gpt-image-1", "quality": "medium"}
    assert [(part.name, part.filename, part.size) for part in request.files] == [
        ("image", "room.png", 2004),
        ("mask", "mask.png", 50),
    ]
    assert request.body is None


def test_edit_multipart_image_list_multiplies_input_by_n(srv: LocalOpenAIServer, sdk: openai.OpenAI) -> None:
    images = [("a.png", b"a" * 10, "image/png"), ("b.png", b"b" * 20, "image/png")]
    prompt = "A big cat with big round eyes and large cat ears"
    result = strict(sdk.images.edit(model="gpt-image-1", image=images, prompt=prompt, n=2, quality="high"))
    assert usage_numbers(result.usage) == (2 * 12, 2 * 388, 8320, 0, 24 + 776 + 8320)
    assert [(part.name, part.size) for part in srv.requests[0].files] == [("image[]", 10), ("image[]", 20)]


def test_edit_json_body_form(srv: LocalOpenAIServer, sdk: openai.OpenAI) -> None:
    data_url = "data:image/png;base64," + png_b64(8000)
    body = {
        "model": "gpt-image-1.5",
        "prompt": "turn the logo green",
        "images": [{"image_url": data_url}] * 2,
    }
    result = strict(sdk.post("/images/edits", body=body, cast_to=ImagesResponse))
    assert usage_numbers(result.usage) == (5, 388, 1056, 211, 5 + 388 + 1267)
    assert srv.requests[0].body["images"][0] == {"image_url": f"<{len(data_url)} chars>"}  # never kept whole
    gpt2 = {
        "model": "gpt-image-2",
        "prompt": "x",
        "images": [{"image_url": data_url}],
        "size": "1536x864",
        "quality": "low",
    }
    result = sdk.post("/images/edits", body=gpt2, cast_to=ImagesResponse)
    assert usage_numbers(result.usage) == (1, 64, 120, 0, 185)


def test_variations_dall_e_2(srv: LocalOpenAIServer, sdk: openai.OpenAI) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # openai 3.x marks variations deprecated
        result = strict(sdk.images.create_variation(image=("a.png", b"png"), n=2, response_format="b64_json"))
    assert raw(result).keys() == {"created", "data"}
    assert len(result.data) == 2
    [request] = srv.requests
    assert (request.route, request.fields, request.files[0].name) == (
        "/images/variations",
        {"n": "2", "response_format": "b64_json"},
        "image",
    )


# -- Images API: streaming ------------------------------------------------------------------------


def test_generate_stream_partials_then_completed_per_image(sdk: openai.OpenAI) -> None:
    stream = sdk.images.generate(
        model="gpt-image-1", prompt="a fox", quality="low", n=2, stream=True, partial_images=2
    )
    events = [strict(event) for event in stream]
    assert [event.model_extra for event in events] == [{}] * 6  # exactly the fields the SDK declares
    assert [event.type for event in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ] * 2
    assert [event.partial_image_index for event in events if event.type.endswith("partial_image")] == [
        0,
        1,
        0,
        1,
    ]
    for completed in (events[2], events[5]):
        assert (completed.quality, completed.size, completed.background) == ("low", "1024x1024", "opaque")
        assert raw(completed.usage) == {
            "input_tokens": 2,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": 2},
            "output_tokens": 272 + 200,
            "total_tokens": 474,
        }


async def test_async_edit_stream(async_sdk: openai.AsyncOpenAI) -> None:
    stream = await async_sdk.images.edit(
        model="gpt-image-1.5", image=("a.png", b"x"), prompt="edit", stream=True, partial_images=1
    )
    events = [strict(event) async for event in stream]
    assert [event.model_extra for event in events] == [{}, {}]
    assert [event.type for event in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert usage_numbers(events[1].usage)[:3] == (1, 194, 1056 + 211 + 100)


def test_stream_to_dall_e_is_rejected(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        sdk.images.generate(model="dall-e-3", prompt="x", stream=True)


# -- Images API: Azure, payload size, HTTP ---------------------------------------------------------


def test_azure_deployments() -> None:
    with LocalOpenAIServer(deployments={"img-prod": "gpt-image-1"}) as server:
        azure = openai.AzureOpenAI(
            azure_endpoint=server.azure_endpoint,
            api_key="azure-key",
            api_version="2025-04-01-preview",
            max_retries=0,
        )
        with azure:
            result = strict(azure.images.generate(model="img-prod", prompt="x", quality="high"))
            assert result.usage.output_tokens == 4160
            edited = azure.images.edit(model="gpt-image-1.5", image=("a.png", b"x"), prompt="x")
            assert usage_numbers(edited.usage)[1:4] == (194, 1056, 211)
            with pytest.raises(openai.NotFoundError) as caught:
                azure.images.generate(model="no-such-deployment", prompt="x")
            assert caught.value.code == "DeploymentNotFound"
            response = azure.responses.create(model="my-gpt-4o", input="hi", tools=[IMAGE_TOOL])
            assert response.model == "my-gpt-4o"
        generate, edit, _, responses = server.requests
    assert (generate.path, generate.deployment, generate.route) == (
        "/openai/deployments/img-prod/images/generations",
        "img-prod",
        "/images/generations",
    )
    assert generate.query == {"api-version": "2025-04-01-preview"}
    assert generate.headers["api-key"] == "azure-key"
    assert edit.path == "/openai/deployments/gpt-image-1.5/images/edits"
    assert (responses.path, responses.route) == ("/openai/responses", "/responses")


def test_image_b64_bytes_sizes_every_payload() -> None:
    size = 1_500_000
    with (
        LocalOpenAIServer(image_b64_bytes=size) as server,
        openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client,
    ):
        result = client.images.generate(model="gpt-image-1", prompt="x", n=2)
        events = list(client.images.generate(model="gpt-image-1", prompt="x", stream=True, partial_images=1))
        response = client.responses.create(model="gpt-4o", input="x", tools=[IMAGE_TOOL])
    payloads = [image.b64_json for image in result.data] + [event.b64_json for event in events]
    payloads.append(response.output[0].result)
    assert {len(payload) for payload in payloads} == {size}
    decoded = base64.b64decode(payloads[0], validate=True)
    assert decoded.startswith(PNG_SIGNATURE) and decoded.endswith(b"IEND\xaeB`\x82")
    for bad in (1_000_001, 16):
        with pytest.raises(ValueError, match="multiple of 4"):
            LocalOpenAIServer(image_b64_bytes=bad)


def test_http_keep_alive_content_length_and_sse_framing(srv: LocalOpenAIServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer k"}
    try:
        connection.request("POST", "/v1/images/generations", json.dumps({"prompt": "x"}), headers)
        first = connection.getresponse()
        body = first.read()
        socket_used = connection.sock
        assert (first.version, first.status, first.getheader("Content-Length")) == (11, 200, str(len(body)))
        assert first.getheader("x-request-id", "").startswith("req_")
        stream_body = json.dumps({"prompt": "x", "stream": True, "partial_images": 1})
        connection.request("POST", "/v1/images/generations", stream_body, headers)
        second = connection.getresponse()
        text = second.read().decode()
        assert connection.sock is socket_used  # the same connection served both requests
    finally:
        connection.close()
    assert second.getheader("Content-Type") == "text/event-stream; charset=utf-8"
    assert second.getheader("Transfer-Encoding") == "chunked"
    frames = text.split("\n\n")
    assert frames[0].startswith("event: image_generation.partial_image\ndata: {")
    assert frames[1].startswith("event: image_generation.completed\ndata: {")
    assert frames[2:] == [""]


def test_chunked_request_body(srv: LocalOpenAIServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    parts = [b'{"model": "gpt-image-1", ', b'"prompt": "x", "quality": "low"}']
    try:
        connection.request(
            "POST",
            "/v1/images/generations",
            iter(parts),
            {"Content-Type": "application/json"},
            encode_chunked=True,
        )
        answer = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    assert answer["usage"]["output_tokens"] == 272
    assert srv.requests[0].headers["transfer-encoding"] == "chunked"


def test_unknown_route_is_a_404(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="Invalid URL"):
        sdk.models.list()


# -- Responses API ---------------------------------------------------------------------------------


def create_image_response(client: openai.OpenAI, text: str, **extra: Any) -> Any:
    tool = {**IMAGE_TOOL, **extra.pop("tool", {})}
    return strict(client.responses.create(model="gpt-4o-mini", input=text, tools=[tool], **extra))


def test_responses_one_image_by_default(srv: LocalOpenAIServer, sdk: openai.OpenAI) -> None:
    text = "Draw a lighthouse"
    response = create_image_response(sdk, text, service_tier="flex")
    call, message = response.output
    assert (call.type, call.status, call.id[:3], is_png_b64(call.result)) == (
        "image_generation_call",
        "completed",
        "ig_",
        True,
    )
    echoed = raw(call)
    assert (
        echoed["action"],
        echoed["quality"],
        echoed["size"],
        echoed["background"],
        echoed["output_format"],
    ) == (
        "generate",
        "medium",
        "1024x1024",
        "opaque",
        "png",
    )
    assert echoed["revised_prompt"] == f"A detailed illustration of {text}"
    assert (message.type, response.output_text) == ("message", "Here is the image you asked for.")
    assert (response.status, response.model, response.service_tier) == ("completed", "gpt-4o-mini", "flex")
    body = raw(response)
    assert body["tools"] == [
        {
            "type": "image_generation",
            "background": "auto",
            "model": "gpt-image-1.5",
            "moderation": "auto",
            "n": 1,
            "output_compression": 100,
            "output_format": "png",
            "quality": "auto",
            "size": "auto",
        }
    ]
    assert body["usage"] == {
        "input_tokens": 1500 + text_tokens(text),
        "input_tokens_details": {"cache_write_tokens": 0, "cached_tokens": 0},
        "output_tokens": 8 + 20,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 1505 + 28,
    }
    revised = text_tokens(echoed["revised_prompt"])
    assert body["tool_usage"]["web_search"] == {"num_requests": 0}
    assert usage_numbers(body["tool_usage"]["image_gen"]) == (revised, 0, 1056, 211, revised + 1267)
    assert srv.requests[0].body["service_tier"] == "flex"


def test_responses_two_images_and_tool_model(sdk: openai.OpenAI) -> None:
    response = create_image_response(
        sdk, "Make two images of a boat", tool={"model": "gpt-image-1", "quality": "high"}
    )
    calls = [item for item in response.output if item.type == "image_generation_call"]
    assert len(calls) == 2
    assert len({call.id for call in calls}) == 2
    assert raw(response)["tools"][0]["model"] == "gpt-image-1"
    revised = text_tokens(calls[0].revised_prompt)
    assert usage_numbers(raw(response)["tool_usage"]["image_gen"]) == (
        2 * revised,
        0,
        8320,
        0,
        2 * revised + 8320,
    )
    assert response.output_text == "Here are the 2 images you asked for."


def test_responses_no_image(sdk: openai.OpenAI) -> None:
    response = create_image_response(sdk, "Say hi, no image please")
    assert [item.type for item in response.output] == ["message"]
    assert usage_numbers(raw(response)["tool_usage"]["image_gen"]) == (0, 0, 0, 0, 0)
    plain = strict(sdk.responses.create(model="gpt-4o", input="hello"))
    assert (plain.output_text, raw(plain)["tools"]) == ("Hello from the local OpenAI server.", [])


def test_responses_moderation_failure(sdk: openai.OpenAI) -> None:
    response = create_image_response(sdk, "moderation: draw something violent, two images")
    call, _ = response.output
    assert (call.status, call.result) == ("failed", None)
    assert raw(call)["error"]["code"] == "moderation_blocked"
    revised = text_tokens(call.revised_prompt)
    assert usage_numbers(raw(response)["tool_usage"]["image_gen"]) == (revised, 0, 0, 0, revised)
    assert response.status == "completed"


def test_responses_edit_action(sdk: openai.OpenAI) -> None:
    image_input = [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Make it night"},
                {"type": "input_image", "image_url": "data:image/png;base64," + png_b64(None)},
            ],
        }
    ]
    with_image = create_image_response(sdk, image_input)
    follow_up = create_image_response(sdk, "Now add stars", previous_response_id=with_image.id)
    explicit = create_image_response(sdk, "Edit it", tool={"action": "edit", "model": "gpt-image-2"})
    forced = create_image_response(sdk, image_input, tool={"action": "generate"})
    assert [raw(r.output[0])["action"] for r in (with_image, follow_up, explicit, forced)] == [
        "edit",
        "edit",
        "edit",
        "generate",
    ]
    image_tokens = [
        raw(r)["tool_usage"]["image_gen"]["input_tokens_details"]["image_tokens"]
        for r in (with_image, follow_up, explicit, forced)
    ]
    assert image_tokens == [194, 194, 64, 194]
    assert follow_up.usage.input_tokens_details.cached_tokens == 1024
    assert with_image.usage.input_tokens_details.cached_tokens == 0


def test_responses_echo_and_tool_usage_options() -> None:
    with (
        LocalOpenAIServer(echo_tool_model=False, tool_usage=False) as server,
        openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client,
    ):
        legacy = raw(create_image_response(client, "x"))
    assert "model" not in legacy["tools"][0]
    assert "tool_usage" not in legacy
    with (
        LocalOpenAIServer(tool_default_model="gpt-image-1") as server,
        openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client,
    ):
        defaulted = raw(create_image_response(client, "x"))
    assert defaulted["tools"][0]["model"] == "gpt-image-1"
    assert defaulted["tool_usage"]["image_gen"]["output_tokens"] == 1056


def test_responses_reasoning_model_usage(sdk: openai.OpenAI) -> None:
    response = strict(sdk.responses.create(model="gpt-5", input="hi"))
    assert response.usage.output_tokens_details.reasoning_tokens == 64
    assert response.usage.output_tokens == 64 + text_tokens(response.output_text)


def test_responses_incomplete_and_failed(sdk: openai.OpenAI) -> None:
    incomplete = create_image_response(sdk, "x", max_output_tokens=16)
    assert (incomplete.status, incomplete.incomplete_details.reason) == ("incomplete", "max_output_tokens")
    assert (incomplete.output[-1].status, incomplete.usage.output_tokens) == ("incomplete", 16)
    failed = create_image_response(sdk, "trigger a server error")
    assert (failed.status, failed.error.code, failed.output, failed.usage) == (
        "failed",
        "server_error",
        [],
        None,
    )


def test_responses_parse_structured_output(sdk: openai.OpenAI) -> None:
    class Inner(pydantic.BaseModel):
        flag: bool

    class Caption(pydantic.BaseModel):
        title: str
        count: int
        inner: Inner
        tags: list[str]

    parsed = sdk.responses.parse(model="gpt-4o", input="caption", text_format=Caption, tools=[IMAGE_TOOL])
    assert parsed.output_parsed == Caption(title="", count=0, inner=Inner(flag=False), tags=[])
    assert parsed.output[0].type == "image_generation_call"


def test_responses_retrieve_and_unknown_id(sdk: openai.OpenAI) -> None:
    created = create_image_response(sdk, "x")
    retrieved = strict(sdk.responses.retrieve(created.id))
    assert raw(retrieved) == raw(created)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve("resp_missing")


def test_beta_responses(srv: LocalOpenAIServer, sdk: openai.OpenAI) -> None:
    response = strict(sdk.beta.responses.create(model="gpt-4o", input="x", tools=[IMAGE_TOOL]))
    assert raw(response)["tool_usage"]["image_gen"]["output_tokens"] == 1267
    assert strict(sdk.beta.responses.retrieve(response.id)).id == response.id
    assert [(r.path, r.query) for r in srv.requests] == [
        ("/v1/responses", {"beta": "true"}),
        (f"/v1/responses/{response.id}", {"beta": "true"}),
    ]


# -- Responses API: streaming ----------------------------------------------------------------------

ONE_IMAGE_STREAM = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.image_generation_call.in_progress",
    "response.image_generation_call.generating",
    "response.image_generation_call.partial_image",
    "response.image_generation_call.completed",
    "response.output_item.done",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * 7,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
RECORDED_TOOL = {
    "type": "image_generation",
    "model": "gpt-image-1",
    "quality": "high",
    "size": "1024x1024",
    "background": "transparent",
    "partial_images": 1,
}


def check_stream(events: list[Any]) -> None:
    """Every event parses strictly; sequence numbers count up from 0; the partial echoes the image."""
    for event in events:
        strict(event)
    assert [event.sequence_number for event in events] == list(range(len(events)))
    partial = next(event for event in events if event.type.endswith("partial_image"))
    assert (partial.partial_image_index, is_png_b64(partial.partial_image_b64)) == (0, True)
    assert raw(partial)["quality"] == "high"


def check_recorded_numbers(final: Any) -> None:
    """The recorded streamed call: tool_usage output 4260 = 4160 + 100 for its one partial image."""
    assert final.status == "completed"
    image_gen = raw(final)["tool_usage"]["image_gen"]
    assert usage_numbers(image_gen)[2:4] == (4260, 0)
    assert raw(final.output[0])["background"] == "transparent"


def test_responses_stream_helper_sync(sdk: openai.OpenAI) -> None:
    with sdk.responses.stream(model="gpt-4o-mini", input="Draw a river", tools=[RECORDED_TOOL]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [event.type for event in events] == ONE_IMAGE_STREAM
    check_stream(events)
    check_recorded_numbers(strict(final))
    assert raw(events[0].response)["tool_usage"]["image_gen"]["output_tokens"] == 0
    assert events[0].response.usage is None


async def test_responses_stream_helper_async(async_sdk: openai.AsyncOpenAI) -> None:
    async with async_sdk.responses.stream(
        model="gpt-4o-mini", input="Draw a river", tools=[RECORDED_TOOL]
    ) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    assert [event.type for event in events] == ONE_IMAGE_STREAM
    check_stream(events)
    check_recorded_numbers(final)


def test_responses_create_stream_sync(sdk: openai.OpenAI) -> None:
    events = list(
        sdk.responses.create(model="gpt-4o-mini", input="Draw a river", tools=[RECORDED_TOOL], stream=True)
    )
    assert [event.type for event in events] == ONE_IMAGE_STREAM
    check_stream(events)
    check_recorded_numbers(events[-1].response)


async def test_responses_create_stream_async_two_images(async_sdk: openai.AsyncOpenAI) -> None:
    stream = await async_sdk.responses.create(
        model="gpt-4o-mini", input="two images please", tools=[RECORDED_TOOL], stream=True
    )
    events = [event async for event in stream]
    check_stream(events)
    added = [event.output_index for event in events if event.type == "response.output_item.added"]
    assert added == [0, 1, 2]
    assert raw(events[-1].response)["tool_usage"]["image_gen"]["output_tokens"] == 2 * 4260


def test_responses_stream_keepalive_option() -> None:
    with (
        LocalOpenAIServer(keepalive=True) as server,
        openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client,
        client.responses.stream(model="gpt-4o", input="x", tools=[RECORDED_TOOL]) as stream,
    ):
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert types.index("keepalive") == types.index("response.image_generation_call.completed") - 1
    assert final.status == "completed"


def test_responses_stream_incomplete_and_failed(sdk: openai.OpenAI) -> None:
    with sdk.responses.stream(model="gpt-4o", input="x", tools=[IMAGE_TOOL], max_output_tokens=16) as stream:
        types = [event.type for event in stream]
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            stream.get_final_response()  # the SDK helper only finalizes completed responses
    assert types[-1] == "response.incomplete"
    failed = [
        strict(event) for event in sdk.responses.create(model="gpt-4o", input="server error", stream=True)
    ]
    assert [event.type for event in failed] == ["response.created", "response.in_progress", "response.failed"]


# -- Responses API: background mode ----------------------------------------------------------------


def test_background_queued_then_completed(sdk: openai.OpenAI) -> None:
    queued = create_image_response(sdk, "x", background=True)
    assert (queued.status, queued.output, queued.usage, queued.background) == ("queued", [], None, True)
    assert raw(queued)["tool_usage"]["image_gen"]["total_tokens"] == 0
    polls = [strict(sdk.responses.retrieve(queued.id)) for _ in range(3)]
    assert [poll.status for poll in polls] == ["in_progress", "completed", "completed"]
    assert raw(polls[1])["tool_usage"]["image_gen"]["output_tokens"] == 1267
    with (
        LocalOpenAIServer(background_polls=0) as server,
        openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client,
    ):
        response = client.responses.create(model="gpt-4o", input="x", background=True)
        assert client.responses.retrieve(response.id).status == "completed"


def test_background_stream_resume(srv: LocalOpenAIServer, sdk: openai.OpenAI) -> None:
    first: list[Any] = []
    with sdk.responses.create(
        model="gpt-4o-mini", input="Draw a river", tools=[RECORDED_TOOL], background=True, stream=True
    ) as stream:
        for event in stream:
            first.append(strict(event))
            if len(first) == 5:
                break
    assert [event.type for event in first[:3]] == [
        "response.created",
        "response.queued",
        "response.in_progress",
    ]
    assert first[0].response.status == "queued"
    response_id = first[0].response.id
    resumed = [strict(event) for event in sdk.responses.retrieve(response_id, stream=True, starting_after=4)]
    assert resumed[0].sequence_number == 5
    assert resumed[-1].type == "response.completed"
    assert srv.requests[-1].query == {"starting_after": "4", "stream": "true"}
    with sdk.responses.stream(response_id=response_id, starting_after=4) as helper:
        replayed = [event.sequence_number for event in helper]
        final = helper.get_final_response()
    assert replayed == [event.sequence_number for event in resumed]
    check_recorded_numbers(final)
    # the helper does not send starting_after: it replays the whole stream and filters client-side
    assert "starting_after" not in srv.requests[-1].query
    assert sdk.responses.retrieve(response_id).status == "completed"


# -- Fault injection -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (400, openai.BadRequestError, "string_above_max_length"),
        (401, openai.AuthenticationError, "invalid_api_key"),
        (429, openai.RateLimitError, "rate_limit_exceeded"),
        (500, openai.InternalServerError, None),
        (503, openai.InternalServerError, None),
    ],
)
def test_status_faults(
    srv: LocalOpenAIServer, sdk: openai.OpenAI, status: int, error: type[Exception], code: Any
) -> None:
    srv.inject(status)
    with pytest.raises(error) as caught:
        sdk.images.generate(model="gpt-image-1", prompt="x")
    assert isinstance(caught.value, openai.APIStatusError)
    assert caught.value.status_code == status
    assert caught.value.body.keys() == {"message", "type", "param", "code"}
    assert caught.value.code == code
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "1"
        assert caught.value.response.headers["retry-after-ms"] == "20"
    assert sdk.images.generate(model="gpt-image-1", prompt="x").usage is not None  # the fault was used up


def test_fault_count_and_sdk_retries(srv: LocalOpenAIServer) -> None:
    srv.inject(429, count=2)
    with openai.OpenAI(base_url=srv.base_url, api_key="k", max_retries=2) as client:
        result = client.images.generate(model="gpt-image-1", prompt="x")
    assert result.usage.output_tokens == 1056
    assert [request.headers["x-stainless-retry-count"] for request in srv.requests] == ["0", "1", "2"]


def test_fault_path_prefix(srv: LocalOpenAIServer, sdk: openai.OpenAI) -> None:
    srv.inject(500, path_prefix="/responses")
    srv.inject(401, path_prefix="/v1/images/edits")
    assert sdk.images.generate(model="gpt-image-1", prompt="x").usage is not None
    with pytest.raises(openai.InternalServerError):
        sdk.responses.create(model="gpt-4o", input="x")
    with pytest.raises(openai.AuthenticationError):
        sdk.images.edit(model="gpt-image-1", image=("a.png", b"x"), prompt="x")


def test_malformed_json(srv: LocalOpenAIServer, sdk: openai.OpenAI) -> None:
    srv.inject("malformed_json", count=3)
    with pytest.raises(json.JSONDecodeError):  # the SDK lets the decoder's error through
        sdk.images.generate(model="gpt-image-1", prompt="x")
    with pytest.raises(json.JSONDecodeError):
        list(sdk.images.generate(model="gpt-image-1", prompt="x", stream=True))
    with pytest.raises(json.JSONDecodeError):
        sdk.responses.create(model="gpt-4o", input="x")


def test_missing_usage(srv: LocalOpenAIServer, sdk: openai.OpenAI) -> None:
    srv.inject("missing_usage", count=3)
    assert sdk.images.generate(model="gpt-image-1", prompt="x").usage is None
    completed = list(sdk.images.generate(model="gpt-image-1", prompt="x", stream=True))[-1]
    assert "usage" not in raw(completed)
    with sdk.responses.stream(model="gpt-4o", input="x", tools=[IMAGE_TOOL]) as stream:
        final = stream.get_final_response()
    assert final.usage is None
    assert "tool_usage" not in raw(final)


def test_extra_fields(srv: LocalOpenAIServer, sdk: openai.OpenAI) -> None:
    srv.inject("extra_fields", count=4)
    result = strict(sdk.images.generate(model="gpt-image-1", prompt="x"))
    assert result.model_extra == {"x_unreleased_field": "extra"}
    assert raw(result.usage)["x_unreleased_field"] == "extra"
    events = list(sdk.images.generate(model="gpt-image-1", prompt="x", stream=True))
    assert raw(strict(events[-1]))["x_unreleased_field"] == "extra"
    stream = sdk.responses.create(model="gpt-4o", input="x", tools=[IMAGE_TOOL], stream=True)
    events = [strict(event) for event in stream]
    assert all(raw(event)["x_unreleased_field"] == "extra" for event in events)
    assert raw(events[-1].response)["tool_usage"]["image_gen"]["x_unreleased_field"] == "extra"
    with sdk.responses.stream(model="gpt-4o", input="x", tools=[IMAGE_TOOL]) as helper:
        final = helper.get_final_response()  # the helper rebuilds some events without unknown fields
    assert raw(final)["x_unreleased_field"] == "extra"


def transport_errors() -> tuple[type[Exception], ...]:
    """What a dropped connection raises: openai 3.x wraps it, 2.x lets httpx's error through mid-stream."""
    if OPENAI_MAJOR >= 3:
        return (openai.APIConnectionError,)
    import httpx

    return (openai.APIConnectionError, httpx.TransportError)


def test_cut_stream(srv: LocalOpenAIServer, sdk: openai.OpenAI) -> None:
    srv.inject("cut_stream", count=3)
    with pytest.raises(openai.APIConnectionError):
        sdk.images.generate(model="gpt-image-1", prompt="x")
    received: list[str] = []
    with pytest.raises(transport_errors()):
        for event in sdk.images.generate(model="gpt-image-1", prompt="x", stream=True, partial_images=3):
            received.append(event.type)
    assert received == ["image_generation.partial_image"] * 2
    with (
        pytest.raises(transport_errors()),
        sdk.responses.stream(model="gpt-4o", input="x", tools=[IMAGE_TOOL]) as stream,
    ):
        stream.get_final_response()
    assert sdk.images.generate(model="gpt-image-1", prompt="x").usage is not None


async def test_cut_stream_async(srv: LocalOpenAIServer, async_sdk: openai.AsyncOpenAI) -> None:
    srv.inject("cut_stream")
    stream = await async_sdk.responses.create(model="gpt-4o", input="x", tools=[IMAGE_TOOL], stream=True)
    with pytest.raises(transport_errors()):
        async for _ in stream:
            pass


def test_short_stream(srv: LocalOpenAIServer, sdk: openai.OpenAI) -> None:
    srv.inject("short_stream", count=2)
    events = list(sdk.images.generate(model="gpt-image-1", prompt="x", stream=True, partial_images=3))
    assert [event.type for event in events] == ["image_generation.partial_image"] * 2
    with sdk.responses.stream(model="gpt-4o", input="x", tools=[IMAGE_TOOL]) as stream:
        types = [event.type for event in stream]
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            stream.get_final_response()
    assert "response.completed" not in types


def test_delay_triggers_client_timeout(srv: LocalOpenAIServer) -> None:
    srv.inject("delay:2")
    started = time.monotonic()
    with (
        openai.OpenAI(base_url=srv.base_url, api_key="k", max_retries=0, timeout=0.3) as client,
        pytest.raises(openai.APITimeoutError),
    ):
        client.images.generate(model="gpt-image-1", prompt="x")
    assert time.monotonic() - started < 1.5
    with openai.OpenAI(base_url=srv.base_url, api_key="k", max_retries=0) as client:
        assert client.images.generate(model="gpt-image-1", prompt="x").usage is not None


def test_inject_rejects_unknown_and_unbounded_faults(srv: LocalOpenAIServer) -> None:
    for fault in (404, "teapot", "delay:abc"):
        with pytest.raises(ValueError, match="unknown fault"):
            srv.inject(fault)
    with pytest.raises(ValueError, match="bounded"):
        srv.inject("delay:3600")
    with pytest.raises(ValueError, match="at least 1"):
        srv.inject(500, count=0)


def test_latency_option() -> None:
    with (
        LocalOpenAIServer(latency_ms=200) as server,
        openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client,
    ):
        started = time.monotonic()
        client.images.generate(model="gpt-image-1", prompt="x")
        assert time.monotonic() - started >= 0.2


# -- Lifecycle -------------------------------------------------------------------------------------


def test_close_is_prompt_with_sleeping_and_idle_connections() -> None:
    server = LocalOpenAIServer().start()
    idle = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    idle.images.generate(model="gpt-image-1", prompt="x")  # leaves a keep-alive connection open
    server.inject("delay:30")
    outcome: list[BaseException] = []

    def slow_call() -> None:
        with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as client:
            try:
                client.images.generate(model="gpt-image-1", prompt="x")
            except openai.APIError as error:
                outcome.append(error)

    caller = threading.Thread(target=slow_call)
    caller.start()
    while len(server.requests) < 2:
        time.sleep(0.01)
    started = time.monotonic()
    server.close()
    caller.join(5)
    idle.close()
    assert time.monotonic() - started < 2
    assert not caller.is_alive()
    assert len(outcome) == 1


def test_reset_clears_requests_and_faults(srv: LocalOpenAIServer, sdk: openai.OpenAI) -> None:
    response = create_image_response(sdk, "x")
    srv.inject(500)
    srv.reset()
    assert srv.requests == []
    assert sdk.images.generate(model="gpt-image-1", prompt="x").usage is not None
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(response.id)


def test_command_line_serves_until_sigterm() -> None:
    script = Path(__file__).resolve().parent.parent / "examples" / "local_openai_server.py"
    process = subprocess.Popen(
        [sys.executable, str(script), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        with openai.OpenAI(base_url=base_url, api_key="k", max_retries=0) as client:
            assert client.images.generate(model="gpt-image-1", prompt="x").usage.output_tokens == 1056
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
