"""The cost engine against cost-model.md: worked examples, every table row, every rule, real recordings.

Every expected value is a literal computed by hand from cost-model.md's tables (the arithmetic is in
the comment next to it), so a wrong price in prices.yaml or a wrong rule in cost.py fails a test.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from otel_image_cost.cost import (
    Cost,
    ImageGeneration,
    ImageTokenUsage,
    estimated_output_tokens,
    price_image_generation,
    split_cost,
)
from otel_image_cost.prices import PriceTable, load_price_table
from otel_image_cost.text_prices import price_text_model

RECORDED = Path(__file__).resolve().parent / "fixtures" / "recorded"
VERSION = "2026-11-21"


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return load_price_table()


def D(value: str) -> Decimal:
    return Decimal(value)


def priced(cost: Cost) -> dict[str, Decimal]:
    """A priced call's components (asserting it was priced) for exact comparison."""
    assert cost.unpriced_reason is None, cost
    assert cost.pricing_version == VERSION
    return dict(cost.components)


def unpriced(cost: Cost) -> str | None:
    assert cost.source == "unknown"
    assert dict(cost.components) == {}
    assert cost.total is None
    return cost.unpriced_reason


# --- cost-model.md "Worked examples (exact)" -------------------------------------------------------


def test_worked_example_gpt_image_1_usage(prices: PriceTable) -> None:
    usage = ImageTokenUsage(input_tokens=14, output_tokens=272, input_text_tokens=14)
    cost = price_image_generation(ImageGeneration("gpt-image-1", "low", "1024x1024", 1, usage=usage), prices)
    assert cost.source == "usage"
    # 14 x 5e-6 + 272 x 40e-6
    assert priced(cost) == {"input_text": D("0.00007"), "output_image": D("0.01088")}
    assert cost.total == D("0.01095")


def test_worked_example_gpt_image_1_5_edit(prices: PriceTable) -> None:
    usage = ImageTokenUsage(
        input_tokens=1200, output_tokens=4160, input_text_tokens=40, input_image_tokens=1160
    )
    cost = price_image_generation(
        ImageGeneration("gpt-image-1.5", "high", "1024x1024", 1, usage=usage), prices
    )
    assert cost.source == "usage"
    # 40 x 5e-6 + 1160 x 8e-6 + 4160 x 32e-6
    assert priced(cost) == {
        "input_text": D("0.0002"),
        "input_image": D("0.00928"),
        "output_image": D("0.13312"),
    }
    assert cost.total == D("0.14260")


def test_worked_example_gpt_image_2_estimate(prices: PriceTable) -> None:
    cost = price_image_generation(ImageGeneration("gpt-image-2", "medium", "1024x1024", 1), prices)
    assert cost.source == "estimate"
    assert priced(cost) == {"output_image": D("0.05268")}  # 1756 x 30e-6
    assert cost.total == D("0.05268")


def test_worked_example_dall_e_3_hd(prices: PriceTable) -> None:
    cost = price_image_generation(ImageGeneration("dall-e-3", "hd", "1792x1024", 2), prices)
    assert cost.source == "per_image"
    assert priced(cost) == {"output_image": D("0.24")}  # 2 x 0.120
    assert cost.total == D("0.24")


# --- every token price row ------------------------------------------------------------------------

# One usage touching every token class: input text 1000 (200 cached), input image 3000 (500 cached),
# output image 4000, output text 100.
EVERY_CLASS = ImageTokenUsage(
    input_tokens=4000,
    output_tokens=4100,
    input_text_tokens=1000,
    input_image_tokens=3000,
    cached_tokens=700,
    cached_text_tokens=200,
    cached_image_tokens=500,
    output_image_tokens=4000,
    output_text_tokens=100,
)

