"""Every Images API code path through the real `openai` SDK, over loopback to the bundled server.

The SDK talks HTTP to `LocalOpenAIServer`; the real OpenTelemetry SDK collects what the plugin emits in
memory. Every expected cost is worked out by hand in a comment from the price facts of
docs/cost-model.md (USD per token):

- gpt-image-1: text in 5e-6, image in 10e-6, image out 40e-6 (no text-out price: billed as image out)
- gpt-image-1-mini: text in 2e-6, image in 2.5e-6, image out 8e-6; estimates from its per-image
  prices (low 1024x1024 0.005)
- gpt-image-1.5: text in 5e-6, image in 8e-6, image out 32e-6, text out 10e-6
- gpt-image-2: text in 5e-6, image in 8e-6, image out 30e-6
- dall-e-2 per image: 256x256 0.016, 512x512 0.018, 1024x1024 0.020;
  dall-e-3 standard 1024x1024 0.040, hd 1792x1024 0.120

and from what the server reports (tests/test_local_server.py): input text tokens ceil(len(prompt)/4)
per image, 194 input image tokens per input image per output image (gpt-image-1 family) or 64
(gpt-image-2), output image tokens per the cost model's tables (gpt-image-2 low 1024x1024: 196, medium:
1756), gpt-image-1.5 text output = image output // 5, +100 output tokens per partial image on streams
(whose completed events carry no output details).
"""

from __future__ import annotations

import asyncio
import base64
import gc
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import openai
import pytest
from openai._constants import DEFAULT_CONNECTION_LIMITS
from openai._legacy_response import LegacyAPIResponse
from openai.types import (
    ImageEditCompletedEvent,
    ImageEditPartialImageEvent,
    ImageGenCompletedEvent,
    ImageGenPartialImageEvent,
    ImagesResponse,
)
from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from otel_image_cost import billing_context

from conftest import Telemetry
from local_openai_server import TINY_PNG_B64, LocalOpenAIServer

OPENAI_MAJOR = int(openai.__version__.split(".")[0])
PNG = base64.b64decode(TINY_PNG_B64)
API_VERSION = "2025-04-01-preview"
ABSENT = "<absent>"
FOX = "a red fox in the snow"  # 21 characters: 6 text tokens
Mode = Literal["sync", "async"]
MODES: tuple[Mode, ...] = ("sync", "async")

COST = "openai.image.cost"
GENERATED = "openai.image.generated"
PARTIALS = "openai.image.partial_images"
UNPRICED = "openai.image.unpriced"
TOKENS = "gen_ai.client.token.usage"
DURATION = "gen_ai.client.operation.duration"


# -- fixtures and helpers ----------------------------------------------------------------------------


class ServerPool:
    """Local servers by option set, started on first use and shared by this module's tests."""

    def __init__(self) -> None:
        self._servers: dict[str, LocalOpenAIServer] = {}

    def get(self, **options: Any) -> LocalOpenAIServer:
        key = repr(sorted((name, repr(value)) for name, value in options.items()))
        if key not in self._servers:
            self._servers[key] = LocalOpenAIServer(**options).start()
        server = self._servers[key]
        server.reset()
        return server

    def close(self) -> None:
        for server in self._servers.values():
            server.close()


@pytest.fixture(scope="module")
def pool() -> Iterator[ServerPool]:
    servers = ServerPool()
    yield servers
    servers.close()


@pytest.fixture
def srv(pool: ServerPool) -> LocalOpenAIServer:
    return pool.get()


@dataclass
class Clients:
    """A sync and an async client of one server, called alike."""

    sync: openai.OpenAI
    async_: openai.AsyncOpenAI

    async def images(self, mode: Mode, method: str, **kwargs: Any) -> Any:
        if mode == "sync":
            return getattr(self.sync.images, method)(**kwargs)
        return await getattr(self.async_.images, method)(**kwargs)

    async def close(self) -> None:
        self.sync.close()
        await self.async_.close()


def clients_of(server: LocalOpenAIServer) -> Clients:
    return Clients(
        openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=10),
        openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=10),
    )


@pytest.fixture
async def clients(srv: LocalOpenAIServer) -> AsyncIterator[Clients]:
    both = clients_of(srv)
    yield both
    await both.close()


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def picked(actual: Mapping[str, Any], expected: Mapping[str, Any]) -> dict[str, Any]:
    """`actual` restricted to the keys of `expected` (ABSENT where missing), for one readable diff."""
    return {key: actual.get(key, ABSENT) for key in expected}


def assert_attributes(span: ReadableSpan, expected: Mapping[str, Any]) -> None:
    actual = attrs(span)
    assert picked(actual, expected) == dict(expected)


def histogram_counts(telemetry: Telemetry, name: str) -> list[tuple[dict[str, Any], int]]:
    return [(attributes, point.count) for attributes, point in telemetry.points(name)]


def assert_priced_call_metrics(
    telemetry: Telemetry,
    *,
    cost: float,
    source: str,
    images: int,
    partial_images: int = 0,
    tokens: tuple[int, int] | None = None,
) -> None:
    """One call's metrics: its cost counted once, its images, no unpriced call, one duration point."""
    [(cost_labels, amount)] = telemetry.sums(COST)
    assert amount == cost
    assert (cost_labels["openai.image.cost.source"], cost_labels["openai.image.cost.part"]) == (
        source,
        "image",
    )
    assert telemetry.total(GENERATED) == images
    assert len(telemetry.sums(GENERATED)) == (1 if images else 0)
    assert telemetry.total(PARTIALS) == partial_images
    assert telemetry.sums(UNPRICED) == []
    assert [count for _, count in histogram_counts(telemetry, DURATION)] == [1]
    token_points = {labels["gen_ai.token.type"]: point.sum for labels, point in telemetry.points(TOKENS)}
    assert token_points == ({} if tokens is None else {"input": tokens[0], "output": tokens[1]})


def cost_components(span: ReadableSpan) -> dict[str, float]:
    prefix = "openai.image.cost."
    return {
        key.removeprefix(prefix): value
        for key, value in attrs(span).items()
        if key.startswith(prefix) and isinstance(value, float)
    }


# -- 1. generate / edit / create_variation, sync and async ------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    kwargs: dict[str, Any]
    cost: float
    components: dict[str, float]
    attributes: dict[str, Any]
    source: str = "usage"
    images: int = 1
    tokens: tuple[int, int] | None = None
    shape: str = "2026"


def usage_attrs(text_in: int, image_in: int, image_out: int, text_out: int | None) -> dict[str, Any]:
    return {
        "gen_ai.usage.input_tokens": text_in + image_in,
        "gen_ai.usage.output_tokens": image_out + (text_out or 0),
        "openai.image.usage.input_text_tokens": text_in,
        "openai.image.usage.input_image_tokens": image_in,
        "openai.image.usage.output_image_tokens": image_out if text_out is not None else ABSENT,
        "openai.image.usage.output_text_tokens": text_out if text_out is not None else ABSENT,
    }


NO_USAGE = {
    "gen_ai.usage.input_tokens": ABSENT,
    "gen_ai.usage.output_tokens": ABSENT,
    "openai.image.usage.raw": ABSENT,
    "openai.image.usage.input_text_tokens": ABSENT,
}

