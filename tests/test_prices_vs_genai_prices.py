"""Our image-model prices against genai-prices' bundled data, so an upstream price change fails a test.

genai-prices stores image models per 1M tokens as `input_mtok` (text in), `cache_read_mtok` (cached
text), `input_image_mtok`, `cache_image_read_mtok`, and output either as `output_image_mtok` (image
out, with `output_mtok` then the text-output price) or, for models without a text-output price,
as `output_mtok` alone (all output is image output).
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price
from genai_prices.types import ClauseEquals, ClauseOr, MatchLogic, ModelInfo, ModelPrice

from otel_image_cost.prices import PriceTable, TokenModelPrices, TokenPrices, load_price_table

IN_GENAI_PRICES = [
    "gpt-image-1",
    "gpt-image-1-mini",
    "gpt-image-1.5",
    "chatgpt-image-latest",
    "gpt-image-2",
    "gpt-image-2.5-sunburst",
    "gpt-image-2.5-flare",
]
NOT_IN_GENAI_PRICES = ["gpt-image-2.6-sunburst", "gpt-image-2.6-flare"]


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return load_price_table()


def genai_model(model: str) -> tuple[ModelInfo, ModelPrice]:
    calculation = calc_price(Usage(), model, provider_id="openai")
    return calculation.model, calculation.model_price


def per_million(tokens: TokenPrices, key: str) -> Decimal | None:
    value: Decimal | None = getattr(tokens, key)
    return None if value is None else value.scaleb(6)


def test_every_token_model_is_classified(table: PriceTable) -> None:
    token_models = {name for name, row in table.models.items() if isinstance(row, TokenModelPrices)}
    assert token_models == set(IN_GENAI_PRICES) | set(NOT_IN_GENAI_PRICES)


@pytest.mark.parametrize("model", IN_GENAI_PRICES)
def test_token_prices_equal_genai_prices(table: PriceTable, model: str) -> None:
    row = table.lookup(model)
    assert isinstance(row, TokenModelPrices)
    info, theirs = genai_model(model)
    assert info.id == model  # genai-prices matched this very model, not a look-alike
    ours = row.tokens
    assert per_million(ours, "input_text") == theirs.input_mtok
    assert per_million(ours, "input_cached_text") == theirs.cache_read_mtok
    assert per_million(ours, "input_image") == theirs.input_image_mtok
    assert per_million(ours, "input_cached_image") == theirs.cache_image_read_mtok
    if theirs.output_image_mtok is None:
        # genai-prices has no separate image-output price: all output at `output_mtok`, as ours
        assert per_million(ours, "output_image") == theirs.output_mtok
        assert ours.text_output_as_image
    else:
        assert per_million(ours, "output_image") == theirs.output_image_mtok
        assert per_million(ours, "output_text") == theirs.output_mtok


@pytest.mark.parametrize("model", NOT_IN_GENAI_PRICES)
def test_models_genai_prices_does_not_have(model: str) -> None:
    """When genai-prices adds these, move them to IN_GENAI_PRICES so they are cross-checked too."""
    with pytest.raises(LookupError):
        genai_model(model)


def exact_names(match: MatchLogic) -> list[str]:
    if isinstance(match, ClauseEquals):
        return [match.equals]
    if isinstance(match, ClauseOr):
        return [name for clause in match.or_ for name in exact_names(clause)]
    raise AssertionError(f"unexpected match clause {match!r}")


@pytest.mark.parametrize("model", IN_GENAI_PRICES)
def test_every_name_genai_prices_knows_resolves_to_the_same_row(table: PriceTable, model: str) -> None:
    """genai-prices' aliases of an image model (dated snapshots) find the same row in our table."""
    info, _ = genai_model(model)
    names = exact_names(info.match)
    assert model in names
    for name in names:
        row = table.lookup(name)
        assert row is not None and row.model == model, name
