"""`otel-image-cost quote` and `prices`: the real console script in a subprocess, and the functions.

A quote is the plugin's own estimate: for the same call made through the real SDK against the local
server answering without usage, the span's cost components equal the quote's exactly.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

import otel_image_cost
from otel_image_cost import OpenAIImageCostInstrumentor

from conftest import ROOT, Telemetry, assert_bad_input, run_command
from local_openai_server import LocalOpenAIServer

# (model, quality, size, n, partial images, output format, prompt) -> exact total, by hand from
# docs/cost-model.md (text in 5e-6 except mini 2e-6; image out 40e-6 gpt-image-1, 32e-6 1.5,
# 30e-6 gpt-image-2+; prompt tokens = ceil(chars / 4), once per image).
CASES = [
    # 21 chars -> 6 tokens x 2 images x 5e-6 = 0.00006; 2 x 408 x 40e-6 = 0.03264
    (("gpt-image-1", "low", "1024x1536", 2, 0, "png", "a red fox in the snow"), "0.0327"),
    # 12 chars -> 3 x 5e-6 = 0.000015; 6208 x 32e-6 = 0.198656
    (("gpt-image-1.5", "high", "1536x1024", 1, 0, "jpeg", "a lighthouse"), "0.198671"),
    # 40 chars -> 10 tokens x 3 x 2e-6 = 0.00006; 3 x 0.011 (mini's per-image medium square price)
    (("gpt-image-1-mini", "medium", "1024x1024", 3, 0, "webp", "x" * 40), "0.03306"),
    # s = round(48 * 864 / 1536) = 27; ceil(48 * 27 * (2e6 + 1536*864) / 4e6) = 1078 x 30e-6 = 0.03234;
    # 2 partials x 100 x 30e-6 = 0.006; 10 chars -> 3 x 5e-6 = 0.000015
    (("gpt-image-2", "medium", "1536x864", 1, 2, "png", "a city map"), "0.038355"),
    # xhigh f=64, s=64: ceil(64 * 64 * (2e6 + 1024*1024) / 4e6) = 3122 x 30e-6 = 0.09366; 5 chars -> 2 x 5e-6
    (("gpt-image-2.5-sunburst", "xhigh", "1024x1024", 1, 0, "webp", "a cat"), "0.09367"),
    # 1 partial: 100 x 30e-6 = 0.003; low f=16, s=round(16*1024/1536)=11: ceil(16*11*(2e6+1572864)/4e6)
    # = 158 x 30e-6 = 0.00474; 8 chars -> 2 x 5e-6 = 0.00001
    (("gpt-image-2.6-sunburst", "low", "1024x1536", 1, 1, "jpeg", "a teapot"), "0.00775"),
    (("dall-e-3", "hd", "1792x1024", 1, 0, None, "a harbour"), "0.12"),  # the hd wide price
    (("dall-e-2", None, "512x512", 2, 0, None, "a kite"), "0.036"),  # 2 x 0.018
]


@pytest.fixture(scope="module")
def no_usage_server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer(usage_shape="none") as server:
        yield server


def recorded_estimate(server: LocalOpenAIServer, call: tuple[Any, ...]) -> dict[str, Any]:
    """The plugin's span attributes for this call, made through the real SDK."""
    model, quality, size, n, partials, output_format, prompt = call
    telemetry = Telemetry()
    instrumentor = OpenAIImageCostInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    try:
        with openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0) as client:
            arguments: dict[str, Any] = {"model": model, "prompt": prompt, "size": size, "n": n}
            arguments.update({"quality": quality} if quality else {})
            arguments.update({"output_format": output_format} if output_format else {})
            if partials:
                for _ in client.images.generate(stream=True, partial_images=partials, **arguments):
                    pass
            else:
                client.images.generate(**arguments)
    finally:
        instrumentor.uninstrument()
    return dict(telemetry.span().attributes or {})


