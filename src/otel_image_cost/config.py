"""Settings: environment variables, overridable by `instrument(...)` keyword arguments.

A wrong value never stops the application: it is logged once, naming the setting and what it
accepts, and the setting falls back to its safe default.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

ENV_PRICES = "OTEL_IMAGE_COST_PRICES"
ENV_METRIC_ATTRIBUTES = "OTEL_IMAGE_COST_METRIC_ATTRIBUTES"
ENV_AZURE_DEPLOYMENTS = "OTEL_IMAGE_COST_AZURE_DEPLOYMENTS"
ENV_DEFAULT_IMAGE_MODEL = "OTEL_IMAGE_COST_DEFAULT_IMAGE_MODEL"
ENV_CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
ENV_TRUST_BAGGAGE = "OTEL_IMAGE_COST_TRUST_BAGGAGE"
ENV_PSEUDONYMIZE = "OTEL_IMAGE_COST_PSEUDONYMIZE"
ENV_PSEUDONYM_KEY = "OTEL_IMAGE_COST_PSEUDONYM_KEY"
ENV_PSEUDONYMIZE_SPANS = "OTEL_IMAGE_COST_PSEUDONYMIZE_SPANS"
ENV_BILLING_RECORDS = "OTEL_IMAGE_COST_BILLING_RECORDS"

DEFAULT_METRIC_ATTRIBUTES = ("user.id", "tenant.id")

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


@dataclass(frozen=True, slots=True)
class Settings:
    """The plugin's configuration, resolved once at `instrument()` time."""

    prices_path: str | None = None
    metric_attributes: tuple[str, ...] = DEFAULT_METRIC_ATTRIBUTES
    azure_deployments: Mapping[str, str] = field(default_factory=dict)
    default_image_model: str | None = None
    capture_message_content: bool = False
    trust_baggage: bool = False  # take user.id / tenant.id from Baggage (only behind a trusted gateway)
    pseudonymize: tuple[str, ...] = ()  # attribution keys exported as keyed pseudonyms
    pseudonym_key: bytes | None = field(default=None, repr=False)  # None: pseudonymisation is off
    pseudonymize_spans: bool = False
    billing_records: bool = True  # one log record per finished call (the per-call ledger)


def load_settings(overrides: Mapping[str, object], environ: Mapping[str, str] = os.environ) -> Settings:
    """Settings from `environ`, with `instrument()` keyword arguments taking precedence."""

    def pick(key: str, env: str) -> object:
        return overrides[key] if overrides.get(key) is not None else environ.get(env)

    pseudonymize = _attribute_keys(pick("pseudonymize", ENV_PSEUDONYMIZE), ENV_PSEUDONYMIZE, ())
    key = _optional_text(pick("pseudonym_key", ENV_PSEUDONYM_KEY))
    if pseudonymize and key is None:
        logger.error(
            "otel-image-cost: refusing %s=%s: %s is not set; those keys are exported as they are",
            ENV_PSEUDONYMIZE,
            ",".join(pseudonymize),
            ENV_PSEUDONYM_KEY,
        )
        pseudonymize = ()
    return Settings(
        prices_path=_optional_text(pick("prices_path", ENV_PRICES)),
        metric_attributes=_attribute_keys(pick("metric_attributes", ENV_METRIC_ATTRIBUTES)),
        azure_deployments=_deployments(pick("azure_deployments", ENV_AZURE_DEPLOYMENTS)),
        default_image_model=_optional_text(pick("default_image_model", ENV_DEFAULT_IMAGE_MODEL)),
        capture_message_content=_flag(
            pick("capture_message_content", ENV_CAPTURE_CONTENT), ENV_CAPTURE_CONTENT, default=False
        ),
        trust_baggage=_flag(pick("trust_baggage", ENV_TRUST_BAGGAGE), ENV_TRUST_BAGGAGE, default=False),
        pseudonymize=pseudonymize,
        pseudonym_key=key.encode("utf-8") if pseudonymize and key is not None else None,
        pseudonymize_spans=bool(pseudonymize)
        and _flag(pick("pseudonymize_spans", ENV_PSEUDONYMIZE_SPANS), ENV_PSEUDONYMIZE_SPANS, default=False),
        billing_records=_flag(
            pick("billing_records", ENV_BILLING_RECORDS), ENV_BILLING_RECORDS, default=True
        ),
    )


def _optional_text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _attribute_keys(
    value: object, setting: str = ENV_METRIC_ATTRIBUTES, default: tuple[str, ...] = DEFAULT_METRIC_ATTRIBUTES
) -> tuple[str, ...]:
    if value is None:
        return default
    items = list(value.split(",") if isinstance(value, str) else _iterable(value, setting, default))
    if not all(isinstance(item, str) for item in items):
        _reject(setting, value, "attribute keys as strings; the other entries are ignored")
        items = [item for item in items if isinstance(item, str)]
    keys = tuple(dict.fromkeys(str(item).strip() for item in items if str(item).strip()))
    if isinstance(value, str) and not keys and value.strip():
        _reject(setting, value, "comma-separated attribute keys, e.g. 'user.id,tenant.id'")
        return default
    return keys


def _iterable(value: object, setting: str, default: tuple[str, ...]) -> Iterable[object]:
    if isinstance(value, Iterable):
        return value
    _reject(setting, value, "a list of attribute keys or a comma-separated string")
    return default


def _deployments(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(name).strip(): str(model).strip() for name, model in value.items()}
    mapping: dict[str, str] = {}
    for entry in str(value).split(","):
        if not entry.strip():
            continue
        name, sep, model = entry.partition("=")
        if not sep or not name.strip() or not model.strip():
            _reject(ENV_AZURE_DEPLOYMENTS, entry, "'deployment=model' pairs separated by commas")
            continue
        mapping[name.strip()] = model.strip()
    return mapping


def _flag(value: object, setting: str, *, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    _reject(setting, value, f"'true' or 'false'; keeping {str(default).lower()}")
    return default


def _reject(setting: str, value: object, accepted: str) -> None:
    logger.warning("otel-image-cost: ignoring %s=%r: expected %s", setting, value, accepted)