# Models with no text-output price bill the 100 text output tokens as image output (4100 tokens).
GPT_IMAGE_2_FAMILY = {
    "input_text": D("0.004"),  # 800 x 5e-6
    "input_cached": D("0.00125"),  # 200 x 1.25e-6 + 500 x 2e-6
    "input_image": D("0.02"),  # 2500 x 8e-6
    "output_image": D("0.123"),  # 4100 x 30e-6
}
GPT_IMAGE_1_5_FAMILY = {
    "input_text": D("0.004"),  # 800 x 5e-6
    "input_cached": D("0.00125"),  # 200 x 1.25e-6 + 500 x 2e-6
    "input_image": D("0.02"),  # 2500 x 8e-6
    "output_image": D("0.128"),  # 4000 x 32e-6
    "output_text": D("0.001"),  # 100 x 10e-6
}


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (
            "gpt-image-1",
            {
                "input_text": D("0.004"),  # 800 x 5e-6
                "input_cached": D("0.0015"),  # 200 x 1.25e-6 + 500 x 2.5e-6
                "input_image": D("0.025"),  # 2500 x 10e-6
                "output_image": D("0.164"),  # 4100 x 40e-6
            },
        ),
        (
            "gpt-image-1-mini",
            {
                "input_text": D("0.0016"),  # 800 x 2e-6
                "input_cached": D("0.000165"),  # 200 x 0.2e-6 + 500 x 0.25e-6
                "input_image": D("0.00625"),  # 2500 x 2.5e-6
                "output_image": D("0.0328"),  # 4100 x 8e-6
            },
        ),
        ("gpt-image-1.5", GPT_IMAGE_1_5_FAMILY),
        ("chatgpt-image-latest", GPT_IMAGE_1_5_FAMILY),
        ("gpt-image-2", GPT_IMAGE_2_FAMILY),
        ("gpt-image-2.5-sunburst", GPT_IMAGE_2_FAMILY),
        ("gpt-image-2.5-flare", GPT_IMAGE_2_FAMILY),
        ("gpt-image-2.6-sunburst", GPT_IMAGE_2_FAMILY),
    ],
)
def test_every_token_price_row(prices: PriceTable, model: str, expected: dict[str, Decimal]) -> None:
    cost = price_image_generation(ImageGeneration(model, "high", "1024x1024", 1, usage=EVERY_CLASS), prices)
    assert cost.source == "usage"
    assert priced(cost) == expected


def test_gpt_image_2_6_flare_known_prices(prices: PriceTable) -> None:
    usage = ImageTokenUsage(
        input_tokens=4000,
        output_tokens=4000,
        input_text_tokens=1000,
        input_image_tokens=3000,
        output_image_tokens=4000,
        output_text_tokens=0,
    )
    cost = price_image_generation(ImageGeneration("gpt-image-2.6-flare", None, None, 1, usage=usage), prices)
    # 1000 x 5e-6, 3000 x 8e-6, 4000 x 30e-6
    assert priced(cost) == {"input_text": D("0.005"), "input_image": D("0.024"), "output_image": D("0.12")}


@pytest.mark.parametrize(
    "usage",
    [
        ImageTokenUsage(input_tokens=100, output_tokens=10, cached_tokens=1),  # cached text: unknown price
        ImageTokenUsage(
            input_tokens=100,
            output_tokens=10,
            input_text_tokens=0,
            input_image_tokens=100,
            cached_image_tokens=1,
        ),  # cached image: unknown price
        ImageTokenUsage(
            input_tokens=100, output_tokens=10, output_image_tokens=9, output_text_tokens=1
        ),  # text output: unknown price (third-party only)
    ],
)
def test_gpt_image_2_6_flare_unknown_price_is_unpriced(prices: PriceTable, usage: ImageTokenUsage) -> None:
    cost = price_image_generation(ImageGeneration("gpt-image-2.6-flare", None, None, 1, usage=usage), prices)
    assert unpriced(cost) == "missing_price"
    assert cost.pricing_version == VERSION


# --- rule 1 details -------------------------------------------------------------------------------


def test_usage_without_details_is_all_text_in_and_all_image_out(prices: PriceTable) -> None:
    usage = ImageTokenUsage(input_tokens=100, output_tokens=1000)
    cost = price_image_generation(ImageGeneration("gpt-image-1.5", None, None, 1, usage=usage), prices)
    # 100 x 5e-6 text in; 1000 x 32e-6 image out (no output details: nothing at the text-out price)
    assert priced(cost) == {"input_text": D("0.0005"), "output_image": D("0.032")}


def test_bare_cached_tokens_fill_text_first_then_image(prices: PriceTable) -> None:
    usage = ImageTokenUsage(
        input_tokens=250, output_tokens=0, input_text_tokens=50, input_image_tokens=200, cached_tokens=80
    )
    cost = price_image_generation(ImageGeneration("gpt-image-1", None, None, 1, usage=usage), prices)
    # cached: 50 text x 1.25e-6 + 30 image x 2.5e-6; full price: 0 text, 170 image x 10e-6
    assert priced(cost) == {"input_cached": D("0.0001375"), "input_image": D("0.0017")}


def test_bare_cached_tokens_without_input_details_are_text(prices: PriceTable) -> None:
    usage = ImageTokenUsage(input_tokens=100, output_tokens=0, cached_tokens=40)
    cost = price_image_generation(ImageGeneration("gpt-image-2", None, None, 1, usage=usage), prices)
    # 60 x 5e-6 + 40 x 1.25e-6
    assert priced(cost) == {"input_text": D("0.0003"), "input_cached": D("0.00005")}


def test_text_output_of_a_model_without_text_out_price_is_image_output(prices: PriceTable) -> None:
    usage = ImageTokenUsage(
        input_tokens=0, output_tokens=1010, output_image_tokens=1000, output_text_tokens=10
    )
    cost = price_image_generation(ImageGeneration("gpt-image-1", None, None, 1, usage=usage), prices)
    assert priced(cost) == {"output_image": D("0.0404")}  # 1010 x 40e-6


