"""`uninstrument()` puts the SDK back exactly as it was, and instrumenting again (or twice) is safe."""

from __future__ import annotations

import base64
import importlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import openai
import pytest
import wrapt

from otel_image_cost import OpenAIImageCostInstrumentor

from conftest import Telemetry
from local_openai_server import TINY_PNG_B64, LocalOpenAIServer

PNG = base64.b64decode(TINY_PNG_B64)
IMAGE_TOOL = {"type": "image_generation"}
FOX = "a red fox in the snow"
# gpt-image-1 low 1024x1024 with the FOX prompt: 6 text tokens x 5e-6 = 0.00003; 272 x 40e-6 = 0.01088
FOX_LOW_COST = 0.01091

# Every SDK method that produces images: (module, class, method).
SDK_METHODS = [
    *(
        ("openai.resources.images", owner, method)
        for owner in ("Images", "AsyncImages")
        for method in ("generate", "edit", "create_variation")
    ),
    *(
        (module, owner, method)
        for module in ("openai.resources.responses.responses", "openai.resources.beta.responses.responses")
        for owner in ("Responses", "AsyncResponses")
        for method in ("create", "parse", "retrieve")
    ),
]


def sdk_class(module: str, owner: str) -> type | None:
    try:
        found = getattr(importlib.import_module(module), owner, None)
    except ImportError:
        return None
    return found if isinstance(found, type) else None


