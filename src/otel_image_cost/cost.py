"""The cost engine: plain data in, plain data out, `Decimal` USD (cost-model.md rules 1-4, 5 and 7).

Nothing here knows about the SDK or OpenTelemetry, so every rule can be tested with literals.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final, TypeVar

from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import ModelPrice, StartDateConstraint, TieredPrices

from .prices import (
    EstimateDefaults,
    PerImageEstimate,
    PerImageModelPrices,
    PriceTable,
    SizeFormulaEstimate,
    TokenModelPrices,
    TokenTableEstimate,
)

__all__ = [
    "Cost",
    "ImageGeneration",
    "ImageTokenUsage",
    "estimated_output_tokens",
    "price_image_generation",
    "price_text_model",
    "split_cost",
]

_AUTO: Final = "auto"
_SIZE_RE: Final = re.compile(r"([1-9]\d*)x([1-9]\d*)")
# gpt-image-2+ size formula constants (cost-model.md): ceil(f * s * (2_000_000 + w*h) / 4_000_000).
_FORMULA_PIXEL_OFFSET: Final = 2_000_000
_FORMULA_DIVISOR: Final = 4_000_000
# split_cost never works in a unit coarser than 1e-12 USD.
_SPLIT_MAX_EXPONENT: Final = -12

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ImageTokenUsage:
    """An image model's token usage exactly as a response reported it (None = field absent)."""

    input_tokens: int
    output_tokens: int
    input_text_tokens: int | None = None  # input_tokens_details.text_tokens
    input_image_tokens: int | None = None  # input_tokens_details.image_tokens
    cached_tokens: int | None = None  # input_tokens_details.cached_tokens (bare count)
    cached_text_tokens: int | None = None  # ...cached_tokens_details.cached_text_tokens
    cached_image_tokens: int | None = None  # ...cached_tokens_details.cached_image_tokens
    output_image_tokens: int | None = None  # output_tokens_details.image_tokens
    output_text_tokens: int | None = None  # output_tokens_details.text_tokens


@dataclass(frozen=True, slots=True)
class ImageGeneration:
    """What is priced: the images of one call (or of one Responses image item)."""

    model: str | None  # image model to price; None = could not be resolved
    quality: str | None  # effective quality (as reported, else requested, else None)
    size: str | None  # effective size "WxH" or "auto" or None
    images: int  # final images received (or n when nothing was received yet)
    partial_images: int = 0  # partial images received while streaming
    prompt_chars: int | None = None  # len(prompt) for estimating input text tokens
    usage: ImageTokenUsage | None = None
    unpriced_reason: str | None = (
        None  # set by the caller when model is None: "no_model", "unknown_deployment"
    )


@dataclass(frozen=True, slots=True)
class Cost:
    """A priced (or unpriceable) call; components add up to the total."""

    source: str  # "usage" | "estimate" | "per_image" | "unknown"
    # keys among: input_text, input_cached, input_image, output_image, output_text, partial_images, mainline
    components: Mapping[str, Decimal]
    pricing_version: str | None
    unpriced_reason: str | None = None  # "unknown_model", "no_usage", "no_model", "missing_price", ...

    @property
    def total(self) -> Decimal | None:
        """Sum of the components; None when the call could not be priced."""
        if self.source == "unknown":
            return None
        return sum(self.components.values(), Decimal(0))


class _Unpriceable(Exception):
    """Raised inside the engine when a call cannot be priced; becomes a `source=unknown` Cost."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# (component, count, USD per unit): the engine's internal bill of materials.
_Line = tuple[str, int, Decimal | None]


def price_image_generation(generation: ImageGeneration, prices: PriceTable) -> Cost:
    """Price one call's images: reported usage, else an estimate, else per image; never a guess."""
    try:
        if generation.model is None:
            raise _Unpriceable(generation.unpriced_reason or "no_model")
        row = prices.lookup(generation.model)
        if row is None:
            raise _Unpriceable("unknown_model")
        if isinstance(row, PerImageModelPrices):
            return _bill("per_image", _per_image_lines(generation, row), prices.version)
        if generation.usage is not None:
            return _bill("usage", _usage_lines(generation.usage, row), prices.version)
        return _bill("estimate", _estimate_lines(generation, row, prices.estimate_defaults), prices.version)
    except _Unpriceable as unpriceable:
        return Cost("unknown", MappingProxyType({}), prices.version, unpriceable.reason)


