"""SVG and GIF output (cost-model rules 9, 10 and 13), through the real SDK against the bundled server.

Expected costs are worked out by hand, never by the plugin:
- the image model gpt-image-1 (docs/cost-model.md): text in 5e-6, image out 40e-6 per token; low
  1024x1024 is 272 output image tokens per image;
- the SVG author gpt-5-mini and the mainline gpt-4o-mini at genai-prices 0.2.3's rates (standard
  tier): gpt-5-mini in 0.25e-6, out 2e-6; gpt-4o-mini in 0.15e-6, out 0.6e-6 per token (checked
  against genai-prices itself in `test_author_rates_are_genai_prices`).

What the server reports (examples/local_openai_server.py): image input text tokens ceil(len(prompt) / 4)
(for the Responses tool: of the revised prompt "A detailed illustration of " + text, 27 + len(text)
chars); SVG author `svg_usage` input 500 + ceil(len(prompt) / 4), output 1200 of which reasoning 256; a
GIF bills its output image tokens times `frame_count` (default 9); mainline input 1500 + ceil(len(text)
/ 4), output ceil(len(message) / 4) + 20 per image ("Here is the image you asked for." 8 tokens, "Here
are the 2 images you asked for." 9 tokens).

On SDK lines whose methods lack `complexity`, `frame_count` or `svg` (openai 2.x), the test sends them
in `extra_body`, and the SDK keeps `svg_usage` as an unparsed extra: the plugin reads both.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Literal

import openai
import pytest
from genai_prices import Usage, calc_price
from opentelemetry.sdk.trace import ReadableSpan

from otel_image_cost.cost import ImageGeneration, SvgAuthorUsage, price_image_generation
from otel_image_cost.extract import images_response_outcome
from otel_image_cost.extract_responses import response_outcome
from otel_image_cost.prices import load_price_table
from otel_image_cost.text_prices import price_svg_author

from conftest import Telemetry
from local_openai_server import LocalOpenAIServer

Mode = Literal["sync", "async"]
MODES: tuple[Mode, ...] = ("sync", "async")
ABSENT = "<absent>"
FOX = "a red fox in the snow"  # 21 characters: 6 tokens
UNKNOWN_AUTHOR = "svg-author-unreleased"
COST = "openai.image.cost"
UNPRICED = "openai.image.unpriced"
CHILD = "execute_tool image_generation"
CLIENT: dict[str, Any] = {"api_key": "sk-test", "max_retries": 0, "timeout": 10}

# Images API, gpt-image-1 low 1024x1024, FOX:
#   image part: 6 x 5e-6 + 272 x 40e-6 = 0.00003 + 0.01088 = 0.01091
#   SVG author gpt-5-mini: input 500 + 6 = 506, output 1200:
#   506 x 0.25e-6 + 1200 x 2e-6 = 0.0001265 + 0.0024 = 0.0025265
IMAGES_IMAGE = 0.01091
IMAGES_AUTHOR = 0.0025265
IMAGES_TOTAL = 0.0134365  # 0.01091 + 0.0025265


# -- helpers --------------------------------------------------------------------------------------


def sdk_kwargs(method: Any, **kwargs: Any) -> dict[str, Any]:
    """`kwargs` as this SDK takes them: arguments its method lacks go in `extra_body`."""
    accepted = inspect.signature(method).parameters
    extra = {name: kwargs.pop(name) for name in list(kwargs) if name not in accepted}
    return {**kwargs, "extra_body": extra} if extra else kwargs


async def generate(mode: Mode, server: LocalOpenAIServer, **kwargs: Any) -> Any:
    if mode == "sync":
        with openai.OpenAI(base_url=server.base_url, **CLIENT) as sdk:
            return sdk.images.generate(**sdk_kwargs(sdk.images.generate, **kwargs))
    async with openai.AsyncOpenAI(
        base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=10
    ) as a:
        return await a.images.generate(**sdk_kwargs(a.images.generate, **kwargs))


async def respond(mode: Mode, server: LocalOpenAIServer, *, stream: bool = False, **kwargs: Any) -> Any:
    """`responses.create`, read to the end when streamed."""
    kwargs = {"model": "gpt-4o-mini", "stream": stream, **kwargs}
    if mode == "sync":
        with openai.OpenAI(base_url=server.base_url, **CLIENT) as sdk:
            result = sdk.responses.create(**kwargs)
            return list(result) if stream else result
    async with openai.AsyncOpenAI(
        base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=10
    ) as a:
        result = await a.responses.create(**kwargs)
        return [event async for event in result] if stream else result


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def picked(span: ReadableSpan, expected: dict[str, Any]) -> dict[str, Any]:
    actual = attrs(span)
    return {key: actual.get(key, ABSENT) for key in expected}


def points(telemetry: Telemetry, name: str, key: str) -> dict[str, float]:
    """A counter's points by the value of one label."""
    found: dict[str, float] = {}
    for labels, value in telemetry.sums(name):
        found[labels[key]] = found.get(labels[key], 0.0) + value
    return found


