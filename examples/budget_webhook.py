"""A budget webhook for Alertmanager: who is over budget right now, for the app to ask before it spends.

    python examples/budget_webhook.py [--host 127.0.0.1] [--port 9095] [--db budget.sqlite3]
                                      [--token-file PATH]

Alertmanager (deploy/alertmanager/alertmanager.yml, receiver `budget-webhook`) posts the budget
alerts of deploy/prometheus/alerts.yml here; a firing alert flags its user (or tenant), the same
alert resolved clears the flag. The flags live in SQLite, so a restart keeps them.

    POST /alerts                          Alertmanager webhook payload (version 4)
    GET  /over-budget?user=X[&tenant=T]   is user X (of tenant T) over budget? {"over_budget": ...}
    GET  /over-budget?tenant=T            is tenant T over its own budget? and which of its users are
    GET  /healthz

Every input is hostile. A POST is checked whole before anything is written, and answered 4xx with
nothing changed when it is not acceptable: 401 without the bearer token (when one is configured),
411/413 without a length or over MAX_BODY_BYTES, 415 not JSON, 400 not parseable, 422 not the
exact Alertmanager shape or not a budget alert with sane labels and finite spend/budget numbers,
409 a replay. A replay is a payload whose every alert was already applied: the same groupKey,
alert fingerprint, startsAt and status. (Alertmanager's own repeat of an unchanged group is one,
so it is answered 409 and changes nothing: the flags are already right.) A firing alert that
arrives after its own resolution (same fingerprint and startsAt) is stale and does not flag again.

Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import math
import re
import sqlite3
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MAX_BODY_BYTES = 256 * 1024
MAX_ALERTS = 500
MAX_LABEL_VALUE = 1024
MAX_ID = 256

# The budget alerts of deploy/prometheus/alerts.yml: their scope, and the label naming who pays.
BUDGET_ALERTS = {
    "OpenAIImageUserHourlyBudgetExceeded": "user",
    "OpenAIImageUserDailyBudgetExceeded": "user",
    "OpenAIImageTenantDailyBudgetExceeded": "tenant",
}
PAYLOAD_KEYS = frozenset(
    {
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    }
)
ALERT_KEYS = frozenset(
    {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
)
STATUSES = frozenset({"firing", "resolved"})
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")
_USD = re.compile(r"^\d{1,15}(\.\d{1,20})?([eE][+-]?\d{1,3})?$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS applied (
    group_key TEXT NOT NULL, fingerprint TEXT NOT NULL, starts_at TEXT NOT NULL, status TEXT NOT NULL,
    applied_at REAL NOT NULL,
    PRIMARY KEY (group_key, fingerprint, starts_at, status)
);
CREATE TABLE IF NOT EXISTS over_budget (
    fingerprint TEXT PRIMARY KEY, starts_at TEXT NOT NULL, alertname TEXT NOT NULL,
    scope TEXT NOT NULL, budget_window TEXT NOT NULL, tenant_id TEXT NOT NULL, user_id TEXT NOT NULL,
    spend_usd REAL NOT NULL, budget_usd REAL NOT NULL, flagged_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS over_budget_user ON over_budget (user_id);
CREATE INDEX IF NOT EXISTS over_budget_tenant ON over_budget (tenant_id);
"""


