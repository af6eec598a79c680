"""`otel-image-cost reprice`: recorded calls priced again with another price file, per user.

Input is OTLP JSON lines as the collector's `file` exporter writes them. The hand-made cases use
the contract's attribute names; the end-to-end case encodes the plugin's real spans with the OTLP
encoder and protobuf's JSON mapping (the same mapping the collector uses).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from google.protobuf.json_format import MessageToJson
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from otel_image_cost import OpenAIImageCostInstrumentor, billing_context
from otel_image_cost.prices import load_price_table
from otel_image_cost.reprice import reprice

from conftest import ROOT, Telemetry, assert_bad_input, run_command
from local_openai_server import LocalOpenAIServer


def any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, list):
        return {"arrayValue": {"values": [any_value(item) for item in value]}}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # int64 is a JSON string in OTLP JSON
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": value}


def otlp_attributes(attributes: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "value": any_value(value)} for key, value in attributes.items()]


def records_line(calls: list[dict[str, Any]]) -> str:
    """One collector `file` exporter line of billing records."""
    records = [
        {
            "timeUnixNano": "1764470000000000000",
            "eventName": "openai.image.billing",
            "attributes": otlp_attributes(c),
        }
        for c in calls
    ]
    return json.dumps(
        {"resourceLogs": [{"resource": {}, "scopeLogs": [{"scope": {}, "logRecords": records}]}]}
    )


def spans_line(calls: list[dict[str, Any]]) -> str:
    spans = [{"name": "generate_content x", "kind": 3, "attributes": otlp_attributes(c)} for c in calls]
    return json.dumps({"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {}, "spans": spans}]}]})


def usage_json(input_text: int, input_image: int, output: int) -> str:
    return json.dumps(
        {
            "input_tokens": input_text + input_image,
            "input_tokens_details": {"text_tokens": input_text, "image_tokens": input_image},
            "output_tokens": output,
            "total_tokens": input_text + input_image + output,
        }
    )


def call(user: str | None, model: str, source: str, cost: float | None, **extra: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {"openai.image.model": model, "openai.image.cost.source": source}
    attributes.update({"user.id": user} if user else {})
    attributes.update({"gen_ai.usage.cost": cost} if cost is not None else {})
    attributes.update({"openai.image.count": 1, "openai.image.partial_images": 0})
    attributes.update(extra)
    return attributes


# Costs as recorded, from docs/cost-model.md's worked examples and price table.
CALLS = [
    # 14 x 5e-6 + 272 x 40e-6 = 0.01095
    call(
        "alice",
        "gpt-image-1",
        "usage",
        0.01095,
        **{"openai.image.usage.raw": usage_json(14, 0, 272), "custom.tags": ["a", "b"]},  # an array is fine
    ),
    # 40 x 5e-6 + 1160 x 8e-6 + 4160 x 32e-6 = 0.1426
    call("alice", "gpt-image-1.5", "usage", 0.1426, **{"openai.image.usage.raw": usage_json(40, 1160, 4160)}),
    # 2 x 0.120 (hd 1792x1024)
    call(
        "bob",
        "dall-e-3",
        "per_image",
        0.24,
        **{"openai.image.quality": "hd", "openai.image.size": "1792x1024", "openai.image.count": 2},
    ),
    # an estimate (1756 x 30e-6) keeps its recorded cost
    call("bob", "gpt-image-2", "estimate", 0.05268, **{"openai.image.quality": "medium"}),
    # a Responses call: image 20 x 5e-6 + 4160 x 40e-6 = 0.1665, mainline 0.0023 (genai-prices), total 0.1688
    call(
        "carol",
        "gpt-image-1",
        "usage",
        0.1688,
        **{"openai.image.usage.raw": usage_json(20, 0, 4160), "openai.image.cost.mainline": 0.0023},
    ),
    call(None, "gpt-image-1", "unknown", None, **{"openai.image.unpriced.reason": "no_usage"}),
]

# New prices: gpt-image-1 text in 4.00, image out 20.00 per 1M; dall-e-3 hd wide 0.10 per image.
# alice: 14 x 4e-6 + 272 x 20e-6 = 0.005496; gpt-image-1.5 unchanged 0.1426      -> 0.148096 (was 0.15355)
# bob:   2 x 0.10 = 0.20; estimate kept 0.05268                                 -> 0.25268  (was 0.29268)
# carol: 20 x 4e-6 + 4160 x 20e-6 = 0.08328, + mainline 0.0023                  -> 0.08558  (was 0.1688)
EXPECTED = {
    "alice": (2, 2, 0, 0, "0.15355", "0.148096"),
    "bob": (2, 1, 1, 0, "0.29268", "0.25268"),
    "carol": (1, 1, 0, 0, "0.1688", "0.08558"),
    None: (1, 0, 0, 1, "0", "0"),
}
EXPECTED_TOTAL = (6, 4, 1, 1, "0.61503", "0.486356")


@pytest.fixture
def new_prices(tmp_path: Path) -> Path:
    builtin = yaml.safe_load((ROOT / "src/otel_image_cost/prices.yaml").read_text())
    image_1 = builtin["models"]["gpt-image-1"]
    image_1["usd_per_1m_tokens"].update(input_text=4.0, output_image=20.0)
    dalle_3 = builtin["models"]["dall-e-3"]
    dalle_3["usd_per_image"]["hd"]["1792x1024"] = 0.10
    path = tmp_path / "new-prices.yaml"
    path.write_text(yaml.safe_dump({"models": {"gpt-image-1": image_1, "dall-e-3": dalle_3}}))
    return path


def totals(document: dict[str, Any]) -> tuple[int, int, int, int, str, str]:
    keys = ("calls", "repriced", "kept", "unpriced")
    counts = tuple(document[key] for key in keys)
    return (*counts, document["old_usd"], document["new_usd"])  # type: ignore[return-value]


def test_billing_records_are_repriced_per_user(tmp_path: Path, new_prices: Path) -> None:
    records = tmp_path / "billing.jsonl"
    # Two export batches; the same calls' spans too, which must not count them twice.
    records.write_text(
        "\n".join([records_line(CALLS[:3]), records_line(CALLS[3:]), spans_line(CALLS)]) + "\n"
    )
    done = run_command("reprice", str(records), "--prices", str(new_prices), "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["read_from"] == "billing records"
    assert document["pricing_version"].startswith("2026-11-21+override:new-prices.yaml:")
    assert {user["user"]: totals(user) for user in document["users"]} == EXPECTED
    assert totals(document["total"]) == EXPECTED_TOTAL


def test_spans_are_repriced_per_user_and_child_spans_ignored(tmp_path: Path, new_prices: Path) -> None:
    child = {**CALLS[4], "gen_ai.tool.name": "image_generation"}  # the Responses image's own span
    spans = tmp_path / "traces.jsonl"
    spans.write_text(spans_line([*CALLS, child]) + "\n")
    result = reprice([spans], load_price_table(str(new_prices)))
    assert result.read_from == "spans"
    got = {user: (t.calls, t.repriced, t.kept, t.unpriced, t.old, t.new) for user, t in result.users.items()}
    assert got == {
        user: (*counts, Decimal(old), Decimal(new)) for user, (*counts, old, new) in EXPECTED.items()
    }
    done = run_command("reprice", str(spans), "--prices", str(new_prices))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"spans, new prices {result.pricing_version}"
    assert lines[2].split() == ["alice", "2", "2", "0", "0", "0.15355", "0.148096"]
    assert lines[-2].split() == ["(no", "user.id)", "1", "0", "0", "1", "0", "0"]
    assert lines[-1].split() == ["total", "6", "4", "1", "1", "0.61503", "0.486356"]


@pytest.fixture(scope="module")
def recorded_spans_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The plugin's real spans of two users' calls, as OTLP JSON lines."""
    telemetry = Telemetry()
    instrumentor = OpenAIImageCostInstrumentor()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    try:
        with (
            LocalOpenAIServer() as server,
            openai.OpenAI(base_url=server.base_url, api_key="sk-test") as client,
        ):
            with billing_context(user_id="alice"):
                client.images.generate(model="gpt-image-1", prompt="a red fox in the snow", quality="low")
                client.images.generate(model="gpt-image-1", prompt="a red fox in the snow", quality="low")
            with billing_context(user_id="bob"):
                client.images.generate(model="gpt-image-2", prompt="a city map", quality="medium")
    finally:
        instrumentor.uninstrument()
    path = tmp_path_factory.mktemp("otlp") / "traces.jsonl"
    request = encode_spans(telemetry.spans())
    path.write_text(MessageToJson(request, indent=None) + "\n")
    yield path


