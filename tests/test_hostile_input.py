"""Hostile input through the real SDK over loopback: values that could break an exporter, grow
label cardinality, forge or leak attribution, or turn into a wrong, infinite or missing cost.

The app's calls go through the real `openai` SDK to the bundled local server; the plugin's
metrics go to the real OpenTelemetry SDK with both an in-memory reader and the real Prometheus
exporter, whose endpoint is scraped over HTTP and parsed with prometheus_client's own parser.
"""

from __future__ import annotations

import contextlib
import logging
import math
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from otel_image_cost import OpenAIImageCostInstrumentor, billing_context
from otel_image_cost.telemetry import quality_label, size_label

from conftest import Telemetry
from local_openai_server import LocalOpenAIServer

COST = "openai.image.cost"
UNPRICED = "openai.image.unpriced"
DURATION = "gen_ai.client.operation.duration"
GENERATED = "openai.image.generated"
# gpt-image-1, prompt "a fox" (ceil(5 / 4) = 2 input text tokens), low 1024x1024 (272 image tokens):
# 2 x 5e-6 + 272 x 40e-6 = 0.00001 + 0.01088
LOW_FOX_COST = 0.01089
FOX = {"model": "gpt-image-1", "prompt": "a fox", "quality": "low", "size": "1024x1024"}


class Scraped(Telemetry):
    """`Telemetry` whose meter provider also feeds the real Prometheus exporter, served on loopback."""

    def __init__(
        self, tracer_provider: TracerProvider | None = None, metric_reader: InMemoryMetricReader | None = None
    ) -> None:
        self.prometheus = PrometheusMetricReader()
        super().__init__(tracer_provider, metric_reader, more_readers=(self.prometheus,))
        self.http, self.thread = start_http_server(0, addr="127.0.0.1")

    def scrape(self) -> dict[str, list[Any]]:
        """GET /metrics: must answer 200 and parse; returns the samples by metric family name."""
        url = f"http://127.0.0.1:{self.http.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert reply.status == 200
            body = reply.read().decode("utf-8")
        return {family.name: family.samples for family in text_string_to_metric_families(body)}

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.meter_provider.shutdown()  # unregisters the exporter's collector from the registry


@pytest.fixture
def scraped() -> Iterator[Scraped]:
    telemetry = Scraped()
    yield telemetry
    telemetry.close()


@pytest.fixture
def plugin(scraped: Scraped) -> Iterator[Any]:
    instrumentor = OpenAIImageCostInstrumentor()

    def start(**settings: Any) -> OpenAIImageCostInstrumentor:
        instrumentor.instrument(
            tracer_provider=scraped.tracer_provider, meter_provider=scraped.meter_provider, **settings
        )
        return instrumentor

    yield start
    instrumentor.uninstrument()


def label_values(samples: dict[str, list[Any]], label: str) -> set[str]:
    return {s.labels[label] for family in samples.values() for s in family if label in s.labels}


def costs(telemetry: Telemetry) -> list[tuple[dict[str, Any], float]]:
    return telemetry.sums(COST)


def assert_costs_sane(telemetry: Telemetry) -> None:
    for _, value in costs(telemetry):
        assert math.isfinite(value) and value >= 0
    for span in telemetry.spans():
        for key, value in (span.attributes or {}).items():
            if isinstance(value, float):
                assert math.isfinite(value) and value >= 0, (key, value)


# -- item 2: value hygiene and bounded labels ---------------------------------------------------


