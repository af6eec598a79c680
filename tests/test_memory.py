"""Memory: thousands of calls with 1.5 MB base64 images leave nothing behind.

Every response object, stream and stream event the application drops must be collectable (the
plugin keeps counts and short strings, never a payload), no call object or span outlives its call,
the OpenTelemetry context is back where it was, and the process's resident memory stays flat.

`OTEL_IMAGE_COST_MEMORY_CALLS` sets the number of calls. The default, 4,000, keeps the test near two
minutes per SDK line on CI's two cores: 10,000 calls took 310 s on a busy two-core machine (about
31 ms per call, each moving 1.5 to 3 MB of base64), with the same result (RSS grew 5.9 MiB at most).
"""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import Span as SdkSpan

from otel_image_cost import OpenAIImageCostInstrumentor, instrumentor
from otel_image_cost.calls import TrackedCall

from conftest import Telemetry
from local_openai_server import LocalOpenAIServer

CALLS = int(os.environ.get("OTEL_IMAGE_COST_MEMORY_CALLS", "4000"))
B64_BYTES = 1_500_000  # each image's base64 text; a multiple of 4
BATCH = 100  # calls between the checks that need a full garbage collection
WARMUP_CALLS = 2 * BATCH
# Resident memory may grow this much from the end of the warm-up to the end of the run. Freed
# 1.5-3 MB buffers are kept by the allocator for reuse (glibc raises its mmap threshold after the
# first large free, so such buffers come from the heap afterwards), and the metric SDK's state
# settles: measured growth was under 6 MiB over 10,000 calls. A payload kept by the plugin would add
# 1.5 MB per call (6 GB over 4,000 calls); 32 MiB is about twenty payloads in all. (The weak
# references catch a kept response object directly; this bound catches anything else.)
RSS_TOLERANCE_BYTES = 32 * 2**20
PAGE = os.sysconf("SC_PAGE_SIZE")
IMAGE_TOOL: list[Any] = [{"type": "image_generation"}]


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def live(kind: type) -> int:
    return sum(1 for obj in gc.get_objects() if isinstance(obj, kind))


@pytest.fixture(scope="module")
def big_server() -> Iterator[LocalOpenAIServer]:
    with LocalOpenAIServer(image_b64_bytes=B64_BYTES) as running:
        yield running


@pytest.fixture
def big_client(big_server: LocalOpenAIServer) -> Iterator[openai.OpenAI]:
    big_server.reset()
    with openai.OpenAI(base_url=big_server.base_url, api_key="sk-test", max_retries=0, timeout=60) as c:
        yield c
    big_server.reset()


