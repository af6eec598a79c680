"""Shared fixtures: the real OpenTelemetry SDK with in-memory exporters, the bundled local
OpenAI-compatible server on loopback, and real `openai` clients pointed at it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs import export as log_export
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_image_cost import OpenAIImageCostInstrumentor

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "tests" / "fixtures" / "recorded"
BILLING_EVENT = "openai.image.billing"
# The SDK's in-memory log exporter (renamed `InMemoryLogRecordExporter` after OTel 1.38).
InMemoryLogs: Any = getattr(log_export, "InMemoryLogRecordExporter", None) or log_export.InMemoryLogExporter
sys.path.insert(0, str(ROOT / "examples"))


class Telemetry:
    """What the plugin emitted, read back from the in-memory exporters."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        metric_reader: InMemoryMetricReader | None = None,
        more_readers: tuple[MetricReader, ...] = (),
    ) -> None:
        self.span_exporter = InMemorySpanExporter()
        self.tracer_provider = tracer_provider or TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.span_exporter))
        self.metric_reader = metric_reader or InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metric_reader, *more_readers])
        self.log_exporter = InMemoryLogs()
        self.logger_provider = LoggerProvider(shutdown_on_exit=False)
        self.logger_provider.add_log_record_processor(log_export.SimpleLogRecordProcessor(self.log_exporter))

    def records(self) -> list[Any]:
        """The billing records emitted (the SDK's log records of event `openai.image.billing`)."""
        return [
            data.log_record
            for data in self.log_exporter.get_finished_logs()
            if data.log_record.event_name == BILLING_EVENT
        ]

    def record(self) -> dict[str, Any]:
        """The attributes of the one billing record a test expects."""
        records = self.records()
        assert len(records) == 1, [dict(r.attributes or {}) for r in records]
        return dict(records[0].attributes or {})

    def spans(self) -> list[ReadableSpan]:
        return list(self.span_exporter.get_finished_spans())

    def span(self) -> ReadableSpan:
        """The one span a test expects."""
        spans = self.spans()
        assert len(spans) == 1, [s.name for s in spans]
        return spans[0]

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, point) for every data point of metric `name`."""
        data = self.metric_reader.get_metrics_data()
        found: list[tuple[dict[str, Any], Any]] = []
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        found.extend((dict(p.attributes or {}), p) for p in metric.data.data_points)
        return found

    def sums(self, name: str) -> list[tuple[dict[str, Any], float]]:
        return [(attributes, point.value) for attributes, point in self.points(name)]

    def total(self, name: str, **where: Any) -> float:
        """Sum of a counter over the points whose attributes match `where` (dots as `__`)."""
        wanted = {key.replace("__", "."): value for key, value in where.items()}
        return sum(
            value
            for attributes, value in self.sums(name)
            if all(attributes.get(k) == v for k, v in wanted.items())
        )


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


@pytest.fixture
def instrument(telemetry: Telemetry) -> Iterator[Callable[..., OpenAIImageCostInstrumentor]]:
    """Instrument with the test's providers (and any settings); always uninstrument after."""
    instrumentor = OpenAIImageCostInstrumentor()

    def start(**settings: Any) -> OpenAIImageCostInstrumentor:
        providers = {
            "tracer_provider": telemetry.tracer_provider,
            "meter_provider": telemetry.meter_provider,
            "logger_provider": telemetry.logger_provider,
        }
        instrumentor.instrument(**{**providers, **settings})
        return instrumentor

    yield start
    instrumentor.uninstrument()


@pytest.fixture
def instrumented(instrument: Callable[..., OpenAIImageCostInstrumentor]) -> OpenAIImageCostInstrumentor:
    return instrument()


@pytest.fixture(scope="session")
def _running_server() -> Iterator[Any]:
    from local_openai_server import LocalOpenAIServer

    with LocalOpenAIServer() as running:
        yield running


@pytest.fixture
def server(_running_server: Any) -> Any:
    """The session's local server, with no requests or faults left over from other tests."""
    _running_server.reset()
    return _running_server


@pytest.fixture
def client(server: Any) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=10) as sdk:
        yield sdk


@pytest.fixture
async def async_client(server: Any) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=10)
    async with sdk:
        yield sdk


COMMAND = Path(sys.executable).with_name("otel-image-cost")


def run_command(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The real `otel-image-cost` console script in a subprocess, with no OTEL_/OPENAI_ settings
    inherited from the test's environment except those in `env`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENAI_"))}
    return subprocess.run(
        [str(COMMAND), *args],
        env={**environment, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_bad_input(done: subprocess.CompletedProcess[str], *named: str) -> None:
    """Exit 2 with one line on stderr that names the problem, and no traceback."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for text in named:
        assert text in lines[0], lines[0]