def token_points(telemetry: Telemetry) -> dict[tuple[str, str], int]:
    return {
        (labels["openai.image.cost.part"], labels["gen_ai.token.type"]): point.sum
        for labels, point in telemetry.points("gen_ai.client.token.usage")
    }


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, LocalOpenAIServer]]:
    """The servers of this module by role: default, an unknown SVG author, no usage at all."""
    options: dict[str, dict[str, Any]] = {
        "default": {},
        "unknown_author": {"svg_author_model": UNKNOWN_AUTHOR},
        "no_usage": {"usage_shape": "none", "tool_usage": False},
    }
    started = {role: LocalOpenAIServer(**each).start() for role, each in options.items()}
    yield started
    for server in started.values():
        server.close()


# -- genai-prices' rates, the base of every hand computation above ----------------------------------


def test_author_rates_are_genai_prices() -> None:
    def rate(model: str, **tokens: int) -> Decimal:
        return calc_price(Usage(**tokens), model, provider_id="openai").total_price

    assert rate("gpt-5-mini", input_tokens=1_000_000) == Decimal("0.25")
    assert rate("gpt-5-mini", output_tokens=1_000_000) == Decimal("2")
    assert rate("gpt-4o-mini", input_tokens=1_000_000) == Decimal("0.15")
    assert rate("gpt-4o-mini", output_tokens=1_000_000) == Decimal("0.6")


# -- pure: extraction and pricing -------------------------------------------------------------------


def test_price_svg_author_is_input_plus_output_reasoning_included() -> None:
    # 506 x 0.25e-6 + 1200 x 2e-6 = 0.0025265; the 256 reasoning tokens are inside the 1200
    cost = price_svg_author(SvgAuthorUsage("gpt-5-mini", 506, 1200, 256))
    assert (cost.source, dict(cost.components), cost.total) == (
        "usage",
        {"svg_author": Decimal("0.0025265")},
        Decimal("0.0025265"),
    )


@pytest.mark.parametrize(
    ("usage", "reason"),
    [
        (SvgAuthorUsage(UNKNOWN_AUTHOR, 506, 1200, 256), "unknown_svg_model"),
        (SvgAuthorUsage(None, 506, 1200, 256), "unknown_svg_model"),
        (SvgAuthorUsage("gpt-5-mini", -1, 1200, 256), "invalid_usage"),
        (SvgAuthorUsage("gpt-5-mini", 506, 100, 256), "invalid_usage"),  # more reasoning than output
        (SvgAuthorUsage("gpt-5-mini", 506, 10**9 + 1, 0), "invalid_usage"),
    ],
)
def test_price_svg_author_unpriced(usage: SvgAuthorUsage, reason: str) -> None:
    cost = price_svg_author(usage)
    assert (cost.source, dict(cost.components), cost.total, cost.unpriced_reason) == (
        "unknown",
        {},
        None,
        reason,
    )