def test_the_plugins_own_spans_are_repriced(recorded_spans_file: Path, new_prices: Path) -> None:
    done = run_command("reprice", str(recorded_spans_file), "--prices", str(new_prices), "--json")
    assert done.returncode == 0, done.stderr
    users = {user["user"]: totals(user) for user in json.loads(done.stdout)["users"]}
    # local server, gpt-image-1 low square, 21-char prompt: 6 text tokens in, 272 image tokens out
    #   old 6 x 5e-6 + 272 x 40e-6 = 0.01091 per call; new 6 x 4e-6 + 272 x 20e-6 = 0.005464
    # gpt-image-2 medium square, 10-char prompt: 3 x 5e-6 + 1756 x 30e-6 = 0.052695, prices unchanged
    assert users == {
        "alice": (2, 2, 0, 0, "0.02182", "0.010928"),
        "bob": (1, 1, 0, 0, "0.052695", "0.052695"),
    }


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("{not json\n", [":1: not JSON"]),
        ("\n[1, 2]\n", [":2: not an OTLP JSON document"]),
        (json.dumps({"resourceSpans": {"a": 1}}), [":1: resourceSpans must be a list of objects"]),
        (
            spans_line([{**CALLS[0], "gen_ai.usage.cost": "lots"}]),
            [":1: gen_ai.usage.cost must be a finite USD"],
        ),
        (spans_line([{**CALLS[0], "openai.image.usage.raw": "{oops"}]), [":1: not JSON"]),
        (
            spans_line([{**CALLS[0], "openai.image.count": -1}]),
            [":1: openai.image.count must be an integer >= 0"],
        ),
        (
            json.dumps(
                {"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": "k", "value": 3}]}]}]}]}
            ),
            [":1: attribute k: malformed value 3"],
        ),
        ("[" * 100_000 + "]" * 100_000, [":1: JSON nested too deeply"]),
        (spans_line([{**CALLS[0], "tags": [[1]]}]), [":1: attribute tags: nested arrays"]),
    ],
)
def test_malformed_input_is_one_line_naming_file_and_line(
    tmp_path: Path, content: str, named: list[str]
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(content)
    done = run_command("reprice", str(path))
    assert_bad_input(done, str(path), *named)


def test_unreadable_file_is_one_line() -> None:
    assert_bad_input(
        run_command("reprice", "/nonexistent/billing.jsonl"), "cannot read /nonexistent/billing.jsonl"
    )