def test_only_one_output_detail_reported(prices: PriceTable) -> None:
    usage = ImageTokenUsage(input_tokens=0, output_tokens=1100, output_image_tokens=1000)
    cost = price_image_generation(ImageGeneration("gpt-image-1.5", None, None, 1, usage=usage), prices)
    # the other 100 are text: 1000 x 32e-6 + 100 x 10e-6
    assert priced(cost) == {"output_image": D("0.032"), "output_text": D("0.001")}


def test_usage_never_adds_partial_images(prices: PriceTable) -> None:
    usage = ImageTokenUsage(
        input_tokens=72, output_tokens=4260, input_text_tokens=72, output_image_tokens=4260
    )
    generation = ImageGeneration("gpt-image-1", "high", "1024x1024", 1, partial_images=1, usage=usage)
    cost = price_image_generation(generation, prices)
    # 72 x 5e-6 + 4260 x 40e-6; the 100 tokens of the partial image are inside the 4260
    assert priced(cost) == {"input_text": D("0.00036"), "output_image": D("0.1704")}


def test_zero_usage_costs_zero(prices: PriceTable) -> None:
    usage = ImageTokenUsage(input_tokens=0, output_tokens=0)
    cost = price_image_generation(ImageGeneration("gpt-image-1", None, None, 0, usage=usage), prices)
    assert cost.source == "usage"
    assert priced(cost) == {}
    assert cost.total == Decimal(0)


def test_dated_snapshot_prices_as_base_model(prices: PriceTable) -> None:
    usage = ImageTokenUsage(input_tokens=14, output_tokens=272, input_text_tokens=14)
    cost = price_image_generation(
        ImageGeneration("gpt-image-2-2026-04-21", None, None, 1, usage=usage), prices
    )
    assert cost.total == D("0.00823")  # 14 x 5e-6 + 272 x 30e-6


# --- rule 2: estimates ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quality", "size", "tokens", "gpt_image_1_usd", "gpt_image_1_5_usd"),
    [
        # (quality, size, tokens per image, tokens x 40e-6, tokens x 32e-6)
        ("low", "1024x1024", 272, "0.01088", "0.008704"),
        ("low", "1024x1536", 408, "0.01632", "0.013056"),
        ("low", "1536x1024", 400, "0.016", "0.0128"),
        ("medium", "1024x1024", 1056, "0.04224", "0.033792"),
        ("medium", "1024x1536", 1584, "0.06336", "0.050688"),
        ("medium", "1536x1024", 1568, "0.06272", "0.050176"),
        ("high", "1024x1024", 4160, "0.1664", "0.13312"),
        ("high", "1024x1536", 6240, "0.2496", "0.19968"),
        ("high", "1536x1024", 6208, "0.24832", "0.198656"),
    ],
)
def test_gpt_image_1_family_token_table(
    prices: PriceTable, quality: str, size: str, tokens: int, gpt_image_1_usd: str, gpt_image_1_5_usd: str
) -> None:
    for model, usd in [
        ("gpt-image-1", gpt_image_1_usd),
        ("gpt-image-1.5", gpt_image_1_5_usd),
        ("chatgpt-image-latest", gpt_image_1_5_usd),
    ]:
        assert estimated_output_tokens(model, quality, size, prices) == tokens
        cost = price_image_generation(ImageGeneration(model, quality, size, 1), prices)
        assert cost.source == "estimate"
        assert priced(cost) == {"output_image": D(usd)}


@pytest.mark.parametrize(
    ("quality", "size", "usd", "tokens"),
    [
        # OpenAI's per-image prices; tokens = usd / 8e-6
        ("low", "1024x1024", "0.005", 625),
        ("low", "1024x1536", "0.006", 750),
        ("low", "1536x1024", "0.006", 750),
        ("medium", "1024x1024", "0.011", 1375),
        ("medium", "1024x1536", "0.015", 1875),
        ("medium", "1536x1024", "0.015", 1875),
        ("high", "1024x1024", "0.036", 4500),
        ("high", "1024x1536", "0.052", 6500),
        ("high", "1536x1024", "0.052", 6500),
    ],
)
def test_gpt_image_1_mini_per_image_estimate(
    prices: PriceTable, quality: str, size: str, usd: str, tokens: int
) -> None:
    cost = price_image_generation(ImageGeneration("gpt-image-1-mini", quality, size, 1), prices)
    assert cost.source == "estimate"
    assert priced(cost) == {"output_image": D(usd)}
    assert estimated_output_tokens("gpt-image-1-mini", quality, size, prices) == tokens


