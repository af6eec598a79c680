"""deploy/alertmanager against the real tools of the Debian `prometheus-alertmanager` package:
`amtool check-config`, `amtool config routes test` for every alert of deploy/prometheus/alerts.yml,
the notification template rendered by `amtool template render`, the inhibitions in a running
Alertmanager, and the whole chain end to end (examples/alerting_demo.py: the instrumented app,
Prometheus, Alertmanager and the budget webhook, all real, on loopback)."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from alerting_demo import ALERTMANAGER_BINARY, CALL_USD, ChatCatcher, LocalAlertmanager, run
from budget_webhook import BudgetWebhook
from test_ops_common import DEPLOY, ROOT, load_rules, require_tool

ALERTMANAGER_DIR = DEPLOY / "alertmanager"
CONFIG = ALERTMANAGER_DIR / "alertmanager.yml"
PACKAGE = "prometheus-alertmanager"


def amtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("amtool", PACKAGE), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_amtool_check_config() -> None:
    result = amtool("check-config", CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 2
    for part in ("global config", "route", "2 inhibit rules", "3 receivers", "1 templates"):
        assert f" - {part}\n" in result.stdout


def test_amtool_check_config_fails_on_a_broken_template(tmp_path: Path) -> None:
    """The check is not vacuous: it parses the templates."""
    (tmp_path / "templates").mkdir()
    template = (ALERTMANAGER_DIR / "templates" / "otel-image-cost.tmpl").read_text()
    (tmp_path / "templates" / "otel-image-cost.tmpl").write_text(template.replace("{{ end }}", "", 1))
    (tmp_path / "alertmanager.yml").write_text(CONFIG.read_text())
    result = amtool("check-config", tmp_path / "alertmanager.yml")
    assert result.returncode == 1
    assert "FAILED" in result.stdout + result.stderr


def _alert_labels() -> dict[str, dict[str, str]]:
    """Each shipped alert's labels as it fires: its rule labels, plus who it is about."""
    about = {"user": {"user_id": "alice", "tenant_id": "acme"}, "tenant": {"tenant_id": "acme"}}
    return {
        rule.name: {
            "alertname": rule.name,
            **rule.labels,
            **about.get(rule.labels.get("budget_scope", ""), {}),
        }
        for rule in load_rules()
        if rule.kind == "alert"
    }


EXPECTED_RECEIVERS = {
    "OpenAIImageUserHourlyBudgetExceeded": "budget-webhook,team-warning",
    "OpenAIImageUserDailyBudgetExceeded": "budget-webhook,team-warning",
    "OpenAIImageTenantDailyBudgetExceeded": "budget-webhook,oncall-critical",
    "OpenAIImageSpendRateAboveWeeklyBaseline": "team-warning",
    "OpenAIImageUnpricedCalls": "team-warning",
    "OpenAIImageErrorRatioHigh": "team-warning",
    "OpenAIImageCostAttributionOverflow": "oncall-critical",
    "OpenAIImageCostTelemetryDown": "team-warning",
}


def test_every_shipped_alert_has_a_route_case() -> None:
    assert set(_alert_labels()) == set(EXPECTED_RECEIVERS)


