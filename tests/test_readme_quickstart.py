"""The README's quickstart, run as written: every block marked `<!-- quickstart:NAME -->` in
README.md is read from the file itself and run in one fresh virtualenv built from the project's
wheel, against the bundled local server (OPENAI_BASE_URL). Each recipe must deliver a span with
`gen_ai.usage.cost` and a point of the `openai.image.cost` metric where the recipe sends them.

The only edits to a block are the ones a machine needs: the wheel instead of `.` (the checkout),
and loopback addresses on free ports instead of the documented default ports.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
import venv
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
from prometheus_demo import free_port

from conftest import ROOT
from local_openai_server import LocalOpenAIServer

pytestmark = pytest.mark.skipif(
    int(openai.__version__.split(".")[0]) < 3,
    reason="fresh virtualenvs are slow: the quickstart runs on the main line (openai 3.x) only",
)

# "A lighthouse at dawn" (20 chars -> 5 text tokens) x 5e-6 + 272 image tokens (low 1024x1024)
# x 40e-6 = 0.000025 + 0.01088
APP_CALL_COST = 0.010905
BLOCK = re.compile(r"<!-- quickstart:([\w-]+) -->\n```(\w+)\n(.*?)```", re.DOTALL)


def readme_blocks() -> dict[str, str]:
    blocks = {name: body for name, _language, body in BLOCK.findall((ROOT / "README.md").read_text())}
    assert set(blocks) == {"install", "app", "console", "otlp", "prometheus", "in-code"}
    return blocks


def substituted(text: str, old: str, new: str) -> str:
    """`text` with `old` replaced, which must occur exactly once (the README changed otherwise)."""
    assert text.count(old) == 1, (old, text)
    return text.replace(old, new)


@dataclass
class Quickstart:
    """The fresh virtualenv, a directory holding app.py, and the local server."""

    venv: Path
    workdir: Path
    server: LocalOpenAIServer
    blocks: dict[str, str] = field(default_factory=readme_blocks)

    def env(self, **extra: str) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENAI_", "PYTHON"))}
        return {
            **inherited,
            "PATH": f"{self.venv / 'bin'}{os.pathsep}{inherited.get('PATH', '')}",
            "VIRTUAL_ENV": str(self.venv),
            "OPENAI_BASE_URL": self.server.base_url,
            "OPENAI_API_KEY": "sk-local",
            **extra,
        }

    def bash(self, script: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=self.workdir,
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Quickstart]:
    root = tmp_path_factory.mktemp("quickstart")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(root / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    [wheel] = (root / "dist").glob("otel_image_cost-*.whl")
    venv.create(root / "venv", with_pip=True)
    workdir = root / "work"
    workdir.mkdir()
    with LocalOpenAIServer() as server:
        started = Quickstart(root / "venv", workdir, server)
        (workdir / "app.py").write_text(started.blocks["app"])
        install = substituted(started.blocks["install"], "pip install . ", f"pip install {wheel} ")
        done = started.bash(install)
        assert done.returncode == 0, done.stderr
        yield started


def json_objects(text: str) -> list[Any]:
    """Every top-level JSON object printed in `text` (the console exporters print indented JSON)."""
    decoder = json.JSONDecoder()
    found, index = [], 0
    while (start := text.find("{", index)) != -1:
        try:
            value, index = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            index = start + 1
            continue
        found.append(value)
    return found


def console_cost_spans(stdout: str) -> list[dict[str, Any]]:
    """Printed spans with a cost (a span has a `kind`; a printed billing log record has none)."""
    return [o for o in json_objects(stdout) if "kind" in o and "gen_ai.usage.cost" in o.get("attributes", {})]


def console_billing_records(stdout: str) -> list[dict[str, Any]]:
    return [o for o in json_objects(stdout) if o.get("event_name") == "openai.image.billing"]


def console_cost_points(stdout: str) -> list[dict[str, Any]]:
    return [
        point
        for o in json_objects(stdout)
        for resource in o.get("resource_metrics", [])
        for scope in resource["scope_metrics"]
        for metric in scope["metrics"]
        if metric["name"] == "openai.image.cost"
        for point in metric["data"]["data_points"]
    ]


def test_see_it_now_console(quickstart: Quickstart) -> None:
    done = quickstart.bash(quickstart.blocks["console"])
    assert done.returncode == 0, done.stderr
    assert "Failed to auto initialize" not in done.stderr
    [span] = console_cost_spans(done.stdout)
    assert span["name"] == "generate_content gpt-image-1"
    assert span["attributes"]["gen_ai.usage.cost"] == APP_CALL_COST
    [record] = console_billing_records(done.stdout)  # the call's billing record, the same cost
    assert record["attributes"]["gen_ai.usage.cost"] == APP_CALL_COST
    assert (record["trace_id"], record["span_id"]) == (
        span["context"]["trace_id"],
        span["context"]["span_id"],
    )
    [point] = console_cost_points(done.stdout)
    assert point["value"] == APP_CALL_COST and point["attributes"]["openai.image.model"] == "gpt-image-1"


def test_without_the_logs_flag_nothing_is_exported_and_doctor_says_why(quickstart: Quickstart) -> None:
    """The failure the console recipe's third flag avoids, and `otel-image-cost doctor` naming it."""
    command = substituted(quickstart.blocks["console"], " --logs_exporter console", "")
    done = quickstart.bash(command)
    assert done.returncode == 0 and "image generated" in done.stdout  # the app itself runs
    assert "Requested component 'otlp_proto_grpc' not found in entry point 'opentelemetry_logs_exporter'" in (
        done.stderr
    )
    assert console_cost_spans(done.stdout) == []
    doctor = quickstart.bash(
        "otel-image-cost doctor", OTEL_TRACES_EXPORTER="console", OTEL_METRICS_EXPORTER="console"
    )
    assert doctor.returncode == 1
    [failure] = [line for line in doctor.stdout.splitlines() if line.startswith("FAIL")]
    assert failure.startswith("FAIL logs exporter: OTEL_LOGS_EXPORTER=otlp (opentelemetry-distro's default)")
    assert "pip install opentelemetry-exporter-otlp-proto-grpc" in failure