@pytest.mark.parametrize(
    ("model", "quality", "size", "tokens"),
    [
        # gpt-image-2 factors: low 16, medium 48, high 96
        # 1024x1024 low: s = 16; ceil(16 x 16 x 3_048_576 / 4e6) = ceil(195.11) = 196
        ("gpt-image-2", "low", "1024x1024", 196),
        # 1024x1024 medium: s = 48; ceil(48 x 48 x 3_048_576 / 4e6) = ceil(1755.98) = 1756 (cost-model.md)
        ("gpt-image-2", "medium", "1024x1024", 1756),
        # 1024x1024 high: s = 96; ceil(96 x 96 x 3_048_576 / 4e6) = ceil(7023.92) = 7024
        ("gpt-image-2", "high", "1024x1024", 7024),
        # 1536x864 low: s = round_half_up(16 x 864 / 1536) = 9; ceil(16 x 9 x 3_327_104 / 4e6) = 120
        # (the recording ruby_llm__edit_gpt-image-2_json_1536x864_low reports 120)
        ("gpt-image-2", "low", "1536x864", 120),
        # 1024x1536 medium: s = 32; ceil(48 x 32 x 3_572_864 / 4e6) = ceil(1371.98) = 1372
        ("gpt-image-2", "medium", "1024x1536", 1372),
        # 1536x1024 high: s = 64; ceil(96 x 64 x 3_572_864 / 4e6) = ceil(5487.92) = 5488
        ("gpt-image-2", "high", "1536x1024", 5488),
        # 928x1024 low: 16 x 928 / 1024 = 14.5 rounds half UP to 15 (banker's rounding would give 14 -> 166)
        # ceil(16 x 15 x 2_950_272 / 4e6) = ceil(177.02) = 178
        ("gpt-image-2", "low", "928x1024", 178),
        ("gpt-image-2", "low", "1024x928", 178),
        # gpt-image-2.5 factors: low 16, medium 24, high 48, xhigh 64, max 96 (1024x1024: s = f)
        ("gpt-image-2.5-sunburst", "low", "1024x1024", 196),
        ("gpt-image-2.5-sunburst", "medium", "1024x1024", 439),  # ceil(24 x 24 x 0.762144) = ceil(438.99)
        ("gpt-image-2.5-sunburst", "high", "1024x1024", 1756),
        ("gpt-image-2.5-sunburst", "xhigh", "1024x1024", 3122),  # ceil(64 x 64 x 0.762144) = ceil(3121.74)
        ("gpt-image-2.5-sunburst", "max", "1024x1024", 7024),
        ("gpt-image-2.5-flare", "medium", "1024x1024", 439),
        # 2.6 has no published grid: the 2.5 factors (inferred)
        ("gpt-image-2.6-sunburst", "high", "1024x1024", 1756),
        ("gpt-image-2.6-flare", "xhigh", "1024x1024", 3122),
    ],
)
def test_size_formula(prices: PriceTable, model: str, quality: str, size: str, tokens: int) -> None:
    assert estimated_output_tokens(model, quality, size, prices) == tokens


@pytest.mark.parametrize(
    ("model", "quality", "usd"),
    [
        ("gpt-image-2.5-sunburst", "low", "0.00588"),  # 196 x 30e-6
        ("gpt-image-2.5-sunburst", "medium", "0.01317"),  # 439 x 30e-6
        ("gpt-image-2.5-flare", "high", "0.05268"),  # 1756 x 30e-6
        ("gpt-image-2.5-flare", "xhigh", "0.09366"),  # 3122 x 30e-6
        ("gpt-image-2.6-sunburst", "max", "0.21072"),  # 7024 x 30e-6
        ("gpt-image-2.6-flare", "low", "0.00588"),  # 196 x 30e-6 (its output price is known)
    ],
)
def test_gpt_image_2_5_and_2_6_estimates(prices: PriceTable, model: str, quality: str, usd: str) -> None:
    cost = price_image_generation(ImageGeneration(model, quality, "1024x1024", 1), prices)
    assert cost.source == "estimate"
    assert priced(cost) == {"output_image": D(usd)}


@pytest.mark.parametrize("quality", [None, "auto"])
@pytest.mark.parametrize("size", [None, "auto"])
def test_estimate_defaults_to_high_1024(prices: PriceTable, quality: str | None, size: str | None) -> None:
    assert estimated_output_tokens("gpt-image-1", quality, size, prices) == 4160
    assert estimated_output_tokens("gpt-image-2", quality, size, prices) == 7024
    cost = price_image_generation(ImageGeneration("gpt-image-1", quality, size, 1), prices)
    assert priced(cost) == {"output_image": D("0.1664")}  # 4160 x 40e-6


def test_estimate_images_partials_and_prompt(prices: PriceTable) -> None:
    generation = ImageGeneration("gpt-image-1", "medium", "1024x1536", 2, partial_images=3, prompt_chars=41)
    cost = price_image_generation(generation, prices)
    assert cost.source == "estimate"
    assert priced(cost) == {
        "input_text": D("0.00011"),  # ceil(41 / 4) = 11 tokens per image, x 2 images x 5e-6
        "output_image": D("0.12672"),  # 2 x 1584 x 40e-6
        "partial_images": D("0.012"),  # 3 x 100 x 40e-6
    }
    assert cost.total == D("0.13883")


