"""Text (mainline) model prices of a Responses call, from genai-prices (cost-model.md rule 5).

Image-model prices are ours (`prices.yaml`); text-model prices are genai-prices' bundled data,
kept current by its maintainers. Resolving them costs ~60 µs a call, so a model's rates are
resolved once and applied with the same Decimal arithmetic.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final

from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import ModelPrice, StartDateConstraint, TieredPrices

from .cost import Cost, SvgAuthorUsage
from .memo import BoundedMemo

__all__ = ["SVG_AUTHOR", "price_svg_author", "price_text_model"]

SVG_AUTHOR: Final = "svg_author"  # the cost component and cost part of the SVG author's tokens


def price_svg_author(usage: SvgAuthorUsage) -> Cost:
    """The SVG author's part of an SVG call (rule 9), at its model's text prices from genai-prices.

    Reasoning tokens are a part of `output_tokens` and are not added again. Unpriced with reason
    `unknown_svg_model` when genai-prices does not know the model, `invalid_usage` when the counts
    cannot be right."""
    if not usage.valid:
        return Cost("unknown", MappingProxyType({}), None, "invalid_usage")
    amount = None
    if usage.model is not None:
        amount = price_text_model(
            usage.model, input_tokens=usage.input_tokens, cached_tokens=0, output_tokens=usage.output_tokens
        )
    if amount is None:
        return Cost("unknown", MappingProxyType({}), None, "unknown_svg_model")
    return Cost("usage", MappingProxyType({SVG_AUTHOR: amount}), None)


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


_TEXT_PRICES: BoundedMemo[tuple[str, str | None], _TextPrices] = BoundedMemo(1024)
_TEXT_PRICES_LOCK = threading.Lock()


def _remember_text_prices(key: tuple[str, str | None], known: _TextPrices) -> None:
    with _TEXT_PRICES_LOCK:
        _TEXT_PRICES.remember(key, known)


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
