"""The telemetry contract: attribute names, instruments, and how one finished call is recorded.

Names follow `docs/telemetry-contract.md`; dashboards and alert rules depend on them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from opentelemetry.metrics import Counter, Histogram, Meter
from opentelemetry.semconv._incubating.metrics.gen_ai_metrics import (
    GEN_AI_CLIENT_OPERATION_DURATION,
    GEN_AI_CLIENT_TOKEN_USAGE,
)
from opentelemetry.util.types import AttributeValue

from .attribution import safe_value
from .cost import MAX_SIZE_SIDE, Cost, ImageTokenUsage, SvgAuthorUsage
from .memo import BoundedMemo

# Semantic-convention names (GenAI).
PROVIDER_NAME = "gen_ai.provider.name"
OPERATION_NAME = "gen_ai.operation.name"
OUTPUT_TYPE = "gen_ai.output.type"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
USAGE_COST = "gen_ai.usage.cost"
TOKEN_TYPE = "gen_ai.token.type"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
HTTP_RESEND_COUNT = "http.request.resend_count"

# Image-specific names.
IMAGE_OPERATION = "openai.image.operation"
IMAGE_MODEL = "openai.image.model"
IMAGE_MODEL_SOURCE = "openai.image.model.source"
IMAGE_QUALITY = "openai.image.quality"
IMAGE_SIZE = "openai.image.size"
IMAGE_N = "openai.image.n"
IMAGE_COUNT = "openai.image.count"
IMAGE_PARTIAL_IMAGES = "openai.image.partial_images"
IMAGE_PARTIAL_IMAGES_REQUESTED = "openai.image.partial_images.requested"
IMAGE_BACKGROUND = "openai.image.background"
IMAGE_OUTPUT_FORMAT = "openai.image.output_format"
IMAGE_MODERATION = "openai.image.moderation"
IMAGE_ACTION = "openai.image.action"
IMAGE_INPUT_FIDELITY = "openai.image.input_fidelity"
IMAGE_STREAM = "openai.image.stream"
IMAGE_USAGE_RAW = "openai.image.usage.raw"
IMAGE_COST_SOURCE = "openai.image.cost.source"
IMAGE_COST_PRICING_VERSION = "openai.image.cost.pricing_version"
IMAGE_COST_PART = "openai.image.cost.part"
IMAGE_UNPRICED_REASON = "openai.image.unpriced.reason"
IMAGE_STATUS = "openai.image.status"
IMAGE_ERROR_CODE = "openai.image.error.code"
IMAGE_MODERATION_CATEGORIES = "openai.image.moderation.categories"
RESPONSE_STATUS = "openai.response.status"
IMAGE_PROMPT = "openai.image.prompt"
IMAGE_REVISED_PROMPTS = "openai.image.revised_prompts"
IMAGE_COMPLEXITY = "openai.image.complexity"
IMAGE_FRAME_COUNT = "openai.image.frame_count"
IMAGE_SVG_MODEL = "openai.image.svg.model"
IMAGE_OUTCOME = "openai.image.outcome"
REQUEST_ID = "openai.request.id"

# What a call's span may carry that its billing record never does (prompt text).
CONTENT_KEYS = frozenset({IMAGE_PROMPT, IMAGE_REVISED_PROMPTS})

COST_COMPONENT_PREFIX = "openai.image.cost."
USAGE_PREFIX = "openai.image.usage."
SVG_USAGE_PREFIX = "openai.image.usage.svg."

PROVIDER_OPENAI = "openai"
PROVIDER_AZURE = "azure.ai.openai"
OPERATION_IMAGES = "generate_content"
OPERATION_RESPONSES = "chat"
OUTPUT_IMAGE = "image"
PART_IMAGE = "image"
PART_MAINLINE = "mainline"
PART_SVG_AUTHOR = "svg_author"
OUTCOME_OK = "ok"
OUTCOME_ERROR = "error"
OUTCOME_ABANDONED = "abandoned"  # the application stopped reading a stream before its final event
SOURCE_DEFERRED = "deferred"
SOURCE_ALREADY_COUNTED = "already_counted"

# The bounded set of call attributes that may become metric labels (plus the chosen attribution).
METRIC_CALL_KEYS = (
    PROVIDER_NAME,
    OPERATION_NAME,
    REQUEST_MODEL,
    IMAGE_MODEL,
    IMAGE_OPERATION,
    IMAGE_QUALITY,
    IMAGE_SIZE,
    IMAGE_COST_SOURCE,
)

# Bounded label values (contract: Bounded metric labels); anything else is `other`.
QUALITY_LABELS = frozenset({"low", "medium", "high", "xhigh", "max", "auto", "standard", "hd", "mixed"})
SIZE_WORDS = frozenset({"auto", "mixed"})
OTHER = "other"
_SIZE_LABEL = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")

# The bucket boundaries the GenAI semantic conventions recommend (the SDK's defaults stop at
# 10 s and 10,000, far below an image call's minute and its tens of thousands of tokens).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = tuple(4.0**power for power in range(14))  # 1, 4, 16, ... 67,108,864

Attributes = dict[str, AttributeValue]


class TokenCounts(Protocol):
    """A usage with input and output totals: an image model's or a text model's."""

    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def valid(self) -> bool: ...


def quality_label(value: object) -> str:
    return value if isinstance(value, str) and value in QUALITY_LABELS else OTHER


def size_label(value: object) -> str:
    if not isinstance(value, str):
        return OTHER
    if value in SIZE_WORDS:
        return value
    match = _SIZE_LABEL.fullmatch(value)
    if match is None or max(int(match[1]), int(match[2])) > MAX_SIZE_SIDE:
        return OTHER
    return value


def metric_labels(
    attributes: Mapping[str, AttributeValue], attribution: Mapping[str, str], keys: tuple[str, ...]
) -> dict[str, AttributeValue]:
    """The bounded label set of a call: the contract's call attributes (quality and size from
    fixed sets, every other value safe text) plus the attribution `keys`."""
    labels = dict(_call_labels(tuple(map(attributes.get, METRIC_CALL_KEYS))))
    if attribution:
        for key in keys:
            if key in attribution:
                labels[key] = safe_value(attribution[key])
    return labels


def _call_labels(values: tuple[AttributeValue | None, ...]) -> Mapping[str, AttributeValue]:
    """The call attributes' labels (values in `METRIC_CALL_KEYS` order), made once per distinct
    set of values: calls repeat a few models, qualities and sizes. Bounded: the memo is emptied
    when full, so hostile values cost their labels' making again, never memory."""
    try:
        known = _CALL_LABELS.get(values)
    except TypeError:  # a value that cannot be a dict key (a list): made each time
        return _make_call_labels(values)
    return known if known is not None else _CALL_LABELS.remember(values, _make_call_labels(values))