def estimated_output_tokens(
    model: str, quality: str | None, size: str | None, prices: PriceTable
) -> int | None:
    """Output tokens of one image as the estimate would count them (rule-7 weights); None if unknown."""
    row = prices.lookup(model)
    if not isinstance(row, TokenModelPrices):
        return None
    try:
        units, unit_price = _image_output(row, quality, size, prices.estimate_defaults)
    except _Unpriceable:
        return None
    if not isinstance(row.estimate, PerImageEstimate):
        return units
    # A per-image USD estimate is turned back into tokens at the model's image-output price.
    if unit_price is None or not row.tokens.output_image:
        return None
    return math.ceil(unit_price / row.tokens.output_image)


def price_text_model(
    model: str, *, input_tokens: int, cached_tokens: int, output_tokens: int, service_tier: str | None = None
) -> Decimal | None:
    """The mainline model of a Responses call (rule 5), from genai-prices' bundled data (no network).

    None when genai-prices does not know the model. Raises ValueError on inconsistent counts
    (e.g. more cached tokens than input tokens).

    The result is always `calc_price`'s. A model's prices are resolved once per (model, service
    tier) and genai-prices data snapshot (for the day, where a price starts on a date), then each
    call is priced with the Decimal arithmetic `calc_price` does (`_LinearTextPrices`): ~2 µs
    instead of ~60. Prices that change with the time of day or that are not per-unit rates, and
    counts `calc_price` would reject, go through `calc_price` itself.
    """
    key = (model, service_tier)
    known = _TEXT_PRICES.get(key)
    snapshot = get_snapshot()
    if known is not None and known.snapshot is snapshot:
        if known.unknown_model:
            return None
        if known.linear is not None and (known.day is None or known.day == _utc_today()):
            total = known.linear.total(input_tokens, cached_tokens, output_tokens)
            if total is not None:
                return total
    usage = Usage(input_tokens=input_tokens, cache_read_tokens=cached_tokens, output_tokens=output_tokens)
    try:
        calculation = calc_price(
            usage,
            model,
            provider_id="openai",
            price_context={"service_tier": service_tier} if service_tier else None,
        )
    except LookupError as exc:
        if type(exc) is LookupError:  # genai-prices' "no such model": the same until its data changes
            _remember_text_prices(key, _TextPrices(snapshot, unknown_model=True))
        return None
    if known is None or known.snapshot is not snapshot or known.day is not None:
        counts = (input_tokens, cached_tokens, output_tokens)
        _remember_text_prices(key, _resolve_text_prices(snapshot, calculation, service_tier, counts))
    return calculation.total_price


# `calc_price`'s usage keys for the counts a Responses call reports, in `price_text_model`'s order.
_TEXT_USAGE_KEYS: Final = ("input_tokens", "cache_read_tokens", "output_tokens")
_TEXT_PRICES_CAPACITY: Final = 1024


# A unit's rate: one Decimal, or tiered as (base, ((start, rate), ...) highest start first), where
# the rate of the highest tier whose start the call's input tokens exceed applies to every unit.
_Rate = Decimal | tuple[Decimal, tuple[tuple[int, Decimal], ...]]


@dataclass(frozen=True, slots=True)
class _LinearTextPrices:
    """A model's per-unit rates, in the order `calc_price` adds them up.

    Each term is (rate, per, and the unit's billed count as integer coefficients of the
    input, cached and output counts): the count `calc_price` derives for that unit (a unit's
    reported count minus the counts of its priced, more specific units).
    """

    terms: tuple[tuple[_Rate, int, int, int, int], ...]

    def total(self, input_tokens: int, cached_tokens: int, output_tokens: int) -> Decimal | None:
        """`calc_price(...).total_price`; None where `calc_price` must decide (it would raise)."""
        if (
            type(input_tokens) is not int
            or type(cached_tokens) is not int
            or type(output_tokens) is not int
            or input_tokens < 0
            or cached_tokens < 0
            or output_tokens < 0
        ):
            return None
        total = Decimal(0)
        for rate, per, of_input, of_cached, of_output in self.terms:
            count = of_input * input_tokens + of_cached * cached_tokens + of_output * output_tokens
            if count < 0:
                return None
            if isinstance(rate, tuple):
                base, tiers = rate
                rate = next((price for start, price in tiers if input_tokens > start), base)
            total += rate * Decimal(count) / per
        return total


