"""The price table as a user sees it, and its check against the installed `openai` SDK and genai-prices.

A scheduled job runs the check: a model the SDK can call that the table cannot price would make
calls unpriced, and a row that no longer agrees with genai-prices means a price changed upstream.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from genai_prices import Usage, calc_price

from .extract_responses import documented_default_tool_model
from .prices import ImageModelPrices, PriceTable, TokenModelPrices

__all__ = ["PriceCheck", "check_prices", "sdk_image_models"]


@dataclass(frozen=True, slots=True)
class PriceCheck:
    """What `prices --check` found; `ok` when nothing would be unpriced and nothing disagrees."""

    sdk_models: dict[str, str]  # model -> where the installed SDK names it
    unpriced: list[str]  # SDK-named models the table cannot price
    disagreements: list[str]  # "model: field ours X, genai-prices Y"
    not_in_genai_prices: list[str]  # our token models genai-prices does not know (nothing to compare)

    @property
    def ok(self) -> bool:
        return not self.unpriced and not self.disagreements


def sdk_image_models() -> dict[str, str]:
    """Every image model name the installed `openai` SDK declares, with where it declares it:
    the Images API's `ImageModel` literal, the Responses image tool's `model` literal, and the
    tool's documented default (the model used when a tool entry names none)."""
    from openai.types import image_model
    from openai.types.responses import tool

    found: dict[str, str] = {}
    for name in _literal_strings(image_model.ImageModel):
        found.setdefault(name, "openai.types.ImageModel")
    for name in _literal_strings(tool.ImageGeneration.model_fields["model"].annotation):
        found.setdefault(name, "openai.types.responses.tool.ImageGeneration.model")
    default = documented_default_tool_model(inspect.getsource(tool))
    if default is not None:
        found.setdefault(default, "the image tool's documented default model")
    return found


def check_prices(table: PriceTable) -> PriceCheck:
    """Compare `table` with the installed SDK's image models and with genai-prices' image-model rows."""
    sdk_models = sdk_image_models()
    unpriced = sorted(model for model in sdk_models if table.lookup(model) is None)
    disagreements: list[str] = []
    not_in_genai_prices: list[str] = []
    for name, row in sorted(table.models.items()):
        if not isinstance(row, TokenModelPrices):
            continue  # genai-prices has no per-image (DALL-E) prices
        theirs = _genai_prices_row(name)
        if theirs is None:
            not_in_genai_prices.append(name)
            continue
        disagreements.extend(
            f"{name}: {field} ours {_show(ours)}, genai-prices {_show(upstream)}"
            for field, ours, upstream in _compared_prices(row, theirs)
            if ours != upstream
        )
    return PriceCheck(sdk_models, unpriced, disagreements, not_in_genai_prices)


def price_rows(table: PriceTable) -> list[ImageModelPrices]:
    """The table's rows in name order (what `prices` prints)."""
    return [table.models[name] for name in sorted(table.models)]


def _literal_strings(annotation: object) -> Iterator[str]:
    """The string values of every `Literal[...]` inside a type annotation (through Union/Optional)."""
    if typing.get_origin(annotation) is typing.Literal:
        yield from (value for value in typing.get_args(annotation) if isinstance(value, str))
        return
    for argument in typing.get_args(annotation):
        yield from _literal_strings(argument)


def _genai_prices_row(model: str) -> typing.Any:
    """genai-prices' current OpenAI price of exactly `model` (a look-alike match is not it), or None."""
    try:
        calculation = calc_price(Usage(), model, provider_id="openai")
    except LookupError:
        return None
    return calculation.model_price if calculation.model.id == model else None


def _compared_prices(row: TokenModelPrices, theirs: typing.Any) -> list[tuple[str, object, object]]:
    """(field, ours per 1M tokens, genai-prices per 1M tokens) for every price both name.

    genai-prices stores `input_mtok`, `cache_read_mtok`, `input_image_mtok`,
    `cache_image_read_mtok`, and output either as `output_image_mtok` plus `output_mtok` (text
    out) or, for a model without a text-output price, as `output_mtok` alone.
    """
    tokens = row.tokens

    def per_million(value: Decimal | None) -> Decimal | None:
        return None if value is None else value.scaleb(6).normalize()

    def upstream(value: object) -> object:
        return value.normalize() if isinstance(value, Decimal) else value

    compared: list[tuple[str, object, object]] = [
        ("input_text", per_million(tokens.input_text), upstream(theirs.input_mtok)),
        ("input_cached_text", per_million(tokens.input_cached_text), upstream(theirs.cache_read_mtok)),
        ("input_image", per_million(tokens.input_image), upstream(theirs.input_image_mtok)),
        (
            "input_cached_image",
            per_million(tokens.input_cached_image),
            upstream(theirs.cache_image_read_mtok),
        ),
    ]
    if theirs.output_image_mtok is None:
        compared.append(("output_image", per_million(tokens.output_image), upstream(theirs.output_mtok)))
        compared.append(
            (
                "output_text",
                "billed_as_image_output" if tokens.text_output_as_image else per_million(tokens.output_text),
                "billed_as_image_output",
            )
        )
    else:
        compared.append(
            ("output_image", per_million(tokens.output_image), upstream(theirs.output_image_mtok))
        )
        compared.append(("output_text", per_million(tokens.output_text), upstream(theirs.output_mtok)))
    return compared


def _show(value: object) -> str:
    if isinstance(value, Decimal):
        return f"{value:f}"  # 40, not 4E+1
    return "none" if value is None else str(value)
