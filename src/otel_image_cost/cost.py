"""The cost engine: plain data in, plain data out, `Decimal` USD (cost-model.md rules 1-4 and 7).

Nothing here knows about the SDK or OpenTelemetry, so every rule can be tested with literals.
The value classes are slotted but not frozen: several are built per call, and a frozen
dataclass sets each field through `object.__setattr__` (about five times the cost). Nothing
changes them once built.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Final, TypeVar

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
    "INVALID_COUNT",
    "MAX_COUNT",
    "MAX_SIZE_SIDE",
    "Cost",
    "ImageGeneration",
    "ImageTokenUsage",
    "SvgAuthorUsage",
    "estimated_output_tokens",
    "price_image_generation",
    "split_cost",
]

_AUTO: Final = "auto"
_GIF: Final = "gif"
_SIZE_RE: Final = re.compile(r"([0-9]{1,6})x([0-9]{1,6})")
# Rule 11: usage that cannot be right is never priced.
MAX_COUNT: Final = 10**9
MAX_SIZE_SIDE: Final = 16384
INVALID_COUNT: Final = -1  # what extraction records for a count present but not an integer
# gpt-image-2+ sizes: the long side at most 3 times the short one.
_FORMULA_MAX_ASPECT: Final = 3
# gpt-image-2+ size formula constants (cost-model.md): ceil(f * s * (2_000_000 + w*h) / 4_000_000).
_FORMULA_PIXEL_OFFSET: Final = 2_000_000
_FORMULA_DIVISOR: Final = 4_000_000
# split_cost never works in a unit coarser than 1e-12 USD.
_SPLIT_MAX_EXPONENT: Final = -12

_T = TypeVar("_T")


@dataclass(slots=True)
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
    # Rule 11, decided once (every consumer asks): every count an integer in 0..10^9, no detail
    # or cached count above its total.
    valid: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.valid = self._plausible()

    def _plausible(self) -> bool:
        counts = (
            self.input_tokens,
            self.output_tokens,
            self.input_text_tokens,
            self.input_image_tokens,
            self.cached_tokens,
            self.cached_text_tokens,
            self.cached_image_tokens,
            self.output_image_tokens,
            self.output_text_tokens,
        )
        for count in counts:  # `plausible_count`, inline: this runs for every usage read
            if count is not None and not (type(count) is int and 0 <= count <= MAX_COUNT):
                return False
        text_in, image_in = self.input_text_tokens or 0, self.input_image_tokens or 0
        cached = (self.cached_text_tokens or 0) + (self.cached_image_tokens or 0)
        return (
            text_in + image_in <= self.input_tokens
            and (self.output_image_tokens or 0) + (self.output_text_tokens or 0) <= self.output_tokens
            and (self.cached_tokens or 0) <= self.input_tokens
            and cached <= self.input_tokens
            and (self.input_text_tokens is None or (self.cached_text_tokens or 0) <= text_in)
            and (self.input_image_tokens is None or (self.cached_image_tokens or 0) <= image_in)
        )


def plausible_count(count: object) -> bool:
    """A token or image count that can be right: an integer (not a bool) in 0..10^9."""
    return type(count) is int and 0 <= count <= MAX_COUNT


@dataclass(slots=True)
class SvgAuthorUsage:
    """The SVG author model's tokens (`svg_usage`), billed beside the image's (rule 9)."""

    model: str | None
    input_tokens: int
    output_tokens: int  # reasoning included
    reasoning_tokens: int | None = None

    @property
    def valid(self) -> bool:
        """Rule 11: every count an integer in 0..10^9, no more reasoning than output tokens."""
        reasoning = self.reasoning_tokens or 0
        counts = (self.input_tokens, self.output_tokens, reasoning)
        return all(plausible_count(count) for count in counts) and reasoning <= self.output_tokens


@dataclass(slots=True)
class ImageGeneration:
    """What is priced: the images of one call (or of one Responses image item)."""

    model: str | None  # image model to price; None = could not be resolved
    quality: str | None  # effective quality (as reported, else requested, else None)
    size: str | None  # effective size "WxH" or "auto" or None
    images: int  # final images received (or n when nothing was received yet)
    partial_images: int = 0  # partial images received while streaming
    prompt_chars: int | None = None  # len(prompt) for estimating input text tokens
    usage: ImageTokenUsage | None = None
    output_format: str | None = None  # effective output format: `gif` without usage is not estimated
    unpriced_reason: str | None = (
        None  # set by the caller when model is None: "no_model", "unknown_deployment"
    )


@dataclass(slots=True)
class Cost:
    """A priced (or unpriceable) call; components add up to the total."""

    source: str  # "usage" | "estimate" | "per_image" | "unknown"
    # keys among: input_text, input_cached, input_image, output_image, output_text, partial_images,
    # mainline, svg_author
    components: Mapping[str, Decimal]
    pricing_version: str | None
    unpriced_reason: str | None = None  # "unknown_model", "no_usage", "no_model", "missing_price", ...
    # Sum of the components, None when the call could not be priced; summed once (read often).
    total: Decimal | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.total = None if self.source == "unknown" else sum(self.components.values(), Decimal(0))


class _Unpriceable(Exception):
    """Raised inside the engine when a call cannot be priced; becomes a `source=unknown` Cost."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# (component, count, USD per unit): the engine's internal bill of materials.
