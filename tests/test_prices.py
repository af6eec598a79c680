"""The price table: the built-in rows, lookups, and user overrides (good and bad files)."""

from __future__ import annotations

import hashlib
import io
import json
import tokenize
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from otel_image_cost import cost as cost_module
from otel_image_cost import prices as prices_module
from otel_image_cost import text_prices as text_prices_module
from otel_image_cost.cost import ImageGeneration, price_image_generation
from otel_image_cost.prices import (
    PerImageModelPrices,
    PriceFileError,
    SizeFormulaEstimate,
    TokenModelPrices,
    load_price_table,
)

ALL_MODELS = {
    "gpt-image-1",
    "gpt-image-1-mini",
    "gpt-image-1.5",
    "chatgpt-image-latest",
    "gpt-image-2",
    "gpt-image-2.5-sunburst",
    "gpt-image-2.5-flare",
    "gpt-image-2.6-sunburst",
    "gpt-image-2.6-flare",
    "dall-e-2",
    "dall-e-3",
}


def token_row(model: str, override: str | None = None) -> TokenModelPrices:
    row = load_price_table(override).lookup(model)
    assert isinstance(row, TokenModelPrices)
    return row


# --- the built-in table ---------------------------------------------------------------------------


def test_builtin_table_has_every_row_of_cost_model() -> None:
    table = load_price_table()
    assert table.version == "2026-11-21"
    assert set(table.models) == ALL_MODELS
    assert {row.provenance.as_of for row in table.models.values()} == {date(2026, 11, 21)}
    assert all(row.provenance.source for row in table.models.values())


def test_builtin_statuses() -> None:
    table = load_price_table()
    statuses = {name: row.provenance.status for name, row in table.models.items()}
    assert statuses == {
        **dict.fromkeys(ALL_MODELS, "published"),
        "gpt-image-2.6-sunburst": "inferred",
        "gpt-image-2.6-flare": "third_party_only",
    }
    rows = {
        name: token_row(name)
        for name in ("gpt-image-2.5-flare", "gpt-image-2.6-sunburst", "gpt-image-2.6-flare")
    }
    formula_2_5 = rows["gpt-image-2.5-flare"].estimate
    assert isinstance(formula_2_5, SizeFormulaEstimate)
    assert formula_2_5.provenance.status == "inferred"
    # 2.6 has no published grid: it uses the (inferred) 2.5 factors
    assert rows["gpt-image-2.6-sunburst"].estimate == formula_2_5
    assert rows["gpt-image-2.6-flare"].estimate == formula_2_5


def test_prices_are_decimal_per_token() -> None:
    tokens = token_row("gpt-image-1").tokens
    assert tokens.input_text == Decimal("0.000005")
    assert tokens.input_cached_text == Decimal("0.00000125")
    assert tokens.input_image == Decimal("0.00001")
    assert tokens.input_cached_image == Decimal("0.0000025")
    assert tokens.output_image == Decimal("0.00004")
    assert tokens.output_text is None
    assert tokens.text_output_as_image is True
    assert token_row("gpt-image-1.5").tokens.output_text == Decimal("0.00001")
    assert token_row("gpt-image-1.5").tokens.text_output_as_image is False


def test_unknown_prices_are_null_not_guessed() -> None:
    tokens = token_row("gpt-image-2.6-flare").tokens
    assert tokens.input_cached_text is None
    assert tokens.input_cached_image is None
    assert tokens.output_text is None
    assert tokens.text_output_as_image is False  # unknown, not "billed as image output"
    assert tokens.input_text == Decimal("0.000005")
    assert tokens.output_image == Decimal("0.00003")


def test_per_image_rows() -> None:
    row = load_price_table().lookup("dall-e-3")
    assert isinstance(row, PerImageModelPrices)
    assert (row.default_quality, row.default_size) == ("standard", "1024x1024")
    assert {q: dict(sizes) for q, sizes in row.usd_per_image.items()} == {
        "standard": {
            "1024x1024": Decimal("0.04"),
            "1024x1792": Decimal("0.08"),
            "1792x1024": Decimal("0.08"),
        },
        "hd": {"1024x1024": Decimal("0.08"), "1024x1792": Decimal("0.12"), "1792x1024": Decimal("0.12")},
    }


