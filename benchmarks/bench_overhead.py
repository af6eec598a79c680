"""Overhead of the instrumented `openai` SDK against the uninstrumented one, and against peers.

Run it from the repository root (any venv where the package is installed; the peers are optional):

    python benchmarks/bench_overhead.py            # full run, a few minutes
    python benchmarks/bench_overhead.py --quick    # smoke run, under a minute
    python benchmarks/bench_overhead.py --json out.json --markdown out.md

What it measures, all in one process and one run:

* Loopback: the real SDK against the bundled `LocalOpenAIServer`, which runs in a child process on
  127.0.0.1 so that it does not share the client's GIL. Arms: `plain` (nothing installed), `ours`,
  and each peer instrumentor that imports (OpenLLMetry's `opentelemetry-instrumentation-openai`,
  OpenInference's `openinference-instrumentation-openai`). Every round runs one batch of every
  scenario under every arm, arms in a rotating order (A, B, C, A, B, C ...), so slow drifts of the
  machine hit every arm alike. A batch's per-call time is compared with the `plain` batch of the
  same round: ratios and added microseconds are per round, then summarised by median and quartiles.
* No I/O: the same SDK calls answered by an in-process mock transport with the server's recorded
  bytes. Network jitter is gone, so the added time per call is measured much more tightly; it is
  what the floor is compared with.
* The floor: what the OpenTelemetry SDK itself costs to record the same spans (same names, kinds,
  attribute counts, parent links) and the same metric points, with precomputed values, on the same
  providers. The shapes are captured from one instrumented call of each scenario.
* Per stream event: an `ObservedStream` over recorded events against plain iteration of the same list.
* The cost engine alone: `price_image_generation` per call (estimate, reported usage, per image).

Providers, the same for every arm and for the floor: a `TracerProvider` with a `SimpleSpanProcessor`
to an exporter that discards (so every span's whole SDK cost is paid on the calling thread and is
measured, with no background thread competing for the 2 cores), and a `MeterProvider` with an
`InMemoryMetricReader` that is never collected during the timing (aggregation happens at record time).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import gc
import importlib
import importlib.metadata
import io
import json
import os
import platform
import pstats
import re
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import wrapt
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

try:  # the log exporters' names in newer SDKs (the old in-memory name warns there)
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter as InMemoryLogExporter
    from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
except ImportError:  # pragma: no cover - OTel SDK 1.38, the oldest admitted
    from opentelemetry.sdk._logs.export import InMemoryLogExporter
    from opentelemetry.sdk._logs.export import LogExporter as LogRecordExporter
    from opentelemetry.sdk._logs.export import LogExportResult as LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanKind

from otel_image_cost import OpenAIImageCostInstrumentor
from otel_image_cost import instrumentor as ours_module
from otel_image_cost.calls import ImagesCall
from otel_image_cost.cost import ImageGeneration, ImageTokenUsage, price_image_generation
from otel_image_cost.prices import load_price_table
from otel_image_cost.streams import ObservedStream
from otel_image_cost.telemetry import Instruments

try:  # openai 3.x ships on httpx2, openai 2.x on httpx
    import httpx2 as httpx  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the SDK line
    import httpx  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
SMALL_PROMPT = "a watercolor fox in the snow"
# The large-payload servers: base64 characters of their one image (the default server's is ~1 KB),
# and calls per batch (a 12 MB call takes ~30 ms on loopback).
LARGE_PAYLOADS = {"1.5 MB": (1_500_000, 4), "6 MB": (6_000_000, 2), "12 MB": (12_000_000, 1)}
STREAM_PARTIALS = 3
TOOL = {"type": "image_generation", "quality": "low", "size": "1024x1024"}


# -- the bundled server, in a child process ----------------------------------------------------------


def serve(image_b64_bytes: int) -> int:
    """Child-process mode: serve on a free loopback port, print it, stop when stdin closes."""
    sys.path.insert(0, str(ROOT / "examples"))
    server_module = importlib.import_module("local_openai_server")
    # The server writes headers and body separately; with Nagle's algorithm on, the body then waits
    # for the client's delayed ACK (~40 ms a call on Linux loopback), which would drown the overhead.
    server_module._Handler.disable_nagle_algorithm = True
    options = {"image_b64_bytes": image_b64_bytes} if image_b64_bytes else {}
    with server_module.LocalOpenAIServer(**options) as server:
        print(server.port, flush=True)
        sys.stdin.read()
    return 0


class ServerProcess:
    """`LocalOpenAIServer` in its own process (its own GIL), stopped by closing its stdin."""

    def __init__(self, image_b64_bytes: int = 0) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", str(image_b64_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.isdigit():
            self.close()
            raise RuntimeError(f"the local server did not start (said {line!r})")
        self.base_url = f"http://127.0.0.1:{line}/v1"

    def close(self) -> None:
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)


# -- providers ---------------------------------------------------------------------------------------


class DiscardingExporter(SpanExporter):
    """Accepts every span and keeps nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class DiscardingLogExporter(LogRecordExporter):
    """Accepts every log record (the billing records) and keeps nothing."""

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


@dataclass
class Providers:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    reader: InMemoryMetricReader
    logger_provider: LoggerProvider


def bench_providers() -> Providers:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(DiscardingExporter()))
    reader = InMemoryMetricReader()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(DiscardingLogExporter()))
    return Providers(tracer_provider, MeterProvider(metric_readers=[reader]), reader, logger_provider)


