"""Per-user spend alerts end to end, for real: app -> Prometheus -> Alertmanager -> budget webhook -> app.

    python examples/alerting_demo.py [--budget 0.25]

Everything runs on free loopback ports and is removed afterwards:
- the bundled OpenAI-compatible server (examples/local_openai_server.py);
- examples/spend_app.py under `opentelemetry-instrument` with the Prometheus exporter: it asks
  the webhook before every image call; alice (tenant acme) makes two $0.166425 calls, bob (acme)
  and carol (globex) one each, then it waits until the webhook refuses alice;
- Prometheus with deploy/prometheus's config and rules, in a test copy: 1 s scrape and rule
  intervals, `for:` minutes read as seconds, and the hourly per-user budget set to `--budget`
  (the shipped files are not touched);
- Alertmanager with deploy/alertmanager/alertmanager.yml, in a test copy: 1 s group_wait and
  group_interval, receivers pointed at the webhook and at a local chat catcher;
- examples/budget_webhook.py, with a bearer token as the shipped config sends it.

It prints what the webhook recorded, the chat message Alertmanager rendered with the project's
template, and the time from the end of the overspending call to the webhook's receipt and to the
app's first refusal. Exit status 1 if anything differs from the expectation: exactly alice flagged,
with $0.33285 against the budget.
Needs `prometheus` and `prometheus-alertmanager` (Debian packages; scripts/alerting-demo.sh installs them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from budget_webhook import BudgetWebhook
from prometheus_demo import LocalPrometheus, free_port, start_until_ready, stop_process

from local_openai_server import LocalOpenAIServer

HERE = Path(__file__).resolve().parent
ALERTMANAGER_DIR = HERE.parent / "deploy" / "alertmanager"
ALERTMANAGER_BINARY = "prometheus-alertmanager"  # Debian's name; upstream calls it `alertmanager`
TOKEN = "demo-token"
# gpt-image-1, high, 1024x1024: 4160 output image tokens x $40/1M = $0.1664, plus the prompt's
# 5 input text tokens x $5/1M = $0.000025 (docs/cost-model.md)
CALL_USD = 0.166425
PLAN = (("alice", "acme", 2), ("bob", "acme", 1), ("carol", "globex", 1))
OVERSPENDER = ("alice", "acme")


def minutes_as_seconds(duration: str) -> str:
    """`for: 15m` -> `15s`: the test copy keeps each rule's proportions at 1/60 of the time."""
    return duration[:-1] + "s" if duration.endswith("m") else duration