@dataclass(frozen=True, slots=True)
class _TextPrices:
    """What is known of one (model, service tier) under one genai-prices data snapshot."""

    snapshot: object
    unknown_model: bool = False
    linear: _LinearTextPrices | None = None  # None: price every call with `calc_price`
    day: date | None = None  # the UTC day `linear` holds for, when a dated price applies


_TEXT_PRICES: dict[tuple[str, str | None], _TextPrices] = {}
_TEXT_PRICES_LOCK = threading.Lock()


def _remember_text_prices(key: tuple[str, str | None], known: _TextPrices) -> None:
    with _TEXT_PRICES_LOCK:
        if key not in _TEXT_PRICES and len(_TEXT_PRICES) >= _TEXT_PRICES_CAPACITY:
            _TEXT_PRICES.clear()
        _TEXT_PRICES[key] = known


def _utc_today() -> date:
    """The request date `calc_price` uses to choose dated prices (`datetime.now(tz=UTC)`'s date)."""
    return datetime.now(tz=UTC).date()


def _resolve_text_prices(
    snapshot: object, calculation: Any, service_tier: str | None, counts: tuple[int, int, int]
) -> _TextPrices:
    """The prices `calculation` used, as per-unit rates, when every later call would use them too.

    They hold for every call while genai-prices' data snapshot stays the same, unless the model
    has prices that change with the time of day (then: `calc_price` every time) or with the date
    (then: for the current UTC day). A model with tiered prices, or whose prices `calc_price`
    applies in a way not mirrored here, is priced with `calc_price` every time. The rates are
    checked against `calculation` itself before they are used.
    """
    slow = _TextPrices(snapshot)
    try:
        day = _price_dates(calculation.model, service_tier)
        linear = _linear_text_prices(calculation.model_price)
    except Exception:  # _NotLinear, or genai-prices' internals read differently by another release
        return slow
    expected = calculation.total_price
    mirrored = linear.total(*counts)
    if mirrored is None or mirrored != expected or mirrored.as_tuple() != expected.as_tuple():
        return slow
    return _TextPrices(snapshot, linear=linear, day=_utc_today() if day else None)


class _NotLinear(Exception):
    """The model's prices are not plain per-unit rates fixed for the day."""


def _price_dates(model: Any, service_tier: str | None) -> bool:
    """Whether the model's prices for this tier depend on the date (raises if on the time of day)."""
    constraints = []
    if isinstance(model.prices, list):
        constraints += [conditional.constraint for conditional in model.prices]
    if service_tier:
        context = {"service_tier": service_tier}
        constraints += [
            variant.constraint
            for variant in model.price_variants or ()
            if all(context.get(name) == value for name, value in variant.when.items())
        ]
    dated = False
    for constraint in constraints:
        if constraint is None:
            continue
        if type(constraint) is not StartDateConstraint:
            raise _NotLinear
        dated = True
    return dated


def _linear_text_prices(model_price: Any) -> _LinearTextPrices:
    from genai_prices.units import _get_registry  # the unit definitions `calc_price` prices with

    registry = _get_registry()
    if type(model_price) is not ModelPrice:
        raise _NotLinear
    priced = []
    for price_key, rate in model_price.__dict__.items():
        if price_key.startswith("_") or rate is None:
            continue
        if not _valid_rate(rate):
            raise _NotLinear  # a value `calc_price` refuses
        try:
            unit = registry.unit_for_price_key(price_key)
        except KeyError:
            raise _NotLinear from None
        if unit.usage_key == "requests":
            raise _NotLinear
        if isinstance(rate, TieredPrices):
            tiers = tuple((tier.start, tier.price) for tier in reversed(rate.tiers))
            priced.append((unit, (rate.base, tiers)))
        else:
            priced.append((unit, rate))
    # A unit that is not among the reported counts: `calc_price` infers it, 0 when nothing
    # reported could belong to it; with every reported count positive, any conflict would show.
    probe = Usage(**dict.fromkeys(_TEXT_USAGE_KEYS, 1))
    for unit, _ in priced:
        if unit.usage_key not in _TEXT_USAGE_KEYS:
            try:
                if getattr(probe, unit.usage_key) != 0:
                    raise _NotLinear
            except ValueError:
                raise _NotLinear from None
    # A unit's billed count is its own count minus its priced, more specific units' billed counts.
    coefficients: dict[str, tuple[int, int, int]] = {}
    for unit, _ in sorted(priced, key=lambda pair: (-len(pair[0].dimensions), pair[0].usage_key)):
        own = tuple(int(unit.usage_key == key) for key in _TEXT_USAGE_KEYS)
        for other, _ in priced:
            if other is not unit and unit.dimensions.items() <= other.dimensions.items():
                own = tuple(a - b for a, b in zip(own, coefficients[other.usage_key], strict=True))
        coefficients[unit.usage_key] = (own[0], own[1], own[2])
    return _LinearTextPrices(tuple((rate, unit.per, *coefficients[unit.usage_key]) for unit, rate in priced))