@pytest.mark.parametrize(("call", "total"), CASES, ids=[case[0][0] for case in CASES])
def test_quote_equals_the_estimate_the_plugin_records(
    no_usage_server: LocalOpenAIServer, call: tuple[Any, ...], total: str
) -> None:
    model, quality, size, n, partials, output_format, prompt = call
    quoted = otel_image_cost.quote(
        model,
        quality=quality,
        size=size,
        n=n,
        partial_images=partials,
        prompt=prompt,
        output_format=output_format,
    )
    assert quoted.total == Decimal(total)
    assert all(isinstance(amount, Decimal) for amount in quoted.components.values())
    assert sum(quoted.components.values(), Decimal(0)) == quoted.total

    span = recorded_estimate(no_usage_server, call)
    assert (
        span["openai.image.cost.source"]
        == quoted.source
        == ("per_image" if "dall-e" in model else "estimate")
    )
    assert span["gen_ai.usage.cost"] == float(quoted.total)
    recorded = {key.removeprefix("openai.image.cost."): value for key, value in span.items()}
    assert {name: recorded[name] for name in quoted.components} == {
        name: float(amount) for name, amount in quoted.components.items()
    }
    assert span["openai.image.partial_images"] == partials

    arguments = [model, "--size", size, "-n", str(n), "--prompt-chars", str(len(prompt)), "--json"]
    arguments += ["--quality", quality] if quality else []
    arguments += ["--partial-images", str(partials)] if partials else []
    arguments += ["--output-format", output_format] if output_format else []
    done = run_command("quote", *arguments)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert Decimal(document["total"]) == quoted.total
    assert {name: Decimal(v) for name, v in document["components"].items()} == dict(quoted.components)


def test_a_gif_is_refused_for_the_reason_the_plugin_leaves_it_unpriced(
    no_usage_server: LocalOpenAIServer,
) -> None:
    span = recorded_estimate(
        no_usage_server, ("gpt-image-2", "low", "1024x1024", 1, 0, "gif", "a dancing cat")
    )
    assert (span["openai.image.cost.source"], "gen_ai.usage.cost" in span) == ("unknown", False)
    with pytest.raises(otel_image_cost.errors.InputError, match=r"cannot be quoted: no_usage_gif$"):
        otel_image_cost.quote("gpt-image-2", quality="low", size="1024x1024", output_format="gif")


def test_quote_prints_components_and_total() -> None:
    done = run_command(
        "quote",
        "gpt-image-1",
        "--quality",
        "low",
        "--size",
        "1024x1536",
        "-n",
        "2",
        "--prompt",
        "a red fox in the snow",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "gpt-image-1, quality low, size 1024x1536, n=2, 0 partial images, prompt 21 chars"
    assert lines[1] == "source estimate, prices 2026-11-21"
    assert [line.split() for line in lines[2:]] == [
        ["input_text", "0.00006"],
        ["output_image", "0.03264"],
        ["total", "0.0327", "USD"],
    ]


def test_quote_auto_prices_as_the_estimate_default_high_square() -> None:
    # auto -> high 1024x1024: 4160 x 40e-6 = 0.1664
    assert otel_image_cost.quote("gpt-image-1", quality="auto", size="auto").total == Decimal("0.1664")
    assert otel_image_cost.quote("gpt-image-1").total == Decimal("0.1664")


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["gpt-image-9"], ["unknown model 'gpt-image-9'", "gpt-image-1"]),
        (["gpt-image-1", "--size", "1024*1024"], ["malformed size '1024*1024'"]),
        (["gpt-image-1", "--size", "1000x1000"], ["cannot be quoted", "unknown_size"]),
        (["gpt-image-1", "--quality", "ultra"], ["cannot be quoted", "unknown_quality"]),
        (["gpt-image-1", "-n", "0"], ["n must be an integer >= 1"]),
        (["gpt-image-1", "-n", "two"], ["invalid int value: 'two'"]),
        (
            ["gpt-image-2", "--output-format", "gif"],
            ["gpt-image-2 at quality auto, size auto, gif", "no_usage_gif"],
        ),
        (["gpt-image-2", "--output-format", "svg"], ["output format 'svg' cannot be quoted"]),
        (["gpt-image-1", "-n", str(10**10)], ["cannot be quoted", "invalid_usage"]),
        (
            ["gpt-image-1", "--prices", "/nonexistent/prices.yaml"],
            ["/nonexistent/prices.yaml", "cannot read"],
        ),
        ([], ["required: model"]),
    ],
)
def test_quote_bad_input_is_one_line_and_exit_2(arguments: list[str], named: list[str]) -> None:
    assert_bad_input(run_command("quote", *arguments), *named)