def test_estimate_defaults() -> None:
    defaults = load_price_table().estimate_defaults
    assert (defaults.quality, defaults.size) == ("high", "1024x1024")
    assert (defaults.partial_image_output_tokens, defaults.prompt_chars_per_token) == (100, 4)


def test_no_price_literal_in_python() -> None:
    """Prices live in prices.yaml only: the engine's code holds no fractional or exponent literal."""
    for module in (cost_module, prices_module, text_prices_module):
        source = Path(str(module.__file__)).read_text()
        numbers = [
            tok.string
            for tok in tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type == tokenize.NUMBER and any(c in tok.string.lower() for c in ".e")
        ]
        assert numbers == [], module.__name__


# --- lookup ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gpt-image-1", "gpt-image-1"),
        ("gpt-image-1.5-2025-12-16", "gpt-image-1.5"),
        ("gpt-image-2-2026-04-21", "gpt-image-2"),
        ("gpt-image-2.5-flare-2026-09-08", "gpt-image-2.5-flare"),
        ("dall-e-3-2023-11-06", "dall-e-3"),
        ("gpt-image", None),
        ("gpt-image-1-hd", None),
        ("gpt-image-1-2025", None),
        ("gpt-image-2-2026-02-30", None),  # no such date
        ("gpt-image-2-2026-04-21-2026-04-22", None),  # strip one date only
        ("Gpt-Image-1", None),
        ("openai/gpt-image-1", None),
        ("", None),
    ],
)
def test_lookup_exact_or_dated_snapshot_only(name: str, expected: str | None) -> None:
    row = load_price_table().lookup(name)
    assert (row.model if row is not None else None) == expected


def test_lookup_caches_snapshot_stripping() -> None:
    table = load_price_table()
    first = table.lookup("gpt-image-1-2030-01-01")
    hits = prices_module._snapshot_base.cache_info().hits
    assert table.lookup("gpt-image-1-2030-01-01") is first
    assert prices_module._snapshot_base.cache_info().hits == hits + 1


# --- overrides ------------------------------------------------------------------------------------

OVERRIDE_YAML = """\
models:
  gpt-image-1:
    source: "our contract with OpenAI"
    as_of: "2026-12-01"
    usd_per_1m_tokens:
      input_text: 4
      input_cached_text: 1
      input_image: 8
      input_cached_image: 2
      output_image: 32.5
      output_text: billed_as_image_output
    estimate: gpt-image-1-token-table
  acme-image-7:
    source: "acme price page"
    as_of: 2026-11-30
    status: third_party_only
    usd_per_1m_tokens:
      input_text: 1
      input_cached_text: null
      input_image: 2
      input_cached_image: null
      output_image: 10
      output_text: 3
    estimate: gpt-image-2-size-formula
"""


def override_version(path: Path) -> str:
    return f"2026-11-21+override:{path.name}:{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


def check_override(path: Path) -> None:
    table = load_price_table(str(path))
    assert table.version == override_version(path)
    cost = price_image_generation(
        ImageGeneration("gpt-image-1", "high", "1024x1024", 1, prompt_chars=8), table
    )
    # 2 prompt tokens x 4e-6 + 4160 x 32.5e-6
    assert dict(cost.components) == {"input_text": Decimal("0.000008"), "output_image": Decimal("0.1352")}
    assert cost.pricing_version == table.version
    added = table.lookup("acme-image-7-2026-12-24")
    assert isinstance(added, TokenModelPrices)
    assert added.provenance.status == "third_party_only"
    assert added.provenance.as_of == date(2026, 11, 30)
    new = price_image_generation(ImageGeneration("acme-image-7", "medium", "1024x1024", 1), table)
    assert new.total == Decimal("0.01756")  # 1756 x 10e-6
    # untouched rows keep their built-in prices
    assert token_row("gpt-image-1.5", str(path)).tokens.output_image == Decimal("0.000032")