_Line = tuple[str, int, Decimal | None]


def price_image_generation(generation: ImageGeneration, prices: PriceTable) -> Cost:
    """Price one call's images: reported usage, else an estimate, else per image; never a guess.

    A GIF with no reported usage is unpriced (`no_usage_gif`, rule 10)."""
    try:
        if generation.model is None:
            raise _Unpriceable(generation.unpriced_reason or "no_model")
        row = prices.lookup(generation.model)
        if row is None:
            raise _Unpriceable("unknown_model")
        if not (plausible_count(generation.images) and plausible_count(generation.partial_images)):
            raise _Unpriceable("invalid_usage")
        if isinstance(row, PerImageModelPrices):
            return _bill("per_image", _per_image_lines(generation, row), prices.version)
        if generation.usage is not None:
            if not generation.usage.valid:
                raise _Unpriceable("invalid_usage")
            return _bill("usage", _usage_lines(generation.usage, row), prices.version)
        if generation.output_format == _GIF:
            raise _Unpriceable("no_usage_gif")  # rule 10: no published per-frame table
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


def split_cost(cost: Cost, weights: Sequence[int]) -> list[Cost]:
    """Shares of `cost` proportional to `weights` (rule 7) whose components add up exactly to the whole.

    Each component is split in units of 1e-12 USD (finer if the component itself is finer) by the
    largest-remainder method; all-zero weights split equally. One share is the cost itself (a
    Responses call with one image, the common case, skips rescaling every component: ~4.5 µs).
    """
    if any(weight < 0 for weight in weights):
        raise ValueError(f"weights must be >= 0, got {list(weights)}")
    if len(weights) < 2:
        return [cost] * len(weights)
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
        amount = count * unit_price
        earlier = components.get(name)
        components[name] = amount if earlier is None else earlier + amount
    cost = Cost(source, MappingProxyType(components), pricing_version)
    if cost.total is not None and not math.isfinite(float(cost.total)):
        raise _Unpriceable("invalid_usage")  # finite in Decimal, but not as the float USD we emit
    return cost


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
    width, height = _size_sides(size)
    short, long = sorted((width, height))
    if long > _FORMULA_MAX_ASPECT * short:
        raise _Unpriceable("unknown_size")
    # round_half_up(factor * short / long) in exact integer arithmetic
    scale = (2 * factor * short + long) // (2 * long)
    return -(-factor * scale * (_FORMULA_PIXEL_OFFSET + width * height) // _FORMULA_DIVISOR)


def _size_sides(size: str) -> tuple[int, int]:
    """(width, height) of a `WxH` size with both sides in 1..16384; else the call is unpriced."""
    match = _SIZE_RE.fullmatch(size)
    if match is None:
        raise _Unpriceable("unknown_size")
    width, height = int(match.group(1)), int(match.group(2))
    if not (1 <= width <= MAX_SIZE_SIDE and 1 <= height <= MAX_SIZE_SIDE):
        raise _Unpriceable("unknown_size")
    return width, height


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
