"""deploy/prometheus: `promtool check config`, `promtool check rules` and `promtool test rules` (the
Debian `prometheus` package's promtool), plus the conventions every alert keeps."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_ops_common import PROMETHEUS_DIR, ROOT, RULE_FILES, docs_snippet, load_rules, require_tool

TESTS_DIR = PROMETHEUS_DIR / "tests"
UNIT_TESTS = sorted(TESTS_DIR.glob("*_test.yml"))
ALERTS = (
    "OpenAIImageUserHourlyBudgetExceeded",
    "OpenAIImageUserDailyBudgetExceeded",
    "OpenAIImageTenantDailyBudgetExceeded",
    "OpenAIImageSpendRateAboveWeeklyBaseline",
    "OpenAIImageUnpricedCalls",
    "OpenAIImageErrorRatioHigh",
    "OpenAIImageCostAttributionOverflow",
    "OpenAIImageCostTelemetryDown",
)


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_promtool_check_config() -> None:
    result = promtool("check", "config", PROMETHEUS_DIR / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "prometheus.yml is valid prometheus config file syntax" in result.stdout
    assert "SUCCESS: 2 rule files found" in result.stdout


def test_promtool_check_rules() -> None:
    files = [*RULE_FILES, TESTS_DIR / "budget_overrides.yml"]
    result = promtool("check", "rules", "--lint=all", "--lint-fatal", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files), result.stdout


def test_promtool_test_rules() -> None:
    assert len(UNIT_TESTS) == 3
    result = promtool("test", "rules", *UNIT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(UNIT_TESTS), result.stdout


def test_promtool_test_rules_fails_when_a_budget_changes(tmp_path: Path) -> None:
    """The unit tests pin the budgets: raising the hourly default from $10 to $13 must break them."""
    deploy = tmp_path / "prometheus"
    (deploy / "tests").mkdir(parents=True)
    for path in [*PROMETHEUS_DIR.glob("*.yml"), *TESTS_DIR.glob("*.yml")]:
        (deploy / path.relative_to(PROMETHEUS_DIR)).write_text(path.read_text())
    budgets = deploy / "budgets.yml"
    budgets.write_text(budgets.read_text().replace("expr: vector(10)", "expr: vector(13)", 1))
    result = promtool("test", "rules", deploy / "tests" / "budget_alerts_test.yml")
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "alertname: OpenAIImageUserHourlyBudgetExceeded, time: 2h" in output


def test_the_alert_set() -> None:
    assert tuple(rule.name for rule in load_rules() if rule.kind == "alert") == ALERTS


@pytest.mark.parametrize("alert", ALERTS)
def test_alert_conventions(alert: str) -> None:
    raw = {
        rule["alert"]: rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }[alert]
    assert raw["labels"]["severity"] in {"warning", "critical"}
    if "Budget" in alert:
        # who pays (budget_scope) and the numbers, for Alertmanager's routes, template and the webhook
        assert raw["labels"]["budget_scope"] == ("tenant" if "Tenant" in alert else "user")
        assert set(raw["annotations"]) == {"summary", "description", "spend_usd", "budget_usd"}
    else:
        assert "budget_scope" not in raw["labels"]
        assert set(raw["annotations"]) == {"summary", "description"}


def _alert_tests() -> list[dict[str, Any]]:
    return [
        case
        for path in UNIT_TESTS
        for group in yaml.safe_load(path.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
    ]


@pytest.mark.parametrize("alert", ALERTS)
def test_every_alert_is_unit_tested_firing_and_not_firing(alert: str) -> None:
    cases = [case for case in _alert_tests() if case["alertname"] == alert]
    assert any(case["exp_alerts"] for case in cases), f"{alert}: no test where it fires"
    assert any(not case["exp_alerts"] for case in cases), f"{alert}: no test where it must not fire"


def test_budgets_are_data_in_one_file() -> None:
    """Budget amounts appear only in budgets.yml, as openai_image_cost_budget_USD series; the alert
    expressions compare with recorded budgets, never with a dollar literal."""
    budgets = [rule for rule in load_rules(PROMETHEUS_DIR / "budgets.yml")]
    assert {(r.labels["budget_scope"], r.labels["budget_window"]): r.expr for r in budgets} == {
        ("user", "1h"): "vector(10)",
        ("user", "24h"): "vector(50)",
        ("tenant", "24h"): "vector(500)",
    }
    assert {r.name for r in budgets} == {"openai_image_cost_budget_USD"}
    for rule in load_rules(PROMETHEUS_DIR / "alerts.yml"):
        if rule.kind == "alert" and "Budget" in rule.name:
            assert re.search(
                r"> on \((user_id|tenant_id)\) \w+:openai_image_cost_budget_USD:\d+h\)?$", rule.expr, re.M
            )


def test_docs_remote_write_snippet_is_valid_prometheus_config(tmp_path: Path) -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config.update(
        yaml.safe_load(
            docs_snippet("# prometheus.yml: remote_write to a long-term, horizontally scaled store")
        )
    )
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    config["scrape_configs"][1]["file_sd_configs"][0]["files"] = [
        str(PROMETHEUS_DIR / "targets" / "apps.yml")
    ]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = promtool("check", "config", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert config["remote_write"][0]["write_relabel_configs"][0]["action"] == "keep"