@pytest.mark.parametrize("alert", EXPECTED_RECEIVERS)
def test_amtool_routes_every_alert(alert: str) -> None:
    labels = [f"{key}={value}" for key, value in _alert_labels()[alert].items()]
    expected = EXPECTED_RECEIVERS[alert]
    result = amtool(
        "config", "routes", "test", f"--config.file={CONFIG}", f"--verify.receivers={expected}", *labels
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == expected


def test_amtool_routes_test_catches_a_wrong_expectation() -> None:
    result = amtool(
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        "--verify.receivers=oncall-critical",
        "alertname=OpenAIImageUserHourlyBudgetExceeded",
        "severity=warning",
        "budget_scope=user",
    )
    assert result.returncode == 1
    assert "Expected receivers did not match" in result.stdout + result.stderr


def test_routes_group_by_tenant_and_user() -> None:
    route = yaml.safe_load(CONFIG.read_text())["route"]
    assert {"tenant_id", "user_id"} <= set(route["group_by"])
    budget = next(r for r in route["routes"] if r["receiver"] == "budget-webhook")
    assert budget["group_by"] == ["tenant_id", "user_id"] and budget["continue"] is True


def _notification(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    common = {k: v for k, v in alerts[0]["labels"].items() if all(a["labels"].get(k) == v for a in alerts)}
    return {
        "receiver": "team-warning",
        "status": status,
        "alerts": list(alerts),
        "groupLabels": {k: common[k] for k in ("tenant_id", "user_id") if k in common},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
    }


def _alert(labels: dict[str, str], annotations: dict[str, str], status: str = "firing") -> dict[str, Any]:
    return {
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": "2026-11-30T03:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": "0123456789abcdef",
    }


def render(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(data))
    result = amtool(
        "template",
        "render",
        f"--template.glob={ALERTMANAGER_DIR / 'templates' / '*.tmpl'}",
        '--template.text={{ template "otel_image_cost.title" . }}\n{{ template "otel_image_cost.text" . }}',
        f"--template.data={path}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_template_names_user_tenant_spend_and_budget(tmp_path: Path) -> None:
    labels = _alert_labels()["OpenAIImageUserHourlyBudgetExceeded"]
    annotations = {
        "summary": "User alice (tenant acme) spent $12.50 on OpenAI images in the last hour",
        "description": "Spend of alice over the last hour is $12.50, above the hourly budget of $10.00.",
        "spend_usd": "12.5",
        "budget_usd": "10",
    }
    assert render(tmp_path, _notification(_alert(labels, annotations))) == (
        "[FIRING:1] OpenAIImageUserHourlyBudgetExceeded tenant=acme user=alice\n"
        "User alice of tenant acme: spent $12.5 against a budget of $10 per 1h\n"
        "User alice (tenant acme) spent $12.50 on OpenAI images in the last hour\n"
        "Spend of alice over the last hour is $12.50, above the hourly budget of $10.00.\n"
    )


def test_template_tenant_and_health_alerts(tmp_path: Path) -> None:
    tenant = _alert(
        _alert_labels()["OpenAIImageTenantDailyBudgetExceeded"],
        {"summary": "Tenant acme spent $612.50", "spend_usd": "612.5", "budget_usd": "500"},
        status="resolved",
    )
    assert render(tmp_path, _notification(tenant, status="resolved")) == (
        "[RESOLVED] OpenAIImageTenantDailyBudgetExceeded tenant=acme\n"
        "Tenant acme: spent $612.5 against a budget of $500 per 24h (resolved)\n"
        "Tenant acme spent $612.50\n"
    )
    unpriced = _alert(
        {"alertname": "OpenAIImageUnpricedCalls", "severity": "warning", "openai_image_model": "dall-e-9"},
        {"summary": "OpenAI image calls to dall-e-9 are not priced (unknown_model)"},
    )
    assert render(tmp_path, _notification(unpriced)) == (
        "[FIRING:1] OpenAIImageUnpricedCalls\n"
        "OpenAIImageUnpricedCalls\n"
        "OpenAI image calls to dall-e-9 are not priced (unknown_model)\n"
    )


# -- a running Alertmanager ------------------------------------------------------------------------


def test_inhibitions_in_a_running_alertmanager(tmp_path: Path) -> None:
    """A tenant over its daily budget silences its users' budget alerts; a user's daily alert
    silences the same user's hourly one; nothing else is inhibited."""
    binary = require_tool(ALERTMANAGER_BINARY, PACKAGE)
    starts = datetime.now(UTC) - timedelta(seconds=5)

    def alert(name: str, **labels: str) -> dict[str, Any]:
        rule = _alert_labels()[name]
        merged = {k: v for k, v in rule.items() if k not in {"user_id", "tenant_id"}} | labels
        return {"labels": merged, "annotations": {"summary": name}, "startsAt": starts.isoformat()}

    with (
        BudgetWebhook(tmp_path / "flags.sqlite3") as webhook,
        ChatCatcher() as chat,
        LocalAlertmanager(webhook.url, chat.url, binary=binary, group_wait="30s") as alertmanager,
    ):
        alertmanager.api(
            "alerts",
            [
                alert("OpenAIImageTenantDailyBudgetExceeded", tenant_id="bigcorp"),
                alert("OpenAIImageUserHourlyBudgetExceeded", user_id="frank", tenant_id="bigcorp"),
                alert("OpenAIImageUserDailyBudgetExceeded", user_id="frank", tenant_id="bigcorp"),
                alert("OpenAIImageUserHourlyBudgetExceeded", user_id="dave", tenant_id="acme"),
                alert("OpenAIImageUserDailyBudgetExceeded", user_id="dave", tenant_id="acme"),
                alert("OpenAIImageUserHourlyBudgetExceeded", user_id="alice", tenant_id="acme"),
            ],
        )
        deadline = time.monotonic() + 20
        while True:
            alerts = alertmanager.api("alerts")
            state = {
                (
                    a["labels"]["alertname"],
                    a["labels"].get("tenant_id", ""),
                    a["labels"].get("user_id", ""),
                ): a["status"]["state"]
                for a in alerts
            }
            if (len(state) == 6 and "unprocessed" not in state.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert state == {
        ("OpenAIImageTenantDailyBudgetExceeded", "bigcorp", ""): "active",
        ("OpenAIImageUserHourlyBudgetExceeded", "bigcorp", "frank"): "suppressed",
        ("OpenAIImageUserDailyBudgetExceeded", "bigcorp", "frank"): "suppressed",
        ("OpenAIImageUserHourlyBudgetExceeded", "acme", "dave"): "suppressed",
        ("OpenAIImageUserDailyBudgetExceeded", "acme", "dave"): "active",
        ("OpenAIImageUserHourlyBudgetExceeded", "acme", "alice"): "active",
    }


# -- end to end --------------------------------------------------------------------------------------


def test_end_to_end_overspending_user_reaches_the_webhook_and_the_app_stops() -> None:
    """The instrumented app -> real Prometheus (test copy: 1 s intervals, $0.25 hourly budget) ->
    real Alertmanager (1 s group_wait) -> the budget webhook -> the app asks and is refused."""
    require_tool("prometheus")
    require_tool(ALERTMANAGER_BINARY, PACKAGE)
    result = run(budget=0.25, timeout=45)
    print(
        f"\noverspending call -> webhook {result.webhook_latency:.2f} s,"
        f" -> app refused {result.refusal_latency:.2f} s"
    )
    calls = [(e["user"], e["tenant"]) for e in result.events if e["event"] == "call"]
    # alice: 2 calls ($0.33285 > $0.25), then refused; bob and carol: 1 call each ($0.166425 each)
    assert calls == [("alice", "acme"), ("alice", "acme"), ("bob", "acme"), ("carol", "globex")]
    assert [e["event"] for e in result.events][-2:] == ["refused", "done"]
    [flag] = result.overspender_flags
    assert flag["alertname"] == "OpenAIImageUserHourlyBudgetExceeded"
    assert (flag["user_id"], flag["tenant_id"], flag["budget_window"]) == ("alice", "acme", "1h")
    assert round(flag["spend_usd"], 9) == round(2 * CALL_USD, 9) == 0.33285  # 2 x (4160 x $40/1M + 5 x $5/1M)
    assert flag["budget_usd"] == 0.25
    # exactly one notification reached the webhook (alice's alert, firing), nobody else is flagged
    assert [status for *_, status in result.received] == ["firing"]
    assert result.others == {"bob": False, "carol": False}
    assert result.flags_by_tenant["acme"]["users"] == ["alice"]
    assert result.flags_by_tenant["globex"] == {"own": [], "users": []}
    # people are told too: the team channel, with the template naming user, tenant, spend, budget
    [(receiver, message)] = result.chat
    assert receiver == "/team-warning"
    [attachment] = message["attachments"]
    assert attachment["title"] == "[FIRING:1] OpenAIImageUserHourlyBudgetExceeded tenant=acme user=alice"
    assert attachment["text"].startswith(
        "User alice of tenant acme: spent $0.33285 against a budget of $0.25 per 1h\n"
    )
    assert 0 < result.webhook_latency <= result.refusal_latency < 30
