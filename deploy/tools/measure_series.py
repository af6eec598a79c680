"""Measure how many Prometheus series otel-image-cost's metrics make for N users in the demo's shape.

    python deploy/tools/measure_series.py [--users 10000] [--tenants 100]

1. Runs the offline demo (examples/demo.py) once and reads, from its real /metrics, every point
   each of its users produced: the label sets of the contract's six instruments per user.
2. Replays those points with the real OpenTelemetry SDK for N distinct `user.id` (user i does what
   demo user i % 6 did, in tenant i % T) under several configurations, and counts the series the
   Prometheus exporter would expose: one per counter point, (buckets + 1 + 2) per histogram point
   (the `le` buckets, +Inf, _sum and _count). The count is checked against the real
   PrometheusMetricReader's exposition for the first users.

Configurations: the plugin's default attributes (`user.id`, `tenant.id`) with the SDK's default
cardinality limit (2000 attribute sets per metric stream) and with the limit raised by a View;
`OTEL_IMAGE_COST_METRIC_ATTRIBUTES=tenant.id`; and Views that keep `user.id` on the counters only.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.semconv._incubating.metrics.gen_ai_metrics import (
    create_gen_ai_client_operation_duration,
    create_gen_ai_client_token_usage,
)
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
# Prometheus family -> (OTel instrument, kind)
INSTRUMENTS = {
    "openai_image_cost_USD": ("openai.image.cost", "counter"),
    "openai_image_generated": ("openai.image.generated", "counter"),
    "openai_image_partial_images": ("openai.image.partial_images", "counter"),
    "openai_image_unpriced": ("openai.image.unpriced", "counter"),
    "gen_ai_client_token_usage": ("gen_ai.client.token.usage", "histogram"),
    "gen_ai_client_operation_duration_seconds": ("gen_ai.client.operation.duration", "histogram"),
}
# Prometheus label -> OTel attribute key, for the contract's metric attributes.
ATTRIBUTE_KEYS = {
    key.replace(".", "_"): key
    for key in (
        "gen_ai.provider.name",
        "gen_ai.operation.name",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.token.type",
        "openai.image.model",
        "openai.image.operation",
        "openai.image.quality",
        "openai.image.size",
        "openai.image.cost.source",
        "openai.image.cost.part",
        "openai.image.unpriced.reason",
        "error.type",
        "server.address",
        "user.id",
        "tenant.id",
    )
}
HISTOGRAMS = tuple(name for name, kind in INSTRUMENTS.values() if kind == "histogram")
COUNTERS = tuple(name for name, kind in INSTRUMENTS.values() if kind == "counter")


@dataclass(frozen=True)
class Point:
    instrument: str
    attributes: tuple[tuple[str, str], ...]  # without user.id / tenant.id
    value: float  # counter increment, or one histogram measurement


@dataclass(frozen=True)
class Profile:
    """What one demo user emitted."""

    user: str
    has_tenant: bool
    points: tuple[Point, ...]


def demo_profiles() -> list[Profile]:
    """Run examples/demo.py once and read each user's points from its /metrics."""
    sys.path.insert(0, str(ROOT / "examples"))
    from prometheus_demo import free_port

    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--linger", "20", "--metrics-port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            if line.startswith("serving "):
                break
        else:
            raise RuntimeError("the demo ended before serving its metrics")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
    finally:
        demo.terminate()
        demo.wait(timeout=30)

    points: dict[str, list[Point]] = defaultdict(list)
    tenants: dict[str, bool] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in INSTRUMENTS:
            continue
        instrument, kind = INSTRUMENTS[family.name]
        by_labels: dict[tuple[tuple[str, str], ...], dict[str, float]] = defaultdict(dict)
        for sample in family.samples:
            if not sample.labels.get("otel_scope_name", "").startswith("otel_image_cost"):
                continue  # another GenAI instrumentation sharing the semconv histograms
            labels = {k: v for k, v in sample.labels.items() if k in ATTRIBUTE_KEYS and v != ""}
            by_labels[tuple(sorted(labels.items()))][sample.name.removeprefix(family.name)] = sample.value
        for label_set, values in by_labels.items():
            label_map = dict(label_set)
            user = label_map.pop("user_id", "(none)")
            tenants[user] = "tenant_id" in label_map
            label_map.pop("tenant_id", None)
            attributes = tuple(sorted((ATTRIBUTE_KEYS[k], v) for k, v in label_map.items()))
            if kind == "counter":
                points[user].append(Point(instrument, attributes, values["_total"]))
            else:  # replay one measurement of the point's mean value per point
                points[user].append(Point(instrument, attributes, values["_sum"] / values["_count"]))
    return [Profile(user, tenants[user], tuple(points[user])) for user in sorted(points)]


@dataclass(frozen=True)
class Config:
    name: str
    metric_attributes: tuple[str, ...] = ("user.id", "tenant.id")
    views: Callable[[], Sequence[View]] = lambda: ()


def instruments(meter: Meter) -> dict[str, Any]:
    """The plugin's instruments: same names, units and semconv helpers."""
    return {
        "openai.image.cost": meter.create_counter("openai.image.cost", unit="USD"),
        "openai.image.generated": meter.create_counter("openai.image.generated", unit="{image}"),
        "openai.image.partial_images": meter.create_counter("openai.image.partial_images", unit="{image}"),
        "openai.image.unpriced": meter.create_counter("openai.image.unpriced", unit="{call}"),
        "gen_ai.client.token.usage": create_gen_ai_client_token_usage(meter),
        "gen_ai.client.operation.duration": create_gen_ai_client_operation_duration(meter),
    }