def test_prices_lists_every_row_with_source_date_and_status() -> None:
    done = run_command("prices")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.splitlines()[0] == "price table 2026-11-21 (USD per 1M tokens, or per image)"
    table = yaml.safe_load((ROOT / "src/otel_image_cost/prices.yaml").read_text())
    for model, row in table["models"].items():
        [line] = [line for line in text.splitlines() if line.startswith(f"{model}  [")]
        assert f"[{row.get('status', 'published')}, {row['as_of']}]" in line
    assert "gpt-image-2.6-flare  [third_party_only, 2026-11-21] input_text 5, input_cached_text ?" in text
    rows = json.loads(run_command("prices", "--json").stdout)
    assert [row["model"] for row in rows] == sorted(table["models"])
    [flare] = [row for row in rows if row["model"] == "gpt-image-2.6-flare"]
    assert flare["usd_per_1m_tokens"]["output_text"] is None and flare["status"] == "third_party_only"


def test_prices_check_passes_on_the_installed_sdk() -> None:
    done = run_command("prices", "--check")
    assert done.returncode == 0, done.stdout
    assert done.stdout.splitlines()[-1] == "ok"
    check = otel_image_cost.check_prices(otel_image_cost.prices.load_price_table())
    assert check.ok and check.unpriced == [] and check.disagreements == []
    assert {"gpt-image-1", "dall-e-2"} <= set(check.sdk_models)  # on every supported SDK line


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """A copy of the package whose prices.yaml a test may edit, first on the import path."""
    shutil.copytree(ROOT / "src" / "otel_image_cost", tmp_path / "otel_image_cost")
    return tmp_path


def test_prices_check_fails_naming_a_removed_model(package_copy: Path) -> None:
    price_file = package_copy / "otel_image_cost" / "prices.yaml"
    table = yaml.safe_load(price_file.read_text())
    del table["models"]["gpt-image-1"]
    price_file.write_text(yaml.safe_dump(table))
    done = run_command("prices", "--check", env={"PYTHONPATH": str(package_copy)})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "UNPRICED gpt-image-1: named by openai.types.ImageModel, not in the price table" in done.stdout
    assert done.stdout.splitlines()[-1] == "FAILED"


def test_prices_check_names_a_disagreement_with_genai_prices(tmp_path: Path) -> None:
    table = yaml.safe_load((ROOT / "src/otel_image_cost/prices.yaml").read_text())
    row = table["models"]["gpt-image-1"]
    row["usd_per_1m_tokens"]["output_image"] = 41.0
    override = tmp_path / "prices.yaml"
    override.write_text(yaml.safe_dump({"models": {"gpt-image-1": row}}))
    done = run_command("prices", "--check", "--json", env={"OTEL_IMAGE_COST_PRICES": str(override)})
    assert done.returncode == 1
    document = json.loads(done.stdout)
    assert document["disagreements"] == ["gpt-image-1: output_image ours 41, genai-prices 40"]
    assert document["unpriced"] == [] and document["ok"] is False


def test_prices_bad_price_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [1, 2")
    assert_bad_input(run_command("prices", "--prices", str(broken)), str(broken), "not valid YAML")


def test_python_dash_m_is_the_same_command() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "otel_image_cost", "quote", "dall-e-2", "--size", "256x256", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total"] == "0.016"
