"""Zero-code instrumentation: the real `opentelemetry-instrument` runs a small app in a subprocess.

The app only calls the SDK; the distro configures the SDK from the environment, the plugin is found
through its entry point, and the console exporter prints the spans as JSON on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from local_openai_server import LocalOpenAIServer

INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")

APP = """
import os

import openai

client = openai.OpenAI(
    base_url=os.environ["IMAGE_APP_BASE_URL"], api_key="sk-test", max_retries=0, timeout=10
)
client.images.generate(model="gpt-image-1", prompt="a red fox in the snow", quality="low")
stream = client.images.generate(
    model="gpt-image-2", prompt="a city map", quality="medium", stream=True, partial_images=1
)
for event in stream:
    pass
print("APP DONE", flush=True)
"""


@pytest.fixture(scope="module")
def local_server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer() as server:
        yield server


def run_app(tmp_path: Path, server: LocalOpenAIServer, **env: str) -> str:
    app = tmp_path / "app.py"
    app.write_text(APP)
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "OPENAI_"))},
        "IMAGE_APP_BASE_URL": server.base_url,
        "OTEL_SERVICE_NAME": "image-app",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        **env,
    }
    done = subprocess.run(
        [str(INSTRUMENT), sys.executable, str(app)],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "APP DONE" in done.stdout, done.stderr
    return done.stdout


def console_spans(stdout: str) -> list[dict[str, Any]]:
    """The JSON objects the console exporter printed (one per span), in order."""
    decoder = json.JSONDecoder()
    spans: list[dict[str, Any]] = []
    index = 0
    while (start := stdout.find("{", index)) != -1:
        found, index = decoder.raw_decode(stdout, start)
        spans.append(found)
    return spans


def image_spans(stdout: str) -> list[dict[str, Any]]:
    return [
        span
        for span in console_spans(stdout)
        if "kind" in span and "openai.image.operation" in span["attributes"]  # a span, not a log record
    ]


def test_billing_records_leave_the_process_through_the_configured_logs_exporter(
    tmp_path: Path, local_server: LocalOpenAIServer
) -> None:
    """No code change: the records go to the global LoggerProvider that `opentelemetry-instrument`
    sets up, and out through `OTEL_LOGS_EXPORTER` (here `console`), even with no trace exporter."""
    local_server.reset()
    stdout = run_app(tmp_path, local_server, OTEL_TRACES_EXPORTER="none", OTEL_LOGS_EXPORTER="console")
    assert image_spans(stdout) == []
    records = [item for item in console_spans(stdout) if item.get("event_name") == "openai.image.billing"]
    assert [record["attributes"]["gen_ai.usage.cost"] for record in records] == [0.01091, 0.055695]
    assert [record["attributes"]["openai.image.outcome"] for record in records] == ["ok", "ok"]
    for record in records:
        assert record["attributes"]["openai.request.id"].startswith("req_")
        assert int(record["trace_id"], 16) != 0 and int(record["span_id"], 16) != 0
        assert record["resource"]["attributes"]["service.name"] == "image-app"


def test_entry_point_is_registered() -> None:
    [entry] = [
        ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.name == "openai_image_cost"
    ]
    assert entry.value == "otel_image_cost:OpenAIImageCostInstrumentor"
    assert entry.dist is not None and entry.dist.name == "otel-image-cost"
    from otel_image_cost import OpenAIImageCostInstrumentor

    assert entry.load() is OpenAIImageCostInstrumentor


def test_opentelemetry_instrument_prices_the_app_calls(
    tmp_path: Path, local_server: LocalOpenAIServer
) -> None:
    local_server.reset()
    stdout = run_app(tmp_path, local_server)

    plain, streamed = image_spans(stdout)
    assert plain["name"] == "generate_content gpt-image-1"
    assert plain["kind"] == "SpanKind.CLIENT"
    assert plain["resource"]["attributes"]["service.name"] == "image-app"
    attributes = plain["attributes"]
    assert {key: attributes.get(key) for key in EXPECTED_PLAIN} == EXPECTED_PLAIN
    # gpt-image-1 low 1024x1024: 6 text tokens x 5e-6 = 0.00003; 272 image tokens x 40e-6 = 0.01088
    assert attributes["gen_ai.usage.cost"] == 0.01091
    assert attributes["openai.image.cost.input_text"] == 0.00003
    assert attributes["openai.image.cost.output_image"] == 0.01088

    assert streamed["name"] == "generate_content gpt-image-2"
    s = streamed["attributes"]
    # completed event: 3 text tokens x 5e-6 = 0.000015; 1756 + 100 (one partial) = 1856 x 30e-6 = 0.05568
    assert (s["gen_ai.usage.cost"], s["openai.image.partial_images"], s["openai.image.count"]) == (
        0.055695,
        1,
        1,
    )
    assert s["openai.image.cost.source"] == "usage"
    assert len(local_server.requests) == 2


EXPECTED_PLAIN = {
    "gen_ai.provider.name": "openai",
    "gen_ai.operation.name": "generate_content",
    "gen_ai.request.model": "gpt-image-1",
    "openai.image.model": "gpt-image-1",
    "openai.image.operation": "generate",
    "openai.image.quality": "low",
    "openai.image.size": "1024x1024",
    "openai.image.count": 1,
    "openai.image.cost.source": "usage",
    "gen_ai.usage.input_tokens": 6,
    "gen_ai.usage.output_tokens": 272,
}


def test_disabled_instrumentation_emits_no_image_span(
    tmp_path: Path, local_server: LocalOpenAIServer
) -> None:
    local_server.reset()
    stdout = run_app(tmp_path, local_server, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="openai_image_cost")
    assert image_spans(stdout) == []
    assert all(not span["name"].startswith("generate_content") for span in console_spans(stdout))
    assert len(local_server.requests) == 2  # the app itself ran as usual