def test_a_lone_surrogate_on_a_failed_call_does_not_break_the_scrape(
    scraped: Scraped, plugin: Any, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    plugin()
    server.inject(429)
    # openai 3.x refuses to encode the lone surrogate itself; 2.x sends it escaped and gets the 429
    with pytest.raises((openai.RateLimitError, UnicodeEncodeError)) as raised:
        client.images.generate(**FOX, user="x\ud800")
    samples = scraped.scrape()
    durations = [s for s in samples["gen_ai_client_operation_duration_seconds"] if "error_type" in s.labels]
    assert {s.labels["user_id"] for s in durations} == {"x\ufffd"}
    assert {s.labels["error_type"] for s in durations} == {raised.type.__name__}
    assert scraped.span().attributes["user.id"] == "x\ufffd"


def test_hostile_values_on_every_instrument_stay_valid_text_of_at_most_128_characters(
    scraped: Scraped, plugin: Any, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    plugin()
    long_user = "é" * 4000  # 4,000 characters, 8,000 UTF-8 bytes
    with billing_context(tenant_id="t\udfff" * 100):
        server.answer_with({"quality": "ultra\ud800", "size": "1024x1024\udc00"})
        client.images.generate(**FOX, user=long_user)
        with pytest.raises((openai.BadRequestError, UnicodeEncodeError)):  # refused by the service or SDK
            client.images.generate(**{**FOX, "size": "99x\ud800"}, user=long_user)
    samples = scraped.scrape()
    assert label_values(samples, "user_id") == {"é" * 128}
    assert label_values(samples, "tenant_id") == {("t\ufffd" * 64)}
    assert label_values(samples, "openai_image_quality") == {"other", "low"}  # low: the refused call's
    assert label_values(samples, "openai_image_size") == {"other"}
    for family in samples.values():
        for sample in family:
            assert all(len(value) <= 128 for value in sample.labels.values()), sample
    # exactly one priced point for the successful call, by its usage (2 text in, 272 image out)
    assert [(a["openai.image.cost.source"], v) for a, v in costs(scraped)] == [("usage", LOW_FOX_COST)]
    success, failure = scraped.spans()
    assert success.attributes["user.id"] == "é" * 128
    assert success.attributes["openai.image.quality"] == "ultra\ufffd"  # the span keeps the fact, made safe
    assert failure.attributes["openai.image.size"] == "99x\ufffd"


def test_500_refused_calls_with_distinct_sizes_give_a_bounded_set_of_size_labels(
    scraped: Scraped, plugin: Any, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    plugin()
    hostile = ["{}x1024", "0x{}", "size-{}", "{}x{}x{}", "{}x\ud800"]
    for i in range(100):
        for pattern in hostile:
            size = pattern.format(17000 + i, i, i) if pattern == "{}x1024" else pattern.format(i, i, i)
            with pytest.raises((openai.BadRequestError, UnicodeEncodeError)):  # by the service or SDK
                client.images.generate(**{**FOX, "size": size, "quality": f"q{i}"})
    samples = scraped.scrape()
    assert label_values(samples, "openai_image_size") == {"other"}
    assert label_values(samples, "openai_image_quality") == {"other"}
    durations = samples["gen_ai_client_operation_duration_seconds"]
    assert sum(s.value for s in durations if s.name.endswith("_count")) == 500


def test_quality_and_size_labels_keep_the_contract_values(
    scraped: Scraped, plugin: Any, client: openai.OpenAI
) -> None:
    plugin()
    client.images.generate(model="gpt-image-2", prompt="a fox", quality="medium", size="1536x1024")
    (labels, _), *_ = costs(scraped)
    assert (labels["openai.image.quality"], labels["openai.image.size"]) == ("medium", "1536x1024")


# -- item 5: usage that cannot be right -----------------------------------------------------------


def fox_usage(**changes: Any) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": 2,
        "input_tokens_details": {"image_tokens": 0, "text_tokens": 2},
        "output_tokens": 272,
        "total_tokens": 274,
    }
    usage.update(changes)
    return usage


INVALID_USAGES = {
    "negative_cached": fox_usage(
        input_tokens_details={"text_tokens": 2, "image_tokens": 0, "cached_tokens": -60}
    ),
    "huge_output": fox_usage(output_tokens=10**400),
    "fractional_input": fox_usage(input_tokens=2.5),
    "detail_above_total": fox_usage(input_tokens_details={"text_tokens": 3, "image_tokens": 0}),
    "cached_above_total": fox_usage(input_tokens_details={"text_tokens": 2, "cached_tokens": 3}),
    "above_10_to_the_9": fox_usage(output_tokens=10**9 + 1),
    "bool_input": fox_usage(input_tokens=True),
}


@pytest.mark.parametrize("usage", INVALID_USAGES.values(), ids=INVALID_USAGES.keys())
def test_usage_that_cannot_be_right_is_unpriced_with_its_raw_numbers_on_the_span(
    telemetry: Telemetry, instrumented: Any, client: openai.OpenAI, server: LocalOpenAIServer, usage: Any
) -> None:
    server.answer_with({"usage": usage})
    result = client.images.generate(**FOX)
    assert len(result.data or []) == 1
    span = telemetry.span()
    attributes = dict(span.attributes or {})
    assert attributes["openai.image.cost.source"] == "unknown"
    assert attributes["openai.image.unpriced.reason"] == "invalid_usage"
    assert "gen_ai.usage.cost" not in attributes
    assert "gen_ai.usage.output_tokens" not in attributes  # an impossible count is not an attribute
    raw = attributes["openai.image.usage.raw"]
    assert isinstance(raw, str) and '"input_tokens"' in raw
    assert costs(telemetry) == []
    assert [(a["openai.image.unpriced.reason"], v) for a, v in telemetry.sums(UNPRICED)] == [
        ("invalid_usage", 1)
    ]
    assert telemetry.points("gen_ai.client.token.usage") == []
    assert telemetry.total(GENERATED) == 1


def test_a_huge_count_keeps_its_digits_in_the_raw_usage(
    telemetry: Telemetry, instrumented: Any, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    server.answer_with({"usage": fox_usage(output_tokens=10**400)})
    client.images.generate(**FOX)
    assert str(10**400) in str(telemetry.span().attributes["openai.image.usage.raw"])
    assert_costs_sane(telemetry)


@pytest.mark.parametrize(
    ("size", "reason"),
    [
        ("9999x1", "unknown_size"),
        ("1x9999", "unknown_size"),
        ("0x1024", "unknown_size"),
        ("16400x16400", "unknown_size"),
    ],
)
def test_gpt_image_2_sizes_that_cannot_be_estimated_are_unpriced(
    telemetry: Telemetry,
    instrumented: Any,
    client: openai.OpenAI,
    server: LocalOpenAIServer,
    size: str,
    reason: str,
) -> None:
    server.answer_with({"size": size, "usage": None})  # the service echoes the size, reports no usage
    client.images.generate(model="gpt-image-2", prompt="a fox", quality="medium", size="1024x1024")
    attributes = dict(telemetry.span().attributes or {})
    assert (attributes["openai.image.cost.source"], attributes["openai.image.unpriced.reason"]) == (
        "unknown",
        reason,
    )
    assert costs(telemetry) == []
    assert [
        (a["openai.image.unpriced.reason"], a["openai.image.size"]) for a, _ in telemetry.sums(UNPRICED)
    ] == [(reason, "other" if size in ("0x1024", "16400x16400") else size)]


def test_gpt_image_2_at_3_to_1_is_still_estimated(
    telemetry: Telemetry, instrumented: Any, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    server.answer_with({"size": "3072x1024", "usage": None})
    client.images.generate(model="gpt-image-2", prompt="a fox", quality="medium", size="1024x1024")
    # s = round_half_up(48 * 1024 / 3072) = 16; tokens = ceil(48 * 16 * (2,000,000 + 3,145,728) / 4,000,000)
    # = ceil(987.98) = 988 -> 988 x 30e-6 = 0.02964; prompt ceil(5 / 4) = 2 tokens x 5e-6 = 0.00001
    assert [(a["openai.image.cost.source"], v) for a, v in costs(telemetry)] == [("estimate", 0.02965)]


WEIRD_ANSWERS = {  # no usage: the call is estimated from what the service echoes
    "size_with_5000_digits": {"size": "9" * 5000 + "x1024", "usage": None},
    "size_as_huge_number": {"size": 10**4000, "usage": None},
    "quality_as_number": {"quality": 7, "usage": None},
    "data_as_number": {"data": 5, "usage": None},
    "size_as_list": {"size": [1024, 1024], "usage": None},
}


@pytest.mark.parametrize("answer", WEIRD_ANSWERS.values(), ids=WEIRD_ANSWERS.keys())
def test_a_successful_call_with_weird_types_is_accounted_for_exactly_once(
    telemetry: Telemetry, instrumented: Any, client: openai.OpenAI, server: LocalOpenAIServer, answer: Any
) -> None:
    server.answer_with(answer)
    client.images.generate(**{**FOX, "model": "gpt-image-2"})
    priced, unpriced = costs(telemetry), telemetry.sums(UNPRICED)
    assert len(priced) + len(unpriced) == 1, (priced, unpriced)
    assert "openai.image.cost.source" in (telemetry.span().attributes or {})
    assert_costs_sane(telemetry)


def test_responses_output_as_a_number_is_accounted_for_per_part(
    telemetry: Telemetry, instrumented: Any, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    server.answer_with({"output": 5})
    client.responses.create(
        model="gpt-5", input="draw a fox", tools=[{"type": "image_generation", "model": "gpt-image-1"}]
    )
    parts = [a["openai.image.cost.part"] for a, _ in costs(telemetry)]
    parts += ["image" for _ in telemetry.sums(UNPRICED)]  # an unpriced image part
    assert sorted(parts) == ["image", "mainline"]
    assert_costs_sane(telemetry)


def test_invalid_mainline_usage_is_unpriced_not_negative(
    telemetry: Telemetry, instrumented: Any, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    server.answer_with({"usage": {"input_tokens": -5000, "output_tokens": 10, "total_tokens": -4990}})
    client.responses.create(
        model="gpt-5", input="draw a fox", tools=[{"type": "image_generation", "model": "gpt-image-1"}]
    )
    assert [a["openai.image.cost.part"] for a, _ in costs(telemetry)] == ["image"]
    assert [a["openai.image.unpriced.reason"] for a, _ in telemetry.sums(UNPRICED)] == ["invalid_usage"]
    assert_costs_sane(telemetry)


# -- item 6: custom attributes never displace ours -------------------------------------------------


def test_10000_custom_attributes_keep_32_and_log_one_line(
    telemetry: Telemetry, instrumented: Any, client: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with billing_context(user_id="u1", attributes={f"k{i}": i for i in range(10_000)}):
        client.images.generate(**FOX)
    attributes = dict(telemetry.span().attributes or {})
    assert sorted(k for k in attributes if k.startswith("k")) == sorted(f"k{i}" for i in range(32))
    assert attributes["k31"] == "31"
    assert attributes["gen_ai.operation.name"] == "generate_content"
    assert attributes["gen_ai.request.model"] == "gpt-image-1"
    assert attributes["gen_ai.usage.cost"] == LOW_FOX_COST
    assert len(caplog.records) == 1, [r.getMessage() for r in caplog.records]
    assert "keeping the first 32" in caplog.records[0].getMessage()


def test_our_attributes_win_over_custom_ones_and_the_sdk_attribute_limit(
    client: openai.OpenAI,
) -> None:
    limited = Scraped(TracerProvider(span_limits=SpanLimits(max_span_attributes=40)))
    instrumentor = OpenAIImageCostInstrumentor()
    instrumentor.instrument(tracer_provider=limited.tracer_provider, meter_provider=limited.meter_provider)
    try:
        custom = {"gen_ai.request.model": "forged", "openai.image.cost.source": "forged"}
        custom |= {f"c{i}": "x" for i in range(30)}
        with billing_context(user_id="u1", attributes=custom):
            client.images.generate(**FOX)
    finally:
        instrumentor.uninstrument()
        limited.close()
    attributes = dict(limited.span().attributes or {})
    assert attributes["gen_ai.request.model"] == "gpt-image-1"
    assert attributes["openai.image.cost.source"] == "usage"
    assert attributes["gen_ai.usage.cost"] == LOW_FOX_COST
    for key in ("gen_ai.operation.name", "gen_ai.provider.name", "openai.image.model", "openai.image.count"):
        assert key in attributes, key
    assert len(attributes) == 40


# -- item 7: keyed pseudonymisation ------------------------------------------------------------------

# HMAC-SHA256(key=b"k3y", msg=b"alice@example.com").hexdigest()[:16], computed once with hmac:
ALICE_PSEUDONYM = "b299497d6ef24967"


def test_pseudonymised_user_on_metrics_raw_on_spans(
    telemetry: Telemetry, instrument: Any, client: openai.OpenAI
) -> None:
    instrument(pseudonymize="user.id", pseudonym_key="k3y")
    with billing_context(user_id="alice@example.com", tenant_id="acme"):
        client.images.generate(**FOX)
    ((labels, value),) = costs(telemetry)
    assert (labels["user.id"], labels["tenant.id"], value) == (ALICE_PSEUDONYM, "acme", LOW_FOX_COST)
    assert {a["user.id"] for a, _ in telemetry.points(DURATION)} == {ALICE_PSEUDONYM}
    assert telemetry.span().attributes["user.id"] == "alice@example.com"


def test_pseudonymised_spans_too(telemetry: Telemetry, instrument: Any, client: openai.OpenAI) -> None:
    instrument(pseudonymize="user.id,tenant.id", pseudonym_key="k3y", pseudonymize_spans=True)
    client.images.generate(**FOX, user="alice@example.com")
    assert telemetry.span().attributes["user.id"] == ALICE_PSEUDONYM
    ((labels, _),) = costs(telemetry)
    assert labels["user.id"] == ALICE_PSEUDONYM


def test_pseudonymisation_without_a_key_is_refused_and_logged(
    telemetry: Telemetry, instrument: Any, client: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    instrument(pseudonymize="user.id", pseudonymize_spans=True)
    client.images.generate(**FOX, user="alice@example.com")
    ((labels, _),) = costs(telemetry)
    assert labels["user.id"] == "alice@example.com"
    refusals = [r.getMessage() for r in caplog.records if "OTEL_IMAGE_COST_PSEUDONYM_KEY" in r.getMessage()]
    assert refusals == [
        "otel-image-cost: refusing OTEL_IMAGE_COST_PSEUDONYMIZE=user.id: OTEL_IMAGE_COST_PSEUDONYM_KEY "
        "is not set; those keys are exported as they are"
    ]


@pytest.mark.parametrize(
    ("size", "label"),
    [
        ("auto", "auto"),
        ("mixed", "mixed"),
        ("1024x1024", "1024x1024"),
        ("16384x1", "16384x1"),
        ("16385x1", "other"),
        ("0x1024", "other"),
        ("01024x1024", "other"),
        ("1024X1024", "other"),
        ("1024x1024 ", "other"),
        (1024, "other"),
    ],
)
def test_size_label_bounds(size: object, label: str) -> None:
    assert size_label(size) == label


def test_quality_label_bounds() -> None:
    known = ["low", "medium", "high", "xhigh", "max", "auto", "standard", "hd", "mixed"]
    assert [quality_label(q) for q in [*known, "ultra", "HIGH", "", 7]] == [*known, *["other"] * 4]


def test_captured_prompts_with_lone_surrogates_stay_exportable(
    scraped: Scraped, plugin: Any, client: openai.OpenAI, server: LocalOpenAIServer
) -> None:
    """With prompt capture on, a prompt or a revised prompt holding a lone surrogate reaches the
    span as U+FFFD, whole (not cut to 128 characters), and the span still encodes as OTLP."""
    plugin(capture_message_content=True)
    long_prompt = "a fox " * 40  # 240 characters: prompts are not cut
    server.answer_with({"data": [{"b64_json": "AAAA", "revised_prompt": f"{long_prompt}\ud800"}]})
    client.images.generate(**{**FOX, "prompt": long_prompt})
    # openai 3.x refuses to encode the lone surrogate itself; 2.x sends it escaped
    with contextlib.suppress(UnicodeEncodeError):
        client.images.generate(**{**FOX, "prompt": "a fox\udfff"})
    first, second = scraped.spans()
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["openai.image.prompt"] == long_prompt
    assert first.attributes["openai.image.revised_prompts"] == (f"{long_prompt}\ufffd",)
    assert second.attributes["openai.image.prompt"] == "a fox\ufffd"
    assert encode_spans([first, second]).SerializeToString()


def test_integers_otlp_cannot_carry_are_left_out_not_dropped_by_the_exporter(
    telemetry: Telemetry,
    instrumented: Any,
    client: openai.OpenAI,
    server: LocalOpenAIServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """OTLP integers are int64. A request for `n=10**30` (refused by the service) and an SVG usage
    of 2**63 tokens leave those attributes out; everything else is kept and encodes whole."""
    with pytest.raises(openai.BadRequestError):
        client.images.generate(**FOX, n=10**30)
    server.answer_with({"svg_usage": {"model": "gpt-5-mini", "input_tokens": 2**63, "output_tokens": 7}})
    client.images.generate(**FOX, n=2**63 - 1, extra_body={"n": 1})
    refused, answered = telemetry.spans()
    assert "openai.image.n" not in (refused.attributes or {})
    assert refused.attributes["error.type"] == "BadRequestError"
    assert answered.attributes["openai.image.n"] == 2**63 - 1
    assert answered.attributes["openai.image.svg.model"] == "gpt-5-mini"
    assert answered.attributes["openai.image.usage.svg.output_tokens"] == 7
    assert "openai.image.usage.svg.input_tokens" not in answered.attributes
    assert [
        (a["openai.image.cost.part"], a["openai.image.unpriced.reason"]) for a, _ in telemetry.sums(UNPRICED)
    ] == [("svg_author", "invalid_usage")]
    caplog.clear()
    spans = encode_spans([refused, answered]).resource_spans[0].scope_spans[0].spans
    assert [len(span.attributes) for span in spans] == [len(refused.attributes), len(answered.attributes)]
    assert not caplog.records
