"""Settings from the environment and from `instrument()` keyword arguments."""

from __future__ import annotations

import logging

import pytest

from otel_image_cost.config import DEFAULT_METRIC_ATTRIBUTES, Settings, load_settings


def test_defaults() -> None:
    assert load_settings({}, environ={}) == Settings()
    assert Settings().metric_attributes == ("user.id", "tenant.id")


def test_environment() -> None:
    settings = load_settings(
        {},
        environ={
            "OTEL_IMAGE_COST_PRICES": "/etc/prices.yaml",
            "OTEL_IMAGE_COST_METRIC_ATTRIBUTES": " tenant.id , plan ,tenant.id",
            "OTEL_IMAGE_COST_AZURE_DEPLOYMENTS": "draw=gpt-image-1, hd = dall-e-3",
            "OTEL_IMAGE_COST_DEFAULT_IMAGE_MODEL": "gpt-image-1.5",
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "TRUE",
        },
    )
    assert settings == Settings(
        prices_path="/etc/prices.yaml",
        metric_attributes=("tenant.id", "plan"),
        azure_deployments={"draw": "gpt-image-1", "hd": "dall-e-3"},
        default_image_model="gpt-image-1.5",
        capture_message_content=True,
    )


def test_keyword_arguments_override_environment() -> None:
    settings = load_settings(
        {
            "metric_attributes": ["user.id"],
            "azure_deployments": {"d": "gpt-image-2"},
            "capture_message_content": False,
        },
        environ={
            "OTEL_IMAGE_COST_METRIC_ATTRIBUTES": "tenant.id",
            "OTEL_IMAGE_COST_AZURE_DEPLOYMENTS": "x=y",
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
        },
    )
    assert settings.metric_attributes == ("user.id",)
    assert settings.azure_deployments == {"d": "gpt-image-2"}
    assert settings.capture_message_content is False


def test_empty_metric_attributes_means_no_attribution_on_metrics() -> None:
    assert load_settings({"metric_attributes": []}, environ={}).metric_attributes == ()


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected", "message"),
    [
        (
            "OTEL_IMAGE_COST_AZURE_DEPLOYMENTS",
            "good=gpt-image-1,broken",
            "azure_deployments",
            {"good": "gpt-image-1"},
            "'deployment=model' pairs",
        ),
        (
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
            "sometimes",
            "capture_message_content",
            False,
            "'true' or 'false'",
        ),
        (
            "OTEL_IMAGE_COST_BILLING_RECORDS",
            "maybe",
            "billing_records",
            True,  # records stay on: the ledger is not lost to a typo
            "'true' or 'false'; keeping true",
        ),
        (
            "OTEL_IMAGE_COST_METRIC_ATTRIBUTES",
            " , ,",
            "metric_attributes",
            DEFAULT_METRIC_ATTRIBUTES,
            "comma-separated attribute keys",
        ),
    ],
)
def test_bad_values_are_logged_with_the_setting_name_and_fall_back(
    caplog: pytest.LogCaptureFixture, variable: str, value: str, field: str, expected: object, message: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_image_cost"):
        settings = load_settings({}, environ={variable: value})
    assert getattr(settings, field) == expected
    assert len(caplog.records) == 1
    assert variable in caplog.records[0].getMessage()
    assert message in caplog.records[0].getMessage()


def test_trust_and_pseudonym_settings_from_the_environment() -> None:
    settings = load_settings(
        {},
        environ={
            "OTEL_IMAGE_COST_TRUST_BAGGAGE": "true",
            "OTEL_IMAGE_COST_PSEUDONYMIZE": "user.id, tenant.id",
            "OTEL_IMAGE_COST_PSEUDONYM_KEY": "s3cret",
            "OTEL_IMAGE_COST_PSEUDONYMIZE_SPANS": "1",
        },
    )
    assert (settings.trust_baggage, settings.pseudonymize, settings.pseudonymize_spans) == (
        True,
        ("user.id", "tenant.id"),
        True,
    )
    assert settings.pseudonym_key == b"s3cret"
    assert "s3cret" not in repr(settings)  # the key never reaches a log line through the settings


def test_a_wrong_trust_flag_is_logged_and_stays_off(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings({}, environ={"OTEL_IMAGE_COST_TRUST_BAGGAGE": "maybe"})
    assert settings.trust_baggage is False
    assert [r.getMessage() for r in caplog.records] == [
        "otel-image-cost: ignoring OTEL_IMAGE_COST_TRUST_BAGGAGE='maybe': expected 'true' or 'false'; "
        "keeping false"
    ]


def test_pseudonymising_spans_needs_the_keys_and_the_key() -> None:
    keyless = load_settings({"pseudonymize": ["user.id"], "pseudonymize_spans": True}, environ={})
    assert (keyless.pseudonymize, keyless.pseudonym_key, keyless.pseudonymize_spans) == ((), None, False)
    no_keys = load_settings({"pseudonym_key": "k", "pseudonymize_spans": True}, environ={})
    assert (no_keys.pseudonymize, no_keys.pseudonym_key, no_keys.pseudonymize_spans) == ((), None, False)