def _make_call_labels(values: tuple[AttributeValue | None, ...]) -> Mapping[str, AttributeValue]:
    labels: dict[str, AttributeValue] = {
        key: safe_value(value)
        for key, value in zip(METRIC_CALL_KEYS, values, strict=True)
        if value is not None
    }
    if IMAGE_QUALITY in labels:
        labels[IMAGE_QUALITY] = quality_label(labels[IMAGE_QUALITY])
    if IMAGE_SIZE in labels:
        labels[IMAGE_SIZE] = size_label(labels[IMAGE_SIZE])
    return MappingProxyType(labels)


_CALL_LABELS: BoundedMemo[tuple[AttributeValue | None, ...], Mapping[str, AttributeValue]] = BoundedMemo(1024)


def token_attributes(usage: TokenCounts | None) -> Attributes:
    """`gen_ai.usage.input_tokens` / `output_tokens`, where a plausible usage was reported."""
    if usage is None or not usage.valid:
        return {}
    return {USAGE_INPUT_TOKENS: usage.input_tokens, USAGE_OUTPUT_TOKENS: usage.output_tokens}


def token_points(part: str, usage: TokenCounts | None) -> tuple[tuple[str, str, int], ...]:
    """The token histogram's (cost part, token type, count) points for one plausible usage."""
    if usage is None or not usage.valid:
        return ()
    return ((part, "input", usage.input_tokens), (part, "output", usage.output_tokens))


def present(values: Mapping[str, AttributeValue | None]) -> Attributes:
    """The attributes that have a value OTLP can carry: not None, an integer only within int64
    (the OTLP exporter drops a larger one with an error; a request may ask for `n=10**30`)."""
    return {
        key: value
        for key, value in values.items()
        if value is not None and (type(value) is not int or value in INT64)
    }


INT64 = range(-(2**63), 2**63)  # the integers an OTLP attribute can carry


def usage_attributes(usage: ImageTokenUsage | None, usage_json: str | None) -> Attributes:
    """The `openai.image.usage.*` billing breakdown, where the response gave a plausible one;
    the raw JSON whenever a usage was reported."""
    if usage is None or not usage.valid:
        return {IMAGE_USAGE_RAW: usage_json} if usage_json is not None else {}
    breakdown = {
        "input_text_tokens": usage.input_text_tokens,
        "input_image_tokens": usage.input_image_tokens,
        "cached_input_tokens": _cached_total(usage),
        "output_image_tokens": usage.output_image_tokens,
        "output_text_tokens": usage.output_text_tokens,
    }
    attributes: Attributes = {
        USAGE_PREFIX + name: value for name, value in breakdown.items() if value is not None
    }
    if usage_json is not None:
        attributes[IMAGE_USAGE_RAW] = usage_json
    return attributes


def _cached_total(usage: ImageTokenUsage) -> int | None:
    if usage.cached_text_tokens is not None or usage.cached_image_tokens is not None:
        return (usage.cached_text_tokens or 0) + (usage.cached_image_tokens or 0)
    return usage.cached_tokens


