"""The overhead benchmark's floor records exactly what the plugin records for the same call.

`benchmarks/bench_overhead.py` compares our added time with a floor: the OpenTelemetry SDK
recording the same spans, metric points and billing records with precomputed values. That
comparison is only honest if the floor leaves nothing out; this replays the floor under
in-memory exporters and compares it with one instrumented call of each benchmarked kind.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from otel_image_cost import OpenAIImageCostInstrumentor

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_overhead as bench


class FloorArm:
    """An arm whose 'instrumentation' is the floor replaying a captured call on given providers."""

    name = "floor"

    def __init__(self, shape: Any) -> None:
        self.shape = shape
        self.floor: Any = None

    def install(self, providers: Any) -> None:
        self.floor = bench.Floor(self.shape, providers)

    def uninstall(self) -> None:
        pass


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as running:
        yield running


def _calls(server: Any) -> dict[str, tuple[Callable[[], Any], bool]]:
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    async_client = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    return {
        "sync generate": (lambda: bench._generate(client), False),
        "async generate": (lambda: bench._agenerate(async_client), True),
        "stream": (lambda: bench._stream(client), False),
        "responses": (lambda: bench._responses(client), False),
    }


def _merged(span: Any) -> dict[str, Any]:
    return {**span.start_attributes, **span.end_attributes}


@pytest.mark.parametrize("kind", ["sync generate", "async generate", "stream", "responses"])
def test_the_floor_records_what_ours_records(server: Any, runner: asyncio.Runner, kind: str) -> None:
    call, is_async = _calls(server)[kind]
    ours_arm = bench.Arm("ours", None, OpenAIImageCostInstrumentor)
    ours = bench.capture_telemetry(ours_arm, call, runner, is_async)
    arm = FloorArm(ours)
    floor = bench.capture_telemetry(arm, lambda: arm.floor.once(), runner, False)

    assert len(ours.records) == 1  # the billing record is part of what is compared
    assert [(s.name, s.kind, s.parent) for s in floor.spans] == [
        (s.name, s.kind, s.parent) for s in ours.spans
    ]
    assert [_merged(s) for s in floor.spans] == [_merged(s) for s in ours.spans]
    assert sorted(floor.points, key=repr) == sorted(ours.points, key=repr)
    assert [(r.event_name, r.attributes, r.span) for r in floor.records] == [
        (r.event_name, r.attributes, r.span) for r in ours.records
    ]