def _valid_rate(rate: object) -> bool:
    if isinstance(rate, TieredPrices):
        starts = [tier.start for tier in rate.tiers]
        return (
            _valid_decimal(rate.base)
            and all(type(start) is int and start >= 0 for start in starts)
            and starts == sorted(starts)
            and all(_valid_decimal(tier.price) for tier in rate.tiers)
        )
    return _valid_decimal(rate)


def _valid_decimal(value: object) -> bool:
    return type(value) is Decimal and value.is_finite() and value >= 0


def split_cost(cost: Cost, weights: Sequence[int]) -> list[Cost]:
    """Shares of `cost` proportional to `weights` (rule 7) whose components add up exactly to the whole.

    Each component is split in units of 1e-12 USD (finer if the component itself is finer) by the
    largest-remainder method; all-zero weights split equally.
    """
    if any(weight < 0 for weight in weights):
        raise ValueError(f"weights must be >= 0, got {list(weights)}")
    if not weights:
        return []
    effective = list(weights) if any(weights) else [1] * len(weights)
    split_components = {name: _split_amount(amount, effective) for name, amount in cost.components.items()}
    return [
        Cost(
            cost.source,
            MappingProxyType({name: shares[index] for name, shares in split_components.items()}),
            cost.pricing_version,
            cost.unpriced_reason,
        )
        for index in range(len(effective))
    ]


