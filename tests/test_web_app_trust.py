"""A real web app attacked as an outsider would: Starlette served by uvicorn under the real
`opentelemetry-instrument` (the Starlette instrumentation extracts each request's `baggage`
header), the plugin's metrics on the Prometheus exporter's endpoint, and a real Prometheus
(Debian's `prometheus`) scraping it every second on loopback.

Three app processes: Baggage not trusted (the default), trusted, and one given a hostile price
file. The attacker sends forged `baggage` headers, lone surrogates and 4 KB ids; the app's
own authenticated user must still be the one who pays, and the endpoint must stay scrapeable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_demo import LocalPrometheus, free_port
from test_ops_common import require_tool

from local_openai_server import LocalOpenAIServer

pytest.importorskip(
    "opentelemetry.instrumentation.starlette",
    reason="the Starlette instrumentation (extra `webapp`) is installed on the openai 2.x line only",
)

INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")
FORGED = {"baggage": "user.id=victim,tenant.id=other"}

APP = """
import asyncio
import json
import os
from importlib.metadata import entry_points

import openai
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from otel_image_cost import billing_context

BASE_URL = os.environ["IMAGE_APP_BASE_URL"]
client = openai.OpenAI(base_url=BASE_URL, api_key="sk-test", max_retries=0, timeout=10)
async_client = openai.AsyncOpenAI(base_url=BASE_URL, api_key="sk-test", max_retries=0, timeout=10)
STREAMING_USER = billing_context(user_id="stream-user")  # one instance shared by every request


def generate(body):
    try:
        client.images.generate(
            model="gpt-image-1",
            prompt="a fox",
            quality=body.get("quality", "low"),
            size=body.get("size", "1024x1024"),
            user=body["sid"],  # the app's authenticated user, passed as the SDK documents
        )
    except Exception as exc:
        return JSONResponse({"error": type(exc).__name__}, status_code=502)
    return JSONResponse({"ok": True})


async def image(request):
    body = json.loads(await request.body())
    return await asyncio.to_thread(generate, body)


async def billed(request):
    body = json.loads(await request.body())
    with billing_context(user_id="ctx-user"):
        return await asyncio.to_thread(generate, body)


def stream(request):
    def chunks():
        with STREAMING_USER:  # yields inside the context; Starlette runs each step in a thread
            client.images.generate(model="gpt-image-1", prompt="a fox", quality="low")
            yield b"one\\n"
            yield b"two\\n"

    return StreamingResponse(chunks())


async def astream(request):
    async def chunks():
        yield b"start\\n"
        async with STREAMING_USER:  # the safe pattern: the context holds no yield
            await async_client.images.generate(model="gpt-image-1", prompt="a fox", quality="low")
        yield b"done\\n"

    return StreamingResponse(chunks())


def instrumented(request):
    found = {}
    for entry_point in entry_points(group="opentelemetry_instrumentor"):
        found[entry_point.name] = entry_point.load()().is_instrumented_by_opentelemetry
    return JSONResponse(found)


app = Starlette(
    routes=[
        Route("/image", image, methods=["POST"]),
        Route("/billed", billed, methods=["POST"]),
        Route("/stream", stream),
        Route("/astream", astream),
        Route("/instrumented", instrumented),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["APP_PORT"]), log_level="warning")
