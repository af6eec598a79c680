"""examples/budget_webhook.py over real HTTP on loopback: Alertmanager payloads flag and clear users
and tenants in SQLite; bad, oversized, unauthorised and replayed payloads get a 4xx and change
nothing. (The payloads real Alertmanager sends are exercised in tests/test_ops_alertmanager.py.)"""

from __future__ import annotations

import copy
import http.client
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from budget_webhook import MAX_BODY_BYTES, BudgetWebhook, over_budget

TOKEN = "s3cret-token"
STARTS = "2026-11-30T03:00:00.123456789Z"
NEVER = "0001-01-01T00:00:00Z"


def budget_alert(
    user: str = "alice",
    tenant: str = "acme",
    *,
    status: str = "firing",
    alertname: str = "OpenAIImageUserHourlyBudgetExceeded",
    fingerprint: str = "0123456789abcdef",
    starts_at: str = STARTS,
    spend: str = "0.33285",
    budget: str = "0.25",
) -> dict[str, Any]:
    scope = "tenant" if alertname.startswith("OpenAIImageTenant") else "user"
    labels = {
        "alertname": alertname,
        "severity": "critical" if scope == "tenant" else "warning",
        "budget_scope": scope,
        "budget_window": "1h" if "Hourly" in alertname else "24h",
        "tenant_id": tenant,
    }
    if scope == "user":
        labels["user_id"] = user
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": "over budget", "spend_usd": spend, "budget_usd": budget},
        "startsAt": starts_at,
        "endsAt": NEVER if status == "firing" else "2026-11-30T03:05:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }


def payload(
    *alerts: dict[str, Any], group_key: str = '{}/{budget_scope=~"user|tenant"}:{user_id="alice"}'
) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": "budget-webhook",
        "groupLabels": {"user_id": "alice"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


@pytest.fixture
def hook(tmp_path: Path) -> Iterator[BudgetWebhook]:
    with BudgetWebhook(tmp_path / "flags.sqlite3", token=TOKEN) as running:
        yield running


def post(
    hook: BudgetWebhook,
    body: bytes | dict[str, Any],
    *,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
    path: str = "/alerts",
) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    host, port = hook.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    sent = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    try:
        connection.request("POST", path, body=data, headers=sent | (headers or {}))
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        connection.close()


def get(hook: BudgetWebhook, query: str) -> tuple[int, dict[str, Any]]:
    host, port = hook.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", f"/over-budget?{query}")
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        connection.close()


def state(tmp_path: Path) -> list[tuple[Any, ...]]:
    """Every row of both tables, read with a separate connection."""
    with sqlite3.connect(tmp_path / "flags.sqlite3") as db:
        rows = db.execute("SELECT * FROM applied ORDER BY 1, 2, 3, 4").fetchall()
        return rows + db.execute("SELECT * FROM over_budget ORDER BY 1").fetchall()


def test_firing_flags_the_user_and_resolved_clears_it(hook: BudgetWebhook) -> None:
    assert post(hook, payload(budget_alert())) == (200, {"applied": 1})
    answer = over_budget(hook.url, "alice", "acme")
    assert answer["over_budget"] is True
    [flag] = answer["alerts"]
    assert flag["alertname"] == "OpenAIImageUserHourlyBudgetExceeded"
    assert (flag["user_id"], flag["tenant_id"], flag["budget_window"]) == ("alice", "acme", "1h")
    assert (flag["spend_usd"], flag["budget_usd"]) == (0.33285, 0.25)
    assert flag["starts_at"] == STARTS
    assert over_budget(hook.url, "alice")["over_budget"] is True  # without the tenant too
    assert over_budget(hook.url, "bob", "acme") == {
        "user": "bob",
        "tenant": "acme",
        "over_budget": False,
        "alerts": [],
    }
    assert over_budget(hook.url, "alice", "globex")["over_budget"] is False  # another tenant's alice
    assert get(hook, "tenant=acme")[1] == {
        "tenant": "acme",
        "over_budget": False,  # the tenant's own budget is fine
        "alerts": [],
        "users_over_budget": ["alice"],
    }

    resolved = payload(budget_alert(status="resolved"))
    assert post(hook, resolved) == (200, {"applied": 1})
    assert over_budget(hook.url, "alice", "acme") == {
        "user": "alice",
        "tenant": "acme",
        "over_budget": False,
        "alerts": [],
    }


def test_tenant_alert_refuses_every_user_of_the_tenant(hook: BudgetWebhook) -> None:
    tenant = budget_alert(
        tenant="bigcorp", alertname="OpenAIImageTenantDailyBudgetExceeded", spend="612.5", budget="500"
    )
    assert post(hook, payload(tenant))[0] == 200
    for user in ("alice", "anyone"):
        answer = over_budget(hook.url, user, "bigcorp")
        assert answer["over_budget"] is True
        assert [(a["scope"], a["tenant_id"], a["spend_usd"]) for a in answer["alerts"]] == [
            ("tenant", "bigcorp", 612.5)
        ]
    assert over_budget(hook.url, "alice")["over_budget"] is False  # asked without the tenant: user flags only
    status, answer = get(hook, "tenant=bigcorp")
    assert (status, answer["over_budget"], answer["users_over_budget"]) == (200, True, [])


def test_replay_is_409_and_changes_nothing(hook: BudgetWebhook, tmp_path: Path) -> None:
    first = payload(budget_alert())
    assert post(hook, first)[0] == 200
    before = state(tmp_path)
    assert post(hook, first) == (
        409,
        {"error": "replay: every alert of this notification was already applied"},
    )
    assert state(tmp_path) == before
    # the same alert in the group's next notification, beside a new one: only the new one is applied
    second = payload(
        budget_alert(),
        budget_alert("alice", alertname="OpenAIImageUserDailyBudgetExceeded", fingerprint="fedcba9876543210"),
    )
    assert post(hook, second) == (200, {"applied": 1})
    assert len(over_budget(hook.url, "alice", "acme")["alerts"]) == 2
    # a resolution, replayed
    resolved = payload(budget_alert(status="resolved"))
    assert post(hook, resolved)[0] == 200
    after_resolution = state(tmp_path)
    assert post(hook, resolved)[0] == 409
    assert state(tmp_path) == after_resolution


def test_a_late_firing_after_its_resolution_does_not_flag_again(hook: BudgetWebhook) -> None:
    assert post(hook, payload(budget_alert(status="resolved")))[0] == 200
    # the firing notification of the same alert (same startsAt) arrives late, in another group key
    assert post(hook, payload(budget_alert(), group_key="other"))[0] == 200
    assert over_budget(hook.url, "alice", "acme")["over_budget"] is False
    # the alert firing again later is a new startsAt: flagged
    assert post(hook, payload(budget_alert(starts_at="2026-11-30T04:00:00Z")))[0] == 200
    assert over_budget(hook.url, "alice", "acme")["over_budget"] is True


def _without(key: str) -> dict[str, Any]:
    body = payload(budget_alert())
    del body[key]
    return body


def _alert_change(**changes: Any) -> dict[str, Any]:
    alert = budget_alert()
    for dotted, value in changes.items():
        target = alert
        *path, last = dotted.split("__")
        for step in path:
            target = target[step]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return payload(alert)


BAD_PAYLOADS = {
    "not JSON": (b"{not json", 400),
    "not UTF-8": (b'{"version": "\xff"}', 400),
    "NaN constant": (
        json.dumps(payload(budget_alert()))
        .replace('"truncatedAlerts": 0', '"truncatedAlerts": NaN')
        .encode(),
        400,
    ),
    "a list": (b"[]", 422),
    "missing alerts": (_without("alerts"), 422),
    "missing groupKey": (_without("groupKey"), 422),
    "unknown key": (payload(budget_alert()) | {"extra": 1}, 422),
    "version 3": (payload(budget_alert()) | {"version": "3"}, 422),
    "bad status": (payload(budget_alert()) | {"status": "pending"}, 422),
    "no alerts": (payload() | {"status": "firing"}, 422),
    "truncatedAlerts a bool": (payload(budget_alert()) | {"truncatedAlerts": True}, 422),
    "commonLabels not strings": (payload(budget_alert()) | {"commonLabels": {"a": 1}}, 422),
    "alert with an unknown key": (_alert_change(extra="x"), 422),
    "alert without fingerprint": (_alert_change(fingerprint=None), 422),
    "fingerprint not hex": (_alert_change(fingerprint="zzzz456789abcdef"), 422),
    "startsAt not a time": (_alert_change(startsAt="yesterday"), 422),
    "label value a number": (_alert_change(labels__user_id=7), 422),
    "not a budget alert": (_alert_change(labels__alertname="OpenAIImageUnpricedCalls"), 422),
    "wrong budget_scope": (_alert_change(labels__budget_scope="tenant"), 422),
    "bad budget_window": (_alert_change(labels__budget_window="7d"), 422),
    "user alert without user_id": (_alert_change(labels__user_id=None), 422),
    "user alert with empty user_id": (_alert_change(labels__user_id=""), 422),
    "user_id too long": (_alert_change(labels__user_id="u" * 257), 422),
    "spend NaN": (_alert_change(annotations__spend_usd="NaN"), 422),
    "spend infinite": (_alert_change(annotations__spend_usd="1e999"), 422),
    "spend negative": (_alert_change(annotations__spend_usd="-1"), 422),
    "spend missing": (_alert_change(annotations__spend_usd=None), 422),
    "budget not a number": (_alert_change(annotations__budget_usd="ten"), 422),
    "too many alerts": (payload(*[budget_alert(fingerprint=f"{i:016x}") for i in range(501)]), 422),
}


@pytest.mark.parametrize("case", BAD_PAYLOADS)
def test_bad_payload_is_rejected_and_changes_nothing(hook: BudgetWebhook, tmp_path: Path, case: str) -> None:
    assert post(hook, payload(budget_alert(user="zoe", fingerprint="00000000000000ff")))[0] == 200
    before = state(tmp_path)
    body, status = BAD_PAYLOADS[case]
    answer = post(hook, copy.deepcopy(body))
    assert answer[0] == status, answer
    assert state(tmp_path) == before
    assert over_budget(hook.url, "alice", "acme")["over_budget"] is False


def test_a_bad_alert_among_good_ones_rejects_the_whole_payload(hook: BudgetWebhook, tmp_path: Path) -> None:
    bad = budget_alert("bob", fingerprint="1111111111111111", spend="inf")
    assert post(hook, payload(budget_alert(), bad))[0] == 422
    assert state(tmp_path) == []


@pytest.mark.parametrize(
    ("case", "headers", "token", "status"),
    [
        ("no token", {}, None, 401),
        ("wrong token", {}, "guess", 401),
        ("not JSON content", {"Content-Type": "text/plain"}, TOKEN, 415),
    ],
)
def test_unauthorised_or_mistyped_requests_are_rejected(
    hook: BudgetWebhook, tmp_path: Path, case: str, headers: dict[str, str], token: str | None, status: int
) -> None:
    assert post(hook, payload(budget_alert()), token=token, headers=headers)[0] == status, case
    assert state(tmp_path) == []


def test_oversized_payload_is_413_unread(hook: BudgetWebhook, tmp_path: Path) -> None:
    big = payload(budget_alert()) | {"commonAnnotations": {"pad": "x" * 1000}}
    body = json.dumps(big).encode()
    body = body + b" " * (MAX_BODY_BYTES + 1 - len(body))
    assert post(hook, body)[0] == 413
    assert state(tmp_path) == []


def test_chunked_body_without_length_is_411(hook: BudgetWebhook, tmp_path: Path) -> None:
    host, port = hook.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    body = json.dumps(payload(budget_alert())).encode()
    connection.request(
        "POST",
        "/alerts",
        body=iter([body]),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        encode_chunked=True,
    )
    assert connection.getresponse().status == 411
    connection.close()
    assert state(tmp_path) == []


@pytest.mark.parametrize(
    "query",
    ["", "user=", "who=alice", "user=alice&user=bob", "user=alice&tenant=acme&x=1", "user=" + "u" * 257],
)
def test_bad_questions_are_400(hook: BudgetWebhook, query: str) -> None:
    assert get(hook, query)[0] == 400


def test_flags_survive_a_restart(tmp_path: Path) -> None:
    with BudgetWebhook(tmp_path / "flags.sqlite3") as first:
        assert post(first, payload(budget_alert()), token=None)[0] == 200
    with BudgetWebhook(tmp_path / "flags.sqlite3") as second:
        assert over_budget(second.url, "alice", "acme")["over_budget"] is True
        assert post(second, payload(budget_alert()), token=None)[0] == 409  # still a replay