def test_gif_without_usage_is_not_estimated() -> None:
    prices = load_price_table(None)
    gif = ImageGeneration("gpt-image-1", "low", "1024x1024", 1, output_format="gif")
    assert price_image_generation(gif, prices).unpriced_reason == "no_usage_gif"
    png = ImageGeneration("gpt-image-1", "low", "1024x1024", 1, output_format="png")
    assert price_image_generation(png, prices).total == Decimal("0.01088")  # 272 x 40e-6


def test_svg_usage_read_from_plain_json_and_items() -> None:
    svg_usage = {"input_tokens": 7, "model": "gpt-5-mini", "output_tokens": 9, "reasoning_tokens": 2}
    assert images_response_outcome({"data": [{}], "svg_usage": svg_usage}).svg_usage == SvgAuthorUsage(
        "gpt-5-mini", 7, 9, 2
    )
    item = {"type": "image_generation_call", "id": "ig_1", "status": "completed", "svg_usage": svg_usage}
    assert response_outcome({"output": [item]}).items[0].svg_usage == SvgAuthorUsage("gpt-5-mini", 7, 9, 2)
    # A malformed svg_usage is no usage at all, never an error.
    assert images_response_outcome({"data": [], "svg_usage": {"model": "x"}}).svg_usage is None
    assert images_response_outcome({"data": [], "svg_usage": "junk"}).svg_usage is None


# -- Images API -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_images_svg_prices_image_and_author(
    mode: Mode, servers: dict[str, LocalOpenAIServer], telemetry: Telemetry, instrumented: Any
) -> None:
    response = await generate(
        mode,
        servers["default"],
        model="gpt-image-1",
        prompt=FOX,
        quality="low",
        size="1024x1024",
        output_format="svg",
        complexity="high",
    )
    assert response.data is not None and len(response.data) == 1
    expected = {
        "gen_ai.usage.cost": IMAGES_TOTAL,
        "openai.image.cost.input_text": 0.00003,
        "openai.image.cost.output_image": 0.01088,
        "openai.image.cost.svg_author": IMAGES_AUTHOR,
        "openai.image.cost.source": "usage",
        "openai.image.output_format": "svg",
        "openai.image.complexity": "high",
        "openai.image.frame_count": ABSENT,
        "openai.image.svg.model": "gpt-5-mini",
        "openai.image.usage.svg.input_tokens": 506,
        "openai.image.usage.svg.output_tokens": 1200,
        "openai.image.usage.svg.reasoning_tokens": 256,
        "openai.image.unpriced.reason": ABSENT,
        "gen_ai.usage.input_tokens": 6,
        "gen_ai.usage.output_tokens": 272,
    }
    assert picked(telemetry.span(), expected) == expected
    assert points(telemetry, COST, "openai.image.cost.part") == {
        "image": IMAGES_IMAGE,
        "svg_author": IMAGES_AUTHOR,
    }
    assert telemetry.sums(UNPRICED) == []
    assert token_points(telemetry) == {
        ("image", "input"): 6,
        ("image", "output"): 272,
        ("svg_author", "input"): 506,
        ("svg_author", "output"): 1200,
    }