def test_estimate_reads_the_prompt_once_when_no_image_arrived(prices: PriceTable) -> None:
    generation = ImageGeneration("gpt-image-1", "medium", "1024x1024", 0, partial_images=1, prompt_chars=41)
    assert priced(price_image_generation(generation, prices)) == {
        "input_text": D("0.000055"),  # ceil(41 / 4) = 11 x 5e-6
        "partial_images": D("0.004"),  # 100 x 40e-6
    }


def test_mini_estimate_partials_at_its_image_output_price(prices: PriceTable) -> None:
    generation = ImageGeneration("gpt-image-1-mini", "low", "1024x1024", 1, partial_images=2, prompt_chars=8)
    cost = price_image_generation(generation, prices)
    # 2 prompt tokens x 2e-6; one 0.005 image; 2 x 100 x 8e-6
    assert priced(cost) == {
        "input_text": D("0.000004"),
        "output_image": D("0.005"),
        "partial_images": D("0.0016"),
    }


def test_estimate_with_no_images_prices_the_prompt_only(prices: PriceTable) -> None:
    cost = price_image_generation(ImageGeneration("gpt-image-2", None, None, 0, prompt_chars=4), prices)
    assert priced(cost) == {"input_text": D("0.000005")}


@pytest.mark.parametrize(
    ("model", "quality", "size", "reason"),
    [
        ("gpt-image-1", "ultra", "1024x1024", "unknown_quality"),
        ("gpt-image-1", "hd", "1024x1024", "unknown_quality"),
        ("gpt-image-1", "high", "512x512", "unknown_size"),
        ("gpt-image-1-mini", "low", "2048x2048", "unknown_size"),
        ("gpt-image-2", "xhigh", "1024x1024", "unknown_quality"),  # a 2.5-only quality
        ("gpt-image-2", "high", "big", "unknown_size"),
        ("gpt-image-2", "high", "0x1024", "unknown_size"),
    ],
)
def test_estimate_unknown_quality_or_size(
    prices: PriceTable, model: str, quality: str, size: str, reason: str
) -> None:
    assert unpriced(price_image_generation(ImageGeneration(model, quality, size, 1), prices)) == reason
    assert estimated_output_tokens(model, quality, size, prices) is None


# --- rule 3: per-image models ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "quality", "size", "usd"),
    [
        ("dall-e-2", "standard", "256x256", "0.016"),
        ("dall-e-2", "standard", "512x512", "0.018"),
        ("dall-e-2", "standard", "1024x1024", "0.020"),
        ("dall-e-3", "standard", "1024x1024", "0.040"),
        ("dall-e-3", "standard", "1024x1792", "0.080"),
        ("dall-e-3", "standard", "1792x1024", "0.080"),
        ("dall-e-3", "hd", "1024x1024", "0.080"),
        ("dall-e-3", "hd", "1024x1792", "0.120"),
        ("dall-e-3", "hd", "1792x1024", "0.120"),
    ],
)
def test_every_per_image_price(prices: PriceTable, model: str, quality: str, size: str, usd: str) -> None:
    cost = price_image_generation(ImageGeneration(model, quality, size, 3), prices)
    assert cost.source == "per_image"
    assert priced(cost) == {"output_image": 3 * D(usd)}
    assert estimated_output_tokens(model, quality, size, prices) is None


@pytest.mark.parametrize(
    ("model", "quality", "size", "usd"),
    [
        ("dall-e-2", None, None, "0.020"),  # standard, 1024x1024
        ("dall-e-3", None, None, "0.040"),
        ("dall-e-3", "auto", "auto", "0.040"),
        ("dall-e-3", "hd", None, "0.080"),
        ("dall-e-3", None, "1792x1024", "0.080"),
    ],
)
def test_per_image_defaults(
    prices: PriceTable, model: str, quality: str | None, size: str | None, usd: str
) -> None:
    assert priced(price_image_generation(ImageGeneration(model, quality, size, 1), prices)) == {
        "output_image": D(usd)
    }


def test_per_image_ignores_reported_usage_and_partials(prices: PriceTable) -> None:
    usage = ImageTokenUsage(input_tokens=10, output_tokens=10)
    generation = ImageGeneration("dall-e-2", None, "256x256", 2, partial_images=1, usage=usage)
    cost = price_image_generation(generation, prices)
    assert cost.source == "per_image"
    assert priced(cost) == {"output_image": D("0.032")}  # 2 x 0.016