"""


@dataclass
class App:
    """One app process: its HTTP port and its Prometheus exporter's port."""

    process: subprocess.Popen[str]
    port: int
    metrics_port: int
    log: Path

    def call(
        self, path: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()  # json escapes lone surrogates
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                text = reply.read().decode()
        except urllib.error.HTTPError as error:
            text = error.read().decode()
        return json.loads(text) if text.startswith("{") else text

    def scrape(self) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                return reply.status, reply.read().decode("utf-8")
        except urllib.error.HTTPError as error:
            return error.code, ""

    def stop(self) -> str:
        self.process.terminate()
        self.process.wait(timeout=15)
        return self.log.read_text()


def start_app(tmp: Path, name: str, server: LocalOpenAIServer, **env: str) -> App:
    app_file = tmp / "web_app.py"
    app_file.write_text(APP)
    port, metrics_port = free_port(), free_port()
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "OPENAI_"))},
        "IMAGE_APP_BASE_URL": server.base_url,
        "APP_PORT": str(port),
        "OTEL_SERVICE_NAME": name,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port),
        **env,
    }
    log = tmp / f"{name}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(INSTRUMENT), sys.executable, str(app_file)],
            env=environment,
            cwd=tmp,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    app = App(process, port, metrics_port, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text()}")
        try:
            app.call("/instrumented")
            return app
        except OSError:
            time.sleep(0.2)
    app.stop()
    raise TimeoutError(f"{name} did not start: {log.read_text()}")


@dataclass
class Apps:
    untrusted: App
    trusted: App
    bad_prices: App
    prometheus: LocalPrometheus
    server: LocalOpenAIServer


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apps]:
    binary = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("web")
    bad = tmp / "prices.yaml"
    bad.write_text("models:\n  m:\n    as_of: 2026-02-30\n")  # an unquoted impossible date
    started: list[App] = []
    with LocalOpenAIServer() as server:
        try:
            for name, env in (
                ("untrusted", {}),
                ("trusted", {"OTEL_IMAGE_COST_TRUST_BAGGAGE": "true"}),
                ("bad_prices", {"OTEL_IMAGE_COST_PRICES": str(bad)}),
            ):
                started.append(start_app(tmp, name, server, **env))
            targets = [f"127.0.0.1:{app.metrics_port}" for app in started]
            with LocalPrometheus(targets=targets, binary=binary) as prometheus:
                yield Apps(*started, prometheus=prometheus, server=server)
        finally:
            for app in started:
                if app.process.poll() is None:
                    app.stop()