CALL_CASES = [
    Case(
        "generate-gpt-image-1-high-n2",
        "generate",
        {"model": "gpt-image-1", "prompt": FOX, "quality": "high", "n": 2},
        # text 2 x 6 = 12 x 5e-6 = 0.00006; image out 2 x 4160 = 8320 x 40e-6 = 0.3328
        0.33286,
        {"input_text": 0.00006, "output_image": 0.3328},
        {
            "openai.image.quality": "high",
            "openai.image.size": "1024x1024",
            "openai.image.n": 2,
            "openai.image.background": "opaque",
            "openai.image.output_format": "png",
            **usage_attrs(12, 0, 8320, 0),
        },
        images=2,
        tokens=(12, 8320),
    ),
    Case(
        "generate-gpt-image-1-mini-low-n3",
        "generate",
        {"model": "gpt-image-1-mini", "prompt": "logo sketch", "quality": "low", "n": 3},
        # "logo sketch" = 11 chars: 3 tokens x 3 = 9 x 2e-6 = 0.000018; 3 x 272 = 816 x 8e-6 = 0.006528
        0.006546,
        {"input_text": 0.000018, "output_image": 0.006528},
        {"openai.image.quality": "low", "openai.image.size": "1024x1024", **usage_attrs(9, 0, 816, 0)},
        images=3,
        tokens=(9, 816),
    ),
    Case(
        "generate-gpt-image-1.5-auto-quality",
        "generate",
        {"model": "gpt-image-1.5", "prompt": "a siamese cat", "size": "1024x1536"},
        # reported medium: 13 chars = 4 x 5e-6 = 0.00002; 1584 x 32e-6 = 0.050688;
        # text out 1584 // 5 = 316 x 10e-6 = 0.00316
        0.053868,
        {"input_text": 0.00002, "output_image": 0.050688, "output_text": 0.00316},
        {"openai.image.quality": "medium", "openai.image.size": "1024x1536", **usage_attrs(4, 0, 1584, 316)},
        tokens=(4, 1900),
    ),
    Case(
        "generate-gpt-image-2-medium",
        "generate",
        {"model": "gpt-image-2", "prompt": "a city map", "quality": "medium", "size": "1024x1024"},
        # 10 chars = 3 x 5e-6 = 0.000015; 1756 x 30e-6 = 0.05268
        0.052695,
        {"input_text": 0.000015, "output_image": 0.05268},
        {"openai.image.quality": "medium", "openai.image.size": "1024x1024", **usage_attrs(3, 0, 1756, 0)},
        tokens=(3, 1756),
    ),
    Case(
        "generate-dall-e-3-hd-wide",
        "generate",
        {"model": "dall-e-3", "prompt": "a retro poster", "quality": "hd", "size": "1792x1024"},
        0.12,  # dall-e-3 hd 1792x1024: 1 x 0.120
        {"output_image": 0.12},
        {"openai.image.quality": "hd", "openai.image.size": "1792x1024", **NO_USAGE},
        source="per_image",
    ),
    Case(
        "generate-dall-e-3-documented-defaults",
        "generate",
        {"model": "dall-e-3", "prompt": "a retro poster"},
        0.04,  # quality and size omitted: standard 1024x1024, 1 x 0.040
        {"output_image": 0.04},
        {"openai.image.quality": "standard", "openai.image.size": "1024x1024", **NO_USAGE},
        source="per_image",
    ),
    Case(
        "generate-dall-e-2-small-n2",
        "generate",
        {"model": "dall-e-2", "prompt": "a capybara", "size": "256x256", "n": 2},
        0.032,  # 2 x 0.016
        {"output_image": 0.032},
        {"openai.image.quality": "standard", "openai.image.size": "256x256", **NO_USAGE},
        source="per_image",
        images=2,
    ),
    Case(
        "edit-gpt-image-1-one-file",
        "edit",
        {
            "model": "gpt-image-1",
            "image": ("room.png", PNG),
            "prompt": "make the sky violet",
            "quality": "medium",
        },
        # 19 chars = 5 x 5e-6 = 0.000025; 194 x 10e-6 = 0.00194; 1056 x 40e-6 = 0.04224
        0.044205,
        {"input_text": 0.000025, "input_image": 0.00194, "output_image": 0.04224},
        {"openai.image.operation": "edit", "openai.image.quality": "medium", **usage_attrs(5, 194, 1056, 0)},
        tokens=(199, 1056),
    ),
    Case(
        "edit-gpt-image-1.5-two-files",
        "edit",
        {
            "model": "gpt-image-1.5",
            "image": [("a.png", PNG), ("b.png", PNG)],
            "prompt": "combine these",
            "quality": "low",
        },
        # 13 chars = 4 x 5e-6 = 0.00002; 2 x 194 = 388 x 8e-6 = 0.003104; 272 x 32e-6 = 0.008704;
        # text out 272 // 5 = 54 x 10e-6 = 0.00054
        0.012368,
        {"input_text": 0.00002, "input_image": 0.003104, "output_image": 0.008704, "output_text": 0.00054},
        {"openai.image.operation": "edit", "openai.image.quality": "low", **usage_attrs(4, 388, 272, 54)},
        tokens=(392, 326),
    ),
    Case(
        "edit-gpt-image-2-mask",
        "edit",
        {
            "model": "gpt-image-2",
            "image": ("room.png", PNG),
            "mask": ("mask.png", PNG),
            "prompt": "add a hat",
            "quality": "low",
            "size": "1024x1024",
        },
        # 9 chars = 3 x 5e-6 = 0.000015; 64 x 8e-6 = 0.000512; 196 x 30e-6 = 0.00588
        # (the mask is not an input image)
        0.006407,
        {"input_text": 0.000015, "input_image": 0.000512, "output_image": 0.00588},
        {"openai.image.operation": "edit", "openai.image.size": "1024x1024", **usage_attrs(3, 64, 196, 0)},
        tokens=(67, 196),
    ),
    Case(
        "edit-dall-e-2",
        "edit",
        {"model": "dall-e-2", "image": ("room.png", PNG), "prompt": "add a hat", "size": "512x512"},
        0.018,  # 1 x 0.018
        {"output_image": 0.018},
        {"openai.image.operation": "edit", "openai.image.quality": "standard", **NO_USAGE},
        source="per_image",
    ),
    Case(
        "variation-dall-e-2-n2",
        "create_variation",
        {"model": "dall-e-2", "image": ("room.png", PNG), "n": 2, "size": "512x512"},
        0.036,  # 2 x 0.018
        {"output_image": 0.036},
        {
            "openai.image.operation": "variation",
            "openai.image.size": "512x512",
            "openai.image.n": 2,
            **NO_USAGE,
        },
        source="per_image",
        images=2,
    ),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "case",
    [
        # openai 3 marks create_variation deprecated (DALL·E 2 is retired) but still sends it
        pytest.param(case, id=case.id, marks=pytest.mark.filterwarnings("ignore::DeprecationWarning"))
        if case.method == "create_variation"
        else pytest.param(case, id=case.id)
        for case in CALL_CASES
    ],
)
async def test_images_call_is_priced_exactly(
    telemetry: Telemetry, instrumented: Any, clients: Clients, srv: LocalOpenAIServer, mode: Mode, case: Case
) -> None:
    result = await clients.images(mode, case.method, **case.kwargs)

    assert type(result) is ImagesResponse
    assert len(result.data or []) == case.images
    assert len(srv.requests) == 1
    span = telemetry.span()
    model = case.kwargs["model"]
    assert span.name == f"generate_content {model}"
    assert span.status.status_code is StatusCode.UNSET
    operation = {"generate": "generate", "edit": "edit", "create_variation": "variation"}[case.method]
    assert_attributes(
        span,
        {
            "gen_ai.provider.name": "openai",
            "gen_ai.operation.name": "generate_content",
            "gen_ai.output.type": "image",
            "gen_ai.request.model": model,
            "openai.image.model": model,
            "openai.image.model.source": "request",
            "openai.image.operation": operation,
            "openai.image.count": case.images,
            "openai.image.partial_images": 0,
            "openai.image.cost.source": case.source,
            "openai.image.cost.pricing_version": "2026-11-21",
            "gen_ai.usage.cost": case.cost,
            "openai.image.unpriced.reason": ABSENT,
            "error.type": ABSENT,
            **case.attributes,
        },
    )
    assert cost_components(span) == case.components
    assert_priced_call_metrics(
        telemetry, cost=case.cost, source=case.source, images=case.images, tokens=case.tokens
    )
    [(labels, _)] = telemetry.sums(COST)
    assert labels == {
        "gen_ai.provider.name": "openai",
        "gen_ai.operation.name": "generate_content",
        "gen_ai.request.model": model,
        "openai.image.model": model,
        "openai.image.operation": operation,
        "openai.image.quality": attrs(span)["openai.image.quality"],
        "openai.image.size": attrs(span)["openai.image.size"],
        "openai.image.cost.source": case.source,
        "openai.image.cost.part": "image",
    }