@pytest.mark.parametrize(
    ("model", "quality", "size", "reason"),
    [
        ("dall-e-2", "hd", "1024x1024", "unknown_quality"),
        ("dall-e-2", None, "1024x1792", "unknown_size"),  # n/a for dall-e-2
        ("dall-e-3", None, "256x256", "unknown_size"),  # n/a for dall-e-3
    ],
)
def test_per_image_not_on_the_list(
    prices: PriceTable, model: str, quality: str | None, size: str, reason: str
) -> None:
    assert unpriced(price_image_generation(ImageGeneration(model, quality, size, 1), prices)) == reason


# --- rule 4: nothing to price from ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "reason", "expected"),
    [
        (None, None, "no_model"),
        (None, "no_model", "no_model"),
        (None, "unknown_deployment", "unknown_deployment"),
        ("gpt-image-3", None, "unknown_model"),
        ("gpt-image-1-turbo", None, "unknown_model"),  # no prefix match
        ("GPT-IMAGE-1", None, "unknown_model"),  # no case folding
        ("gpt-image-2-2026-13-45", None, "unknown_model"),  # not a date: not a snapshot
        ("my-azure-deployment", None, "unknown_model"),
    ],
)
def test_unpriced_reasons(prices: PriceTable, model: str | None, reason: str | None, expected: str) -> None:
    usage = ImageTokenUsage(input_tokens=10, output_tokens=10)
    cost = price_image_generation(
        ImageGeneration(model, None, None, 1, usage=usage, unpriced_reason=reason), prices
    )
    assert unpriced(cost) == expected
    assert cost.pricing_version == VERSION


def test_unknown_model_has_no_estimated_tokens(prices: PriceTable) -> None:
    assert estimated_output_tokens("gpt-image-3", "high", "1024x1024", prices) is None


def test_total_is_none_only_when_unknown() -> None:
    assert Cost("unknown", {}, None, "no_model").total is None
    assert Cost("usage", {"input_text": D("0.1"), "output_image": D("0.25")}, "v").total == D("0.35")


# --- rule 5: the mainline text model via genai-prices ---------------------------------------------


def test_price_text_model_standard_and_priority() -> None:
    # gpt-4.1 (genai-prices 0.2.3): 2 / 0.5 cached / 8 per 1M; priority 3.5 / 0.875 / 14
    # 600 x 2e-6 + 400 x 0.5e-6 + 100 x 8e-6
    assert price_text_model("gpt-4.1", input_tokens=1000, cached_tokens=400, output_tokens=100) == D("0.0022")
    assert price_text_model(
        "gpt-4.1", input_tokens=1000, cached_tokens=400, output_tokens=100, service_tier="default"
    ) == D("0.0022")
    # 600 x 3.5e-6 + 400 x 0.875e-6 + 100 x 14e-6
    assert price_text_model(
        "gpt-4.1", input_tokens=1000, cached_tokens=400, output_tokens=100, service_tier="priority"
    ) == D("0.00385")


def test_price_text_model_unknown_model() -> None:
    assert price_text_model("no-such-model", input_tokens=1, cached_tokens=0, output_tokens=1) is None


def test_price_text_model_inconsistent_counts() -> None:
    with pytest.raises(ValueError, match="cannot exceed"):
        price_text_model("gpt-4.1", input_tokens=1, cached_tokens=2, output_tokens=0)


# --- rule 7: shares -------------------------------------------------------------------------------


def test_split_cost_exact_shares() -> None:
    cost = Cost("usage", {"output_image": D("0.01")}, "v")
    shares = split_cost(cost, [1, 1, 1])
    assert [dict(s.components) for s in shares] == [
        {"output_image": D("0.003333333334")},
        {"output_image": D("0.003333333333")},
        {"output_image": D("0.003333333333")},
    ]
    assert all(s.source == "usage" and s.pricing_version == "v" for s in shares)


@pytest.mark.parametrize(
    "weights",
    [[1, 1, 1], [4160, 1056, 272], [7, 0, 3, 11], [1, 10**9], [3] * 7, [0, 0, 0], [0, 5], [1]],
)
def test_split_cost_shares_add_up_exactly(weights: list[int]) -> None:
    cost = Cost(
        "usage",
        {"input_text": D("0.000359"), "output_image": D("0.1704"), "output_text": D("0.00669")},
        "v",
    )
    shares = split_cost(cost, weights)
    assert len(shares) == len(weights)
    for name, amount in cost.components.items():
        assert sum((s.components[name] for s in shares), Decimal(0)) == amount
    assert sum((s.total or Decimal(0) for s in shares), Decimal(0)) == D("0.177449")


def test_split_cost_proportions() -> None:
    shares = split_cost(Cost("estimate", {"output_image": D("0.3")}, "v"), [0, 1, 2])
    assert [s.total for s in shares] == [D("0"), D("0.1"), D("0.2")]
    equal = split_cost(Cost("estimate", {"output_image": D("0.3")}, "v"), [0, 0, 0])
    assert [s.total for s in equal] == [D("0.1"), D("0.1"), D("0.1")]