def class_dicts() -> dict[tuple[str, str], dict[str, Any]]:
    """A copy of each SDK class's own namespace."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for module, owner, _ in SDK_METHODS:
        cls = sdk_class(module, owner)
        if cls is not None:
            found[(module, owner)] = dict(vars(cls))
    return found


def originals() -> dict[tuple[str, str, str], Any]:
    """The function objects the SDK classes define for the image methods, before any patching."""
    found: dict[tuple[str, str, str], Any] = {}
    for module, owner, method in SDK_METHODS:
        cls = sdk_class(module, owner)
        if cls is not None and method in vars(cls):
            function = vars(cls)[method]
            assert not isinstance(function, wrapt.FunctionWrapper), f"{owner}.{method} is already patched"
            found[(module, owner, method)] = function
    return found


@pytest.fixture(scope="module")
def local_server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer() as server:
        yield server


@pytest.fixture
def srv(local_server: LocalOpenAIServer) -> LocalOpenAIServer:
    local_server.reset()
    return local_server


@pytest.fixture
def client(srv: LocalOpenAIServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0, timeout=10) as sdk:
        yield sdk


@pytest.fixture
async def aclient(srv: LocalOpenAIServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0, timeout=10) as sdk:
        yield sdk


async def every_image_call(client: openai.OpenAI, aclient: openai.AsyncOpenAI) -> None:
    """One call of each instrumented kind, sync and async."""
    client.images.generate(model="gpt-image-1", prompt=FOX, quality="low")
    await aclient.images.generate(model="gpt-image-1", prompt=FOX, quality="low")
    client.images.edit(model="gpt-image-1", image=("a.png", PNG), prompt="add a hat", quality="low")
    await aclient.images.edit(model="gpt-image-1", image=("a.png", PNG), prompt="add a hat", quality="low")
    for event in client.images.generate(model="gpt-image-1", prompt=FOX, stream=True, partial_images=1):
        assert event.type.startswith("image_generation.")
    client.images.with_raw_response.generate(model="gpt-image-1", prompt=FOX).parse()
    response = client.responses.create(model="gpt-5", input="draw a fox", tools=[IMAGE_TOOL])
    client.responses.retrieve(response.id)
    await aclient.responses.create(model="gpt-5", input="draw a fox", tools=[IMAGE_TOOL])


CALLS_PER_ROUND = 9  # requests sent by every_image_call


def nothing_recorded(telemetry: Telemetry) -> bool:
    data = telemetry.metric_reader.get_metrics_data()
    points = [
        point
        for resource in (data.resource_metrics if data else ())
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
    ]
    return telemetry.spans() == [] and points == []


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # openai 3 deprecates create_variation
async def test_uninstrument_restores_the_very_original_functions(
    telemetry: Telemetry,
    instrument: Callable[..., OpenAIImageCostInstrumentor],
    client: openai.OpenAI,
    aclient: openai.AsyncOpenAI,
    srv: LocalOpenAIServer,
) -> None:
    before = originals()
    namespaces = class_dicts()
    # Images (sync and async, 3 methods each) and Responses create/parse/retrieve (sync and async) at least
    assert len(before) >= 12
    assert ("openai.resources.responses.responses", "Responses", "create") in before  # beta: SDK 2.x+

    instrumentor = instrument()
    for (module, owner, method), function in before.items():
        patched = vars(sdk_class(module, owner))[method]
        assert isinstance(patched, wrapt.FunctionWrapper), f"{owner}.{method} is not instrumented"
        assert patched.__wrapped__ is function

    instrumentor.uninstrument()
    for (module, owner, method), function in before.items():
        assert vars(sdk_class(module, owner))[method] is function, f"{owner}.{method} was not restored"
    assert class_dicts() == namespaces  # nothing added to or left on any class

    srv.reset()
    await every_image_call(client, aclient)
    client.images.create_variation(model="dall-e-2", image=("a.png", PNG))
    assert len(srv.requests) == CALLS_PER_ROUND + 1
    assert nothing_recorded(telemetry)


async def test_objects_captured_while_instrumented_stop_recording(
    telemetry: Telemetry,
    instrument: Callable[..., OpenAIImageCostInstrumentor],
    client: openai.OpenAI,
    aclient: openai.AsyncOpenAI,
) -> None:
    instrumentor = instrument()
    # The SDK binds methods when these helpers are first used; they then hold the patched methods.
    raw_generate = client.images.with_raw_response.generate
    streaming_generate = aclient.images.with_streaming_response.generate
    bound_generate = client.images.generate
    raw_generate(model="gpt-image-1", prompt=FOX, quality="low")
    assert len(telemetry.spans()) == 1

    instrumentor.uninstrument()
    telemetry.span_exporter.clear()
    raw_generate(model="gpt-image-1", prompt=FOX, quality="low").parse()
    async with streaming_generate(model="gpt-image-1", prompt=FOX, quality="low") as response:
        await response.parse()
    bound_generate(model="gpt-image-1", prompt=FOX, quality="low")
    assert telemetry.spans() == []


async def test_a_stream_opened_before_uninstrument_still_ends_once(
    telemetry: Telemetry, instrument: Callable[..., OpenAIImageCostInstrumentor], client: openai.OpenAI
) -> None:
    instrumentor = instrument()
    stream = client.images.generate(model="gpt-image-1", prompt=FOX, quality="low", stream=True)
    instrumentor.uninstrument()
    events = list(stream)
    assert [event.type for event in events] == ["image_generation.completed"]
    span = telemetry.span()
    assert span.attributes is not None and span.attributes["gen_ai.usage.cost"] == FOX_LOW_COST
    assert telemetry.total("openai.image.cost") == FOX_LOW_COST


async def test_instrument_uninstrument_instrument(
    telemetry: Telemetry,
    instrument: Callable[..., OpenAIImageCostInstrumentor],
    client: openai.OpenAI,
    aclient: openai.AsyncOpenAI,
    srv: LocalOpenAIServer,
) -> None:
    before = originals()
    instrumentor = instrument()
    await every_image_call(client, aclient)
    first = len(telemetry.spans())
    # six Images calls; each Responses create: a child span for its image, then the call span; the
    # retrieve of a response already priced: its span only, no child
    images, tool, create = "generate_content gpt-image-1", "execute_tool image_generation", "chat gpt-5"
    names = [span.name for span in telemetry.spans()]
    assert names[8].startswith("chat")  # the retrieve (its name is the Responses tests' business)
    assert names[:8] + names[9:] == [images] * 6 + [tool, create, tool, create]

    instrumentor.uninstrument()
    await every_image_call(client, aclient)
    assert len(telemetry.spans()) == first

    instrument()
    for (module, owner, method), function in before.items():
        assert vars(sdk_class(module, owner))[method].__wrapped__ is function  # one layer, not two
    srv.reset()
    client.images.generate(model="gpt-image-1", prompt=FOX, quality="low")
    await aclient.images.generate(model="gpt-image-1", prompt=FOX, quality="low")
    spans = telemetry.spans()[first:]
    assert [span.name for span in spans] == ["generate_content gpt-image-1"] * 2
    assert [span.attributes and span.attributes["gen_ai.usage.cost"] for span in spans] == [FOX_LOW_COST] * 2
    assert len(srv.requests) == 2


@pytest.mark.parametrize("second", ["same-instance", "new-instance"])
async def test_instrumenting_twice_counts_once(
    telemetry: Telemetry,
    instrument: Callable[..., OpenAIImageCostInstrumentor],
    client: openai.OpenAI,
    aclient: openai.AsyncOpenAI,
    second: str,
) -> None:
    instrumentor = instrument()
    again = instrumentor if second == "same-instance" else OpenAIImageCostInstrumentor()
    again.instrument(tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider)

    client.images.generate(model="gpt-image-1", prompt=FOX, quality="low")
    [span] = telemetry.spans()
    assert span.attributes is not None and span.attributes["gen_ai.usage.cost"] == FOX_LOW_COST
    [(_, amount)] = telemetry.sums("openai.image.cost")
    assert amount == FOX_LOW_COST
    assert telemetry.total("openai.image.generated") == 1
    [(_, histogram)] = telemetry.points("gen_ai.client.operation.duration")
    assert histogram.count == 1

    stream = await aclient.images.generate(model="gpt-image-1", prompt=FOX, quality="low", stream=True)
    async with stream:
        async for _ in stream:
            pass
    assert len(telemetry.spans()) == 2
    assert telemetry.total("openai.image.cost") == FOX_LOW_COST + FOX_LOW_COST
    assert telemetry.total("openai.image.generated") == 2