@pytest.mark.parametrize("mode", MODES)
async def test_images_svg_unknown_author_leaves_only_that_part_unpriced(
    mode: Mode, servers: dict[str, LocalOpenAIServer], telemetry: Telemetry, instrumented: Any
) -> None:
    await generate(
        mode,
        servers["default"],
        model="gpt-image-1",
        prompt=FOX,
        quality="low",
        size="1024x1024",
        output_format="svg",
        svg={"model": UNKNOWN_AUTHOR},
    )
    expected = {
        "gen_ai.usage.cost": IMAGES_IMAGE,  # the image part only
        "openai.image.cost.svg_author": ABSENT,
        "openai.image.cost.source": "usage",
        "openai.image.svg.model": UNKNOWN_AUTHOR,
        "openai.image.usage.svg.input_tokens": 506,
        "openai.image.usage.svg.output_tokens": 1200,
        "openai.image.unpriced.reason": ABSENT,
    }
    assert picked(telemetry.span(), expected) == expected
    assert points(telemetry, COST, "openai.image.cost.part") == {"image": IMAGES_IMAGE}
    assert points(telemetry, UNPRICED, "openai.image.unpriced.reason") == {"unknown_svg_model": 1}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("frames", "expected_frames", "cost"),
    [
        # 6 x 5e-6 + 4 x 272 x 40e-6 = 0.00003 + 0.04352 = 0.04355
        (4, 4, 0.04355),
        # no frame_count: the API's 9 frames, 6 x 5e-6 + 9 x 272 x 40e-6 = 0.00003 + 0.09792 = 0.09795
        (None, 9, 0.09795),
    ],
)
async def test_images_gif_with_usage_is_priced_from_it(
    mode: Mode,
    frames: int | None,
    expected_frames: int,
    cost: float,
    servers: dict[str, LocalOpenAIServer],
    telemetry: Telemetry,
    instrumented: Any,
) -> None:
    extra = {} if frames is None else {"frame_count": frames}
    await generate(
        mode,
        servers["default"],
        model="gpt-image-1",
        prompt=FOX,
        quality="low",
        size="1024x1024",
        output_format="gif",
        **extra,
    )
    expected = {
        "gen_ai.usage.cost": cost,
        "openai.image.cost.source": "usage",
        "openai.image.output_format": "gif",
        "openai.image.frame_count": expected_frames,
        "openai.image.usage.output_image_tokens": 272 * expected_frames,
        "openai.image.svg.model": ABSENT,
    }
    assert picked(telemetry.span(), expected) == expected
    assert points(telemetry, COST, "openai.image.cost.part") == {"image": cost}
    assert telemetry.sums(UNPRICED) == []


@pytest.mark.parametrize("mode", MODES)
async def test_images_gif_without_usage_is_unpriced(
    mode: Mode, servers: dict[str, LocalOpenAIServer], telemetry: Telemetry, instrumented: Any
) -> None:
    await generate(
        mode, servers["no_usage"], model="gpt-image-1", prompt=FOX, quality="low", output_format="gif"
    )
    expected = {
        "gen_ai.usage.cost": ABSENT,
        "openai.image.cost.output_image": ABSENT,
        "openai.image.cost.source": "unknown",
        "openai.image.unpriced.reason": "no_usage_gif",
        "openai.image.frame_count": 9,
        "openai.image.count": 1,
    }
    assert picked(telemetry.span(), expected) == expected
    assert telemetry.sums(COST) == []
    assert points(telemetry, UNPRICED, "openai.image.unpriced.reason") == {"no_usage_gif": 1}


# -- Responses API ----------------------------------------------------------------------------------

SVG_TOOL = {"type": "image_generation", "model": "gpt-image-1", "quality": "low", "output_format": "svg"}
GIF_TOOL = {"type": "image_generation", "model": "gpt-image-1", "quality": "low", "output_format": "gif"}

# "Draw two images of a tree" (25 chars, 7 tokens), two low 1024x1024 gpt-image-1 SVGs; revised prompt
# 52 chars, 13 tokens each:
#   image part (tool_usage, both images): 26 x 5e-6 + 544 x 40e-6 = 0.00013 + 0.02176 = 0.02189,
#     each item's share 0.010945 (equal weights)
#   SVG author per item: input 500 + 13 = 513, output 1200:
#     513 x 0.25e-6 + 1200 x 2e-6 = 0.00012825 + 0.0024 = 0.00252825; both: 0.0050565
#   mainline: 1507 x 0.15e-6 + (9 + 40) x 0.6e-6 = 0.00022605 + 0.0000294 = 0.00025545
#   call: 0.02189 + 0.0050565 + 0.00025545 = 0.02720195; each item: 0.010945 + 0.00252825 = 0.01347325
TWO_TREES = "Draw two images of a tree"
TWO_IMAGE = 0.02189
TWO_AUTHOR = 0.0050565
TWO_MAINLINE = 0.00025545
TWO_TOTAL = 0.02720195
ITEM_AUTHOR = 0.00252825
ITEM_TOTAL = 0.01347325