class StartAttributes(SpanProcessor):
    """Remembers each span's attributes as they were when it started (calibration only)."""

    def __init__(self) -> None:
        self.at_start: dict[int, dict[str, Any]] = {}

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        self.at_start[span.context.span_id] = dict(span.attributes or {})


# -- arms: nothing installed, ours, the peers ----------------------------------------------------------


class PatchGuard:
    """Puts the SDK's classes back exactly as they were after each arm's `uninstrument()`.

    Some instrumentors do not fully unwrap (a dotted `Class.method` passed where a module is
    expected), so wrappers would pile up round after round; every wrapt proxy found where the
    snapshot had something else is replaced by the original, and counted per arm.
    """

    def __init__(self) -> None:
        self._saved: list[tuple[type, dict[str, Any]]] = []
        self.leftovers: dict[str, int] = {}

    def snapshot(self) -> None:
        self._saved = [(cls, dict(vars(cls))) for cls in _sdk_classes()]

    def restore(self, arm: str) -> None:
        missing = object()
        for cls, saved in self._saved:
            for name, value in list(vars(cls).items()):
                if isinstance(value, _PROXY) and saved.get(name, missing) is not value:
                    self.leftovers[arm] = self.leftovers.get(arm, 0) + 1
                    if name in saved:
                        setattr(cls, name, saved[name])
                    else:
                        delattr(cls, name)


def _sdk_classes() -> list[type]:
    classes: dict[int, type] = {}
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "openai" or name.startswith("openai.")):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, type) and getattr(value, "__module__", "").startswith("openai"):
                classes[id(value)] = value
    return list(classes.values())


_PROXY: type = getattr(wrapt, "BaseObjectProxy", wrapt.ObjectProxy)  # wrapt 2 / wrapt 1
GUARD = PatchGuard()


@dataclass
class Arm:
    name: str
    distribution: str | None
    factory: Callable[[], Any] | None
    instrumentor: Any = None
    note: str = ""

    @property
    def version(self) -> str:
        if self.distribution is None:
            return ""
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    def install(self, providers: Providers) -> None:
        if self.factory is None:
            return
        if self.instrumentor is None:
            self.instrumentor = self.factory()
        self.instrumentor.instrument(
            tracer_provider=providers.tracer_provider,
            meter_provider=providers.meter_provider,
            logger_provider=providers.logger_provider,
        )

    def uninstall(self) -> None:
        if self.instrumentor is not None:
            self.instrumentor.uninstrument()
            GUARD.restore(self.name)


def _peer(module: str, cls: str) -> Callable[[], Any]:
    def make() -> Any:
        return getattr(importlib.import_module(module), cls)()

    return make