# -- 1b. the server's four usage shapes --------------------------------------------------------------

LIGHTHOUSE = "a lighthouse at dawn"  # 20 characters: 5 text tokens

SHAPE_CASES = [
    Case(
        "2026",
        "generate",
        {"model": "gpt-image-1", "prompt": LIGHTHOUSE, "quality": "high", "size": "1536x1024"},
        # 5 x 5e-6 = 0.000025; 6208 x 40e-6 = 0.24832
        0.248345,
        {"input_text": 0.000025, "output_image": 0.24832},
        {"openai.image.background": "opaque", **usage_attrs(5, 0, 6208, 0)},
        tokens=(5, 6208),
        shape="2026",
    ),
    Case(
        "2025-no-output-details",
        "generate",
        {"model": "gpt-image-1", "prompt": LIGHTHOUSE, "quality": "high", "size": "1536x1024"},
        # same tokens; no output details: all 6208 output tokens at the image-output price
        0.248345,
        {"input_text": 0.000025, "output_image": 0.24832},
        {"openai.image.background": "opaque", **usage_attrs(5, 0, 6208, None)},
        tokens=(5, 6208),
        shape="2025",
    ),
    Case(
        "no_echo-request-values",
        "generate",
        {"model": "gpt-image-1", "prompt": LIGHTHOUSE, "quality": "high", "size": "1536x1024"},
        # usage priced as above; quality/size come from the request, no background echoed
        0.248345,
        {"input_text": 0.000025, "output_image": 0.24832},
        {
            "openai.image.background": ABSENT,
            "openai.image.output_format": ABSENT,
            **usage_attrs(5, 0, 6208, None),
        },
        tokens=(5, 6208),
        shape="no_echo",
    ),
    Case(
        "none-estimate-from-request",
        "generate",
        {"model": "gpt-image-1", "prompt": LIGHTHOUSE, "quality": "high", "size": "1536x1024"},
        # estimate: ceil(20 / 4) = 5 x 5e-6 = 0.000025; high 1536x1024 = 6208 x 40e-6 = 0.24832
        0.248345,
        {"input_text": 0.000025, "output_image": 0.24832},
        {"openai.image.background": "opaque", **NO_USAGE},
        source="estimate",
        shape="none",
    ),
    Case(
        "none-estimate-from-echo",
        "generate",
        {"model": "gpt-image-1", "prompt": LIGHTHOUSE},
        # quality and size not sent: the response reports medium 1024x1024 -> 1056 x 40e-6 = 0.04224,
        # plus 5 x 5e-6 = 0.000025 (not the `high` fallback)
        0.042265,
        {"input_text": 0.000025, "output_image": 0.04224},
        {"openai.image.quality": "medium", "openai.image.size": "1024x1024", **NO_USAGE},
        source="estimate",
        shape="none",
    ),
    Case(
        "none-estimate-mini-per-image",
        "generate",
        {"model": "gpt-image-1-mini", "prompt": "logo sketch", "quality": "low", "n": 3},
        # per-image estimate: 3 x 0.005 = 0.015; ceil(11 / 4) = 3 tokens per image: 9 x 2e-6 = 0.000018
        0.015018,
        {"input_text": 0.000018, "output_image": 0.015},
        {"openai.image.quality": "low", "openai.image.size": "1024x1024", **NO_USAGE},
        source="estimate",
        images=3,
        shape="none",
    ),
    Case(
        "none-estimate-gpt-image-1.5",
        "generate",
        {"model": "gpt-image-1.5", "prompt": "a siamese cat", "size": "1024x1536"},
        # reported medium 1024x1536: 1584 x 32e-6 = 0.050688; 4 x 5e-6 = 0.00002 (no text-out estimate)
        0.050708,
        {"input_text": 0.00002, "output_image": 0.050688},
        {"openai.image.quality": "medium", **NO_USAGE},
        source="estimate",
        shape="none",
    ),
    Case(
        "none-estimate-gpt-image-2",
        "edit",
        {"model": "gpt-image-2", "image": ("a.png", PNG), "prompt": "a city map", "quality": "medium"},
        # medium 1024x1024 = 1756 x 30e-6 = 0.05268; 3 x 5e-6 = 0.000015; input image tokens unknown
        0.052695,
        {"input_text": 0.000015, "output_image": 0.05268},
        {"openai.image.operation": "edit", "openai.image.size": "1024x1024", **NO_USAGE},
        source="estimate",
        shape="none",
    ),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", SHAPE_CASES, ids=[case.id for case in SHAPE_CASES])
async def test_usage_shapes(
    telemetry: Telemetry, instrumented: Any, pool: ServerPool, mode: Mode, case: Case
) -> None:
    server = pool.get(usage_shape=case.shape)
    both = clients_of(server)
    try:
        await both.images(mode, case.method, **case.kwargs)
    finally:
        await both.close()
    span = telemetry.span()
    expected = {
        "openai.image.quality": case.kwargs.get("quality", ABSENT),
        "openai.image.size": case.kwargs.get("size", ABSENT),
        "openai.image.cost.source": case.source,
        "gen_ai.usage.cost": case.cost,
        "openai.image.count": case.images,
        **case.attributes,
    }
    assert_attributes(span, expected)
    assert cost_components(span) == case.components
    assert_priced_call_metrics(
        telemetry, cost=case.cost, source=case.source, images=case.images, tokens=case.tokens
    )


async def test_estimate_counts_prompt_tokens_per_image(
    telemetry: Telemetry, instrument: Any, pool: ServerPool
) -> None:
    instrument()
    kwargs: dict[str, Any] = {"model": "gpt-image-2", "prompt": "a city map", "quality": "medium", "n": 2}
    for shape in ("2026", "none"):
        with openai.OpenAI(
            base_url=pool.get(usage_shape=shape).base_url, api_key="k", max_retries=0, timeout=10
        ) as client:
            client.images.generate(**kwargs)
    usage, estimate = (attrs(span) for span in telemetry.spans())
    # billed: 2 x 3 = 6 x 5e-6 = 0.00003; 2 x 1756 = 3512 x 30e-6 = 0.10536
    assert usage["gen_ai.usage.cost"] == 0.10539
    assert estimate["gen_ai.usage.cost"] == 0.10539


# -- 2. streams ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamCase:
    id: str
    method: str
    kwargs: dict[str, Any]
    events: list[type[Any]]
    cost: float
    partials: int
    images: int
    tokens: tuple[int, int]


STREAM_CASES = [
    StreamCase(
        "generate-gpt-image-1-two-partials",
        "generate",
        {"model": "gpt-image-1", "prompt": FOX, "quality": "low", "partial_images": 2},
        [ImageGenPartialImageEvent, ImageGenPartialImageEvent, ImageGenCompletedEvent],
        # completed usage: 6 text in x 5e-6 = 0.00003; out 272 + 2 x 100 = 472 x 40e-6 = 0.01888
        0.01891,
        2,
        1,
        (6, 472),
    ),
    StreamCase(
        "edit-gpt-image-1.5-one-partial",
        "edit",
        {
            "model": "gpt-image-1.5",
            "image": ("room.png", PNG),
            "prompt": "make the sky violet",
            "quality": "low",
            "partial_images": 1,
        },
        [ImageEditPartialImageEvent, ImageEditCompletedEvent],
        # 5 text x 5e-6 = 0.000025; 194 image x 8e-6 = 0.001552; output 272 + 54 text + 100 partial = 426,
        # reported without details, so all at the image-output price: 426 x 32e-6 = 0.013632
        0.015209,
        1,
        1,
        (199, 426),
    ),
    StreamCase(
        "generate-gpt-image-2-n2",
        "generate",
        {"model": "gpt-image-2", "prompt": "a city map", "quality": "medium", "n": 2, "partial_images": 1},
        [
            ImageGenPartialImageEvent,
            ImageGenCompletedEvent,
            ImageGenPartialImageEvent,
            ImageGenCompletedEvent,
        ],
        # two completed events, each 3 text in and 1756 + 100 out: 6 x 5e-6 = 0.00003; 3712 x 30e-6 = 0.11136
        0.11139,
        2,
        2,
        (6, 3712),
    ),
]


async def open_stream(clients: Clients, mode: Mode, case: StreamCase) -> Any:
    stream = await clients.images(mode, case.method, stream=True, **case.kwargs)
    assert isinstance(stream, openai.Stream if mode == "sync" else openai.AsyncStream)
    return stream


async def drain(mode: Mode, stream: Any) -> list[Any]:
    if mode == "sync":
        return list(stream)
    return [event async for event in stream]


async def close(mode: Mode, stream: Any) -> None:
    if mode == "sync":
        stream.close()
    else:
        await stream.close()


def assert_stream_span(telemetry: Telemetry, case: StreamCase) -> None:
    span = telemetry.span()
    assert_attributes(
        span,
        {
            "openai.image.stream": True,
            "openai.image.partial_images.requested": case.kwargs["partial_images"],
            "openai.image.partial_images": case.partials,
            "openai.image.count": case.images,
            "openai.image.cost.source": "usage",
            "gen_ai.usage.cost": case.cost,
            "gen_ai.usage.input_tokens": case.tokens[0],
            "gen_ai.usage.output_tokens": case.tokens[1],
        },
    )
    assert_priced_call_metrics(
        telemetry,
        cost=case.cost,
        source="usage",
        images=case.images,
        partial_images=case.partials,
        tokens=case.tokens,
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", STREAM_CASES, ids=[case.id for case in STREAM_CASES])
async def test_stream_fully_consumed(
    telemetry: Telemetry, instrumented: Any, clients: Clients, mode: Mode, case: StreamCase
) -> None:
    stream = await open_stream(clients, mode, case)
    assert telemetry.spans() == []
    events = await drain(mode, stream)

    assert [type(event) for event in events] == case.events
    assert_stream_span(telemetry, case)
    await close(mode, stream)  # closing an exhausted stream records nothing more
    assert_stream_span(telemetry, case)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", STREAM_CASES, ids=[case.id for case in STREAM_CASES])
async def test_stream_consumed_inside_with(
    telemetry: Telemetry, instrumented: Any, clients: Clients, mode: Mode, case: StreamCase
) -> None:
    stream = await open_stream(clients, mode, case)
    events: list[Any] = []
    if mode == "sync":
        with stream as entered:
            assert entered is stream
            events.extend(entered)
    else:
        async with stream as entered:
            assert entered is stream
            events.extend([event async for event in entered])
    assert [type(event) for event in events] == case.events
    assert_stream_span(telemetry, case)


def usage_raw_events(span: ReadableSpan) -> str:
    return str(attrs(span)["openai.image.usage.raw"])


async def test_stream_of_two_images_reports_both_usages_raw(
    telemetry: Telemetry, instrumented: Any, clients: Clients
) -> None:
    case = STREAM_CASES[2]
    await drain("sync", await open_stream(clients, "sync", case))
    one = (
        '{"input_tokens":3,"input_tokens_details":{"image_tokens":0,"text_tokens":3},'
        '"output_tokens":1856,"total_tokens":1859}'
    )
    assert usage_raw_events(telemetry.span()) == f"[{one},{one}]"


# A stream the app left after its first partial image, before any completed event: abandoned, so an
# estimate (cost-model rule 12) of the n=1 image asked for (low, auto size as 1024x1024: 272 x 40e-6 =
# 0.01088), the partial received (100 x 40e-6 = 0.004) and the prompt (6 x 5e-6 = 0.00003): 0.01491.
EARLY_COST = 0.01491
EARLY_COMPONENTS = {"input_text": 0.00003, "output_image": 0.01088, "partial_images": 0.004}


def assert_ended_early(telemetry: Telemetry) -> None:
    span = telemetry.span()
    assert span.status.status_code is StatusCode.UNSET
    assert_attributes(
        span,
        {
            "openai.image.count": 0,
            "openai.image.partial_images": 1,
            "openai.image.cost.source": "estimate",
            "openai.image.outcome": "abandoned",
            "gen_ai.usage.cost": EARLY_COST,
            "error.type": ABSENT,
        },
    )
    assert cost_components(span) == EARLY_COMPONENTS
    assert_priced_call_metrics(telemetry, cost=EARLY_COST, source="estimate", images=0, partial_images=1)


@pytest.mark.parametrize("mode", MODES)
async def test_stream_closed_early(
    telemetry: Telemetry, instrumented: Any, clients: Clients, mode: Mode
) -> None:
    stream = await open_stream(clients, mode, STREAM_CASES[0])
    if mode == "sync":
        first = next(stream)
    else:
        first = await stream.__anext__()
    assert type(first) is ImageGenPartialImageEvent
    assert telemetry.spans() == []
    await close(mode, stream)
    assert_ended_early(telemetry)
    await close(mode, stream)
    assert_ended_early(telemetry)


@pytest.mark.parametrize("mode", MODES)
async def test_stream_left_early_by_break_in_with(
    telemetry: Telemetry, instrumented: Any, clients: Clients, mode: Mode
) -> None:
    stream = await open_stream(clients, mode, STREAM_CASES[0])
    if mode == "sync":
        with stream:
            for event in stream:
                assert type(event) is ImageGenPartialImageEvent
                break
    else:
        async with stream:
            async for event in stream:
                assert type(event) is ImageGenPartialImageEvent
                break
    assert_ended_early(telemetry)


@pytest.mark.parametrize("mode", MODES)
async def test_stream_dropped_unclosed_ends_on_collection(
    telemetry: Telemetry, instrumented: Any, clients: Clients, mode: Mode
) -> None:
    stream = await open_stream(clients, mode, STREAM_CASES[0])
    if mode == "sync":
        next(stream)
    else:
        await stream.__anext__()
    gc.collect()
    assert telemetry.spans() == []  # still referenced: still running
    del stream
    gc.collect()
    assert_ended_early(telemetry)


@pytest.mark.parametrize("with_block", [True, False], ids=["in-with", "bare-loop"])
@pytest.mark.parametrize("mode", MODES)
async def test_app_raising_inside_its_loop(
    telemetry: Telemetry, instrumented: Any, clients: Clients, mode: Mode, with_block: bool
) -> None:
    class AppError(Exception):
        pass

    async def consume(stream: Any) -> None:
        if mode == "sync":
            for _ in stream:
                raise AppError("the app failed")
        else:
            async for _ in stream:
                raise AppError("the app failed")

    stream = await open_stream(clients, mode, STREAM_CASES[0])
    with pytest.raises(AppError):
        if not with_block:
            await consume(stream)
        elif mode == "sync":
            with stream:
                await consume(stream)
        else:
            async with stream:
                await consume(stream)
    if not with_block:
        del stream
        gc.collect()
    # The app's error is not the call's: the SDK delivered what was read; the span ends once, unerrored.
    assert_ended_early(telemetry)


# -- 3. with_raw_response --------------------------------------------------------------------------------

RAW_KWARGS: dict[str, Any] = {"model": "gpt-image-1", "prompt": FOX, "quality": "low"}
# 6 x 5e-6 = 0.00003; 272 x 40e-6 = 0.01088
RAW_COST = 0.01091


@pytest.mark.parametrize("mode", MODES)
async def test_with_raw_response(
    telemetry: Telemetry, instrumented: Any, clients: Clients, srv: LocalOpenAIServer, mode: Mode
) -> None:
    if mode == "sync":
        raw = clients.sync.images.with_raw_response.generate(**RAW_KWARGS)
    else:
        raw = await clients.async_.images.with_raw_response.generate(**RAW_KWARGS)

    assert type(raw) is LegacyAPIResponse
    assert raw.headers["content-type"] == "application/json"
    assert raw.status_code == 200
    parsed = raw.parse()
    assert type(parsed) is ImagesResponse
    assert raw.parse() is parsed
    assert parsed.usage is not None and parsed.usage.output_tokens == 272
    assert len(srv.requests) == 1
    assert_attributes(telemetry.span(), {"gen_ai.usage.cost": RAW_COST, "openai.image.cost.source": "usage"})
    assert_priced_call_metrics(telemetry, cost=RAW_COST, source="usage", images=1, tokens=(6, 272))


@pytest.mark.parametrize("mode", MODES)
async def test_with_raw_response_stream(
    telemetry: Telemetry, instrumented: Any, clients: Clients, srv: LocalOpenAIServer, mode: Mode
) -> None:
    case = STREAM_CASES[0]
    if mode == "sync":
        raw = clients.sync.images.with_raw_response.generate(stream=True, **case.kwargs)
    else:
        raw = await clients.async_.images.with_raw_response.generate(stream=True, **case.kwargs)

    assert isinstance(raw, LegacyAPIResponse)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert telemetry.spans() == []
    stream = raw.parse()
    assert isinstance(stream, openai.Stream if mode == "sync" else openai.AsyncStream)
    assert raw.parse() is stream
    events = await drain(mode, stream)
    assert [type(event) for event in events] == case.events
    assert len(srv.requests) == 1
    assert_stream_span(telemetry, case)


# -- 4. with_streaming_response --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_with_streaming_response_parsed(
    telemetry: Telemetry, instrumented: Any, clients: Clients, srv: LocalOpenAIServer, mode: Mode
) -> None:
    if mode == "sync":
        with clients.sync.images.with_streaming_response.generate(**RAW_KWARGS) as response:
            assert response.headers["content-type"] == "application/json"
            parsed = response.parse()
    else:
        async with clients.async_.images.with_streaming_response.generate(**RAW_KWARGS) as aresponse:
            assert aresponse.headers["content-type"] == "application/json"
            parsed = await aresponse.parse()
    assert type(parsed) is ImagesResponse
    assert len(srv.requests) == 1
    assert_attributes(telemetry.span(), {"gen_ai.usage.cost": RAW_COST, "openai.image.count": 1})
    assert_priced_call_metrics(telemetry, cost=RAW_COST, source="usage", images=1, tokens=(6, 272))


@pytest.mark.parametrize("mode", MODES)
async def test_with_streaming_response_closed_unparsed(
    telemetry: Telemetry, instrumented: Any, clients: Clients, mode: Mode
) -> None:
    kwargs = {**RAW_KWARGS, "n": 2}
    if mode == "sync":
        with clients.sync.images.with_streaming_response.generate(**kwargs) as response:
            assert response.status_code == 200
    else:
        async with clients.async_.images.with_streaming_response.generate(**kwargs) as aresponse:
            assert aresponse.status_code == 200
    # nothing read: an estimate for the n = 2 images asked: 2 x 272 x 40e-6 = 0.02176;
    # the prompt's 6 tokens once per image: 12 x 5e-6 = 0.00006
    span = telemetry.span()
    assert_attributes(
        span,
        {"gen_ai.usage.cost": 0.02182, "openai.image.cost.source": "estimate", "openai.image.count": 0},
    )
    assert cost_components(span) == {"input_text": 0.00006, "output_image": 0.02176}
    assert_priced_call_metrics(telemetry, cost=0.02182, source="estimate", images=0)


def test_with_streaming_response_of_a_stream_closed_unparsed(
    telemetry: Telemetry, instrumented: Any, clients: Clients
) -> None:
    kwargs = {**RAW_KWARGS, "n": 2, "stream": True}
    with clients.sync.images.with_streaming_response.generate(**kwargs) as response:
        assert response.status_code == 200
    # as for the non-stream request: 2 x 272 x 40e-6 = 0.02176; 12 x 5e-6 = 0.00006
    assert_attributes(
        telemetry.span(), {"gen_ai.usage.cost": 0.02182, "openai.image.cost.source": "estimate"}
    )


@pytest.mark.parametrize("mode", MODES)
async def test_with_streaming_response_of_a_stream(
    telemetry: Telemetry, instrumented: Any, clients: Clients, mode: Mode
) -> None:
    case = STREAM_CASES[0]
    if mode == "sync":
        with clients.sync.images.with_streaming_response.generate(stream=True, **case.kwargs) as response:
            events = list(response.parse())
    else:
        async with clients.async_.images.with_streaming_response.generate(
            stream=True, **case.kwargs
        ) as aresponse:
            events = [event async for event in await aresponse.parse()]
    assert [type(event) for event in events] == case.events
    assert_stream_span(telemetry, case)


# -- 5. Azure --------------------------------------------------------------------------------------------

DEPLOYMENTS = {"img-prod": "gpt-image-1.5"}
SIAMESE_LOW: dict[str, Any] = {"prompt": "a siamese cat", "quality": "low"}
# gpt-image-1.5 low 1024x1024: 4 x 5e-6 = 0.00002; 272 x 32e-6 = 0.008704; 54 x 10e-6 = 0.00054
SIAMESE_LOW_COST = 0.009264


def azure_clients(server: LocalOpenAIServer, deployment: str | None = None) -> Clients:
    return Clients(
        openai.AzureOpenAI(
            azure_endpoint=server.azure_endpoint,
            azure_deployment=deployment,
            api_key="sk-test",
            api_version=API_VERSION,
            max_retries=0,
            timeout=10,
        ),
        openai.AsyncAzureOpenAI(
            azure_endpoint=server.azure_endpoint,
            azure_deployment=deployment,
            api_key="sk-test",
            api_version=API_VERSION,
            max_retries=0,
            timeout=10,
        ),
    )


@pytest.fixture
def azure_server(pool: ServerPool) -> LocalOpenAIServer:
    return pool.get(deployments=DEPLOYMENTS)


@pytest.mark.parametrize("configured", ["setting", "env"])
@pytest.mark.parametrize("mode", MODES)
async def test_azure_mapped_deployment(
    telemetry: Telemetry,
    instrument: Any,
    azure_server: LocalOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    mode: Mode,
    configured: str,
) -> None:
    if configured == "env":
        monkeypatch.setenv("OTEL_IMAGE_COST_AZURE_DEPLOYMENTS", "img-prod=gpt-image-1.5, other=dall-e-3")
        instrument()
    else:
        instrument(azure_deployments=DEPLOYMENTS)
    both = azure_clients(azure_server)
    try:
        await both.images(mode, "generate", model="img-prod", **SIAMESE_LOW)
    finally:
        await both.close()
    assert [r.path for r in azure_server.requests] == ["/openai/deployments/img-prod/images/generations"]
    span = telemetry.span()
    assert span.name == "generate_content img-prod"
    assert_attributes(
        span,
        {
            "gen_ai.provider.name": "azure.ai.openai",
            "gen_ai.request.model": "img-prod",
            "openai.image.model": "gpt-image-1.5",
            "openai.image.model.source": "deployment_map",
            "openai.image.cost.source": "usage",
            "gen_ai.usage.cost": SIAMESE_LOW_COST,
        },
    )
    assert_priced_call_metrics(telemetry, cost=SIAMESE_LOW_COST, source="usage", images=1, tokens=(4, 326))
    [(labels, _)] = telemetry.sums(COST)
    assert (labels["gen_ai.provider.name"], labels["openai.image.model"]) == (
        "azure.ai.openai",
        "gpt-image-1.5",
    )


@pytest.mark.parametrize("mode", MODES)
async def test_azure_deployment_named_like_a_model(
    telemetry: Telemetry, instrument: Any, azure_server: LocalOpenAIServer, mode: Mode
) -> None:
    instrument(azure_deployments=DEPLOYMENTS)
    both = azure_clients(azure_server)
    try:
        await both.images(mode, "generate", **RAW_KWARGS)
    finally:
        await both.close()
    assert_attributes(
        telemetry.span(),
        {
            "gen_ai.provider.name": "azure.ai.openai",
            "openai.image.model": "gpt-image-1",
            "openai.image.model.source": "request",
            "gen_ai.usage.cost": RAW_COST,
        },
    )
    assert_priced_call_metrics(telemetry, cost=RAW_COST, source="usage", images=1, tokens=(6, 272))


@pytest.mark.parametrize("mode", MODES)
async def test_azure_unknown_deployment_is_unpriced(
    telemetry: Telemetry, instrumented: Any, azure_server: LocalOpenAIServer, mode: Mode
) -> None:
    both = azure_clients(azure_server)
    try:
        await both.images(mode, "generate", model="img-prod", **SIAMESE_LOW)
    finally:
        await both.close()
    span = telemetry.span()
    assert_attributes(
        span,
        {
            "gen_ai.provider.name": "azure.ai.openai",
            "gen_ai.request.model": "img-prod",
            "openai.image.model": ABSENT,
            "openai.image.model.source": ABSENT,
            "openai.image.cost.source": "unknown",
            "openai.image.unpriced.reason": "unknown_deployment",
            "gen_ai.usage.cost": ABSENT,
            "openai.image.count": 1,
        },
    )
    assert cost_components(span) == {}
    assert telemetry.sums(COST) == []
    [(labels, calls)] = telemetry.sums(UNPRICED)
    assert calls == 1
    assert labels["openai.image.unpriced.reason"] == "unknown_deployment"
    assert telemetry.total(GENERATED) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_azure_client_level_deployment(
    telemetry: Telemetry, instrument: Any, azure_server: LocalOpenAIServer, mode: Mode
) -> None:
    instrument(azure_deployments=DEPLOYMENTS)
    both = azure_clients(azure_server, deployment="img-prod")
    try:
        await both.images(mode, "generate", **SIAMESE_LOW)
        await both.images(mode, "edit", image=("room.png", PNG), **SIAMESE_LOW)
    finally:
        await both.close()
    assert [r.path for r in azure_server.requests] == [
        "/openai/deployments/img-prod/images/generations",
        "/openai/deployments/img-prod/images/edits",
    ]
    generate, edit = telemetry.spans()
    mapped = {
        "gen_ai.provider.name": "azure.ai.openai",
        "gen_ai.request.model": ABSENT,
        "openai.image.model": "gpt-image-1.5",
        "openai.image.model.source": "deployment_map",
    }
    assert_attributes(generate, {**mapped, "gen_ai.usage.cost": SIAMESE_LOW_COST})
    # the edit adds 194 input image tokens x 8e-6 = 0.001552
    assert_attributes(edit, {**mapped, "gen_ai.usage.cost": 0.010816, "openai.image.operation": "edit"})
    assert telemetry.total(COST) == SIAMESE_LOW_COST + 0.010816


# -- 6. the module-level client --------------------------------------------------------------------------


def test_module_level_client(
    telemetry: Telemetry, instrumented: Any, srv: LocalOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The module client joins paths onto base_url as given, so it needs the trailing slash.
    monkeypatch.setattr(openai, "base_url", srv.base_url + "/")
    monkeypatch.setattr(openai, "api_key", "sk-module")
    monkeypatch.setattr(openai, "max_retries", 0)
    monkeypatch.setattr(openai, "timeout", 10)
    result = openai.images.generate(**RAW_KWARGS)
    assert type(result) is ImagesResponse
    assert [r.headers["authorization"] for r in srv.requests] == ["Bearer sk-module"]
    assert_attributes(telemetry.span(), {"gen_ai.provider.name": "openai", "gen_ai.usage.cost": RAW_COST})
    assert_priced_call_metrics(telemetry, cost=RAW_COST, source="usage", images=1, tokens=(6, 272))


# -- 7. model resolution ---------------------------------------------------------------------------------


def assert_unpriced(telemetry: Telemetry, reason: str) -> None:
    span = telemetry.span()
    assert_attributes(
        span,
        {
            "openai.image.cost.source": "unknown",
            "openai.image.unpriced.reason": reason,
            "gen_ai.usage.cost": ABSENT,
            "openai.image.count": 1,
        },
    )
    assert cost_components(span) == {}
    assert telemetry.sums(COST) == []
    [(labels, calls)] = telemetry.sums(UNPRICED)
    assert (labels["openai.image.unpriced.reason"], calls) == (reason, 1)
    assert telemetry.total(GENERATED) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_no_model_is_unpriced(
    telemetry: Telemetry, instrumented: Any, clients: Clients, mode: Mode
) -> None:
    await clients.images(mode, "generate", prompt=FOX, quality="low")
    assert_unpriced(telemetry, "no_model")
    span = telemetry.span()
    assert span.name == "generate_content"
    assert_attributes(span, {"gen_ai.request.model": ABSENT, "openai.image.model": ABSENT})


@pytest.mark.parametrize("mode", MODES)
async def test_default_image_model_setting(
    telemetry: Telemetry, instrument: Any, clients: Clients, mode: Mode
) -> None:
    instrument(default_image_model="gpt-image-1")
    await clients.images(mode, "generate", prompt=FOX, quality="low")  # the server answers as gpt-image-1
    assert_attributes(
        telemetry.span(),
        {
            "gen_ai.request.model": ABSENT,
            "openai.image.model": "gpt-image-1",
            "openai.image.model.source": "default",
            "gen_ai.usage.cost": RAW_COST,
        },
    )
    assert_priced_call_metrics(telemetry, cost=RAW_COST, source="usage", images=1, tokens=(6, 272))


@pytest.mark.parametrize("mode", MODES)
async def test_unknown_model_is_unpriced(
    telemetry: Telemetry, instrumented: Any, clients: Clients, srv: LocalOpenAIServer, mode: Mode
) -> None:
    # The local server refuses unknown models, so the body sent says gpt-image-1 (extra_body overrides
    # the JSON field) while the SDK call, which is what the plugin sees, names gpt-image-9.
    await clients.images(
        mode, "generate", model="gpt-image-9", prompt=FOX, extra_body={"model": "gpt-image-1"}
    )
    assert srv.requests[0].body["model"] == "gpt-image-1"
    assert_unpriced(telemetry, "unknown_model")
    assert_attributes(
        telemetry.span(),
        {
            "gen_ai.request.model": "gpt-image-9",
            "openai.image.model": "gpt-image-9",
            "openai.image.usage.output_image_tokens": 1056,
        },
    )


@pytest.mark.parametrize("mode", MODES)
async def test_dated_snapshot_prices_as_base_model(
    telemetry: Telemetry, instrumented: Any, clients: Clients, mode: Mode
) -> None:
    await clients.images(
        mode,
        "generate",
        model="gpt-image-2-2026-04-21",
        prompt="a city map",
        quality="medium",
        size="1024x1024",
    )
    span = telemetry.span()
    assert span.name == "generate_content gpt-image-2-2026-04-21"
    # as gpt-image-2: 3 x 5e-6 = 0.000015; 1756 x 30e-6 = 0.05268
    assert_attributes(
        span,
        {
            "gen_ai.request.model": "gpt-image-2-2026-04-21",
            "openai.image.model": "gpt-image-2-2026-04-21",
            "gen_ai.usage.cost": 0.052695,
        },
    )
    assert_priced_call_metrics(telemetry, cost=0.052695, source="usage", images=1, tokens=(3, 1756))


# -- 8. attribution --------------------------------------------------------------------------------------


def every_metric_point(telemetry: Telemetry) -> list[dict[str, Any]]:
    return [labels for name in (COST, GENERATED, TOKENS, DURATION) for labels, _ in telemetry.points(name)]


@pytest.mark.parametrize("mode", MODES)
async def test_billing_context_on_spans_and_metrics(
    telemetry: Telemetry, instrumented: Any, clients: Clients, mode: Mode
) -> None:
    async with billing_context(user_id="alice", tenant_id="acme", attributes={"plan": "pro"}):
        await clients.images(mode, "generate", **RAW_KWARGS)
    assert_attributes(telemetry.span(), {"user.id": "alice", "tenant.id": "acme", "plan": "pro"})
    points = every_metric_point(telemetry)
    assert len(points) == 5  # cost, generated, input and output tokens, duration
    for labels in points:
        assert picked(labels, {"user.id": 0, "tenant.id": 0, "plan": 0}) == {
            "user.id": "alice",
            "tenant.id": "acme",
            "plan": ABSENT,
        }
    assert telemetry.total(COST, user__id="alice", tenant__id="acme") == RAW_COST


@pytest.mark.parametrize("setting", ["user.id,plan", ["user.id", "plan"]], ids=["string", "list"])
def test_metric_attributes_setting_chooses_metric_keys(
    telemetry: Telemetry, instrument: Any, clients: Clients, setting: Any
) -> None:
    instrument(metric_attributes=setting)
    with billing_context(user_id="alice", tenant_id="acme", attributes={"plan": "pro"}):
        clients.sync.images.generate(**RAW_KWARGS)
    assert_attributes(telemetry.span(), {"user.id": "alice", "tenant.id": "acme", "plan": "pro"})
    for labels in every_metric_point(telemetry):
        assert picked(labels, {"user.id": 0, "tenant.id": 0, "plan": 0}) == {
            "user.id": "alice",
            "tenant.id": ABSENT,
            "plan": "pro",
        }
    assert telemetry.total(COST, plan="pro") == RAW_COST


def test_metric_attributes_from_environment(
    telemetry: Telemetry, instrument: Any, clients: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_IMAGE_COST_METRIC_ATTRIBUTES", "tenant.id")
    instrument()
    with billing_context(user_id="alice", tenant_id="acme"):
        clients.sync.images.generate(**RAW_KWARGS)
    [(labels, _)] = telemetry.sums(COST)
    assert picked(labels, {"user.id": 0, "tenant.id": 0}) == {"user.id": ABSENT, "tenant.id": "acme"}


def with_baggage(**entries: str) -> object:
    ctx = otel_context.get_current()
    for key, value in entries.items():
        ctx = baggage.set_baggage(key.replace("__", "."), value, context=ctx)
    return otel_context.attach(ctx)


@pytest.mark.parametrize("mode", MODES)
async def test_trusted_baggage_attribution(
    telemetry: Telemetry, instrument: Any, clients: Clients, mode: Mode
) -> None:
    instrument(trust_baggage=True)
    token = with_baggage(user__id="bob", tenant__id="globex")
    try:
        await clients.images(mode, "generate", **RAW_KWARGS)
    finally:
        otel_context.detach(token)
    assert_attributes(telemetry.span(), {"user.id": "bob", "tenant.id": "globex"})
    assert telemetry.total(COST, user__id="bob", tenant__id="globex") == RAW_COST


@pytest.mark.parametrize("mode", MODES)
async def test_baggage_is_not_trusted_by_default(
    telemetry: Telemetry, instrumented: Any, clients: Clients, mode: Mode
) -> None:
    token = with_baggage(user__id="bob", tenant__id="globex")
    try:
        await clients.images(mode, "generate", user="carol", **RAW_KWARGS)
    finally:
        otel_context.detach(token)
    assert_attributes(telemetry.span(), {"user.id": "carol", "tenant.id": ABSENT})
    assert telemetry.total(COST, user__id="carol") == RAW_COST
    assert telemetry.total(COST, user__id="bob") == 0


@pytest.mark.parametrize("mode", MODES)
async def test_request_user_attribution(
    telemetry: Telemetry, instrumented: Any, clients: Clients, srv: LocalOpenAIServer, mode: Mode
) -> None:
    await clients.images(mode, "generate", user="carol", **RAW_KWARGS)
    assert srv.requests[0].body["user"] == "carol"
    assert_attributes(telemetry.span(), {"user.id": "carol", "tenant.id": ABSENT})
    assert telemetry.total(COST, user__id="carol") == RAW_COST


@pytest.mark.skipif(OPENAI_MAJOR < 3, reason="images.generate takes safety_identifier from openai 3 on")
@pytest.mark.parametrize("mode", MODES)
async def test_safety_identifier_attribution(
    telemetry: Telemetry, instrumented: Any, clients: Clients, mode: Mode
) -> None:
    await clients.images(mode, "generate", safety_identifier="dave-hash", user="carol", **RAW_KWARGS)
    assert_attributes(telemetry.span(), {"user.id": "dave-hash"})
    assert telemetry.total(COST, user__id="dave-hash") == RAW_COST


def test_attribution_precedence(telemetry: Telemetry, instrument: Any, clients: Clients) -> None:
    instrument(trust_baggage=True)
    token = with_baggage(user__id="bob", tenant__id="globex")
    try:
        clients.sync.images.generate(user="carol", **RAW_KWARGS)  # trusted Baggage beats the request's user
        with billing_context(user_id="alice"):  # the billing context beats Baggage, key by key
            clients.sync.images.generate(user="carol", **RAW_KWARGS)
    finally:
        otel_context.detach(token)
    clients.sync.images.generate(user="carol", **RAW_KWARGS)  # only the request's user left
    assert [(attrs(s).get("user.id"), attrs(s).get("tenant.id")) for s in telemetry.spans()] == [
        ("bob", "globex"),
        ("alice", "globex"),
        ("carol", None),
    ]
    assert telemetry.total(COST, user__id="bob", tenant__id="globex") == RAW_COST
    assert telemetry.total(COST, user__id="alice", tenant__id="globex") == RAW_COST
    assert telemetry.total(COST, user__id="carol") == RAW_COST


# Per (model, quality) at 1024x1024 with the FOX prompt (6 text tokens x 5e-6 = 0.00003):
CONCURRENT_COSTS = {
    ("gpt-image-1", "low"): 0.01091,  # 272 x 40e-6 = 0.01088
    ("gpt-image-1", "medium"): 0.04227,  # 1056 x 40e-6 = 0.04224
    ("gpt-image-2", "low"): 0.00591,  # 196 x 30e-6 = 0.00588
    ("gpt-image-2", "medium"): 0.05271,  # 1756 x 30e-6 = 0.05268
}


async def test_two_hundred_concurrent_users(
    telemetry: Telemetry, instrumented: Any, srv: LocalOpenAIServer
) -> None:
    # All 200 calls are in flight inside the instrumented SDK method at once, queued on a pool of 4
    # connections: the local server listens with the standard library's backlog of 5, and a burst of
    # more simultaneous connects stalls or fails.
    limits = type(DEFAULT_CONNECTION_LIMITS)(max_connections=4, max_keepalive_connections=4)
    client = openai.AsyncOpenAI(
        base_url=srv.base_url,
        api_key="sk-test",
        max_retries=0,
        timeout=10,
        http_client=openai.DefaultAsyncHttpxClient(limits=limits),
    )
    tracer = telemetry.tracer_provider.get_tracer("test")
    users = [f"user-{index:03d}" for index in range(200)]

    def plan(index: int) -> tuple[str, str]:
        return ("gpt-image-1", "gpt-image-2")[index % 2], ("low", "medium")[index // 2 % 2]

    async def work(index: int) -> None:
        model, quality = plan(index)
        # A parent span per task: an independent witness of which task made each call.
        with tracer.start_as_current_span(f"task {users[index]}"):
            async with billing_context(user_id=users[index], tenant_id=f"tenant-{index % 7}"):
                await asyncio.sleep(0)
                await client.images.generate(model=model, prompt=FOX, quality=quality)

    async with client:
        await asyncio.gather(*(work(index) for index in range(200)))

    assert len(srv.requests) == 200
    spans = telemetry.spans()
    task_of = {span.context.span_id: span.name for span in spans if span.name.startswith("task ")}
    image_spans = [span for span in spans if span.name.startswith("generate_content")]
    assert len(image_spans) == 200
    span_cost: dict[str, float] = {}
    for span in image_spans:
        assert span.parent is not None
        user = task_of[span.parent.span_id].removeprefix("task ")
        index = users.index(user)
        a = attrs(span)
        assert (a["user.id"], a["tenant.id"]) == (user, f"tenant-{index % 7}")
        assert (a["openai.image.model"], a["openai.image.quality"]) == plan(index)
        span_cost[user] = a["gen_ai.usage.cost"]
    points = every_metric_point(telemetry)
    assert len(points) == 200 * 5
    for labels in points:
        index = users.index(labels["user.id"])
        assert labels["tenant.id"] == f"tenant-{index % 7}"
        assert (labels["openai.image.model"], labels["openai.image.quality"]) == plan(index)
    cost_by_user: dict[str, float] = defaultdict(float)
    cost_by_tenant: dict[str, float] = defaultdict(float)
    for labels, amount in telemetry.sums(COST):
        cost_by_user[labels["user.id"]] += amount
        cost_by_tenant[labels["tenant.id"]] += amount
    images_by_user: dict[str, int] = defaultdict(int)
    for labels, count in telemetry.sums(GENERATED):
        images_by_user[labels["user.id"]] += count
    spent_by_tenant: dict[str, float] = defaultdict(float)
    for index, user in enumerate(users):
        assert span_cost[user] == CONCURRENT_COSTS[plan(index)]
        assert cost_by_user[user] == span_cost[user]
        assert images_by_user[user] == 1
        spent_by_tenant[f"tenant-{index % 7}"] += span_cost[user]
    assert len(cost_by_user) == len(images_by_user) == 200
    assert cost_by_tenant.keys() == spent_by_tenant.keys()
    for tenant, spent in spent_by_tenant.items():  # sums of many floats: equal up to addition order
        assert cost_by_tenant[tenant] == pytest.approx(spent, rel=1e-12, abs=0)


# -- 9. failures -----------------------------------------------------------------------------------------


async def call_error(clients: Clients, mode: Mode, **kwargs: Any) -> BaseException:
    try:
        result = await clients.images(mode, "generate", **kwargs)
        if kwargs.get("stream"):
            await drain(mode, result)
    except Exception as exc:
        return exc
    raise AssertionError("the call did not fail")


def assert_failed_call(telemetry: Telemetry, error_type: str) -> None:
    span = telemetry.span()
    assert span.status.status_code is StatusCode.ERROR
    a = attrs(span)
    assert a["error.type"] == error_type
    assert "gen_ai.usage.cost" not in a
    assert [key for key in a if key.startswith("openai.image.cost")] == []
    assert [event.name for event in span.events] == ["exception"]
    for name in (COST, GENERATED, PARTIALS, UNPRICED, TOKENS):
        assert telemetry.points(name) == [], name
    [(labels, count)] = histogram_counts(telemetry, DURATION)
    assert (labels["error.type"], count) == (error_type, 1)


@pytest.mark.parametrize(("status", "error_type"), [(400, "BadRequestError"), (500, "InternalServerError")])
@pytest.mark.parametrize("mode", MODES)
async def test_http_error_reaches_the_app_unchanged(
    telemetry: Telemetry,
    instrument: Any,
    clients: Clients,
    srv: LocalOpenAIServer,
    mode: Mode,
    status: int,
    error_type: str,
) -> None:
    srv.inject(status)
    bare = await call_error(clients, mode, **RAW_KWARGS)
    instrument()
    srv.inject(status)
    seen = await call_error(clients, mode, **RAW_KWARGS)

    assert isinstance(seen, openai.APIStatusError) and isinstance(bare, openai.APIStatusError)
    assert type(seen) is type(bare)
    assert type(seen).__name__ == error_type
    assert (str(seen), seen.status_code, seen.body, seen.code) == (str(bare), status, bare.body, bare.code)
    assert_failed_call(telemetry, error_type)


@pytest.mark.parametrize("mode", MODES)
async def test_stream_cut_mid_way_fails_the_call(
    telemetry: Telemetry, instrument: Any, clients: Clients, srv: LocalOpenAIServer, mode: Mode
) -> None:
    kwargs = {**STREAM_CASES[0].kwargs, "stream": True}
    srv.inject("cut_stream")
    bare = await call_error(clients, mode, **kwargs)
    instrument()
    srv.inject("cut_stream")
    seen = await call_error(clients, mode, **kwargs)

    assert type(seen) is type(bare)
    assert str(seen) == str(bare)
    assert_failed_call(telemetry, type(bare).__name__)


# -- 10. privacy -----------------------------------------------------------------------------------------

B64_LENGTH = 6000
SECRET_PROMPT = "a portrait of my neighbour's cat, private"


def all_span_strings(span: ReadableSpan) -> list[str]:
    values: list[Any] = [span.name, *attrs(span).values()]
    for event in span.events:
        values.extend((event.attributes or {}).values())
    strings: list[str] = []
    for value in values:
        strings.extend(str(item) for item in value) if isinstance(value, tuple) else strings.append(
            str(value)
        )
    return strings


async def privacy_calls(pool: ServerPool) -> str:
    """Calls that return big base64 images (plain, streamed, DALL·E 3 with a revised prompt)."""
    server = pool.get(image_b64_bytes=B64_LENGTH)
    both = clients_of(server)
    try:
        result = await both.images("async", "generate", model="gpt-image-1", prompt=SECRET_PROMPT, n=2)
        await drain(
            "sync",
            await both.images(
                "sync", "generate", model="gpt-image-1", prompt=SECRET_PROMPT, stream=True, partial_images=2
            ),
        )
        await both.images(
            "sync", "generate", model="dall-e-3", prompt=SECRET_PROMPT, response_format="b64_json"
        )
        await both.images("sync", "edit", model="gpt-image-1", image=("a.png", PNG), prompt=SECRET_PROMPT)
    finally:
        await both.close()
    b64 = str(result.data[0].b64_json)
    assert len(b64) == B64_LENGTH
    return b64


def assert_no_image_data(telemetry: Telemetry, b64: str) -> None:
    spans = telemetry.spans()
    assert len(spans) == 4
    for span in spans:
        for text in all_span_strings(span):
            assert len(text) <= 2000
            assert b64[:64] not in text and b64[-64:] not in text and TINY_PNG_B64[:40] not in text
    for name in (COST, GENERATED, TOKENS, DURATION):
        for labels, _ in telemetry.points(name):
            assert SECRET_PROMPT not in map(str, labels.values())


async def test_no_prompt_and_no_image_data_by_default(
    telemetry: Telemetry, instrumented: Any, pool: ServerPool
) -> None:
    b64 = await privacy_calls(pool)
    assert_no_image_data(telemetry, b64)
    for span in telemetry.spans():
        assert not any("neighbour" in text for text in all_span_strings(span))
        assert_attributes(span, {"openai.image.prompt": ABSENT, "openai.image.revised_prompts": ABSENT})


@pytest.mark.parametrize("switch", ["setting", "env"])
async def test_prompts_only_when_capture_is_on(
    telemetry: Telemetry, instrument: Any, pool: ServerPool, monkeypatch: pytest.MonkeyPatch, switch: str
) -> None:
    if switch == "env":
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
        instrument()
    else:
        instrument(capture_message_content=True)
    b64 = await privacy_calls(pool)
    assert_no_image_data(telemetry, b64)
    plain, streamed, dalle3, edit = telemetry.spans()
    for span in (plain, streamed, dalle3, edit):
        assert attrs(span)["openai.image.prompt"] == SECRET_PROMPT
    assert attrs(dalle3)["openai.image.revised_prompts"] == (f"A detailed rendering of {SECRET_PROMPT}",)
    for span in (plain, streamed, edit):
        assert "openai.image.revised_prompts" not in attrs(span)
