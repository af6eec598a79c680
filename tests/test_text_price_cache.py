"""`price_text_model` resolves a model's genai-prices rates once and prices later calls itself:
every result must be exactly `calc_price`'s (same value, same Decimal digits), for every OpenAI
model genai-prices knows, every service tier, cached tokens, tiered prices and bad counts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal

import genai_prices
import pytest
from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import DataSnapshot, get_snapshot, set_custom_snapshot

from otel_image_cost import text_prices
from otel_image_cost.text_prices import price_text_model

TIERS = [None, "default", "flex", "priority", "fast", "scale", "batch"]
# (input, cached, output): plain, cached, nothing, past gpt-5.4's 272k tier, all cached, cached > input
USAGES = [
    (1000, 0, 500),
    (1000, 200, 500),
    (0, 0, 0),
    (300_000, 10_000, 20_000),
    (272_000, 272_000, 1),
    (123_457, 98_765, 4_321),
    (5, 7, 1),
]


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    text_prices._TEXT_PRICES.clear()
    yield
    text_prices._TEXT_PRICES.clear()


def theirs(model: str, counts: tuple[int, int, int], tier: str | None) -> Decimal | type[Exception] | None:
    usage = Usage(input_tokens=counts[0], cache_read_tokens=counts[1], output_tokens=counts[2])
    try:
        return calc_price(
            usage, model, provider_id="openai", price_context={"service_tier": tier} if tier else None
        ).total_price
    except LookupError:
        return None
    except ValueError:
        return ValueError


def ours(model: str, counts: tuple[int, int, int], tier: str | None) -> Decimal | type[Exception] | None:
    try:
        return price_text_model(
            model, input_tokens=counts[0], cached_tokens=counts[1], output_tokens=counts[2], service_tier=tier
        )
    except ValueError:
        return ValueError


def same(a: object, b: object) -> bool:
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        return a == b and a.as_tuple() == b.as_tuple()
    return a == b


def openai_models() -> list[str]:
    provider = next(p for p in get_snapshot().providers if p.id == "openai")
    return [model.id for model in provider.models]


def test_every_openai_model_tier_and_usage_equals_calc_price() -> None:
    models = [*openai_models(), "gpt-5-2025-08-07", "GPT-4o", "no-such-model"]
    assert len(models) > 50
    checked = 0
    for model in models:
        for tier in TIERS:
            # The first call resolves the rates, the others use them; in both orders of usages.
            for counts in [*USAGES, *reversed(USAGES)]:
                expected = theirs(model, counts, tier)
                got = ours(model, counts, tier)
                assert same(got, expected), (model, tier, counts, got, expected)
                checked += 1
    assert checked > 5000


@pytest.mark.parametrize(
    ("model", "tier"),
    [
        ("gpt-5", None),
        ("gpt-5", "default"),
        ("gpt-5", "flex"),
        ("gpt-4.1", "priority"),
        ("gpt-5.4", "default"),
    ],
)
def test_later_calls_do_not_call_calc_price(
    model: str, tier: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = {counts: theirs(model, counts, tier) for counts in USAGES}
    ours(model, USAGES[0], tier)

    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError("calc_price called again")

    monkeypatch.setattr(text_prices, "calc_price", refuse)
    for counts in USAGES:
        if expected[counts] is not ValueError:  # bad counts are left to calc_price to reject
            assert same(ours(model, counts, tier), expected[counts])


def test_unknown_model_is_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    assert price_text_model("no-such-model", input_tokens=1, cached_tokens=0, output_tokens=1) is None
    monkeypatch.setattr(text_prices, "calc_price", lambda *a, **k: pytest.fail("looked up again"))
    assert price_text_model("no-such-model", input_tokens=1, cached_tokens=0, output_tokens=1) is None


def test_inconsistent_counts_still_raise_after_the_rates_are_known() -> None:
    assert price_text_model("gpt-4.1", input_tokens=1000, cached_tokens=400, output_tokens=100) == Decimal(
        "0.0022"
    )
    with pytest.raises(ValueError):
        price_text_model("gpt-4.1", input_tokens=1, cached_tokens=2, output_tokens=0)
    with pytest.raises(ValueError):
        price_text_model("gpt-4.1", input_tokens=-1, cached_tokens=0, output_tokens=0)


def test_dated_prices_are_resolved_again_on_another_day(monkeypatch: pytest.MonkeyPatch) -> None:
    # gpt-5's flex prices start on a date: the rates hold for the UTC day they were resolved on.
    ours("gpt-5", USAGES[1], "flex")
    known = text_prices._TEXT_PRICES[("gpt-5", "flex")]
    assert known.linear is not None and known.day is not None
    tomorrow = date.fromordinal(known.day.toordinal() + 1)
    monkeypatch.setattr(text_prices, "_utc_today", lambda: tomorrow)
    assert same(ours("gpt-5", USAGES[1], "flex"), theirs("gpt-5", USAGES[1], "flex"))
    assert text_prices._TEXT_PRICES[("gpt-5", "flex")].day == tomorrow
    # Undated prices (the default tier) never look at the clock.
    ours("gpt-5", USAGES[1], "default")
    assert text_prices._TEXT_PRICES[("gpt-5", "default")].day is None


def test_a_new_price_snapshot_is_used() -> None:
    before = price_text_model("gpt-5", input_tokens=1000, cached_tokens=0, output_tokens=0)
    assert before == Decimal("0.00125")
    snapshot = get_snapshot()
    cheaper = DataSnapshot(
        providers=_with_input_price(snapshot, "gpt-5", Decimal("0.5")), from_auto_update=True
    )
    set_custom_snapshot(cheaper)
    try:
        assert price_text_model("gpt-5", input_tokens=1000, cached_tokens=0, output_tokens=0) == Decimal(
            "0.0005"
        )
    finally:
        set_custom_snapshot(None)
    assert price_text_model("gpt-5", input_tokens=1000, cached_tokens=0, output_tokens=0) == before


def _with_input_price(
    snapshot: DataSnapshot, model_id: str, input_mtok: Decimal
) -> list[genai_prices.types.Provider]:
    import copy

    providers = copy.deepcopy(snapshot.providers)
    provider = next(p for p in providers if p.id == "openai")
    model = next(m for m in provider.models if m.id == model_id)
    assert isinstance(model.prices, genai_prices.types.ModelPrice)
    model.prices.input_mtok = input_mtok
    return providers


def test_time_of_day_prices_always_go_through_calc_price() -> None:
    import copy
    from datetime import time

    from genai_prices.types import ConditionalPrice, ModelPrice, TimeOfDateConstraint

    providers = copy.deepcopy(get_snapshot().providers)
    model = next(m for m in next(p for p in providers if p.id == "openai").models if m.id == "gpt-4.1")
    assert isinstance(model.prices, ModelPrice)
    off_peak = ModelPrice(input_mtok=Decimal("0.1"), output_mtok=Decimal("0.2"))
    whole_day = TimeOfDateConstraint(start_time=time(0, 0), end_time=time(23, 59, 59, 999999))
    model.prices = [ConditionalPrice(prices=model.prices), ConditionalPrice(whole_day, prices=off_peak)]
    set_custom_snapshot(DataSnapshot(providers=providers, from_auto_update=True))
    try:
        for counts in USAGES:
            assert same(ours("gpt-4.1", counts, None), theirs("gpt-4.1", counts, None))
        known = text_prices._TEXT_PRICES[("gpt-4.1", None)]
        assert known.linear is None and not known.unknown_model
    finally:
        set_custom_snapshot(None)


def test_rates_that_do_not_reproduce_calc_price_are_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_prices._LinearTextPrices, "total", lambda self, *counts: Decimal("0.5"))
    for counts in USAGES[:2]:
        assert same(ours("gpt-5", counts, None), theirs("gpt-5", counts, None))
    assert text_prices._TEXT_PRICES[("gpt-5", None)].linear is None


def test_unreadable_genai_prices_internals_fall_back_to_calc_price(monkeypatch: pytest.MonkeyPatch) -> None:
    # Another genai-prices release may shape its model data differently: price with calc_price.
    def moved(*args: object) -> None:
        raise AttributeError("price_variants moved")

    monkeypatch.setattr(text_prices, "_price_dates", moved)
    for counts in USAGES[:2]:
        assert same(ours("gpt-5", counts, "flex"), theirs("gpt-5", counts, "flex"))
    assert text_prices._TEXT_PRICES[("gpt-5", "flex")].linear is None