class Refs:
    """Weak references to what the application received, to check that it can all be collected."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref[Any]] = []
        self.b64_seen = 0

    def keep(self, obj: Any) -> None:
        self.refs.append(weakref.ref(obj))

    def saw_image(self, b64: str | None) -> None:
        assert b64 is not None and len(b64) == B64_BYTES
        self.b64_seen += 1

    def alive(self) -> int:
        return sum(1 for ref in self.refs if ref() is not None)


def one_call(client: openai.OpenAI, index: int, refs: Refs) -> None:
    """One call of a mix of paths, as the application makes it; the application keeps nothing."""
    path = index % 20
    if path in (0, 10):  # streamed, read to the end
        stream = client.images.generate(model="gpt-image-1", prompt="a cat", stream=True, partial_images=1)
        refs.keep(stream)
        refs.keep(stream.__wrapped__)
        for event in stream:
            refs.keep(event)
            refs.saw_image(event.b64_json)
    elif path == 5:  # streamed, dropped after the first event without close
        stream = client.images.generate(model="gpt-image-1", prompt="a cat", stream=True, partial_images=1)
        refs.keep(stream)
        event = next(iter(stream))
        refs.keep(event)
        refs.saw_image(event.b64_json)
        # Release the connection (not through the proxy, so the plugin only learns of the end
        # when the dropped proxy is collected), or each dropped stream would hold one open.
        stream.response.close()
    elif path in (1, 11):  # Responses with the image tool
        response = client.responses.create(model="gpt-5", input="draw a cat", tools=IMAGE_TOOL)
        refs.keep(response)
        refs.saw_image(next(item.result for item in response.output if item.type == "image_generation_call"))
    elif path == 15:  # raw response, parsed by the application
        raw = client.images.with_raw_response.generate(model="gpt-image-1", prompt="a cat")
        parsed = raw.parse()
        refs.keep(raw)
        refs.keep(parsed)
        assert parsed.data is not None
        refs.saw_image(parsed.data[0].b64_json)
    else:  # plain Images API call
        result = client.images.generate(model="gpt-image-1", prompt="a cat")
        refs.keep(result)
        assert result.data is not None
        refs.saw_image(result.data[0].b64_json)


def test_many_large_image_calls_leave_nothing_behind(
    big_server: LocalOpenAIServer,
    big_client: openai.OpenAI,
    instrumented: OpenAIImageCostInstrumentor,
    telemetry: Telemetry,
) -> None:
    context_before = otel_context.get_current()
    # Earlier tests in the same process may still hold spans and calls (pytest keeps the
    # tracebacks of failed and xfailed tests): none may be added, whatever was there before.
    gc.collect()
    spans_before, calls_before = live(SdkSpan), live(TrackedCall)
    refs = Refs()
    spans_seen = 0
    rss_after_warmup = 0
    rss_peak_growth = 0
    for index in range(WARMUP_CALLS + CALLS):
        one_call(big_client, index, refs)
        if (index + 1) % BATCH:
            continue
        # Everything the application dropped is collectable, and nothing of ours is left alive.
        big_server.reset()  # the server keeps stored Responses (with their images) for retrieval
        gc.collect()
        assert refs.alive() == 0, f"{refs.alive()} of {len(refs.refs)} dropped objects still alive"
        refs.refs.clear()
        assert live(TrackedCall) <= calls_before
        spans = telemetry.spans()
        assert len(spans) == BATCH + BATCH // 10  # one per call, plus an image span per Responses call
        assert max(len(repr(dict(span.attributes or {}))) for span in spans) < 4096  # no image data
        spans_seen += len(spans)
        telemetry.span_exporter.clear()
        # One billing record per call, none holding image data; the in-memory exporter keeps every
        # record it is given (about 9 KB each), so it is emptied with the spans.
        records = telemetry.records()
        assert len(records) == BATCH
        assert max(len(repr(dict(record.attributes or {}))) for record in records) < 4096
        telemetry.log_exporter.clear()
        assert live(SdkSpan) <= spans_before  # no span of ours left open or referenced
        assert otel_context.get_current() is context_before
        assert instrumentor._inside_call.get() is None
        if index + 1 == WARMUP_CALLS:
            rss_after_warmup = rss_bytes()
        elif index + 1 > WARMUP_CALLS:
            rss_peak_growth = max(rss_peak_growth, rss_bytes() - rss_after_warmup)
    total = WARMUP_CALLS + CALLS
    assert refs.b64_seen == total + total // 10  # streamed-to-the-end calls saw two images each
    assert spans_seen == total + total // 10
    # Every call counted once: 2 images per 20 calls came as one streamed completed image each, ...
    assert telemetry.total("openai.image.generated") == total - total // 20
    assert rss_peak_growth < RSS_TOLERANCE_BYTES, f"RSS grew {rss_peak_growth / 2**20:.1f} MiB"
    print(
        f"\n{CALLS} calls after {WARMUP_CALLS} warm-up: RSS {rss_after_warmup / 2**20:.1f} MiB then, "
        f"peak growth {rss_peak_growth / 2**20:.1f} MiB, final {rss_bytes() / 2**20:.1f} MiB"
    )