class OtlpReceiver(ThreadingHTTPServer):
    """A minimal OTLP/HTTP receiver on loopback: decodes each export with opentelemetry-proto."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _OtlpHandler)
        self.received: dict[str, list[Any]] = {"traces": [], "metrics": [], "logs": []}
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _OtlpHandler(BaseHTTPRequestHandler):
    server: OtlpReceiver

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
            ExportLogsServiceRequest,
            ExportLogsServiceResponse,
        )
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest,
            ExportMetricsServiceResponse,
        )
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        kinds: dict[str, tuple[str, Any, Any]] = {
            "/v1/traces": ("traces", ExportTraceServiceRequest, ExportTraceServiceResponse),
            "/v1/metrics": ("metrics", ExportMetricsServiceRequest, ExportMetricsServiceResponse),
            "/v1/logs": ("logs", ExportLogsServiceRequest, ExportLogsServiceResponse),
        }
        if self.path not in kinds:
            self.send_error(404)
            return
        signal_name, request_type, response_type = kinds[self.path]
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = request_type()
        request.ParseFromString(body)
        with self.server.lock:
            self.server.received[signal_name].append(request)
        payload = response_type().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def attribute_values(attributes: Any) -> dict[str, Any]:
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in attributes}


def test_send_it_to_a_collector_otlp(quickstart: Quickstart) -> None:
    receiver = OtlpReceiver()
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        script = substituted(quickstart.blocks["otlp"], "http://localhost:4318", receiver.endpoint)
        done = quickstart.bash(script)
    finally:
        receiver.shutdown()
        receiver.server_close()
    assert done.returncode == 0, done.stderr
    assert "Failed to auto initialize" not in done.stderr
    spans = [
        (attribute_values(resource.resource.attributes), span)
        for request in receiver.received["traces"]
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    [(resource, span)] = [(r, s) for r, s in spans if s.name == "generate_content gpt-image-1"]
    assert resource["service.name"] == "image-app"
    assert attribute_values(span.attributes)["gen_ai.usage.cost"] == APP_CALL_COST
    points = [
        point
        for request in receiver.received["metrics"]
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "openai.image.cost"
        for point in metric.sum.data_points
    ]
    assert [point.as_double for point in points] == [APP_CALL_COST]
    # the logs exporter defaults to OTLP too: the call's billing record reaches the collector
    records = [
        (record, attribute_values(record.attributes))
        for request in receiver.received["logs"]
        for resource in request.resource_logs
        for scope in resource.scope_logs
        for record in scope.log_records
        if record.event_name == "openai.image.billing"
    ]
    [(record, attributes)] = records
    assert attributes["gen_ai.usage.cost"] == APP_CALL_COST
    assert (record.trace_id, record.span_id) == (span.trace_id, span.span_id)


def test_let_prometheus_scrape_it(quickstart: Quickstart) -> None:
    port = free_port()
    script = substituted(
        quickstart.blocks["prometheus"],
        "OTEL_EXPORTER_PROMETHEUS_PORT=9464",
        f"OTEL_EXPORTER_PROMETHEUS_PORT={port}",
    )
    script = substituted(
        script, "OTEL_EXPORTER_PROMETHEUS_HOST=0.0.0.0", "OTEL_EXPORTER_PROMETHEUS_HOST=127.0.0.1"
    )
    app = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=quickstart.workdir,
        env=quickstart.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert app.stdout is not None
        for line in app.stdout:  # pip's output, then the app's
            if line.strip() == "image generated":
                break
        else:
            pytest.fail(f"the app never made its call: {app.stderr.read() if app.stderr else ''}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            scraped = response.read().decode()
    finally:
        os.killpg(app.pid, signal.SIGINT)  # Ctrl-C: the app exits and flushes its console spans
        rest, errors = app.communicate(timeout=60)
    [sample] = [line for line in scraped.splitlines() if line.startswith("openai_image_cost_USD_total{")]
    assert 'openai_image_model="gpt-image-1"' in sample
    assert float(sample.rsplit(" ", 1)[1]) == APP_CALL_COST
    [span] = console_cost_spans(rest)
    assert span["attributes"]["gen_ai.usage.cost"] == APP_CALL_COST, errors


def test_in_code_snippet_is_a_complete_program(quickstart: Quickstart) -> None:
    (quickstart.workdir / "in_code.py").write_text(quickstart.blocks["in-code"])
    done = quickstart.bash("python in_code.py")
    assert done.returncode == 0, done.stderr
    [span] = console_cost_spans(done.stdout)
    attributes = span["attributes"]
    # "A lighthouse" (12 chars -> 3 tokens) x 5e-6 + 4160 (high 1024x1024) x 40e-6 = 0.000015 + 0.1664
    assert attributes["gen_ai.usage.cost"] == 0.166415
    assert (attributes["user.id"], attributes["tenant.id"], attributes["plan"]) == ("alice", "acme", "pro")
    [point] = console_cost_points(done.stdout)
    assert point["value"] == 0.166415 and point["attributes"]["user.id"] == "alice"