class Rejected(Exception):
    """A request answered with a 4xx status; nothing was changed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class BudgetAlert:
    """One validated alert of a webhook payload."""

    status: str
    fingerprint: str
    starts_at: str
    alertname: str
    scope: str
    budget_window: str
    tenant_id: str
    user_id: str
    spend_usd: float
    budget_usd: float


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise Rejected(422, message)


def _string_map(value: Any, what: str) -> dict[str, str]:
    _require(isinstance(value, dict), f"{what} must be an object")
    for key, item in value.items():
        _require(isinstance(item, str) and 0 < len(key) <= 128, f"{what}: bad entry {key[:40]!r}")
        _require(len(item) <= MAX_LABEL_VALUE, f"{what}.{key}: value too long")
    return dict(value)


def _usd(annotations: Mapping[str, str], name: str) -> float:
    text = annotations.get(name, "")
    _require(bool(_USD.match(text)), f"annotation {name} must be a non-negative decimal number")
    value = float(text)
    _require(math.isfinite(value), f"annotation {name} must be finite")
    return value


def _alert(raw: Any) -> BudgetAlert:
    _require(
        isinstance(raw, dict) and set(raw) == ALERT_KEYS,
        "every alert must have exactly the keys " + ", ".join(sorted(ALERT_KEYS)),
    )
    _require(raw["status"] in STATUSES, "alert status must be firing or resolved")
    labels = _string_map(raw["labels"], "labels")
    annotations = _string_map(raw["annotations"], "annotations")
    for key in ("startsAt", "endsAt"):
        _require(
            isinstance(raw[key], str) and bool(_TIMESTAMP.match(raw[key])), f"{key} must be an RFC 3339 time"
        )
    _require(isinstance(raw["generatorURL"], str) and len(raw["generatorURL"]) <= 4096, "bad generatorURL")
    _require(
        isinstance(raw["fingerprint"], str) and bool(_FINGERPRINT.match(raw["fingerprint"])),
        "bad fingerprint",
    )
    alertname = labels.get("alertname", "")
    scope = BUDGET_ALERTS.get(alertname)
    _require(scope is not None, f"not a budget alert: {alertname[:80]!r}")
    _require(labels.get("budget_scope") == scope, f"{alertname}: budget_scope must be {scope}")
    _require(labels.get("budget_window") in {"1h", "24h"}, f"{alertname}: budget_window must be 1h or 24h")
    user_id, tenant_id = labels.get("user_id", ""), labels.get("tenant_id", "")
    _require(len(user_id) <= MAX_ID and len(tenant_id) <= MAX_ID, "user_id / tenant_id too long")
    _require(bool(user_id) if scope == "user" else bool(tenant_id), f"{alertname}: no {scope}_id label")
    return BudgetAlert(
        status=raw["status"],
        fingerprint=raw["fingerprint"],
        starts_at=raw["startsAt"],
        alertname=alertname,
        scope=scope or "",
        budget_window=labels["budget_window"],
        tenant_id=tenant_id,
        user_id=user_id if scope == "user" else "",
        spend_usd=_usd(annotations, "spend_usd"),
        budget_usd=_usd(annotations, "budget_usd"),
    )


def parse_payload(body: bytes) -> tuple[str, list[BudgetAlert]]:
    """The group key and alerts of an Alertmanager webhook body, or Rejected (400/422)."""

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        payload = json.loads(body.decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError) as error:
        raise Rejected(400, f"not JSON: {error}") from None
    _require(isinstance(payload, dict), "the payload must be an object")
    _require(
        set(payload) == PAYLOAD_KEYS,
        "the payload must have exactly the keys " + ", ".join(sorted(PAYLOAD_KEYS)),
    )
    _require(payload["version"] == "4", "only webhook payload version 4 is understood")
    _require(payload["status"] in STATUSES, "status must be firing or resolved")
    group_key = payload["groupKey"]
    _require(isinstance(group_key, str) and 0 < len(group_key) <= 4096, "bad groupKey")
    truncated = payload["truncatedAlerts"]
    _require(type(truncated) is int and truncated >= 0, "bad truncatedAlerts")
    for key in ("receiver", "externalURL"):
        _require(isinstance(payload[key], str) and len(payload[key]) <= 4096, f"bad {key}")
    for key in ("groupLabels", "commonLabels", "commonAnnotations"):
        _string_map(payload[key], key)
    alerts = payload["alerts"]
    _require(
        isinstance(alerts, list) and 0 < len(alerts) <= MAX_ALERTS,
        f"alerts must be a list of 1 to {MAX_ALERTS}",
    )
    return group_key, [_alert(raw) for raw in alerts]


class BudgetStore:
    """The SQLite state: applied notifications (for replay detection) and the current flags."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def apply(self, group_key: str, alerts: list[BudgetAlert]) -> int:
        """Apply what is new in one notification; Rejected(409) if nothing is."""
        now = time.time()
        with self._transaction() as db:
            applied = 0
            for alert in alerts:
                key = (group_key, alert.fingerprint, alert.starts_at, alert.status)
                seen = db.execute(
                    "SELECT 1 FROM applied WHERE group_key=? AND fingerprint=? AND starts_at=? AND status=?",
                    key,
                ).fetchone()
                if seen:
                    continue
                db.execute("INSERT INTO applied VALUES (?, ?, ?, ?, ?)", (*key, now))
                applied += 1
                if alert.status == "resolved":
                    db.execute(
                        "DELETE FROM over_budget WHERE fingerprint=? AND starts_at<=?",
                        (alert.fingerprint, alert.starts_at),
                    )
                elif not self._resolved(db, alert):
                    db.execute(
                        "INSERT OR REPLACE INTO over_budget VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            alert.fingerprint,
                            alert.starts_at,
                            alert.alertname,
                            alert.scope,
                            alert.budget_window,
                            alert.tenant_id,
                            alert.user_id,
                            alert.spend_usd,
                            alert.budget_usd,
                            now,
                        ),
                    )
            if not applied:
                raise Rejected(409, "replay: every alert of this notification was already applied")
            return applied

    @staticmethod
    def _resolved(db: sqlite3.Connection, alert: BudgetAlert) -> bool:
        """This firing alert was already resolved (a late or re-sent notification)."""
        return (
            db.execute(
                "SELECT 1 FROM applied WHERE fingerprint=? AND starts_at=? AND status='resolved'",
                (alert.fingerprint, alert.starts_at),
            ).fetchone()
            is not None
        )

    def received(self) -> list[tuple[str, str, str, str]]:
        """Every (groupKey, fingerprint, startsAt, status) applied so far, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT group_key, fingerprint, starts_at, status FROM applied ORDER BY applied_at, rowid"
            ).fetchall()
        return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]

    def flags(self, *, user: str | None = None, tenant: str | None = None) -> list[dict[str, Any]]:
        """The flags a user (of a tenant) or a tenant is refused by."""
        if user is not None:
            where, args = "scope='user' AND user_id=?", [user]
            if tenant is not None:
                where = f"({where} AND tenant_id=?) OR (scope='tenant' AND tenant_id=?)"
                args += [tenant, tenant]
        else:
            where, args = "tenant_id=?", [tenant or ""]
        with self._lock:
            cursor = self._db.execute(
                "SELECT alertname, scope, budget_window, tenant_id, user_id, spend_usd, budget_usd,"
                f" starts_at, flagged_at FROM over_budget WHERE {where} ORDER BY flagged_at, fingerprint",
                args,
            )
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        try:
            if urllib.parse.urlsplit(self.path).path != "/alerts":
                raise Rejected(404, "POST /alerts only")
            body = self._body()
            group_key, alerts = parse_payload(body)
            applied = self.server.store.apply(group_key, alerts)
        except Rejected as rejected:
            self._reply(rejected.status, {"error": str(rejected)})
            return
        self._reply(200, {"applied": applied})

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        try:
            if url.path == "/healthz":
                self._reply(200, {"status": "ok"})
                return
            if url.path != "/over-budget":
                raise Rejected(404, "GET /over-budget or /healthz")
            self._reply(200, self._over_budget(url.query))
        except Rejected as rejected:
            self._reply(rejected.status, {"error": str(rejected)})

    def _over_budget(self, query: str) -> dict[str, Any]:
        try:
            pairs = urllib.parse.parse_qsl(query, strict_parsing=bool(query), max_num_fields=2)
        except ValueError as error:
            raise Rejected(400, f"bad query: {error}") from None
        params = dict(pairs)
        if len(params) != len(pairs) or not params or set(params) - {"user", "tenant"}:
            raise Rejected(400, "ask with user=X, tenant=T, or both, once each")
        if any(not value or len(value) > MAX_ID for value in params.values()):
            raise Rejected(400, "user / tenant must be 1 to 256 characters")
        user, tenant = params.get("user"), params.get("tenant")
        flags = self.server.store.flags(user=user, tenant=tenant)
        if user is not None:
            return {"user": user, "tenant": tenant, "over_budget": bool(flags), "alerts": flags}
        own = [flag for flag in flags if flag["scope"] == "tenant"]
        users = sorted({flag["user_id"] for flag in flags if flag["scope"] == "user"})
        return {"tenant": tenant, "over_budget": bool(own), "alerts": own, "users_over_budget": users}

    def _body(self) -> bytes:
        token = self.server.token
        if token is not None:
            offered = self.headers.get("Authorization", "")
            if not hmac.compare_digest(offered.encode(), f"Bearer {token}".encode()):
                raise Rejected(401, "missing or wrong bearer token")
        if self.headers.get("Transfer-Encoding"):
            raise Rejected(411, "a Content-Length is required")
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            raise Rejected(411, "a Content-Length is required")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            raise Rejected(413, f"payload over {MAX_BODY_BYTES} bytes")
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise Rejected(415, "Content-Type must be application/json")
        return self.rfile.read(length)

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status >= 400:
            self.send_header("Connection", "close")  # an unread body must not be taken for a request
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], store: BudgetStore, token: str | None, verbose: bool
    ) -> None:
        super().__init__(address, _Handler)
        self.store, self.token, self.verbose = store, token, verbose


class BudgetWebhook:
    """The webhook served from a thread (tests, demos): `with BudgetWebhook(db) as hook: hook.url`."""

    def __init__(
        self,
        db: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        verbose: bool = False,
    ) -> None:
        self.store = BudgetStore(db)
        self._server = _Server((host, port), self.store, token, verbose)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="budget-webhook", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> BudgetWebhook:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self.store.close()


def over_budget(base_url: str, user: str, tenant: str | None = None, timeout: float = 2.0) -> dict[str, Any]:
    """What the app asks before it spends: is this user (of this tenant) over budget?"""
    query = urllib.parse.urlencode({"user": user} | ({"tenant": tenant} if tenant else {}))
    with urllib.request.urlopen(f"{base_url}/over-budget?{query}", timeout=timeout) as reply:
        return dict(json.loads(reply.read()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9095)
    parser.add_argument("--db", default="budget-webhook.sqlite3", help="SQLite file of the flags")
    parser.add_argument(
        "--token-file", type=Path, help="require this bearer token (Alertmanager http_config)"
    )
    options = parser.parse_args()
    token = options.token_file.read_text().strip() if options.token_file else None
    hook = BudgetWebhook(options.db, host=options.host, port=options.port, token=token, verbose=True)
    print(f"budget webhook on {hook.url} (POST /alerts, GET /over-budget), flags in {options.db}", flush=True)
    with hook, contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