@pytest.mark.parametrize("weight", [0, 1, 272])
@pytest.mark.parametrize("amount", ["0.1704", "0.000359", "3E-15", "0.123456789012345", "0"])
def test_split_cost_one_share_is_the_cost_itself(weight: int, amount: str) -> None:
    cost = Cost("usage", {"output_image": D(amount)}, "v")
    assert split_cost(cost, [weight]) == [cost]
    two = split_cost(cost, [weight, 0] if weight else [0, 0])
    assert sum((s.components["output_image"] for s in two), D(0)) == D(amount)


def test_split_cost_finer_than_the_unit() -> None:
    shares = split_cost(Cost("usage", {"input_cached": D("3E-15")}, "v"), [1, 1])
    assert [s.components["input_cached"] for s in shares] == [D("2E-15"), D("1E-15")]


def test_split_cost_unknown_and_edge_cases() -> None:
    unknown = Cost("unknown", {}, "v", "unknown_model")
    assert split_cost(unknown, [1, 2]) == [unknown, unknown]
    assert split_cost(unknown, []) == []
    with pytest.raises(ValueError, match="weights must be >= 0"):
        split_cost(unknown, [1, -1])


def test_split_with_estimated_token_weights(prices: PriceTable) -> None:
    # one tool_usage total for a high 1024x1024 and a low 1024x1024 image: weights 4160 and 272
    weights = [estimated_output_tokens("gpt-image-1", q, "1024x1024", prices) or 0 for q in ("high", "low")]
    assert weights == [4160, 272]
    shares = split_cost(Cost("usage", {"output_image": D("0.17728")}, "v"), weights)  # 4432 x 40e-6
    assert [s.total for s in shares] == [D("0.1664"), D("0.01088")]


# --- real recordings (fixtures/recorded) ----------------------------------------------------------