# "Draw a tree" (11 chars, 3 tokens), one low 1024x1024 gpt-image-1 image; revised 38 chars, 10 tokens:
#   mainline 1503 x 0.15e-6 + 28 x 0.6e-6 = 0.00022545 + 0.0000168 = 0.00024225
#   image 10 x 5e-6 + 272 x 40e-6 = 0.00005 + 0.01088 = 0.01093
TREE = "Draw a tree"
TREE_MAINLINE = 0.00024225
TREE_IMAGE = 0.01093


def split(telemetry: Telemetry) -> tuple[ReadableSpan, list[ReadableSpan]]:
    spans = telemetry.spans()
    (call,) = [span for span in spans if span.name.startswith("chat")]
    return call, [span for span in spans if span.name == CHILD]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("mode", MODES)
async def test_responses_svg_items_and_call_sum(
    mode: Mode, stream: bool, servers: dict[str, LocalOpenAIServer], telemetry: Telemetry, instrumented: Any
) -> None:
    await respond(
        mode, servers["default"], stream=stream, input=TWO_TREES, tools=[{**SVG_TOOL, "complexity": "low"}]
    )
    call, children = split(telemetry)
    expected_call = {
        "gen_ai.usage.cost": TWO_TOTAL,
        "openai.image.cost.svg_author": TWO_AUTHOR,
        "openai.image.cost.mainline": TWO_MAINLINE,
        "openai.image.cost.source": "usage",
        "openai.image.count": 2,
        "openai.image.complexity": "low",
        "openai.image.svg.model": "gpt-5-mini",
        "openai.image.usage.svg.input_tokens": 1026,
        "openai.image.usage.svg.output_tokens": 2400,
        "openai.image.usage.svg.reasoning_tokens": 512,
    }
    assert picked(call, expected_call) == expected_call
    expected_item = {
        "gen_ai.usage.cost": ITEM_TOTAL,
        "openai.image.cost.svg_author": ITEM_AUTHOR,
        "openai.image.cost.output_image": 0.01088,
        "openai.image.output_format": "svg",
        "openai.image.complexity": "low",
        "openai.image.svg.model": "gpt-5-mini",
        "openai.image.usage.svg.input_tokens": 513,
        "openai.image.usage.svg.output_tokens": 1200,
        "openai.image.usage.svg.reasoning_tokens": 256,
    }
    assert [picked(child, expected_item) for child in children] == [expected_item, expected_item]
    parts = points(telemetry, COST, "openai.image.cost.part")
    assert parts == pytest.approx({"image": TWO_IMAGE, "svg_author": TWO_AUTHOR, "mainline": TWO_MAINLINE})
    assert parts["svg_author"] == TWO_AUTHOR  # one add of the summed part
    assert telemetry.sums(UNPRICED) == []
    assert token_points(telemetry)[("svg_author", "input")] == 1026


@pytest.mark.parametrize("mode", MODES)
async def test_responses_svg_unknown_author(
    mode: Mode, servers: dict[str, LocalOpenAIServer], telemetry: Telemetry, instrumented: Any
) -> None:
    """The server's configured author is a model genai-prices does not know."""
    await respond(mode, servers["unknown_author"], input=TREE, tools=[SVG_TOOL])
    call, (child,) = split(telemetry)
    expected_call = {
        "gen_ai.usage.cost": 0.01117225,  # image 0.01093 + mainline 0.00024225
        "openai.image.cost.svg_author": ABSENT,
        "openai.image.svg.model": UNKNOWN_AUTHOR,
        "openai.image.usage.svg.input_tokens": 510,  # 500 + 10
    }
    assert picked(call, expected_call) == expected_call
    expected_item = {"gen_ai.usage.cost": TREE_IMAGE, "openai.image.cost.svg_author": ABSENT}
    assert picked(child, expected_item) == expected_item
    assert points(telemetry, COST, "openai.image.cost.part") == {
        "image": TREE_IMAGE,
        "mainline": TREE_MAINLINE,
    }
    assert points(telemetry, UNPRICED, "openai.image.unpriced.reason") == {"unknown_svg_model": 1}