def cost_attributes(cost: Cost) -> Attributes:
    """`openai.image.cost.*` components and source; `gen_ai.usage.cost` when the call is priced."""
    attributes: Attributes = {IMAGE_COST_SOURCE: cost.source}
    if cost.pricing_version is not None:
        attributes[IMAGE_COST_PRICING_VERSION] = cost.pricing_version
    total = cost.total
    if total is not None:
        for name, value in cost.components.items():
            attributes[COST_COMPONENT_PREFIX + name] = float(value)
        attributes[USAGE_COST] = float(total)
    if cost.unpriced_reason is not None:
        attributes[IMAGE_UNPRICED_REASON] = cost.unpriced_reason
    return attributes


def svg_attributes(usage: SvgAuthorUsage | None) -> Attributes:
    """`openai.image.svg.model` and `openai.image.usage.svg.*`, where the response reported `svg_usage`."""
    if usage is None:
        return {}
    found = {
        IMAGE_SVG_MODEL: usage.model,
        SVG_USAGE_PREFIX + "input_tokens": usage.input_tokens,
        SVG_USAGE_PREFIX + "output_tokens": usage.output_tokens,
        SVG_USAGE_PREFIX + "reasoning_tokens": usage.reasoning_tokens,
    }
    return present(found)


def parts_attributes(parts: Mapping[str, Cost]) -> Attributes:
    """The cost attributes of a call priced in parts (image, mainline, svg_author).

    The image part gives `openai.image.cost.source`, its pricing version and unpriced reason;
    every priced part adds its components; `gen_ai.usage.cost` is the sum of the priced parts,
    absent when none was priced (cost-model rule 13).
    """
    image = parts.get(PART_IMAGE)
    attributes = cost_attributes(image) if image is not None else {}
    total = None
    for cost in parts.values():
        part_total = cost.total
        if part_total is None:
            continue
        total = part_total if total is None else total + part_total
        for name, value in cost.components.items():
            attributes[COST_COMPONENT_PREFIX + name] = float(value)
    if total is not None:
        attributes[USAGE_COST] = float(total)
    return attributes


@dataclass(frozen=True, slots=True)
class Instruments:
    """The metric instruments of the contract, created once per meter."""

    cost: Counter
    generated: Counter
    partial_images: Counter
    unpriced: Counter
    token_usage: Histogram
    duration: Histogram

    @classmethod
    def create(cls, meter: Meter) -> Instruments:
        return cls(
            cost=meter.create_counter(
                "openai.image.cost", unit="USD", description="Estimated cost of OpenAI image calls"
            ),
            generated=meter.create_counter(
                "openai.image.generated", unit="{image}", description="Final images received"
            ),
            partial_images=meter.create_counter(
                "openai.image.partial_images",
                unit="{image}",
                description="Partial images received while streaming",
            ),
            unpriced=meter.create_counter(
                "openai.image.unpriced",
                unit="{call}",
                description="Image calls whose cost could not be estimated",
            ),
            token_usage=meter.create_histogram(
                GEN_AI_CLIENT_TOKEN_USAGE,
                unit="{token}",
                description="Number of input and output tokens used.",
                explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
            ),
            duration=meter.create_histogram(
                GEN_AI_CLIENT_OPERATION_DURATION,
                unit="s",
                description="GenAI operation duration.",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            ),
        )


def record_success(
    instruments: Instruments,
    labels: Mapping[str, AttributeValue],
    histogram_labels: Mapping[str, AttributeValue],
    *,
    parts: Mapping[str, Cost],  # cost part -> its cost, priced or not
    images: int,
    partial_images: int,
    tokens: tuple[tuple[str, str, int], ...],  # (cost part, token type, count)
    duration_s: float,
) -> None:
    """Record a call that returned: every counter once, and the histograms.

    Each cost part is one point: on `openai.image.cost` when priced (with its own source), else on
    `openai.image.unpriced` with its reason."""
    for part, cost in parts.items():
        amount = cost.total
        if amount is not None:
            instruments.cost.add(
                float(amount), {**labels, IMAGE_COST_PART: part, IMAGE_COST_SOURCE: cost.source}
            )
        elif cost.unpriced_reason is not None:
            instruments.unpriced.add(
                1, {**labels, IMAGE_COST_PART: part, IMAGE_UNPRICED_REASON: cost.unpriced_reason}
            )
    if images:
        instruments.generated.add(images, labels)
    if partial_images:
        instruments.partial_images.add(partial_images, labels)
    for part, token_type, count in tokens:
        instruments.token_usage.record(
            count, {**histogram_labels, IMAGE_COST_PART: part, TOKEN_TYPE: token_type}
        )
    instruments.duration.record(duration_s, histogram_labels)


def record_failure(instruments: Instruments, labels: Mapping[str, AttributeValue], duration_s: float) -> None:
    """A call the SDK failed costs nothing: only its duration is recorded, with `error.type`."""
    instruments.duration.record(duration_s, labels)
