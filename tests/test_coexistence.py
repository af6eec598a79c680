"""Coexistence with the other OpenAI instrumentations, which wrap the same SDK methods.

`opentelemetry-instrumentation-openai-v2` (OpenTelemetry contrib: chat and embeddings) and
OpenLLMetry's `opentelemetry-instrumentation-openai` (chat, embeddings, images.generate,
responses.create/retrieve/parse, ...). Instrumented together in either order, both work, our
numbers are exactly those we record alone, and uninstrumenting in any order restores the SDK.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from otel_image_cost import OpenAIImageCostInstrumentor, billing_context
from otel_image_cost.instrumentor import PATCHES, _owner

from conftest import Telemetry

OPENAI_MAJOR = int(openai.__version__.split(".")[0])


def _import_peer(module: str, package: str) -> tuple[Any, str | None]:
    """(the peer's module, None), or (None, why it cannot be used on this SDK line)."""
    try:
        return importlib.import_module(module), None
    except ModuleNotFoundError as exc:
        if exc.name == "httpx" and OPENAI_MAJOR >= 3:
            return None, (
                f"{package} imports `httpx`, which openai {openai.__version__} no longer installs (openai 3 "
                "uses httpx2) and the peer does not declare: it cannot be imported on the openai 3.x line"
            )
        return None, f"{package} is not installed (it belongs in the `test` extra): {exc}"


openai_v2, OPENAI_V2_UNUSABLE = _import_peer(
    "opentelemetry.instrumentation.openai_v2", "opentelemetry-instrumentation-openai-v2"
)
openllmetry, OPENLLMETRY_UNUSABLE = _import_peer(
    "opentelemetry.instrumentation.openai", "opentelemetry-instrumentation-openai"
)
UNUSABLE = {"openai_v2": OPENAI_V2_UNUSABLE, "openllmetry": OPENLLMETRY_UNUSABLE}
PEERS = tuple(
    pytest.param(name, marks=pytest.mark.skip(reason=why)) if why else name for name, why in UNUSABLE.items()
)
USABLE_PEERS = tuple(name for name, why in UNUSABLE.items() if why is None)

OUR_SCOPE = "otel_image_cost.instrumentor"
TIMEOUT_S = 10.0
IMAGE_TOOL: list[Any] = [{"type": "image_generation"}]
VOLATILE_KEYS = frozenset({"id", "created", "created_at", "completed_at", "item_id", "response_id"})
# Attributes that differ between two identical calls.
VOLATILE_ATTRIBUTES = frozenset(
    {"gen_ai.response.id", "gen_ai.tool.call.id", "server.port", "openai.request.id"}
)


def peer_instrumentor(name: str) -> Any:
    if name == "openai_v2":
        return openai_v2.OpenAIInstrumentor()
    return openllmetry.OpenAIInstrumentor()


# -- what the SDK looks like, to check it is restored ------------------------------------------------


def sdk_classes() -> list[type]:
    classes = {_owner(patch) for patch in PATCHES}
    classes |= {
        openai.resources.chat.completions.Completions,
        openai.resources.chat.completions.AsyncCompletions,
        openai.resources.embeddings.Embeddings,
        openai.resources.embeddings.AsyncEmbeddings,
        openai.resources.completions.Completions,
        openai.resources.completions.AsyncCompletions,
    }
    return sorted((c for c in classes if c is not None), key=lambda c: f"{c.__module__}.{c.__qualname__}")


def sdk_methods() -> dict[tuple[type, str], Any]:
    """Every attribute of the SDK resource classes the instrumentations touch, by identity."""
    return {(cls, name): value for cls in sdk_classes() for name, value in vars(cls).items()}


@pytest.fixture
def pristine_sdk() -> Iterator[dict[tuple[type, str], Any]]:
    """The SDK before the test. After it, every instrumentor is off and the SDK is put back as it
    was: OpenLLMetry's `uninstrument()` leaves its wrappers in place (see
    `test_openllmetry_alone_leaves_its_wrappers_on_uninstrument`), and they must not reach the
    tests that run after these in the same process."""
    before = sdk_methods()
    yield before
    for instrumentor in (OpenAIImageCostInstrumentor(), *(peer_instrumentor(p) for p in USABLE_PEERS)):
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
    restore(before)


def restore(before: dict[tuple[type, str], Any]) -> None:
    for (cls, name), value in sdk_methods().items():
        if (cls, name) not in before:
            delattr(cls, name)
        elif before[(cls, name)] is not value:
            setattr(cls, name, before[(cls, name)])
    assert changed(before) == []


def layers(cls: type, name: str) -> list[str]:
    """Who wrapped an SDK method, outermost first: "ours" or the peer's package."""
    found = []
    value = vars(cls).get(name)
    while hasattr(value, "_self_wrapper"):
        module = str(getattr(value._self_wrapper, "__module__", "?"))
        found.append("ours" if module.startswith("otel_image_cost") else module.rsplit(".", 1)[0])
        value = value.__wrapped__
    return found


def all_layers() -> dict[str, list[str]]:
    return {
        f"{cls.__qualname__}.{name}": found
        for cls in sdk_classes()
        for name in vars(cls)
        if (found := layers(cls, name))
    }


def changed(before: dict[tuple[type, str], Any]) -> list[str]:
    after = sdk_methods()
    return [
        f"{cls.__qualname__}.{name}"
        for (cls, name) in sorted(before.keys() | after.keys(), key=lambda k: (k[0].__qualname__, k[1]))
        if before.get((cls, name)) is not after.get((cls, name))
    ]


# -- what the app sees and what we record ----------------------------------------------------------


def normalized(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<volatile>" if k in VOLATILE_KEYS else normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalized(item) for item in value]
    return value


def dump(value: Any) -> Any:
    return normalized(value.model_dump()) if hasattr(value, "model_dump") else value


def scenario(client: openai.OpenAI) -> list[Any]:
    """Every kind of image call, each for its own user, and a failing one; what the app observed."""
    return asyncio.run(_scenario(client))


async def _scenario(client: openai.OpenAI) -> list[Any]:
    seen: list[Any] = []
    aclient = openai.AsyncOpenAI(
        base_url=client.base_url, api_key="sk-test", max_retries=0, timeout=TIMEOUT_S
    )
    with billing_context(user_id="u-plain", tenant_id="t1"):
        seen.append(dump(client.images.generate(model="gpt-image-1", prompt="a cat", quality="low")))
    with billing_context(user_id="u-stream", tenant_id="t1"):
        stream = client.images.generate(model="gpt-image-1.5", prompt="a dog", stream=True, partial_images=2)
        seen.append([dump(event) for event in stream])
    with billing_context(user_id="u-responses", tenant_id="t2"):
        seen.append(dump(client.responses.create(model="gpt-5", input="draw two images", tools=IMAGE_TOOL)))
    with billing_context(user_id="u-responses-stream", tenant_id="t2"):
        events = client.responses.create(model="gpt-5", input="draw a cat", tools=IMAGE_TOOL, stream=True)
        seen.append([dump(event) for event in events])
    with billing_context(user_id="u-async", tenant_id="t3"):
        seen.append(dump(await aclient.images.generate(model="gpt-image-2", prompt="a bird", quality="high")))
        astream = await aclient.responses.create(
            model="gpt-5",
            input="draw a cat",
            tools=[{"type": "image_generation", "model": "gpt-image-1"}],
            stream=True,
        )
        seen.append([dump(event) async for event in astream])
    with billing_context(user_id="u-raw", tenant_id="t3"):
        raw = client.images.with_raw_response.generate(model="gpt-image-1-mini", prompt="a fish")
        seen.append(dump(raw.parse()))
    with billing_context(user_id="u-failed", tenant_id="t4"):
        try:
            client.images.generate(model="gpt-image-1", prompt="moderation test")
        except openai.BadRequestError as exc:
            seen.append((type(exc), str(exc)))
    await aclient.close()
    return seen


def span_summary(span: ReadableSpan) -> tuple[Any, ...]:
    attributes = {k: v for k, v in (span.attributes or {}).items() if k not in VOLATILE_ATTRIBUTES}
    return (
        span.name,
        span.kind.name,
        span.status.status_code.name,
        tuple(sorted(attributes.items(), key=repr)),
    )


def ours(telemetry: Telemetry) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Our spans and our metric points (counters' values, histograms' counts and token sums)."""
    spans = sorted(
        (
            span_summary(s)
            for s in telemetry.spans()
            if s.instrumentation_scope is not None and s.instrumentation_scope.name == OUR_SCOPE
        ),
        key=repr,
    )
    points: list[tuple[Any, ...]] = []
    data = telemetry.metric_reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            if scope_metrics.scope.name != OUR_SCOPE:
                continue
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    labels = tuple(
                        sorted((k, v) for k, v in (point.attributes or {}).items() if k != "server.port")
                    )
                    if hasattr(point, "count"):  # histogram: durations vary, counts and token sums do not
                        value: Any = (
                            point.count,
                            point.sum if metric.name != "gen_ai.client.operation.duration" else None,
                        )
                    else:
                        value = point.value
                    points.append((metric.name, labels, value))
    return spans, sorted(points, key=repr)


def peer_spans(telemetry: Telemetry) -> list[ReadableSpan]:
    return [
        s
        for s in telemetry.spans()
        if s.instrumentation_scope is not None and s.instrumentation_scope.name != OUR_SCOPE
    ]


def peer_metric_names(telemetry: Telemetry) -> set[str]:
    data = telemetry.metric_reader.get_metrics_data()
    return {
        metric.name
        for resource_metrics in (data.resource_metrics if data else ())
        for scope_metrics in resource_metrics.scope_metrics
        if scope_metrics.scope.name != OUR_SCOPE
        for metric in scope_metrics.metrics
    }


def chat_call(client: openai.OpenAI) -> None:
    """A chat call, which only the peers instrument (the local server answers 404)."""
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}])


@pytest.fixture
def sdk(server: Any) -> Iterator[openai.OpenAI]:
    server.reset()
    with openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=TIMEOUT_S) as c:
        yield c


@pytest.fixture
def baseline(sdk: openai.OpenAI, pristine_sdk: dict[tuple[type, str], Any]) -> tuple[list[Any], Any]:
    """What the app sees uninstrumented, and our telemetry when we instrument alone."""
    bare = scenario(sdk)
    alone = Telemetry()
    instrumentor = OpenAIImageCostInstrumentor()
    instrumentor.instrument(tracer_provider=alone.tracer_provider, meter_provider=alone.meter_provider)
    try:
        assert scenario(sdk) == bare
    finally:
        instrumentor.uninstrument()
    assert changed(pristine_sdk) == []
    return bare, ours(alone)


# -- both keep working, our numbers unchanged --------------------------------------------------------


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("ours_first", [True, False], ids=["ours-first", "peer-first"])
def test_together_both_work_and_our_numbers_are_unchanged(
    peer: str,
    ours_first: bool,
    sdk: openai.OpenAI,
    baseline: tuple[list[Any], Any],
    pristine_sdk: dict[tuple[type, str], Any],
) -> None:
    bare, alone = baseline
    telemetry = Telemetry()
    providers = {"tracer_provider": telemetry.tracer_provider, "meter_provider": telemetry.meter_provider}
    mine, theirs = OpenAIImageCostInstrumentor(), peer_instrumentor(peer)
    for instrumentor in (mine, theirs) if ours_first else (theirs, mine):
        instrumentor.instrument(**providers)

    assert scenario(sdk) == bare
    assert ours(telemetry) == alone
    spans, _points = alone
    assert len(spans) == 8 + 4  # eight calls, plus one image span per Responses image (2 + 1 + 1)
    assert sum(1 for s in spans if s[2] == "ERROR") == 1

    # The peer works too: it records the chat call only it instruments (OpenLLMetry: and images).
    chat_call(sdk)
    chat_spans = [s for s in peer_spans(telemetry) if "chat" in s.name or "openai" in s.name]
    assert chat_spans, [s.name for s in telemetry.spans()]
    assert any(s.status.status_code is StatusCode.ERROR for s in chat_spans)
    if peer == "openllmetry":
        assert any(s.name == "openai.response" for s in peer_spans(telemetry)), [
            s.name for s in telemetry.spans()
        ]
        assert "gen_ai.client.operation.duration" in peer_metric_names(telemetry)


# -- uninstrument in any order restores the SDK -----------------------------------------------------


def instrumentor_named(name: str) -> Any:
    return OpenAIImageCostInstrumentor() if name == "ours" else peer_instrumentor(name)


def cycle(instrument_order: tuple[str, ...], uninstrument_order: tuple[str, ...]) -> dict[str, list[str]]:
    """Instrument, then uninstrument, in the given orders; the wrapper layers left in the SDK."""
    for name in instrument_order:
        instrumentor_named(name).instrument()
    assert "ours" in str(all_layers())  # really wrapped
    for name in uninstrument_order:
        instrumentor_named(name).uninstrument()
    return all_layers()


ORDERS_V2 = list(itertools.permutations(("ours", "openai_v2")))
ORDERS_LLM = list(itertools.permutations(("ours", "openllmetry")))


@pytest.mark.skipif(OPENAI_V2_UNUSABLE is not None, reason=str(OPENAI_V2_UNUSABLE))
@pytest.mark.parametrize("instrument_order", ORDERS_V2, ids=lambda o: "in:" + "-".join(o))
@pytest.mark.parametrize("uninstrument_order", ORDERS_V2, ids=lambda o: "out:" + "-".join(o))
def test_uninstrument_in_any_order_restores_the_sdk_with_openai_v2(
    instrument_order: tuple[str, ...], uninstrument_order: tuple[str, ...], pristine_sdk: Any
) -> None:
    assert cycle(instrument_order, uninstrument_order) == {}
    assert changed(pristine_sdk) == []


@pytest.mark.skipif(OPENLLMETRY_UNUSABLE is not None, reason=str(OPENLLMETRY_UNUSABLE))
def test_openllmetry_alone_leaves_its_wrappers_on_uninstrument(pristine_sdk: Any) -> None:
    """Why the OpenLLMetry cases compare with OpenLLMetry alone rather than with the pristine SDK:
    its `uninstrument()` passes ("module", "Class.method") to `unwrap(obj, attr)`, which then finds
    nothing to unwrap, so every wrapper it installed stays (and keeps recording)."""
    instrumentor_named("openllmetry").instrument()
    instrumentor_named("openllmetry").uninstrument()
    left = all_layers()
    assert len(left["Images.generate"]) == 1
    assert len(left["Responses.create"]) == 1
    assert all(
        layer.startswith("opentelemetry.instrumentation.openai") for found in left.values() for layer in found
    )


LLM_INSTRUMENT_ORDERS = [
    ("ours", "openllmetry"),
    ("openllmetry", "ours"),
]


@pytest.mark.skipif(OPENLLMETRY_UNUSABLE is not None, reason=str(OPENLLMETRY_UNUSABLE))
@pytest.mark.parametrize("instrument_order", LLM_INSTRUMENT_ORDERS, ids=lambda o: "in:" + "-".join(o))
@pytest.mark.parametrize("uninstrument_order", ORDERS_LLM, ids=lambda o: "out:" + "-".join(o))
def test_uninstrument_in_any_order_leaves_the_sdk_as_openllmetry_alone_would(
    instrument_order: tuple[str, ...], uninstrument_order: tuple[str, ...], pristine_sdk: Any
) -> None:
    instrumentor_named("openllmetry").instrument()
    instrumentor_named("openllmetry").uninstrument()
    alone = all_layers()
    restore(pristine_sdk)
    assert cycle(instrument_order, uninstrument_order) == alone


@pytest.mark.skipif(OPENLLMETRY_UNUSABLE is not None, reason=str(OPENLLMETRY_UNUSABLE))
@pytest.mark.parametrize("instrument_order", LLM_INSTRUMENT_ORDERS, ids=lambda o: "in:" + "-".join(o))
def test_openllmetry_keeps_working_after_we_uninstrument(
    instrument_order: tuple[str, ...], sdk: openai.OpenAI, pristine_sdk: Any
) -> None:
    telemetry = Telemetry()
    providers = {"tracer_provider": telemetry.tracer_provider, "meter_provider": telemetry.meter_provider}
    for name in instrument_order:
        instrumentor_named(name).instrument(**providers)
    instrumentor_named("ours").uninstrument()
    sdk.responses.create(model="gpt-5", input="draw a cat", tools=IMAGE_TOOL)
    assert [s.name for s in telemetry.spans()] == ["openai.response"]


# -- double instrument() ----------------------------------------------------------------------------


def test_double_instrument_does_not_double_count(
    sdk: openai.OpenAI, telemetry: Telemetry, pristine_sdk: Any
) -> None:
    providers = {"tracer_provider": telemetry.tracer_provider, "meter_provider": telemetry.meter_provider}
    first = OpenAIImageCostInstrumentor()
    first.instrument(**providers)
    wrapped_once = sdk_methods()
    first.instrument(**providers)
    OpenAIImageCostInstrumentor().instrument(**providers)  # a second instance: the same singleton
    assert sdk_methods() == wrapped_once  # no second layer
    client = sdk
    client.images.generate(model="gpt-image-1", prompt="a cat", quality="low")
    stream = client.images.generate(model="gpt-image-1", prompt="a cat", quality="low", stream=True)
    for _ in stream:
        pass
    assert len(telemetry.spans()) == 2
    assert telemetry.total("openai.image.generated") == 2
    # low 1024x1024 gpt-image-1: 272 image tokens x $40/M + 2 prompt tokens x $5/M, twice.
    assert telemetry.total("openai.image.cost") == pytest.approx(2 * 0.01089, rel=1e-12)
    assert len(telemetry.sums("openai.image.cost")) == 1
    first.uninstrument()
    assert changed(pristine_sdk) == []


def test_reinstrument_after_uninstrument_counts_once(
    sdk: openai.OpenAI, telemetry: Telemetry, pristine_sdk: Any
) -> None:
    providers = {"tracer_provider": telemetry.tracer_provider, "meter_provider": telemetry.meter_provider}
    instrumentor = OpenAIImageCostInstrumentor()
    for _ in range(3):
        instrumentor.instrument(**providers)
        instrumentor.uninstrument()
    instrumentor.instrument(**providers)
    sdk.images.generate(model="gpt-image-1", prompt="a cat", quality="low")
    assert len(telemetry.spans()) == 1
    assert telemetry.total("openai.image.generated") == 1
    instrumentor.uninstrument()
    sdk.images.generate(model="gpt-image-1", prompt="a cat", quality="low")
    assert len(telemetry.spans()) == 1  # off means off
