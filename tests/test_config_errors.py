"""Bad values in the plugin's own settings, end to end through `instrument()` and a real call.

Every wrong value is logged once, naming the setting and what it accepts, and the plugin falls back
to a safe behaviour: the application's calls work and are still recorded.
(tests/test_config.py covers the parsing of good values.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from otel_image_cost import OpenAIImageCostInstrumentor

from conftest import Telemetry

Instrument = Callable[..., OpenAIImageCostInstrumentor]
PRICES = "OTEL_IMAGE_COST_PRICES"
METRIC_ATTRIBUTES = "OTEL_IMAGE_COST_METRIC_ATTRIBUTES"
AZURE = "OTEL_IMAGE_COST_AZURE_DEPLOYMENTS"
DEFAULT_MODEL = "OTEL_IMAGE_COST_DEFAULT_IMAGE_MODEL"
CAPTURE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
ALL_SETTINGS = (PRICES, METRIC_ATTRIBUTES, AZURE, DEFAULT_MODEL, CAPTURE)
# gpt-image-1, low, 1024x1024, prompt "a cat": 2 x $5/M + 272 x $40/M.
LOW_CAT_USD = 0.01089


@pytest.fixture(autouse=True)
def no_settings_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ALL_SETTINGS:
        monkeypatch.delenv(name, raising=False)


def complaints(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name.startswith("otel_image_cost") and r.levelno >= logging.WARNING
    ]


def one_complaint(caplog: pytest.LogCaptureFixture, setting: str, *accepted: str) -> str:
    found = complaints(caplog)
    assert len(found) == 1, [r.getMessage() for r in found]
    message = found[0].getMessage()
    assert setting in message
    for words in accepted:
        assert words in message, message
    return message


def draw(client: openai.OpenAI, **extra: Any) -> Any:
    arguments: dict[str, Any] = {"model": "gpt-image-1", "prompt": "a cat", "quality": "low", **extra}
    return client.images.generate(**arguments)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="otel_image_cost")
    return caplog


# -- the price file ------------------------------------------------------------------------------


@pytest.mark.parametrize("problem", ["missing", "not_yaml", "wrong_schema"])
@pytest.mark.parametrize("via", ["argument", "environment"])
def test_bad_price_file(
    problem: str,
    via: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    client: openai.OpenAI,
    instrument: Instrument,
    telemetry: Telemetry,
    logs: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "prices.yaml"
    if problem == "not_yaml":
        path.write_text("models: [unclosed\n")
    elif problem == "wrong_schema":
        path.write_text("models:\n  gpt-image-1: 12\n")
    if via == "argument":
        instrument(prices_path=str(path))
    else:
        monkeypatch.setenv(PRICES, str(path))
        instrument()
    one_complaint(logs, PRICES, str(path), "YAML or JSON price file")
    for _ in range(3):
        assert draw(client).data
    assert len(complaints(logs)) == 1  # once, at instrument(), not per call
    # Safe: every call still has its span, priced as unknown, counted as unpriced.
    spans = telemetry.spans()
    assert [dict(s.attributes or {})["openai.image.cost.source"] for s in spans] == ["unknown"] * 3
    assert telemetry.total("openai.image.unpriced", openai__image__unpriced__reason="price_file_error") == 3
    assert telemetry.total("openai.image.generated") == 3


# -- metric attributes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected_labels"),
    [
        (42, {"user.id": "u1", "tenant.id": "t1"}),  # not a list: the default keys
        (" , ,", {"user.id": "u1", "tenant.id": "t1"}),  # nothing in it: the default keys
        (["user.id", 7, None], {"user.id": "u1"}),  # the string keys, the others ignored
    ],
    ids=["not-a-list", "empty-entries", "non-string-keys"],
)
def test_bad_metric_attributes(
    value: object,
    expected_labels: dict[str, str],
    client: openai.OpenAI,
    instrument: Instrument,
    telemetry: Telemetry,
    logs: pytest.LogCaptureFixture,
) -> None:
    from otel_image_cost import billing_context

    instrument(metric_attributes=value)
    one_complaint(logs, METRIC_ATTRIBUTES, "attribute keys")
    with billing_context(user_id="u1", tenant_id="t1"):
        draw(client)
    ((labels, images),) = telemetry.sums("openai.image.generated")
    assert images == 1
    assert {k: v for k, v in labels.items() if k in ("user.id", "tenant.id")} == expected_labels
    assert dict(telemetry.span().attributes or {})["tenant.id"] == "t1"  # spans keep all attribution


# -- Azure deployments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("draw=gpt-image-1,broken", {"draw": "gpt-image-1"}),
        (42, {}),
        ("draw=gpt-image-99", {"draw": "gpt-image-99"}),
    ],
    ids=["entry-without-model", "not-a-mapping", "unknown-model"],
)
def test_bad_azure_deployments(
    value: object,
    expected: dict[str, str],
    instrument: Instrument,
    logs: pytest.LogCaptureFixture,
) -> None:
    from otel_image_cost import instrumentor

    instrument(azure_deployments=value)
    if isinstance(value, str) and "gpt-image-99" in value:
        one_complaint(logs, AZURE, "gpt-image-99", "gpt-image-1")  # names the models it can price
    else:
        one_complaint(logs, AZURE, "'deployment=model' pairs")
    runtime = instrumentor._Active.runtime
    assert runtime is not None
    assert dict(runtime.settings.azure_deployments) == expected


# -- default image model ---------------------------------------------------------------------------


def test_unknown_default_image_model(
    client: openai.OpenAI, instrument: Instrument, telemetry: Telemetry, logs: pytest.LogCaptureFixture
) -> None:
    instrument(default_image_model="gpt-image-99")
    message = one_complaint(logs, DEFAULT_MODEL, "gpt-image-99")
    assert "gpt-image-1" in message  # names the models it can price
    # Safe: a call naming no model is recorded, unpriced, never priced as some other model.
    client.images.generate(prompt="a cat", quality="low")
    span = telemetry.span()
    assert dict(span.attributes or {})["openai.image.unpriced.reason"] == "unknown_model"
    assert "gen_ai.usage.cost" not in dict(span.attributes or {})
    assert len(complaints(logs)) == 1


def test_known_default_image_model_is_quiet(
    client: openai.OpenAI, instrument: Instrument, telemetry: Telemetry, logs: pytest.LogCaptureFixture
) -> None:
    instrument(default_image_model="gpt-image-1", azure_deployments="draw=gpt-image-1.5")
    assert complaints(logs) == []
    client.images.generate(prompt="a cat", quality="low")
    assert dict(telemetry.span().attributes or {})["gen_ai.usage.cost"] == LOW_CAT_USD


# -- capturing message content ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["sometimes", 2, "yes please"])
def test_bad_capture_message_content(
    value: object,
    monkeypatch: pytest.MonkeyPatch,
    client: openai.OpenAI,
    instrument: Instrument,
    telemetry: Telemetry,
    logs: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(CAPTURE, str(value))
    instrument()
    one_complaint(logs, CAPTURE, "'true' or 'false'")
    draw(client)
    assert "openai.image.prompt" not in dict(telemetry.span().attributes or {})  # safe: prompts stay off