def test_yaml_override(tmp_path: Path) -> None:
    path = tmp_path / "prices.yml"
    path.write_text(OVERRIDE_YAML)
    check_override(path)


def test_json_override(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "prices.json"
    path.write_text(json.dumps(yaml.safe_load(OVERRIDE_YAML), default=str))
    check_override(path)


def test_override_replaces_an_estimate_rule_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        """\
version: "ignored-2027"
estimates:
  gpt-image-2-size-formula:
    kind: token_table
    source: test
    as_of: "2026-11-21"
    output_tokens_per_image:
      low: {1024x1024: 100}
estimate_defaults:
  quality: low
  size: 1024x1024
  partial_image_output_tokens: 50
  prompt_chars_per_token: 3
  source: test
  as_of: "2026-11-21"
"""
    )
    table = load_price_table(str(path))
    assert table.version == override_version(path)
    cost = price_image_generation(ImageGeneration("gpt-image-2", None, None, 1, 1, prompt_chars=7), table)
    # 3 prompt tokens x 5e-6, 100 x 30e-6, 50 x 30e-6
    assert dict(cost.components) == {
        "input_text": Decimal("0.000015"),
        "output_image": Decimal("0.003"),
        "partial_images": Decimal("0.0015"),
    }


def test_override_model_without_estimate_is_unpriced_without_usage(tmp_path: Path) -> None:
    path = tmp_path / "no-estimate.yaml"
    path.write_text(
        """\
models:
  usage-only:
    source: test
    as_of: "2026-11-21"
    usd_per_1m_tokens: {input_text: 1, input_cached_text: 1, input_image: 1, input_cached_image: 1,
                        output_image: 1, output_text: 1}
"""
    )
    table = load_price_table(str(path))
    cost = price_image_generation(ImageGeneration("usage-only", "high", "1024x1024", 1), table)
    assert (cost.source, cost.unpriced_reason, cost.total) == ("unknown", "no_usage", None)