def _split_amount(amount: Decimal, weights: Sequence[int]) -> list[Decimal]:
    own_exponent = amount.as_tuple().exponent
    if not isinstance(own_exponent, int):
        raise ValueError(f"cannot split a non-finite amount {amount}")
    exponent = min(own_exponent, _SPLIT_MAX_EXPONENT)
    units = int(amount.scaleb(-exponent))
    if len(weights) == 1:  # one share takes every unit (a Responses call with one image)
        return [Decimal(units).scaleb(exponent)]
    total_weight = sum(weights)
    floors = [units * weight // total_weight for weight in weights]
    leftover = units - sum(floors)
    # Hand the leftover units to the largest remainders (earliest share first on ties).
    by_remainder = sorted(range(len(weights)), key=lambda i: -(units * weights[i] % total_weight))
    for index in by_remainder[:leftover]:
        floors[index] += 1
    return [Decimal(share).scaleb(exponent) for share in floors]


def _bill(source: str, lines: Iterable[_Line], pricing_version: str) -> Cost:
    components: dict[str, Decimal] = {}
    for name, count, unit_price in lines:
        if count <= 0:
            continue
        if unit_price is None:
            raise _Unpriceable("missing_price")
        components[name] = components.get(name, Decimal(0)) + count * unit_price
    return Cost(source, MappingProxyType(components), pricing_version)


def _usage_lines(usage: ImageTokenUsage, row: TokenModelPrices) -> list[_Line]:
    """Rule 1: exactly the reported tokens; partial images are already included in them."""
    prices = row.tokens
    text_in, image_in = _pair(usage.input_tokens, usage.input_text_tokens, usage.input_image_tokens)
    if usage.cached_text_tokens is None and usage.cached_image_tokens is None:
        # A bare cached count is cached text up to the text count, the rest cached image.
        bare = usage.cached_tokens or 0
        cached_text = min(bare, text_in)
        cached_image = min(bare - cached_text, image_in)
    else:
        cached_text = min(usage.cached_text_tokens or 0, text_in)
        cached_image = min(usage.cached_image_tokens or 0, image_in)
    image_out, text_out = _pair(usage.output_tokens, usage.output_image_tokens, usage.output_text_tokens)
    if prices.text_output_as_image:
        image_out, text_out = image_out + text_out, 0
    return [
        ("input_text", text_in - cached_text, prices.input_text),
        ("input_cached", cached_text, prices.input_cached_text),
        ("input_cached", cached_image, prices.input_cached_image),
        ("input_image", image_in - cached_image, prices.input_image),
        ("output_image", image_out, prices.output_image),
        ("output_text", text_out, prices.output_text),
    ]


def _pair(total: int, first: int | None, second: int | None) -> tuple[int, int]:
    """Split a reported total by its details; no details at all means it is all `first`."""
    if first is None and second is None:
        return total, 0
    if first is None:
        return max(total - (second or 0), 0), second or 0
    if second is None:
        return first, max(total - first, 0)
    return first, second


def _estimate_lines(
    generation: ImageGeneration, row: TokenModelPrices, defaults: EstimateDefaults
) -> list[_Line]:
    """Rule 2: images x per-image output, partial previews, and the prompt's text tokens.

    The service bills the prompt once per image (recorded usage: input tokens scale with `n`), so
    the estimate does too; a call that delivered no image still had its prompt read once.
    """
    units, unit_price = _image_output(row, generation.quality, generation.size, defaults)
    prompt_tokens = math.ceil((generation.prompt_chars or 0) / defaults.prompt_chars_per_token)
    return [
        ("input_text", prompt_tokens * max(generation.images, 1), row.tokens.input_text),
        ("output_image", generation.images * units, unit_price),
        (
            "partial_images",
            generation.partial_images * defaults.partial_image_output_tokens,
            row.tokens.output_image,
        ),
    ]


def _image_output(
    row: TokenModelPrices, quality: str | None, size: str | None, defaults: EstimateDefaults
) -> tuple[int, Decimal | None]:
    """One image's estimated output as (units, USD per unit): tokens, or one image at its USD price."""
    rule = row.estimate
    if rule is None:
        raise _Unpriceable("no_usage")
    quality = _resolved(quality, defaults.quality)
    size = _resolved(size, defaults.size)
    if isinstance(rule, TokenTableEstimate):
        return _cell(rule.output_tokens_per_image, quality, size), row.tokens.output_image
    if isinstance(rule, PerImageEstimate):
        return 1, _cell(rule.usd_per_image, quality, size)
    return _formula_tokens(rule, quality, size), row.tokens.output_image


def _formula_tokens(rule: SizeFormulaEstimate, quality: str, size: str) -> int:
    factor = rule.factors.get(quality)
    if factor is None:
        raise _Unpriceable("unknown_quality")
    match = _SIZE_RE.fullmatch(size)
    if match is None:
        raise _Unpriceable("unknown_size")
    width, height = int(match.group(1)), int(match.group(2))
    short, long = sorted((width, height))
    # round_half_up(factor * short / long) in exact integer arithmetic
    scale = (2 * factor * short + long) // (2 * long)
    return -(-factor * scale * (_FORMULA_PIXEL_OFFSET + width * height) // _FORMULA_DIVISOR)


def _per_image_lines(generation: ImageGeneration, row: PerImageModelPrices) -> list[_Line]:
    """Rule 3: DALL-E price list by quality and size, everything in `output_image`."""
    quality = _resolved(generation.quality, row.default_quality)
    size = _resolved(generation.size, row.default_size)
    return [("output_image", generation.images, _cell(row.usd_per_image, quality, size))]


def _resolved(value: str | None, default: str) -> str:
    """`auto` or nothing reported: the table's default."""
    return default if value is None or value == _AUTO else value


def _cell(grid: Mapping[str, Mapping[str, _T]], quality: str, size: str) -> _T:
    by_size = grid.get(quality)
    if by_size is None:
        raise _Unpriceable("unknown_quality")
    value = by_size.get(size)
    if value is None:
        raise _Unpriceable("unknown_size")
    return value