@pytest.mark.parametrize("mode", MODES)
async def test_responses_gif_with_usage(
    mode: Mode, servers: dict[str, LocalOpenAIServer], telemetry: Telemetry, instrumented: Any
) -> None:
    # 3 frames: 10 x 5e-6 + 3 x 272 x 40e-6 = 0.00005 + 0.03264 = 0.03269; + mainline 0.00024225
    await respond(mode, servers["default"], stream=True, input=TREE, tools=[{**GIF_TOOL, "frame_count": 3}])
    call, (child,) = split(telemetry)
    expected = {
        "gen_ai.usage.cost": 0.03293225,
        "openai.image.cost.source": "usage",
        "openai.image.frame_count": 3,
        "openai.image.usage.output_image_tokens": 816,
    }
    assert picked(call, expected) == expected
    expected_item = {"gen_ai.usage.cost": 0.03269, "openai.image.frame_count": 3}
    assert picked(child, expected_item) == expected_item
    assert points(telemetry, COST, "openai.image.cost.part") == {"image": 0.03269, "mainline": TREE_MAINLINE}


@pytest.mark.parametrize("mode", MODES)
async def test_responses_gif_without_usage_is_unpriced(
    mode: Mode, servers: dict[str, LocalOpenAIServer], telemetry: Telemetry, instrumented: Any
) -> None:
    await respond(mode, servers["no_usage"], input=TREE, tools=[GIF_TOOL])
    call, (child,) = split(telemetry)
    expected = {
        "gen_ai.usage.cost": TREE_MAINLINE,  # only the mainline part is priced (rule 13)
        "openai.image.cost.mainline": TREE_MAINLINE,
        "openai.image.cost.source": "unknown",
        "openai.image.unpriced.reason": "no_usage_gif",
        "openai.image.frame_count": 9,
    }
    assert picked(call, expected) == expected
    expected_item = {
        "gen_ai.usage.cost": ABSENT,
        "openai.image.unpriced.reason": "no_usage_gif",
        "openai.image.frame_count": 9,
    }
    assert picked(child, expected_item) == expected_item
    assert points(telemetry, COST, "openai.image.cost.part") == {"mainline": TREE_MAINLINE}
    assert points(telemetry, UNPRICED, "openai.image.unpriced.reason") == {"no_usage_gif": 1}


# -- the bundled server's SVG and GIF answers -------------------------------------------------------


@pytest.mark.skipif(
    "svg_usage" not in openai.types.ImagesResponse.model_fields,
    reason="this SDK line has no ImagesResponse.svg_usage to validate against",
)
def test_server_svg_answer_is_the_sdk_declared_shape(servers: dict[str, LocalOpenAIServer]) -> None:
    with openai.OpenAI(base_url=servers["default"].base_url, **CLIENT) as sdk:
        result = sdk.images.generate(model="gpt-image-1", prompt=FOX, output_format="svg", quality="low")
        checked = type(result).model_validate(result.to_dict(warnings=False))
        assert checked.svg_usage is not None
        assert checked.svg_usage.to_dict() == {
            "input_tokens": 506,
            "model": "gpt-5-mini",
            "output_tokens": 1200,
            "reasoning_tokens": 256,
            "total_tokens": 1706,
        }


def test_server_refuses_what_the_api_refuses(servers: dict[str, LocalOpenAIServer]) -> None:
    """SVG and GIF do not stream on the Images API; SVG takes n=1 only."""
    with openai.OpenAI(base_url=servers["default"].base_url, **CLIENT) as sdk:
        for output_format, extra in (("svg", {"stream": True}), ("gif", {"stream": True}), ("svg", {"n": 2})):
            with pytest.raises(openai.BadRequestError):
                sdk.images.generate(model="gpt-image-1", prompt=FOX, output_format=output_format, **extra)