# Each bad file: (file name, content, the exact problem after "<path>: ").
GOOD_ROW = """\
    source: s
    as_of: "2026-11-21"
    usd_per_1m_tokens:
      input_text: 1
      input_cached_text: 1
      input_image: 1
      input_cached_image: 1
      output_image: 1
      output_text: 1
"""
BAD_FILES = [
    ("bad.yaml", "models: [1, 2\n", None),  # unparsable YAML: message from the parser
    ("bad.json", '{"models": }', None),  # unparsable JSON: message from the parser
    ("empty.yaml", "", "must be a mapping, got null"),
    ("list.yaml", "- a\n", "must be a mapping, got list"),
    (
        "top.yaml",
        "prices: {}\n",
        "unknown key 'prices' (allowed: estimate_defaults, estimates, models, version)",
    ),
    ("models.yaml", "models: [a]\n", "models: must be a mapping, got list"),
    ("version.yaml", "version: 3\n", "version: must be a non-empty string, got int 3"),
    (
        "negative.yaml",
        "models:\n  m:\n" + GOOD_ROW.replace("input_text: 1", "input_text: -1"),
        "models.m.usd_per_1m_tokens.input_text: must be a number from 0 to 1000000, got -1",
    ),
    (
        "infinite.yaml",
        "models:\n  m:\n" + GOOD_ROW.replace("output_image: 1", "output_image: .inf"),
        "models.m.usd_per_1m_tokens.output_image: must be a number from 0 to 1000000, got inf",
    ),
    (
        "string-price.yaml",
        "models:\n  m:\n" + GOOD_ROW.replace("input_image: 1", 'input_image: "8.00"'),
        "models.m.usd_per_1m_tokens.input_image: must be a number, got str '8.00'",
    ),
    (
        "bool-price.yaml",
        "models:\n  m:\n" + GOOD_ROW.replace("input_image: 1", "input_image: true"),
        "models.m.usd_per_1m_tokens.input_image: must be a number, got bool True",
    ),
    (
        "unknown-price-key.yaml",
        "models:\n  m:\n" + GOOD_ROW + "      output_audio: 1\n",
        "models.m.usd_per_1m_tokens: unknown key 'output_audio' (allowed: input_cached_image, "
        "input_cached_text, input_image, input_text, output_image, output_text)",
    ),
    (
        "missing-price-key.yaml",
        "models:\n  m:\n" + GOOD_ROW.replace("      output_text: 1\n", ""),
        "models.m.usd_per_1m_tokens: missing key 'output_text'",
    ),
    (
        "unknown-row-key.yaml",
        "models:\n  m:\n" + GOOD_ROW + "    currency: EUR\n",
        "models.m: unknown key 'currency' "
        "(allowed: as_of, estimate, notes, source, status, usd_per_1m_tokens)",
    ),
    (
        "no-source.yaml",
        "models:\n  m:\n" + GOOD_ROW.replace("    source: s\n", ""),
        "models.m: missing key 'source'",
    ),
    (
        "bad-date.yaml",
        "models:\n  m:\n" + GOOD_ROW.replace('"2026-11-21"', '"21/11/2026"'),
        "models.m.as_of: must be a date YYYY-MM-DD, got '21/11/2026'",
    ),
    (
        "bad-status.yaml",
        "models:\n  m:\n" + GOOD_ROW + "    status: guessed\n",
        "models.m.status: must be one of published, inferred, third_party_only, got 'guessed'",
    ),
    (
        "bad-estimate-ref.yaml",
        "models:\n  m:\n" + GOOD_ROW + "    estimate: nope\n",
        "models.m.estimate: no estimate rule named 'nope' (known: gpt-image-1-mini-per-image, "
        "gpt-image-1-token-table, gpt-image-2-size-formula, gpt-image-2.5-size-formula)",
    ),
    (
        "bad-kind.yaml",
        "estimates:\n  e: {kind: magic, source: s, as_of: '2026-11-21'}\n",
        "estimates.e.kind: must be token_table, per_image_usd or size_formula, got 'magic'",
    ),
    (
        "bad-factor.yaml",
        "estimates:\n  e: {kind: size_formula, source: s, as_of: '2026-11-21', factors: {low: 1.5}}\n",
        "estimates.e.factors.low: must be an integer >= 1, got float 1.5",
    ),
    (
        "bad-tokens.yaml",
        "estimates:\n  e: {kind: token_table, source: s, as_of: '2026-11-21',"
        " output_tokens_per_image: {low: {1024x1024: -5}}}\n",
        "estimates.e.output_tokens_per_image.low.1024x1024: must be an integer >= 0, got int -5",
    ),
    (
        "bad-grid.yaml",
        "models:\n  d: {source: s, as_of: '2026-11-21', default_quality: standard, default_size: 1024x1024,"
        " usd_per_image: {standard: 0.02}}\n",
        "models.d.usd_per_image.standard: must be a mapping, got float",
    ),
    (
        "bad-defaults.yaml",
        "estimate_defaults: {quality: high, size: 1024x1024, partial_image_output_tokens: 100,"
        " prompt_chars_per_token: 0, source: s, as_of: '2026-11-21'}\n",
        "estimate_defaults.prompt_chars_per_token: must be an integer >= 1, got int 0",
    ),
]


@pytest.mark.parametrize(("name", "content", "problem"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_override_files(tmp_path: Path, name: str, content: str, problem: str | None) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(PriceFileError) as raised:
        load_price_table(str(path))
    message = str(raised.value)
    if problem is None:
        kind = "JSON" if name.endswith(".json") else "YAML"
        assert message.startswith(f"{path}: not valid {kind}: ")
    else:
        assert message == f"{path}: {problem}"


def test_missing_override_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(PriceFileError) as raised:
        load_price_table(str(path))
    assert str(raised.value) == f"{path}: cannot read price file: No such file or directory"


def test_override_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"models: {\xe9: 1}\n")
    with pytest.raises(PriceFileError) as raised:
        load_price_table(str(path))
    assert str(raised.value).startswith(f"{path}: not UTF-8 text: ")