def load_recording(name: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((RECORDED / name).read_text())
    return record


def request_args(record: dict[str, Any]) -> dict[str, Any]:
    request = record["request"]
    if "fields" in request:  # multipart edit
        return dict(request["fields"])
    return dict(request)


def usage_from_json(usage: dict[str, Any]) -> ImageTokenUsage:
    """An Images API (or tool_usage.image_gen) usage object, parsed by hand."""
    input_details = usage.get("input_tokens_details") or {}
    cached_details = input_details.get("cached_tokens_details") or {}
    output_details = usage.get("output_tokens_details") or {}
    return ImageTokenUsage(
        input_tokens=usage["input_tokens"],
        output_tokens=usage["output_tokens"],
        input_text_tokens=input_details.get("text_tokens"),
        input_image_tokens=input_details.get("image_tokens"),
        cached_tokens=input_details.get("cached_tokens"),
        cached_text_tokens=cached_details.get("cached_text_tokens"),
        cached_image_tokens=cached_details.get("cached_image_tokens"),
        output_image_tokens=output_details.get("image_tokens"),
        output_text_tokens=output_details.get("text_tokens"),
    )


IMAGES_API_WITH_USAGE = [
    # gpt-image-1: 45 x 5e-6 + 194 x 10e-6 + 1056 x 40e-6 = 0.000225 + 0.00194 + 0.04224
    ("openai-dotnet__edit_gpt-image-1_multipart_medium.json", "0.044405"),
    # gpt-image-1: 90 x 5e-6 + 388 x 10e-6 + 8320 x 40e-6 = 0.00045 + 0.00388 + 0.3328
    ("openai-dotnet__edit_gpt-image-1_multipart_n2_high.json", "0.33713"),
    # gpt-image-1: 11 x 5e-6 + 6240 x 40e-6 = 0.000055 + 0.2496
    ("openai-dotnet__gen_gpt-image-1_default_params.json", "0.249655"),
    # gpt-image-1: 22 x 5e-6 + 2112 x 40e-6 = 0.00011 + 0.08448
    ("openai-dotnet__gen_gpt-image-1_n2_1024_medium.json", "0.08459"),
    # gpt-image-1: 22 x 5e-6 + 12480 x 40e-6 = 0.00011 + 0.4992
    ("openai-dotnet__gen_gpt-image-1_n2_webp_transparent_resolved_high.json", "0.49931"),
    # gpt-image-1: 22 x 5e-6 + 3168 x 40e-6 = 0.00011 + 0.12672
    ("openai-dotnet__gen_gpt-image-1_n2_webp_transparent_resolved_medium.json", "0.12683"),
    # gpt-image-1.5: 43 x 5e-6 + 388 x 8e-6 + 1056 x 32e-6 + 308 x 10e-6
    #              = 0.000215 + 0.003104 + 0.033792 + 0.00308
    ("ruby_llm__edit_gpt-image-1.5_json_2images.json", "0.040191"),
    # gpt-image-1, no output details: 46 x 5e-6 + 388 x 10e-6 + 4160 x 40e-6 = 0.00023 + 0.00388 + 0.1664
    ("ruby_llm__edit_gpt-image-1_multipart_2images_2025-04.json", "0.17051"),
    # gpt-image-2: 12 x 5e-6 + 64 x 8e-6 + 120 x 30e-6 = 0.00006 + 0.000512 + 0.0036
    ("ruby_llm__edit_gpt-image-2_json_1536x864_low.json", "0.004172"),
    # gpt-image-1.5: 20 x 5e-6 + 3168 x 32e-6 + 669 x 10e-6 = 0.0001 + 0.101376 + 0.00669
    ("ruby_llm__gen_gpt-image-1.5_n2_1024x1536_medium_text_tokens.json", "0.108166"),
    # gpt-image-1, no output details: 10 x 5e-6 + 1056 x 40e-6 = 0.00005 + 0.04224
    ("ruby_llm__gen_gpt-image-1_2025-05_no_echo_fields.json", "0.04229"),
    # gpt-image-1: 10 x 5e-6 + 4160 x 40e-6 = 0.00005 + 0.1664
    ("ruby_llm__gen_gpt-image-1_2026-08_high.json", "0.16645"),
]


@pytest.mark.parametrize(("name", "usd"), IMAGES_API_WITH_USAGE)
def test_recorded_images_api_usage(prices: PriceTable, name: str, usd: str) -> None:
    record = load_recording(name)
    response = record["response"]
    generation = ImageGeneration(
        model=request_args(record)["model"],
        quality=response.get("quality"),
        size=response.get("size"),
        images=len(response["data"]),
        usage=usage_from_json(response["usage"]),
    )
    cost = price_image_generation(generation, prices)
    assert cost.source == "usage"
    assert cost.total == D(usd)


# Recordings made before mid-2025 do not echo quality and size.
ECHOED = [name for name, _ in IMAGES_API_WITH_USAGE if "quality" in load_recording(name)["response"]]


def test_ten_recordings_echo_quality_and_size() -> None:
    assert len(ECHOED) == 10


@pytest.mark.parametrize("name", ECHOED)
def test_recorded_output_tokens_match_the_estimate_tables(prices: PriceTable, name: str) -> None:
    """Where a recording echoes quality and size, its image tokens per image are the table's."""
    record = load_recording(name)
    response = record["response"]
    usage = usage_from_json(response["usage"])
    image_tokens = usage.output_image_tokens if usage.output_image_tokens is not None else usage.output_tokens
    model = request_args(record)["model"]
    per_image = image_tokens // len(response["data"])
    assert estimated_output_tokens(model, response["quality"], response["size"], prices) == per_image


def test_recorded_responses_stream_tool_usage_includes_partials(prices: PriceTable) -> None:
    record = load_recording("openai-dotnet__responses_tool_gpt-image-1_high_stream_partial_tool_usage.json")
    completed = next(
        json.loads(line.removeprefix("data:"))
        for line in record["response_sse"].splitlines()
        if line.startswith("data:") and '"type":"response.completed"' in line.replace(" ", "")
    )["response"]
    (item,) = [o for o in completed["output"] if o["type"] == "image_generation_call"]
    generation = ImageGeneration(
        model=completed["tools"][0]["model"],
        quality=item["quality"],
        size=item["size"],
        images=1,
        partial_images=1,
        usage=usage_from_json(completed["tool_usage"]["image_gen"]),
    )
    cost = price_image_generation(generation, prices)
    # 72 x 5e-6 + 4260 x 40e-6 (4260 = 4160 + 100 for the partial image, already included)
    assert priced(cost) == {"input_text": D("0.00036"), "output_image": D("0.1704")}


@pytest.mark.parametrize(
    ("name", "usd"),
    [
        ("dd-trace-js__gen_dall-e-3_b64_json.json", "0.040"),  # standard (default) 1024x1024
        ("openai-dotnet__gen_dall-e-3_standard_natural.json", "0.040"),  # standard, 1024x1024 (default)
        ("openllmetry__gen_dall-e-2_256.json", "0.016"),  # 256x256
        ("ruby-openai__edit_dall-e-2_multipart_256.json", "0.016"),  # 256x256 edit
        ("ruby-openai__gen_dall-e-3_hd_1024x1792.json", "0.120"),  # hd 1024x1792
        ("ruby_llm__gen_dall-e-3_1792x1024.json", "0.080"),  # standard (default) 1792x1024
    ],
)
def test_recorded_dall_e(prices: PriceTable, name: str, usd: str) -> None:
    record = load_recording(name)
    args = request_args(record)
    generation = ImageGeneration(
        model=args["model"],
        quality=args.get("quality"),
        size=args.get("size"),
        images=len(record["response"]["data"]),
    )
    cost = price_image_generation(generation, prices)
    assert cost.source == "per_image"
    assert priced(cost) == {"output_image": D(usd)}