def available_arms(peers: bool) -> list[Arm]:
    arms = [
        Arm("plain", None, None),
        Arm("ours", "otel-image-cost", OpenAIImageCostInstrumentor),
    ]
    if not peers:
        return arms
    candidates = [
        Arm(
            "openllmetry",
            "opentelemetry-instrumentation-openai",
            _peer("opentelemetry.instrumentation.openai", "OpenAIInstrumentor"),
        ),
        Arm(
            "openinference",
            "openinference-instrumentation-openai",
            _peer("openinference.instrumentation.openai", "OpenAIInstrumentor"),
        ),
    ]
    for arm in candidates:
        try:
            assert arm.factory is not None
            arm.instrumentor = arm.factory()
            arms.append(arm)
        except Exception as exc:  # a peer that does not import is reported, not fatal
            print(f"# peer {arm.name} unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)
    return arms


# -- scenarios -----------------------------------------------------------------------------------------


@dataclass
class Clients:
    small: openai.OpenAI
    large: dict[str, openai.OpenAI]  # by payload title, one image each
    small_async: openai.AsyncOpenAI


def _generate(client: openai.OpenAI) -> None:
    client.images.generate(model="gpt-image-1", prompt=SMALL_PROMPT, quality="low", size="1024x1024")


def _stream(client: openai.OpenAI) -> int:
    events = 0
    with client.images.generate(
        model="gpt-image-1",
        prompt=SMALL_PROMPT,
        quality="low",
        size="1024x1024",
        stream=True,
        partial_images=STREAM_PARTIALS,
    ) as stream:
        for _ in stream:
            events += 1
    return events


def _responses(client: openai.OpenAI) -> None:
    client.responses.create(model="gpt-5", input="draw a fox", tools=[TOOL])  # type: ignore[list-item]


async def _agenerate(client: openai.AsyncOpenAI) -> None:
    await client.images.generate(model="gpt-image-1", prompt=SMALL_PROMPT, quality="low", size="1024x1024")


@dataclass
class Scenario:
    key: str
    title: str
    batch: int
    run: Callable[[], Any] | None = None  # sync: one call
    arun: Callable[[], Awaitable[Any]] | None = None  # async: one call
    events: int = 0  # stream events per call
    floor: Floor | None = None  # set once the shapes are captured


FLOOR = "floor"  # the pseudo-arm: nothing installed, the floor's telemetry recorded around each call
WARM_FLOOR = "floor, warm loop"  # the floor's telemetry alone, in a tight loop (caches warm)


def loopback_scenarios(clients: Clients, quick: bool) -> list[Scenario]:
    scale = 2 if quick else 1
    return [
        Scenario("sync_small", "sync generate, 1 KB", 20 // scale, run=lambda: _generate(clients.small)),
        *(
            Scenario(
                f"sync_{title}",
                f"sync generate, {title}",
                max(1, batch // scale),
                run=functools.partial(_generate, clients.large[title]),
            )
            for title, (_, batch) in LARGE_PAYLOADS.items()
        ),
        Scenario(
            "async_small", "async generate, small", 20 // scale, arun=lambda: _agenerate(clients.small_async)
        ),
        Scenario(
            "stream",
            f"streamed generate, {STREAM_PARTIALS} partials",
            10 // scale,
            run=lambda: _stream(clients.small),
            events=STREAM_PARTIALS + 1,
        ),
        Scenario("responses", "Responses + image tool", 10 // scale, run=lambda: _responses(clients.small)),
    ]


# -- no I/O: the SDK answered by a mock transport with recorded bytes -----------------------------------


@dataclass
class Recorded:
    body: bytes
    content_type: str


def record_answers(base_url: str) -> dict[tuple[str, bool], Recorded]:
    """The server's exact answers to the no-I/O scenarios' requests, keyed by (path, stream)."""
    answers: dict[tuple[str, bool], Recorded] = {}
    requests = {
        ("/v1/images/generations", False): {
            "model": "gpt-image-1",
            "prompt": SMALL_PROMPT,
            "quality": "low",
            "size": "1024x1024",
        },
        ("/v1/images/generations", True): {
            "model": "gpt-image-1",
            "prompt": SMALL_PROMPT,
            "quality": "low",
            "size": "1024x1024",
            "stream": True,
            "partial_images": STREAM_PARTIALS,
        },
        ("/v1/responses", False): {"model": "gpt-5", "input": "draw a fox", "tools": [TOOL]},
    }
    with httpx.Client(timeout=30) as http:
        for (path, stream), body in requests.items():
            answer = http.post(base_url.removesuffix("/v1") + path, json=body)
            answer.raise_for_status()
            answers[(path, stream)] = Recorded(answer.content, answer.headers["content-type"])
    return answers


_RESPONSE_ID = re.compile(rb'"(resp_[0-9a-f]+)"')


def mock_client(answers: dict[tuple[str, bool], Recorded]) -> openai.OpenAI:
    def handler(request: Any) -> Any:
        body = json.loads(request.content or b"{}")
        answer = answers[(request.url.path, bool(body.get("stream")))]
        content = answer.body
        found = _RESPONSE_ID.search(content)
        if found is not None:  # a fresh id each time: a response id is priced only once
            fresh = b"resp_" + secrets.token_hex((len(found[1]) - 5) // 2).encode()
            content = content.replace(found[1], fresh)
        return httpx.Response(200, content=content, headers={"content-type": answer.content_type})

    return openai.OpenAI(
        base_url="http://mock.invalid/v1",
        api_key="sk-local",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )


def mock_scenarios(client: openai.OpenAI, quick: bool) -> list[Scenario]:
    scale = 4 if quick else 1
    return [
        Scenario("sync_small", "sync generate, small", 200 // scale, run=lambda: _generate(client)),
        Scenario(
            "stream",
            f"streamed generate, {STREAM_PARTIALS} partials",
            100 // scale,
            run=lambda: _stream(client),
            events=STREAM_PARTIALS + 1,
        ),
        Scenario("responses", "Responses + image tool", 100 // scale, run=lambda: _responses(client)),
    ]


# -- the floor: the OTel SDK recording the same telemetry with precomputed values -----------------------


@dataclass
class SpanShape:
    name: str
    kind: SpanKind
    start_attributes: dict[str, Any]
    end_attributes: dict[str, Any]
    parent: int | None  # index of the parent span in the shape list


@dataclass
class RecordShape:
    """A log record (a billing record) as emitted: its fields, and the span it was emitted under."""

    event_name: str | None
    severity_number: Any
    severity_text: str | None
    attributes: dict[str, Any]
    span: int | None  # index of its span in the shape list


@dataclass
class Telemetry:
    spans: list[SpanShape] = field(default_factory=list)
    points: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)  # instrument, value
    records: list[RecordShape] = field(default_factory=list)

    @property
    def attribute_count(self) -> int:
        return sum(len(s.start_attributes) + len(s.end_attributes) for s in self.spans)


def capture_telemetry(arm: Arm, call: Callable[[], Any], runner: asyncio.Runner, is_async: bool) -> Telemetry:
    """Run one call under `arm` with recording providers; return the spans and metric points it made."""
    exporter = InMemorySpanExporter()
    at_start = StartAttributes()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(at_start)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    logs = InMemoryLogExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    recording = Providers(tracer_provider, MeterProvider(metric_readers=[reader]), reader, logger_provider)
    arm.install(recording)
    try:
        if is_async:
            runner.run(call())
        else:
            call()
    finally:
        arm.uninstall()
    finished = _parents_first(list(exporter.get_finished_spans()))
    index = {s.context.span_id: i for i, s in enumerate(finished) if s.context is not None}
    telemetry = Telemetry()
    for span in finished:
        assert span.context is not None
        start = at_start.at_start.get(span.context.span_id, {})
        final = dict(span.attributes or {})
        telemetry.spans.append(
            SpanShape(
                name=span.name,
                kind=span.kind,
                start_attributes=start,
                end_attributes={k: v for k, v in final.items() if k not in start or start[k] != v},
                parent=index.get(span.parent.span_id) if span.parent is not None else None,
            )
        )
    for finished_log in logs.get_finished_logs():
        log = finished_log.log_record
        telemetry.records.append(
            RecordShape(
                event_name=getattr(log, "event_name", None),
                severity_number=log.severity_number,
                severity_text=log.severity_text,
                attributes=dict(log.attributes or {}),
                span=next((i for i, s in enumerate(finished) if s.context.span_id == log.span_id), None),
            )
        )
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data is not None else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    attributes = dict(point.attributes or {})
                    if isinstance(point, HistogramDataPoint):
                        for _ in range(point.count):
                            telemetry.points.append((metric.name, point.sum / point.count, attributes))
                    elif isinstance(point, NumberDataPoint):
                        telemetry.points.append((metric.name, float(point.value), attributes))
    return telemetry


def _parents_first(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    ids = {s.context.span_id for s in spans if s.context is not None}
    ordered: list[ReadableSpan] = []
    placed: set[int] = set()
    while len(ordered) < len(spans):
        for span in spans:
            assert span.context is not None
            parent = span.parent.span_id if span.parent is not None else None
            ready = parent is None or parent not in ids or parent in placed
            if span.context.span_id not in placed and ready:
                ordered.append(span)
                placed.add(span.context.span_id)
    return ordered


class Floor:
    """The same spans, metric points and billing records as one instrumented call, straight on the
    OTel SDK, with every attribute and value precomputed.

    Spans start before the SDK call and end after it, the first one current while the SDK sends
    (as an instrumentation must, so that the HTTP layer's spans nest under it); each record is
    emitted in its span's context.
    """

    def __init__(self, telemetry: Telemetry, providers: Providers) -> None:
        self._tracer = trace.get_tracer("bench.floor", tracer_provider=providers.tracer_provider)
        self._logger = providers.logger_provider.get_logger("bench.floor")
        self._records = telemetry.records
        instruments = Instruments.create(providers.meter_provider.get_meter("bench.floor"))
        by_name: dict[str, Any] = {
            "openai.image.cost": instruments.cost.add,
            "openai.image.generated": instruments.generated.add,
            "openai.image.partial_images": instruments.partial_images.add,
            "openai.image.unpriced": instruments.unpriced.add,
            "gen_ai.client.token.usage": instruments.token_usage.record,
            "gen_ai.client.operation.duration": instruments.duration.record,
        }
        self._points = [(by_name[name], value, attributes) for name, value, attributes in telemetry.points]
        self._shapes = telemetry.spans

    def begin(self) -> list[Any]:
        spans: list[Any] = []
        for shape in self._shapes:
            context = None if shape.parent is None else trace.set_span_in_context(spans[shape.parent])
            spans.append(
                self._tracer.start_span(
                    shape.name, context, kind=shape.kind, attributes=shape.start_attributes
                )
            )
        return spans

    def end(self, spans: list[Any]) -> None:
        for span, shape in zip(reversed(spans), reversed(self._shapes), strict=True):
            if shape.end_attributes:
                span.set_attributes(shape.end_attributes)
            span.end()
        for record, value, attributes in self._points:
            record(value, attributes)
        for log in self._records:
            span = spans[log.span] if log.span is not None else None
            context = trace.set_span_in_context(NonRecordingSpan(span.get_span_context())) if span else None
            self._logger.emit(
                timestamp=time.time_ns(),
                context=context,
                severity_number=log.severity_number,
                severity_text=log.severity_text,
                attributes=log.attributes,
                event_name=log.event_name,
            )

    def once(self) -> None:
        spans = self.begin()
        otel_context.detach(self.attach(spans))
        self.end(spans)

    @staticmethod
    def attach(spans: list[Any]) -> Any:
        return otel_context.attach(trace.set_span_in_context(spans[0]))

    def around(self, run: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            spans = self.begin()
            token = self.attach(spans)
            try:
                return run()
            finally:
                otel_context.detach(token)
                self.end(spans)

        return call

    def around_async(self, arun: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        async def call() -> Any:
            spans = self.begin()
            token = self.attach(spans)
            try:
                return await arun()
            finally:
                otel_context.detach(token)
                self.end(spans)

        return call


# -- the harness ------------------------------------------------------------------------------------------


Timing = tuple[float, float]  # (wall, CPU of the calling thread) microseconds per call
WALL, CPU = 0, 1


@dataclass
class Samples:
    """Per-call microseconds of each batch, by scenario and arm, in round order."""

    by_key: dict[tuple[str, str], list[Timing]] = field(default_factory=dict)

    def add(self, scenario: str, arm: str, timing: Timing) -> None:
        self.by_key.setdefault((scenario, arm), []).append(timing)

    def get(self, scenario: str, arm: str, clock: int = WALL) -> list[float]:
        return [timing[clock] for timing in self.by_key.get((scenario, arm), [])]


def time_sync_batch(run: Callable[[], Any], count: int) -> Timing:
    wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
    for _ in range(count):
        run()
    cpu, wall = time.thread_time_ns() - cpu, time.perf_counter_ns() - wall
    return wall / count / 1000, cpu / count / 1000


async def _async_batch(arun: Callable[[], Awaitable[Any]], count: int) -> Timing:
    wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
    for _ in range(count):
        await arun()
    cpu, wall = time.thread_time_ns() - cpu, time.perf_counter_ns() - wall
    return wall / count / 1000, cpu / count / 1000


def time_batch(scenario: Scenario, runner: asyncio.Runner, count: int | None = None, arm: str = "") -> Timing:
    count = scenario.batch if count is None else count
    floor = scenario.floor if arm == FLOOR else None
    if scenario.arun is not None:
        arun = scenario.arun if floor is None else floor.around_async(scenario.arun)
        return runner.run(_async_batch(arun, count))
    assert scenario.run is not None
    return time_sync_batch(scenario.run if floor is None else floor.around(scenario.run), count)


def rotated(items: Sequence[Arm], shift: int) -> list[Arm]:
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def interleaved(
    arms: Sequence[Arm],
    scenarios: Sequence[Scenario],
    rounds: int,
    providers: Providers,
    runner: asyncio.Runner,
    extra: Callable[[Samples], None] | None = None,
    deadline: float | None = None,
) -> tuple[Samples, int]:
    """Rounds of (every arm x every scenario) batches, arms in rotating order; returns samples, rounds."""
    samples = Samples()
    done = 0
    for round_index in range(rounds):
        if deadline is not None and round_index >= 5 and time.monotonic() > deadline:
            break
        for arm in rotated(arms, round_index):
            arm.install(providers)
            try:
                for scenario in scenarios:
                    time_batch(scenario, runner, 1, arm.name)  # warm the path and connection after a switch
                    gc.collect()
                    samples.add(scenario.key, arm.name, time_batch(scenario, runner, arm=arm.name))
            finally:
                arm.uninstall()
        if extra is not None:
            gc.collect()
            extra(samples)
        done += 1
    return samples, done


# -- statistics ---------------------------------------------------------------------------------------------


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) < 4:
        middle = statistics.median(values) if values else float("nan")
        return min(values, default=middle), middle, max(values, default=middle)
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


@dataclass
class Comparison:
    plain_us: tuple[float, float, float]
    arm_us: tuple[float, float, float]
    ratio: tuple[float, float, float]
    added_us: tuple[float, float, float]


def compare(samples: Samples, scenario: str, arm: str, clock: int = WALL) -> Comparison | None:
    plain, other = samples.get(scenario, "plain", clock), samples.get(scenario, arm, clock)
    if not plain or not other:
        return None
    pairs = list(zip(plain, other, strict=False))
    return Comparison(
        plain_us=quartiles(plain),
        arm_us=quartiles(other),
        ratio=quartiles([b / a for a, b in pairs]),
        added_us=quartiles([b - a for a, b in pairs]),
    )


# -- micro-benchmarks --------------------------------------------------------------------------------


def repeat_median(fn: Callable[[int], float], loops: int, repeats: int) -> tuple[float, float, float]:
    """Quartiles over `repeats` runs of `fn(loops)` (each returns microseconds per operation)."""
    return quartiles([fn(loops) for _ in range(repeats)])


def per_event_overhead(
    client: openai.OpenAI, providers: Providers, loops: int, repeats: int
) -> dict[str, tuple[float, float, float]]:
    """Added CPU µs per event of an `ObservedStream` (and its tally) over recorded stream events.

    By event kind: partial images, the completed event (which carries the image's usage), and the
    real mix of one call. Each repeat times plain iteration of the same list, then the observed one.
    """
    with _stream_events(client) as recorded:
        pass
    kinds = {
        "partial image event": [e for e in recorded if str(e.type).endswith(".partial_image")],
        "completed event (carries usage)": [e for e in recorded if str(e.type).endswith(".completed")],
        f"one call's mix ({len(recorded)} events)": recorded,
    }
    stream_kwargs = {
        "model": "gpt-image-1",
        "prompt": SMALL_PROMPT,
        "quality": "low",
        "size": "1024x1024",
        "stream": True,
        "partial_images": STREAM_PARTIALS,
    }
    arm = Arm("ours", None, OpenAIImageCostInstrumentor)
    arm.install(providers)
    results: dict[str, tuple[float, float, float]] = {}
    try:
        runtime = ours_module._Active.runtime
        assert runtime is not None
        for name, events in kinds.items():
            batch = events * max(1, loops // len(events))
            added: list[float] = []
            for _ in range(repeats):
                gc.collect()
                start = time.thread_time_ns()
                for _event in iter(batch):
                    pass
                plain = time.thread_time_ns() - start
                call = ImagesCall(runtime, "generate", client.images, stream_kwargs)
                proxy = ObservedStream(iter(batch), call)
                gc.collect()
                start = time.thread_time_ns()
                for _event in proxy:
                    pass
                observed = time.thread_time_ns() - start
                added.append((observed - plain) / len(batch) / 1000)
            results[name] = quartiles(added)
    finally:
        arm.uninstall()
    return results


@contextlib.contextmanager
def _stream_events(client: openai.OpenAI) -> Iterator[list[Any]]:
    with client.images.generate(
        model="gpt-image-1",
        prompt=SMALL_PROMPT,
        quality="low",
        size="1024x1024",
        stream=True,
        partial_images=STREAM_PARTIALS,
    ) as stream:
        yield list(stream)


def cost_engine(loops: int, repeats: int) -> dict[str, tuple[float, float, float]]:
    prices = load_price_table()
    usage = ImageTokenUsage(
        input_tokens=50,
        output_tokens=272,
        input_text_tokens=50,
        input_image_tokens=0,
        output_image_tokens=272,
    )
    cases = {
        "estimate (gpt-image-1, low, 1024x1024)": ImageGeneration(
            "gpt-image-1", "low", "1024x1024", 1, prompt_chars=28
        ),
        "reported usage (gpt-image-1)": ImageGeneration("gpt-image-1", "low", "1024x1024", 1, usage=usage),
        "per image (dall-e-3)": ImageGeneration("dall-e-3", "standard", "1024x1024", 1),
    }
    for generation in cases.values():  # every case must price, or the timing means nothing
        assert price_image_generation(generation, prices).total is not None

    def timer(generation: ImageGeneration) -> Callable[[int], float]:
        def run(count: int) -> float:
            start = time.thread_time_ns()
            for _ in range(count):
                price_image_generation(generation, prices)
            return (time.thread_time_ns() - start) / count / 1000

        return run

    return {name: repeat_median(timer(g), loops, repeats) for name, g in cases.items()}


def profile_ours(scenario: Scenario, providers: Providers, calls: int, runner: asyncio.Runner) -> str:
    """cProfile of `calls` instrumented calls (no I/O); the plugin's and the OTel SDK's functions."""
    arm = Arm("ours", None, OpenAIImageCostInstrumentor)
    arm.install(providers)
    profiler = cProfile.Profile()
    try:
        time_batch(scenario, runner, 20)
        profiler.enable()
        time_batch(scenario, runner, calls)
        profiler.disable()
    finally:
        arm.uninstall()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(r"otel_image_cost|opentelemetry/(sdk|trace|context)", 30)
    out.write("\n--- by own time ---\n")
    stats.sort_stats("tottime").print_stats(r"otel_image_cost|opentelemetry|wrapt", 20)
    text = out.getvalue()
    return re.sub(r"(?m)^\s*\d+ function calls.*\n", "", text)


# -- reporting --------------------------------------------------------------------------------


def fmt(q: tuple[float, float, float], digits: int = 1) -> str:
    return f"{q[1]:.{digits}f} [{q[0]:.{digits}f}, {q[2]:.{digits}f}]"


def fmt_ratio(q: tuple[float, float, float]) -> str:
    return f"{q[1]:.3f} [{q[0]:.3f}, {q[2]:.3f}]"


def machine() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    packages = {}
    for name in (
        "openai",
        "opentelemetry-sdk",
        "opentelemetry-instrumentation",
        "wrapt",
        "otel-image-cost",
        "opentelemetry-instrumentation-openai",
        "openinference-instrumentation-openai",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            packages[name] = importlib.metadata.version(name)
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": ", ".join(f"{k} {v}" for k, v in packages.items()),
    }


def coverage(telemetry: Telemetry) -> str:
    return f"{len(telemetry.spans)} span, {len(telemetry.points)} pt, {len(telemetry.records)} rec"


@dataclass
class Run:
    """Everything measured in one run."""

    arms: list[Arm]
    loopback: list[Scenario]
    mocked: list[Scenario]
    loop_samples: Samples
    mock_samples: Samples
    shapes: dict[tuple[str, str], Telemetry]
    per_event: dict[str, tuple[float, float, float]]
    engine: dict[str, tuple[float, float, float]]
    rounds: tuple[int, int]
    load: tuple[float, float]  # 1-minute load average at the start and at the end
    elapsed: float = 0.0
    profile: str = ""


def measure(args: argparse.Namespace) -> Run:
    quick: bool = args.quick
    began = time.monotonic()
    budget_s = 40 if quick else 480
    loop_rounds = args.rounds or (10 if quick else 150)
    mock_rounds = 6 if quick else 60
    load_start = os.getloadavg()[0]

    providers = bench_providers()
    trace.set_tracer_provider(providers.tracer_provider)
    metrics.set_meter_provider(providers.meter_provider)
    arms = available_arms(peers=not args.no_peers)
    small_server = ServerProcess()
    large_servers = {title: ServerProcess(b64_bytes) for title, (b64_bytes, _) in LARGE_PAYLOADS.items()}
    runner = asyncio.Runner()
    try:
        clients = Clients(
            small=openai.OpenAI(base_url=small_server.base_url, api_key="sk-local", max_retries=0),
            large={
                title: openai.OpenAI(base_url=server.base_url, api_key="sk-local", max_retries=0)
                for title, server in large_servers.items()
            },
            small_async=openai.AsyncOpenAI(base_url=small_server.base_url, api_key="sk-local", max_retries=0),
        )
        loopback = loopback_scenarios(clients, quick)
        mocked = mock_scenarios(mock_client(record_answers(small_server.base_url)), quick)

        # Every scenario once uninstrumented (imports the SDK's lazy modules), then the originals.
        for scenario in [*loopback, *mocked]:
            time_batch(scenario, runner, 1)
        GUARD.snapshot()

        # What each arm records per call (coverage), and the shapes the floor replays.
        shapes: dict[tuple[str, str], Telemetry] = {}
        for arm in arms[1:]:
            for scenario in loopback:
                call = scenario.arun if scenario.arun is not None else scenario.run
                assert call is not None
                shapes[(scenario.key, arm.name)] = capture_telemetry(
                    arm, call, runner, scenario.arun is not None
                )
        for scenario in [*loopback, *mocked]:
            scenario.floor = Floor(shapes[(scenario.key, "ours")], providers)
        timed = [arms[0], Arm(FLOOR, None, None), *arms[1:]]
        # Everything alive now lives as long as the run: keep the collector off it, so that a
        # collection costs the same whichever arm triggers it.
        gc.collect()
        gc.freeze()

        # 1. Loopback, all arms interleaved.
        print(
            f"# loopback: {len(arms)} arms, {len(loopback)} scenarios, {loop_rounds} rounds", file=sys.stderr
        )
        loop_samples, loop_done = interleaved(
            timed, loopback, loop_rounds, providers, runner, deadline=began + budget_s * 0.6
        )

        # 2. No I/O, all arms interleaved, with the floor of each scenario timed in every round.
        floor_batch = 50 if quick else 200

        def time_floors(samples: Samples) -> None:
            for scenario in mocked:
                assert scenario.floor is not None
                samples.add(scenario.key, WARM_FLOOR, time_sync_batch(scenario.floor.once, floor_batch))

        print(f"# no I/O: {mock_rounds} rounds", file=sys.stderr)
        mock_samples, mock_done = interleaved(
            timed, mocked, mock_rounds, providers, runner, extra=time_floors, deadline=began + budget_s * 0.85
        )

        # 3. Micro-benchmarks.
        print("# per event, cost engine", file=sys.stderr)
        per_event = per_event_overhead(clients.small, providers, 400 if quick else 4000, 5 if quick else 21)
        engine = cost_engine(2000 if quick else 20000, 5 if quick else 15)
        profile = profile_ours(mocked[0], providers, 200 if quick else 2000, runner) if args.profile else ""
    finally:
        runner.close()
        small_server.close()
        for server in large_servers.values():
            server.close()
    return Run(
        arms=arms,
        loopback=loopback,
        mocked=mocked,
        loop_samples=loop_samples,
        mock_samples=mock_samples,
        shapes=shapes,
        per_event=per_event,
        engine=engine,
        rounds=(loop_done, mock_done),
        load=(load_start, os.getloadavg()[0]),
        elapsed=time.monotonic() - began,
        profile=profile,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run, under a minute")
    parser.add_argument("--no-peers", action="store_true", help="only plain vs ours")
    parser.add_argument("--rounds", type=int, help="loopback rounds (default 10 quick, 150 full)")
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--markdown", type=Path, help="write the result tables here")
    parser.add_argument("--profile", action="store_true", help="add a cProfile of our per-call path")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        return serve(args.serve)
    run = measure(args)
    report = build_report(run, sys.argv[1:] if argv is None else list(argv))
    print(report.markdown)
    if args.markdown:
        args.markdown.write_text(report.markdown + "\n")
    if args.json:
        args.json.write_text(json.dumps(report.data, indent=2, default=str))
    return 0


@dataclass
class Report:
    markdown: str
    data: dict[str, Any]


TARGET_MULTIPLE = 1.3  # issue 12: our added CPU at most 1.3 times the floor's
TARGET_GROWTH_US = 20.0  # issue 12: the 6 MB call adds at most 20 µs more than the small one
RATIO_SCENARIOS = ("sync_small", "async_small", "stream", "responses")


def added_per_round(samples: Samples, scenario: str, arm: str) -> list[float]:
    """CPU µs an arm added over `plain` in each round (rounds align: every round times every arm)."""
    plain, other = samples.get(scenario, "plain", CPU), samples.get(scenario, arm, CPU)
    return [b - a for a, b in zip(plain, other, strict=False)]


def target_checks(run: Run, data: dict[str, Any]) -> list[str]:
    """The issue's two targets, from the loopback rounds: added CPU over the floor's, and growth
    with payload size (per round: the large call's added CPU minus the 1 KB call's)."""
    lines = ["#### Against the targets: loopback, added CPU per call, median [quartiles]", ""]
    lines.append("| scenario | ours µs | floor µs | ours / floor | no I/O: ours / floor | target |")
    lines.append("|---|---|---|---|---|---|")
    checks: dict[str, Any] = {}
    no_io = data.get("no_io", {})
    titles = {s.key: s.title for s in run.loopback}
    for key in RATIO_SCENARIOS:
        ours = quartiles(added_per_round(run.loop_samples, key, "ours"))
        floor = quartiles(added_per_round(run.loop_samples, key, FLOOR))
        multiple = ours[1] / floor[1] if floor[1] > 0 else float("nan")
        mocked = no_io.get(key, {}).get("ours_over_floor")
        mocked_cell = f"{mocked:.2f}" if isinstance(mocked, float) else "n/a"
        met = "met" if multiple <= TARGET_MULTIPLE else f"missed by {multiple / TARGET_MULTIPLE - 1:.0%}"
        lines.append(
            f"| {titles.get(key, key)} | {fmt(ours)} | {fmt(floor)} | **{multiple:.2f}** | {mocked_cell} "
            f"| ≤ {TARGET_MULTIPLE}: {met} |"
        )
        checks[key] = {"ours_added_us": ours, "floor_added_us": floor, "ours_over_floor": multiple}
    lines.append("")
    lines.append(
        "| payload (one image) | ours added µs | floor added µs | ours growth over 1 KB, µs "
        "| floor growth, µs | target |"
    )
    lines.append("|---|---|---|---|---|---|")
    small = {arm: added_per_round(run.loop_samples, "sync_small", arm) for arm in ("ours", FLOOR)}
    for title in ("1 KB", *LARGE_PAYLOADS):
        key = "sync_small" if title == "1 KB" else f"sync_{title}"
        added = {arm: added_per_round(run.loop_samples, key, arm) for arm in ("ours", FLOOR)}
        growth = {
            arm: quartiles([b - a for a, b in zip(small[arm], added[arm], strict=False)]) for arm in added
        }
        verdict = ""
        if title == "6 MB":
            verdict = "met" if growth["ours"][1] <= TARGET_GROWTH_US else "missed"
            verdict = f"≤ {TARGET_GROWTH_US:.0f}: {verdict}"
        grown = ("-", "-") if title == "1 KB" else (fmt(growth["ours"]), fmt(growth[FLOOR]))
        lines.append(
            f"| {title} | {fmt(quartiles(added['ours']))} | {fmt(quartiles(added[FLOOR]))} "
            f"| {grown[0]} | {grown[1]} | {verdict} |"
        )
        checks[f"payload {title}"] = {
            "growth_us": growth,
            "added_us": {arm: quartiles(values) for arm, values in added.items()},
        }
    lines.append("")
    data["targets"] = checks
    return lines


def build_report(run: Run, argv: list[str]) -> Report:
    peers = [a for a in run.arms if a.name != "plain"]
    lines: list[str] = []
    data: dict[str, Any] = {
        "machine": machine(),
        "rounds": run.rounds,
        "elapsed_s": run.elapsed,
        "load_1min": run.load,
        "arms": {a.name: a.version for a in peers},
        "leftover_wrappers": GUARD.leftovers,
    }
    command = "python benchmarks/bench_overhead.py" + ("" if not argv else " " + " ".join(argv))
    lines.append(
        f"Command: `{command}`: {run.rounds[0]} loopback rounds, {run.rounds[1]} no-I/O rounds, "
        f"{run.elapsed:.0f} s; 1-minute load average {run.load[0]:.1f} at the start, "
        f"{run.load[1]:.1f} at the end."
    )
    lines.append("")
    lines.append("#### Loopback: wall time per call / plain's in the same round, median [quartiles]")
    lines.append("")
    columns = [FLOOR, *(a.name for a in peers)]
    lines.append("| scenario | plain µs/call | " + " | ".join(columns) + " |")
    lines.append("|---" * (2 + len(columns)) + "|")
    data["loopback"] = {}
    for scenario in run.loopback:
        plain = quartiles(run.loop_samples.get(scenario.key, "plain"))
        cells = [scenario.title, fmt(plain, 0)]
        entry: dict[str, Any] = {"plain_us": plain}
        for name in columns:
            wall = compare(run.loop_samples, scenario.key, name)
            cpu = compare(run.loop_samples, scenario.key, name, CPU)
            telemetry = run.shapes.get((scenario.key, "ours" if name == FLOOR else name))
            if wall is None or cpu is None or telemetry is None:
                cells.append("n/a")
                continue
            cells.append(
                f"**{wall.ratio[1]:.3f}** [{wall.ratio[0]:.3f}, {wall.ratio[2]:.3f}]; "
                f"+{cpu.added_us[1]:.0f} µs CPU; {coverage(telemetry)}"
            )
            entry[name] = {
                "ratio": wall.ratio,
                "added_wall_us": wall.added_us,
                "added_cpu_us": cpu.added_us,
                "wall_us": wall.arm_us,
                "spans": len(telemetry.spans),
                "points": len(telemetry.points),
            }
        data["loopback"][scenario.key] = entry
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")

    lines.append("#### No I/O (mock transport): added CPU µs per call, median [quartiles]")
    lines.append("")
    lines.append(
        "| scenario | plain µs/call | floor (spans / attrs / points) | floor, warm loop | "
        + " | ".join(a.name for a in peers)
        + " | ours / floor |"
    )
    lines.append("|---" * (5 + len(peers)) + "|")
    data["no_io"] = {}
    for scenario in run.mocked:
        plain = quartiles(run.mock_samples.get(scenario.key, "plain", CPU))
        floor_cmp = compare(run.mock_samples, scenario.key, FLOOR, CPU)
        warm = quartiles(run.mock_samples.get(scenario.key, WARM_FLOOR, CPU))
        telemetry = run.shapes[(scenario.key, "ours")]
        floor = floor_cmp.added_us if floor_cmp is not None else (float("nan"),) * 3
        cells = [
            scenario.title,
            fmt(plain, 0),
            f"{fmt(floor)} ({len(telemetry.spans)} / {telemetry.attribute_count} / {len(telemetry.points)})",
            fmt(warm),
        ]
        entry = {"plain_cpu_us": plain, "floor_added_cpu_us": floor, "floor_warm_loop_cpu_us": warm}
        ours_added = float("nan")
        for arm in peers:
            cpu = compare(run.mock_samples, scenario.key, arm.name, CPU)
            if cpu is None:
                cells.append("n/a")
                continue
            cells.append(fmt(cpu.added_us))
            entry[arm.name] = {"added_cpu_us": cpu.added_us}
            if arm.name == "ours":
                ours_added = cpu.added_us[1]
        multiple = ours_added / floor[1] if floor[1] > 0 else float("nan")
        entry["ours_over_floor"] = multiple
        cells.append(f"**{multiple:.2f}**")
        data["no_io"][scenario.key] = entry
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")

    lines.extend(target_checks(run, data))

    lines.append("#### Per stream event (ours), added CPU µs per event, median [quartiles]")
    lines.append("")
    lines.append("| events | µs per event |")
    lines.append("|---|---|")
    for name, q in run.per_event.items():
        lines.append(f"| {name} | {fmt(q, 2)} |")
    lines.append("")
    data["per_event_us"] = run.per_event

    lines.append("#### Cost engine alone (`price_image_generation`), CPU µs per call, median [quartiles]")
    lines.append("")
    lines.append("| case | µs |")
    lines.append("|---|---|")
    for name, q in run.engine.items():
        lines.append(f"| {name} | {fmt(q, 2)} |")
    lines.append("")
    data["cost_engine_us"] = run.engine

    info = data["machine"]
    lines.append(
        f"Machine: {info['nproc']} CPUs, {info['cpu']}, Python {info['python']} ({info['platform']}); "
        f"{info['packages']}."
    )
    if GUARD.leftovers:
        left = ", ".join(f"{k}: {v}" for k, v in GUARD.leftovers.items())
        lines.append("")
        lines.append(f"Wrappers left on the SDK after `uninstrument()` (put back by the benchmark): {left}.")
    if run.profile:
        lines.append("")
        lines.append("#### Profile of our per-call path (cProfile, no I/O, sync generate)")
        lines.append("")
        lines.append("```\n" + run.profile.strip() + "\n```")
    return Report("\n".join(lines), data)


if __name__ == "__main__":
    sys.exit(main())