def spend(apps: Apps, app: App, expected: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """(user_id, tenant_id) -> USD as Prometheus answers for one app: polled until it equals
    `expected` (a scrape under load may lag the calls) or 30 s passed, then the last answer."""
    series = f'openai_image_cost_USD_total{{instance="127.0.0.1:{app.metrics_port}"}}'
    deadline = time.monotonic() + 30
    while True:
        result = apps.prometheus.query(f"sum by (user_id, tenant_id) ({series})")
        found = {
            (r["metric"].get("user_id", ""), r["metric"].get("tenant_id", "")): float(r["value"][1])
            for r in result
        }
        if found == expected or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def query_until(apps: Apps, expr: str, check: Any) -> list[dict[str, Any]]:
    """An instant query polled until `check(result)` or 30 s passed; the last result."""
    deadline = time.monotonic() + 30
    while not check(result := apps.prometheus.query(expr)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return result


# gpt-image-1 low 1024x1024, prompt "a fox": 2 x 5e-6 + 272 x 40e-6 (local server usage)
CALL = 0.01089


def test_a_forged_baggage_header_does_not_choose_who_pays(apps: Apps) -> None:
    app = apps.untrusted
    assert app.call("/image", {"sid": "alice"}, FORGED) == {"ok": True}
    assert app.call("/billed", {"sid": "alice"}, FORGED) == {"ok": True}
    expected = {("alice", ""): CALL, ("ctx-user", ""): CALL}
    assert spend(apps, app, expected) == expected


def test_trusted_baggage_is_used_below_the_billing_context(apps: Apps) -> None:
    app = apps.trusted
    assert app.call("/image", {"sid": "alice"}, {"baggage": "user.id=gw-user,tenant.id=gw-tenant"}) == {
        "ok": True
    }
    assert app.call("/billed", {"sid": "alice"}, {"baggage": "user.id=gw-user,tenant.id=gw-tenant"}) == {
        "ok": True
    }
    assert app.call("/image", {"sid": "bob"}) == {"ok": True}
    expected = {("gw-user", "gw-tenant"): CALL, ("ctx-user", "gw-tenant"): CALL, ("bob", ""): CALL}
    assert spend(apps, app, expected) == expected


def test_hostile_ids_sizes_and_qualities_keep_metrics_scrapeable(apps: Apps) -> None:
    app = apps.untrusted
    apps.server.inject(429)
    # a failed call: openai 2.x sends the escaped surrogate and gets the 429, 3.x refuses to encode it
    assert app.call("/image", {"sid": "x\ud800"}) in (
        {"error": "RateLimitError"},
        {"error": "UnicodeEncodeError"},
    )
    apps.server.reset()  # the 429 is not left for the next call
    assert app.call("/image", {"sid": "y" * 4096, "size": "7x\udc00"}) in (
        {"error": "BadRequestError"},  # openai 2.x sends the escaped surrogate, the service refuses it
        {"error": "UnicodeEncodeError"},  # openai 3.x refuses to encode it
    )
    for i in range(20):
        assert app.call("/image", {"sid": "z", "size": f"{20_000 + i}x1", "quality": f"q{i}"}) == {
            "error": "BadRequestError"
        }
    status, body = app.scrape()
    assert status == 200
    families = {family.name: family for family in text_string_to_metric_families(body)}
    samples = [s for family in families.values() for s in family.samples]
    assert {s.labels["user_id"] for s in samples if s.labels.get("user_id", "").startswith(("x", "y"))} == {
        "x\ufffd",
        "y" * 128,
    }
    assert {s.labels["openai_image_size"] for s in samples if s.labels.get("user_id") == "z"} == {"other"}
    assert {s.labels["openai_image_quality"] for s in samples if s.labels.get("user_id") == "z"} == {"other"}
    sent = time.time()  # and Prometheus still scrapes the endpoint successfully
    scraped = f'timestamp(up{{instance="127.0.0.1:{app.metrics_port}"}} == 1) > {sent + 1:.3f}'
    assert len(query_until(apps, scraped, bool)) == 1


def test_a_streaming_response_yielding_inside_a_shared_billing_context(apps: Apps) -> None:
    app = apps.untrusted
    bodies = [app.call("/stream") for _ in range(3)] + [app.call("/astream") for _ in range(3)]
    assert bodies == ["one\ntwo\n"] * 3 + ["start\ndone\n"] * 3
    expected = {("alice", ""): CALL, ("ctx-user", ""): CALL, ("stream-user", ""): 6 * CALL}
    found = spend(apps, app, expected)
    assert found.keys() == expected.keys()
    assert found[("stream-user", "")] == pytest.approx(6 * CALL, rel=1e-12)


def test_a_bad_price_file_leaves_every_instrumentor_loaded_and_calls_unpriced(apps: Apps) -> None:
    app = apps.bad_prices
    loaded = app.call("/instrumented")
    assert loaded["openai_image_cost"] is True
    assert loaded["starlette"] is True
    assert all(loaded.values()), loaded
    assert app.call("/image", {"sid": "alice"}) == {"ok": True}
    instance = f'instance="127.0.0.1:{app.metrics_port}"'
    unpriced = query_until(
        apps, f"sum by (openai_image_unpriced_reason) (openai_image_unpriced_total{{{instance}}})", bool
    )
    assert {r["metric"]["openai_image_unpriced_reason"]: float(r["value"][1]) for r in unpriced} == {
        "price_file_error": 1.0
    }
    assert apps.prometheus.query(f"openai_image_cost_USD_total{{{instance}}}") == []


def test_no_app_logged_an_error(apps: Apps) -> None:
    for app in (apps.untrusted, apps.trusted):
        log = app.log.read_text()
        assert "Traceback" not in log and "ValueError" not in log, log[-3000:]
    log = apps.bad_prices.log.read_text()
    assert "Failed to auto initialize" not in log and "Traceback" not in log, log[-3000:]
    assert "OTEL_IMAGE_COST_PRICES" in log  # the one error line naming the setting