@dataclass
class AlertingPrometheus(LocalPrometheus):
    """LocalPrometheus sending alerts to `alertmanager_url`, with test budgets and short `for:`;
    with `file_sd_glob`, its app targets come from those files (per-worker ports)."""

    alertmanager_url: str = ""
    budgets: dict[tuple[str, str], float] = field(default_factory=dict)  # (scope, window) -> USD
    file_sd_glob: str = ""

    def write_config(self) -> Path:
        path = super().write_config()
        config: dict[str, Any] = yaml.safe_load(path.read_text())
        if self.alertmanager_url:
            target = self.alertmanager_url.removeprefix("http://")
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [target]}]}]}
        if self.file_sd_glob:
            config["scrape_configs"][0]["file_sd_configs"] = [
                {"files": [self.file_sd_glob], "refresh_interval": "1s"}
            ]
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _fast_rules(self, source: Path) -> Path:
        target = super()._fast_rules(source)
        rules: dict[str, Any] = yaml.safe_load(target.read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = minutes_as_seconds(rule["for"])
                labels = rule.get("labels", {})
                key = (labels.get("budget_scope"), labels.get("budget_window"))
                if rule.get("record") == "openai_image_cost_budget_USD" and key in self.budgets:
                    rule["expr"] = f"vector({self.budgets[key]!r})"
        target.write_text(yaml.safe_dump(rules, sort_keys=False))
        return target


class ChatCatcher:
    """Stands in for the chat service: keeps what Alertmanager posts to each receiver's URL."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                catcher.messages.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> ChatCatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class LocalAlertmanager:
    """An Alertmanager on loopback for one run: the shipped config with the receivers pointed at
    `webhook_url` (bearer `token`) and `chat_url`, and short group timings; no clustering."""

    webhook_url: str
    chat_url: str
    token: str = TOKEN
    binary: str = ALERTMANAGER_BINARY
    group_wait: str = "1s"
    url: str = ""
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="otel-image-cost-am-")))
    _process: subprocess.Popen[bytes] | None = None

    def write_config(self) -> Path:
        config: dict[str, Any] = yaml.safe_load((ALERTMANAGER_DIR / "alertmanager.yml").read_text())
        config["templates"] = [str(ALERTMANAGER_DIR / name) for name in config["templates"]]
        for route in [config["route"], *config["route"]["routes"]]:
            route["group_wait"] = route["group_interval"] = self.group_wait
        token_file = self.workdir / "budget-webhook-token"
        token_file.write_text(self.token)
        for receiver in config["receivers"]:
            for hook in receiver.get("webhook_configs", []):
                hook["url"] = f"{self.webhook_url}/alerts"
                hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
            for chat in receiver.get("slack_configs", []):
                del chat["api_url_file"]
                chat["api_url"] = f"{self.chat_url}/{receiver['name']}"
        path = self.workdir / "alertmanager.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def __enter__(self) -> LocalAlertmanager:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = self.write_config()
        argv = [
            self.binary,
            f"--config.file={config}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # a single instance: no gossip port
            "--log.level=warn",
        ]
        self._process = start_until_ready("alertmanager", argv, self.url, self.workdir, 30)
        return self

    def __exit__(self, *exc: object) -> None:
        process, self._process = self._process, None
        stop_process(process)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def api(self, path: str, payload: Any = None) -> Any:
        """GET (or POST `payload` to) /api/v2/<path>."""
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.url}/api/v2/{path}", data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            body = reply.read()
        return json.loads(body) if body else None


@contextlib.contextmanager
def instrumented_app(args: list[str], metrics_port: int, openai_url: str) -> Iterator[subprocess.Popen[str]]:
    """examples/spend_app.py under `opentelemetry-instrument`, Prometheus exporter on metrics_port."""
    env = {
        **os.environ,
        "OPENAI_BASE_URL": openai_url,
        "OPENAI_API_KEY": "sk-local-demo",
        "OTEL_SERVICE_NAME": "spend-app",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai",  # only this plugin (see examples/demo.py)
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    instrument = Path(sys.executable).with_name("opentelemetry-instrument")
    process = subprocess.Popen(
        [str(instrument), sys.executable, str(HERE / "spend_app.py"), *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
    )
    try:
        yield process
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class AlertingRun:
    """What one run saw: the app's events, the webhook's flags, the chat messages, the timings."""

    events: list[dict[str, Any]]
    flags_by_tenant: dict[str, dict[str, Any]]
    overspender_flags: list[dict[str, Any]]
    others: dict[str, bool]  # user -> over budget, for the users who stayed under
    chat: list[tuple[str, dict[str, Any]]]
    received: list[tuple[str, str, str, str]]  # every notification the webhook applied
    overspend_ended_at: float
    refused_at: float

    @property
    def webhook_latency(self) -> float:
        return float(self.overspender_flags[0]["flagged_at"]) - self.overspend_ended_at

    @property
    def refusal_latency(self) -> float:
        return self.refused_at - self.overspend_ended_at


def run(budget: float = 0.25, timeout: float = 60.0, echo: bool = False) -> AlertingRun:
    """The whole chain once; raises if a part does not come up or the app is never refused."""
    prometheus_binary = shutil.which("prometheus") or "prometheus"
    workdir = Path(tempfile.mkdtemp(prefix="otel-image-cost-alerting-"))
    metrics_port = free_port()
    try:
        with (
            LocalOpenAIServer() as openai_server,
            BudgetWebhook(workdir / "flags.sqlite3", token=TOKEN) as webhook,
            ChatCatcher() as chat,
            LocalAlertmanager(
                webhook.url, chat.url, binary=shutil.which(ALERTMANAGER_BINARY) or ""
            ) as alertmanager,
            AlertingPrometheus(
                targets=[f"127.0.0.1:{metrics_port}"],
                binary=prometheus_binary,
                alertmanager_url=alertmanager.url,
                budgets={("user", "1h"): budget},
            ) as prometheus,
        ):
            if echo:
                print(f"prometheus {prometheus.url}, alertmanager {alertmanager.url}, webhook {webhook.url}")
            args = ["--webhook", webhook.url, "--timeout", str(timeout)]
            args += [arg for user, tenant, count in PLAN for arg in ("--calls", f"{user}:{tenant}:{count}")]
            args += ["--wait-refusal", ":".join(OVERSPENDER)]
            events: list[dict[str, Any]] = []
            with instrumented_app(args, metrics_port, openai_server.base_url) as app:
                assert app.stdout is not None
                for line in app.stdout:
                    events.append(json.loads(line))
                    if echo:
                        print(f"  app | {line.rstrip()}", flush=True)
                    if events[-1]["event"] in {"done", "timeout"}:
                        break
                if events[-1]["event"] != "done":
                    raise TimeoutError(f"the app was not refused within {timeout} s: {events}")
                overspend = [
                    e for e in events if e["event"] == "call" and (e["user"], e["tenant"]) == OVERSPENDER
                ][-1]
                refused = next(e for e in events if e["event"] == "refused")
                # the others stay under budget: asked again after the alert came round
                others = {
                    user: bool(webhook.store.flags(user=user, tenant=tenant))
                    for user, tenant, _ in PLAN
                    if (user, tenant) != OVERSPENDER
                }
                tenants = {tenant for _, tenant, _ in PLAN}
                flags_by_tenant = {
                    tenant: {
                        "own": webhook.store.flags(tenant=tenant),
                        "users": sorted({f["user_id"] for f in webhook.store.flags(tenant=tenant)}),
                    }
                    for tenant in sorted(tenants)
                }
                deadline = time.monotonic() + 10
                while not chat.messages and time.monotonic() < deadline:
                    time.sleep(0.1)
                return AlertingRun(
                    events=events,
                    flags_by_tenant=flags_by_tenant,
                    overspender_flags=webhook.store.flags(user=OVERSPENDER[0], tenant=OVERSPENDER[1]),
                    others=others,
                    chat=list(chat.messages),
                    received=webhook.store.received(),
                    overspend_ended_at=float(overspend["ended_at"]),
                    refused_at=float(refused["at"]),
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--budget", type=float, default=0.25, help="hourly per-user budget of the test copy (USD)"
    )
    options = parser.parse_args()
    for binary in ("prometheus", ALERTMANAGER_BINARY):
        if shutil.which(binary) is None:
            print(f"{binary} not found: apt-get install prometheus prometheus-alertmanager")
            return 2
    result = run(options.budget, echo=True)
    user, tenant = OVERSPENDER
    calls = sum(1 for e in result.events if e["event"] == "call" and (e["user"], e["tenant"]) == OVERSPENDER)
    print(
        f"\n{user} ({tenant}) made {calls} calls of ${CALL_USD} against an hourly budget of ${options.budget}"
    )
    print("the webhook recorded:")
    for flag in result.overspender_flags:
        print("  " + json.dumps({k: v for k, v in flag.items() if k != "flagged_at"}))
    for receiver, message in result.chat:
        for attachment in message.get("attachments", []):
            print(f"\nchat message to {receiver}:\n  {attachment.get('title')}")
            print("  " + "\n  ".join(str(attachment.get("text", "")).splitlines()))
    print(f"\nunder budget, not flagged: {', '.join(u for u, over in result.others.items() if not over)}")
    print(f"overspending call -> webhook receipt: {result.webhook_latency:.2f} s")
    print(f"overspending call -> app refused:     {result.refusal_latency:.2f} s")
    expected_spend = round(calls * CALL_USD, 9)
    ok = (
        len(result.overspender_flags) == 1
        and round(result.overspender_flags[0]["spend_usd"], 9) == expected_spend
        and result.overspender_flags[0]["budget_usd"] == options.budget
        and not any(result.others.values())
    )
    print("as expected" if ok else "NOT as expected")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
