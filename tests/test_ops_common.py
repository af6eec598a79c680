"""Shared helpers of the ops-pack tests (no tests here): the deploy/ files, the telemetry contract's
instruments, how OpenTelemetry names them in Prometheus, and the PromQL in dashboards and rules."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "otel-image-cost.json"
COLLECTOR_CONFIG = ROOT / "collector-config.yaml"
CONTRACT = ROOT / "docs" / "telemetry-contract.md"
RULE_FILES = (PROMETHEUS_DIR / "budgets.yml", PROMETHEUS_DIR / "alerts.yml")


@dataclass(frozen=True)
class Instrument:
    name: str
    kind: str  # counter | histogram
    unit: str
    prometheus: str  # the contract's Prometheus name; for histograms the family (no _bucket/_sum/_count)


# The contract's metrics table (docs/telemetry-contract.md), restated here;
# `test_contract_table_matches` checks the two agree.
INSTRUMENTS = (
    Instrument("openai.image.cost", "counter", "USD", "openai_image_cost_USD_total"),
    Instrument("openai.image.generated", "counter", "{image}", "openai_image_generated_total"),
    Instrument("openai.image.partial_images", "counter", "{image}", "openai_image_partial_images_total"),
    Instrument("openai.image.unpriced", "counter", "{call}", "openai_image_unpriced_total"),
    Instrument("gen_ai.client.token.usage", "histogram", "{token}", "gen_ai_client_token_usage"),
    Instrument(
        "gen_ai.client.operation.duration", "histogram", "s", "gen_ai_client_operation_duration_seconds"
    ),
)

# Metric attributes of the contract, as Prometheus labels (dots become underscores).
CONTRACT_LABELS = frozenset(
    {
        "user_id",
        "tenant_id",
        "openai_image_model",
        "openai_image_quality",
        "openai_image_size",
        "openai_image_operation",
        "openai_image_cost_source",
        "openai_image_cost_part",
        "gen_ai_request_model",
        "gen_ai_response_model",
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_token_type",
        "error_type",
        "openai_image_unpriced_reason",
        "server_address",
    }
)

# OpenTelemetry -> Prometheus unit suffixes (the subset of the collector's translator table that
# matters here; the Python exporter uses the same rules).
_UNIT_SUFFIXES = {
    "s": "seconds",
    "ms": "milliseconds",
    "By": "bytes",
    "1": "ratio",
    "%": "percent",
    "$": "dollars",
}


def prometheus_name(name: str, unit: str, kind: str) -> str:
    """The Prometheus metric (family) name of an OTel instrument, with unit and type suffixes:
    non-alphanumerics become `_`, a `{annotation}` unit adds nothing, a known UCUM unit its
    Prometheus word, any other unit itself (alphanumerics only); counters end in `_total`."""
    base = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
    if unit and not (unit.startswith("{") and unit.endswith("}")):
        suffix = _UNIT_SUFFIXES.get(unit, re.sub(r"[^a-zA-Z0-9]", "", unit))
        if suffix and not base.endswith("_" + suffix):
            base += "_" + suffix
    return base + "_total" if kind == "counter" else base


def exported_series_names() -> frozenset[str]:
    """Every Prometheus metric name the contract's instruments produce."""
    names: set[str] = set()
    for instrument in INSTRUMENTS:
        family = prometheus_name(instrument.name, instrument.unit, instrument.kind)
        if instrument.kind == "histogram":
            names.update(family + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family)
    return frozenset(names)


def contract_table() -> list[tuple[str, str, str, str]]:
    """(instrument, kind, unit, Prometheus name) rows of the contract's metrics table."""
    rows = re.findall(
        r"^\| `([a-z_.]+)` \| (counter|histogram) \| `([^`]+)` \| `([A-Za-z_]+)\*?`",
        CONTRACT.read_text(),
        re.M,
    )
    return [(name, kind, unit, prom.rstrip("_")) for name, kind, unit, prom in rows]


# -- dashboard -------------------------------------------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def dashboard_panels(dashboard: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every non-row panel, including panels nested in collapsed rows."""
    panels: list[dict[str, Any]] = []
    for panel in (dashboard or load_dashboard())["panels"]:
        if panel["type"] == "row":
            panels.extend(panel.get("panels", []))
        else:
            panels.append(panel)
    return panels


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title and refId, PromQL with Grafana variables) of every dashboard target."""
    return [
        (f"{panel['title']} [{target['refId']}]", target["expr"])
        for panel in dashboard_panels()
        for target in panel["targets"]
    ]


def template_variables() -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in load_dashboard()["templating"]["list"]}


def grafana_expand(expr: str, range_: str = "10m", rate_interval: str = "1m", **values: str) -> str:
    """Substitute the dashboard's variables the way Grafana does before sending a query.
    Template variables default to their All value (`.*`)."""
    out = expr.replace("$__rate_interval", rate_interval).replace("$__range", range_)
    out = out.replace("$__interval", "15s")
    for name in ("user", "tenant", "model"):
        out = out.replace(f"${{{name}}}", values.get(name, ".*")).replace(f"${name}", values.get(name, ".*"))
    assert "$" not in out, f"unexpanded Grafana variable in {out}"
    return out


# -- rules -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    group: str
    name: str  # the alert or the recorded metric
    kind: str  # alert | record
    expr: str
    labels: dict[str, str]


def load_rules(*paths: Path) -> list[Rule]:
    rules = []
    for path in paths or RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                kind = "alert" if "alert" in rule else "record"
                rules.append(
                    Rule(group["name"], rule[kind], kind, rule["expr"], dict(rule.get("labels", {})))
                )
    return rules


# -- PromQL ----------------------------------------------------------------------------------------

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_TOKENS = re.compile(r"(?<![$\w:])[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names_in(expr: str) -> set[str]:
    """The contract metric names (openai_image_* / gen_ai_client_*) an expression reads."""
    tokens = set(_TOKENS.findall(_STRINGS.sub('""', expr)))
    return {
        token
        for token in tokens
        if token.startswith(("openai_image_", "gen_ai_client_")) and token not in CONTRACT_LABELS
    }


# -- docs ----------------------------------------------------------------------------------------

DOCS = ROOT / "docs" / "ops.md"


def docs_snippet(first_line: str) -> str:
    """The fenced code block of docs/ops.md that starts with `first_line`."""
    blocks = re.findall(r"^```\w*\n(.*?)^```", DOCS.read_text(), re.M | re.S)
    found = [block for block in blocks if block.startswith(first_line)]
    assert len(found) == 1, f"{len(found)} blocks start with {first_line!r}"
    return str(found[0])


# -- external tools --------------------------------------------------------------------------------


def require_tool(name: str, package: str = "prometheus") -> str:
    """Path of a tool from a Debian package (`prometheus`, `prometheus-alertmanager`): skip without
    it, but fail under CI, whose script installs it."""
    path = shutil.which(name)
    if path is None:
        message = f"`{name}` not found: apt-get install {package}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
