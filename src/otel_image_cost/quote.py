"""What a planned image call will cost before it is made: the plugin's own estimate (cost-model.md
rules 2 and 3), computed by the same cost engine from the same `ImageGeneration` the plugin builds
for a call whose response reports no usage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from .cost import ImageGeneration, price_image_generation
from .errors import InputError
from .prices import PriceTable, load_price_table

__all__ = ["OUTPUT_FORMATS", "Quote", "quote"]

OUTPUT_FORMATS: Final = ("png", "jpeg", "webp", "gif")
"""Formats a quote accepts; the cost engine decides (a GIF without usage has no published estimate).
SVG is refused: its author model's tokens are known only from the response's `svg_usage`."""

_SIZE: Final = re.compile(r"auto|[1-9]\d*x[1-9]\d*")


@dataclass(frozen=True, slots=True)
class Quote:
    """The estimate for one planned call: components (USD) that add up to `total`."""

    model: str
    quality: str | None
    size: str | None
    n: int
    partial_images: int
    prompt_chars: int
    output_format: str | None
    source: str  # "estimate" (token models) or "per_image" (DALL-E)
    components: Mapping[str, Decimal]
    total: Decimal
    pricing_version: str


def quote(
    model: str,
    *,
    quality: str | None = None,
    size: str | None = None,
    n: int = 1,
    partial_images: int = 0,
    prompt: str | None = None,
    prompt_chars: int | None = None,
    output_format: str | None = None,
    prices: PriceTable | None = None,
    prices_path: str | None = None,
) -> Quote:
    """The cost of `n` images of `model` at `quality` and `size` (None or `auto`: the estimate's
    default), streamed with `partial_images` previews, for `prompt` (or a prompt of `prompt_chars`
    characters). Uses `prices`, else the built-in table with `prices_path` merged over it.

    Raises `InputError` for anything the estimate cannot price (unknown model, malformed size, a
    quality or size the model has no price for, GIF or SVG output), naming the engine's reason.
    """
    if prompt is not None and prompt_chars is not None:
        raise InputError("give the prompt or its length (prompt_chars), not both")
    chars = len(prompt) if prompt is not None else prompt_chars or 0
    _require_count("n", n, 1)
    _require_count("partial_images", partial_images, 0)
    _require_count("prompt_chars", chars, 0)
    if size is not None and not _SIZE.fullmatch(size):
        raise InputError(f"malformed size {size!r}: expected WIDTHxHEIGHT (e.g. 1024x1536) or auto")
    if output_format is not None and output_format not in OUTPUT_FORMATS:
        raise InputError(
            f"output format {output_format!r} cannot be quoted: expected one of {', '.join(OUTPUT_FORMATS)} "
            "(an SVG author's tokens are known only from the response's usage)"
        )
    table = prices if prices is not None else load_price_table(prices_path)
    if table.lookup(model) is None:
        raise InputError(f"unknown model {model!r}: the price table has {', '.join(sorted(table.models))}")
    generation = ImageGeneration(
        model=model,
        quality=quality,
        size=size,
        images=n,
        partial_images=partial_images,
        prompt_chars=chars,
        output_format=output_format,
    )
    cost = price_image_generation(generation, table)
    total = cost.total
    if total is None:
        raise InputError(
            f"{model} at quality {quality or 'auto'}, size {size or 'auto'}"
            f"{', ' + output_format if output_format else ''} cannot be quoted: {cost.unpriced_reason}"
        )
    return Quote(
        model=model,
        quality=quality,
        size=size,
        n=n,
        partial_images=partial_images,
        prompt_chars=chars,
        output_format=output_format,
        source=cost.source,
        components=cost.components,
        total=total,
        pricing_version=table.version,
    )


def _require_count(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