def record(
    provider: MeterProvider, profiles: Sequence[Profile], users: int, tenants: int, config: Config
) -> None:
    made = instruments(provider.get_meter("otel_image_cost.instrumentor"))
    for i in range(users):
        profile = profiles[i % len(profiles)]
        who = {"user.id": f"user-{i:05d}"}
        if profile.has_tenant:
            who["tenant.id"] = f"tenant-{i % tenants:03d}"
        extra = {key: value for key, value in who.items() if key in config.metric_attributes}
        for point in profile.points:
            attributes = {**dict(point.attributes), **extra}
            instrument = made[point.instrument]
            if isinstance(instrument, Histogram):
                instrument.record(point.value, attributes)
            else:
                instrument.add(point.value, attributes)


def count_series(reader: InMemoryMetricReader) -> tuple[dict[str, int], int]:
    """Series per instrument as the Prometheus exporter renders the points; and overflow points."""
    per_instrument: dict[str, int] = defaultdict(int)
    overflow = 0
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    if (point.attributes or {}).get("otel.metric.overflow"):
                        overflow += 1
                    if isinstance(point, HistogramDataPoint):
                        per_instrument[metric.name] += len(point.explicit_bounds) + 1 + 2
                    else:
                        per_instrument[metric.name] += 1
    return dict(per_instrument), overflow


def measure(
    profiles: Sequence[Profile], users: int, tenants: int, config: Config
) -> tuple[dict[str, int], int]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=list(config.views()))
    record(provider, profiles, users, tenants, config)
    result = count_series(reader)
    provider.shutdown()
    return result


def exposition_series(profiles: Sequence[Profile], users: int, tenants: int, config: Config) -> int:
    """The same, counted in the real Prometheus exporter's text (for checking `measure`)."""
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry)
    provider = MeterProvider(metric_readers=[reader], views=list(config.views()))
    record(provider, profiles, users, tenants, config)
    text = generate_latest(registry).decode()
    provider.shutdown()
    families = tuple(INSTRUMENTS)
    return sum(1 for line in text.splitlines() if line.startswith(families))


def views_limit(limit: int) -> Callable[[], Sequence[View]]:
    return lambda: [
        View(instrument_name=name, aggregation_cardinality_limit=limit) for name, _ in INSTRUMENTS.values()
    ]


def views_user_on_counters_only(limit: int) -> Callable[[], Sequence[View]]:
    def make() -> Sequence[View]:
        counters = [View(instrument_name=name, aggregation_cardinality_limit=limit) for name in COUNTERS]
        histograms = [
            View(
                instrument_name=name,
                attribute_keys={
                    key for key in ATTRIBUTE_KEYS.values() if key not in ("user.id", "tenant.id")
                },
                aggregation_cardinality_limit=limit,
            )
            for name in HISTOGRAMS
        ]
        return counters + histograms

    return make


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--tenants", type=int, default=100)
    options = parser.parse_args()
    started = time.monotonic()
    profiles = demo_profiles()
    shape = ", ".join(f"{p.user} {len(p.points)}" for p in profiles)
    print(f"points per demo user: {shape}")
    big = 10 * options.users
    configs = [
        Config("default attributes, SDK default limit (2000/stream)"),
        Config(f"default attributes, View aggregation_cardinality_limit={big}", views=views_limit(big)),
        Config(
            f"default attributes, View aggregation_cardinality_limit={options.users // 10}",
            views=views_limit(options.users // 10),
        ),
        Config(
            f"OTEL_IMAGE_COST_METRIC_ATTRIBUTES=tenant.id, limit {big}",
            metric_attributes=("tenant.id",),
            views=views_limit(big),
        ),
        Config(
            f"user.id on counters only (histogram Views drop it), limit {big}",
            views=views_user_on_counters_only(big),
        ),
    ]
    # check the arithmetic against the real exporter on a slice that stays under every limit
    sample_users = 60
    for config in configs:
        counted, _ = measure(profiles, sample_users, options.tenants, config)
        exposed = exposition_series(profiles, sample_users, options.tenants, config)
        assert sum(counted.values()) == exposed, (config.name, counted, exposed)

    print(f"\nseries for {options.users} users in {options.tenants} tenants (demo's shape):")
    header = f"{'configuration':<66}" + "".join(
        f"{name.split('.')[-1]:>16}" for name, _ in INSTRUMENTS.values()
    )
    print(header + f"{'total':>10}{'overflow':>10}")
    for config in configs:
        counted, overflow = measure(profiles, options.users, options.tenants, config)
        cells = "".join(f"{counted.get(name, 0):>16}" for name, _ in INSTRUMENTS.values())
        print(f"{config.name:<66}{cells}{sum(counted.values()):>10}{overflow:>10}")
    print("\nper scraped target add: target_info 1, up/scrape_* 5, python_*/process_* runtime series")
    elapsed = time.monotonic() - started
    print(f"(checked against the real Prometheus exporter for {sample_users} users; {elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
