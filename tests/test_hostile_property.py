"""Property-based: random and hostile attribution values, sizes, qualities and usage objects,
through the real SDK over loopback to the bundled local server (which answers with the drawn
size, quality and usage), with the plugin on the real OpenTelemetry SDK and the real
Prometheus exporter. For every drawn call:

- the app sees exactly what it sees with the plugin's instrumentation suppressed (same result,
  or the same exception type and message);
- a scrape of the Prometheus exporter answers 200 and parses;
- the call's spans and billing record pass the real OTLP encoders whole (OTLP integers are
  int64: a hostile `n=10**30` must not make the encoder drop an attribute with an error);
- every emitted cost is finite and >= 0;
- a call that did not raise has exactly one priced or unpriced point for its image cost part
  (an SVG answer adds one for its author's part);
- the plugin logged no internal error.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.metrics import Counter, Histogram
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from test_hostile_input import Scraped

from otel_image_cost import OpenAIImageCostInstrumentor, billing_context

from local_openai_server import LocalOpenAIServer

EXAMPLES = 40  # the suite runs on three SDK lines: keep it moderate

# Text an attacker may send: any code point (lone surrogates too), short or past the 128 cap.
hostile_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=200)
attribution_value = st.one_of(hostile_text, st.integers(), st.floats(allow_nan=True), st.booleans())
sizes = st.one_of(
    st.sampled_from(["auto", "1024x1024", "1536x1024", "1024x1536", "256x256"]),
    st.builds(lambda w, h: f"{w}x{h}", st.integers(-5, 40_000), st.integers(-5, 40_000)),
    hostile_text,
)
qualities = st.one_of(st.sampled_from(["auto", "low", "medium", "high", "hd", "standard"]), hostile_text)
counts = st.one_of(
    st.integers(0, 5000),
    st.integers(-(10**12), 10**12),
    st.integers(10**15, 10**40),
    st.floats(allow_nan=True, allow_infinity=False),
    st.none(),
    st.text(max_size=5),
)
usages = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"input_tokens": counts, "output_tokens": counts},
        optional={
            "input_tokens_details": st.fixed_dictionaries(
                {}, optional={"text_tokens": counts, "image_tokens": counts, "cached_tokens": counts}
            ),
            "output_tokens_details": st.fixed_dictionaries(
                {}, optional={"image_tokens": counts, "text_tokens": counts}
            ),
        },
    ),
)
# What the service answers in place of its own fields (nothing, or any mix of these).
answers = st.fixed_dictionaries(
    {},
    optional={
        "size": st.one_of(sizes, st.integers(-(10**30), 10**30), st.none()),
        "quality": st.one_of(qualities, st.integers(), st.none()),
        "usage": usages,
        "svg_usage": st.fixed_dictionaries(
            {"model": st.one_of(st.none(), hostile_text), "input_tokens": counts, "output_tokens": counts},
            optional={"reasoning_tokens": counts},
        ),
    },
)
calls = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["gpt-image-1", "gpt-image-2", "gpt-image-1-mini", "dall-e-3"]),
        "size": st.one_of(st.none(), sizes),
        "quality": st.one_of(st.none(), qualities),
        "user": st.one_of(st.none(), hostile_text),
        "n": st.one_of(st.none(), st.integers(1, 2), st.integers(-(10**40), 10**40)),
    }
)
contexts = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "user_id": attribution_value,
            "tenant_id": attribution_value,
            "attributes": st.dictionaries(hostile_text, attribution_value, max_size=40),
        }
    ),
)


@pytest.fixture(scope="module")
def delta_telemetry() -> Iterator[Scraped]:
    """Metrics as deltas in memory (each collect: the last call's points only) and cumulative on
    the Prometheus exporter."""
    delta = dict.fromkeys((Counter, Histogram), AggregationTemporality.DELTA)
    telemetry = Scraped(metric_reader=InMemoryMetricReader(preferred_temporality=delta))
    instrumentor = OpenAIImageCostInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        logger_provider=telemetry.logger_provider,
    )
    yield telemetry
    instrumentor.uninstrument()
    telemetry.close()


@pytest.fixture(scope="module")
def local() -> Iterator[tuple[LocalOpenAIServer, openai.OpenAI]]:
    with (
        LocalOpenAIServer() as server,
        openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=10) as sdk,
    ):
        yield server, sdk


def last_call_points(telemetry: Scraped, *names: str) -> list[list[tuple[dict[str, Any], float]]]:
    """(attributes, value) of each named counter's points since the last collection (one collect:
    a second would see an empty delta)."""
    found: dict[str, list[tuple[dict[str, Any], float]]] = {name: [] for name in names}
    data = telemetry.metric_reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name in found:
                    found[metric.name] += [
                        (dict(p.attributes or {}), p.value) for p in metric.data.data_points
                    ]
    return [found[name] for name in names]


def outcome(sdk: openai.OpenAI, request: dict[str, Any]) -> tuple[str, Any]:
    """What the app sees: the result's content, or the exception's type and message."""
    try:
        result = sdk.images.generate(prompt="a fox", **{k: v for k, v in request.items() if v is not None})
    except Exception as exc:
        return "raised", (type(exc).__name__, str(exc))
    content = result.model_dump(exclude={"created"}, warnings=False)
    for image in content.get("data") or ():  # DALL-E answers with a fresh URL each time
        if isinstance(image, dict) and image.get("url"):
            image["url"] = "<url>"
    return "returned", content


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=calls, answer=answers, context=contexts)
def test_hostile_calls_keep_every_promise(
    delta_telemetry: Scraped,
    local: tuple[LocalOpenAIServer, openai.OpenAI],
    caplog: pytest.LogCaptureFixture,
    request: dict[str, Any],
    answer: dict[str, Any],
    context: dict[str, Any] | None,
) -> None:
    server, sdk = local
    caplog.set_level(logging.DEBUG, logger="otel_image_cost")
    caplog.clear()
    server.reset()
    delta_telemetry.metric_reader.get_metrics_data()  # start from an empty delta
    delta_telemetry.span_exporter.clear()
    delta_telemetry.log_exporter.clear()
    if answer:
        server.answer_with(answer, count=2)
    with suppress_instrumentation():
        expected = outcome(sdk, request)
    if context is None:
        seen = outcome(sdk, request)
    else:
        with billing_context(**context):
            seen = outcome(sdk, request)
    assert seen == expected

    delta_telemetry.scrape()  # answers 200 and parses
    points, unpriced = last_call_points(delta_telemetry, "openai.image.cost", "openai.image.unpriced")
    assert all(math.isfinite(value) and value >= 0 for _, value in points), points
    if seen[0] == "returned":
        image_parts = [a for a, _ in points + unpriced if a["openai.image.cost.part"] == "image"]
        assert len(image_parts) == 1, (points, unpriced)
    else:
        assert points == [] and unpriced == []
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]

    caplog.clear()
    (span,) = delta_telemetry.spans()
    assert len(delta_telemetry.records()) == 1
    (encoded,) = encode_spans([span]).resource_spans[0].scope_spans[0].spans
    encode_logs(delta_telemetry.log_exporter.get_finished_logs())
    assert not caplog.records, [r.getMessage() for r in caplog.records]  # the encoders log what they drop
    assert len(encoded.attributes) == len(span.attributes or {})
