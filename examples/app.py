"""A small multi-tenant app that resells image generation, instrumented with no code change.

Run it as `opentelemetry-instrument python examples/app.py`. It talks to whatever `openai` is
configured to talk to (`OPENAI_BASE_URL` / `OPENAI_API_KEY`): the bundled local server in the demo
(`examples/demo.py`), or the real API when you give it a real key. Every call says who it is for
with `billing_context`; at the end the app reads back what the plugin emitted, per user: the
spans' `gen_ai.usage.cost`, and (when the Prometheus exporter is on) the `openai.image.cost`
counter from its own `/metrics` endpoint, which must agree to the cent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable

import openai
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_image_cost import billing_context

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000b4944415478da63600002000005000172de9e3f0000000049454e44ae426082"
)
IMAGE_TOOL = {"type": "image_generation"}


def alice(client: openai.OpenAI) -> None:
    """acme / alice: premium renders, and an edit of her own upload."""
    with billing_context(user_id="alice", tenant_id="acme", attributes={"plan": "pro"}):
        client.images.generate(
            model="gpt-image-1", prompt="A lighthouse at dawn", quality="high", size="1024x1024"
        )
        client.images.edit(
            model="gpt-image-1.5", image=("photo.png", PNG), prompt="Make the sky violet", quality="medium"
        )


def bob(client: openai.OpenAI) -> None:
    """acme / bob: cheap drafts in bulk, then one DALL·E 3 poster."""
    with billing_context(user_id="bob", tenant_id="acme", attributes={"plan": "free"}):
        client.images.generate(model="gpt-image-1-mini", prompt="Logo sketch", quality="low", n=3)
        client.images.generate(model="dall-e-3", prompt="A retro poster", quality="hd", size="1792x1024")


def carol(client: openai.OpenAI) -> None:
    """globex / carol: watches a large render arrive with two partial previews."""
    with billing_context(user_id="carol", tenant_id="globex"):
        stream = client.images.generate(
            model="gpt-image-2",
            prompt="A city map",
            quality="medium",
            size="1536x1024",
            stream=True,
            partial_images=2,
        )
        with stream:
            for _event in stream:
                pass


async def dave(async_client: openai.AsyncOpenAI) -> None:
    """initech / dave: a chat assistant that draws, with the tool's default image model."""
    with billing_context(user_id="dave", tenant_id="initech"):
        await async_client.responses.create(model="gpt-4o-mini", input="Draw a robot", tools=[IMAGE_TOOL])
        await async_client.images.generate(model="gpt-image-1", prompt="An icon", quality="low", n=2)


def erin(client: openai.OpenAI) -> None:
    """globex / erin: a chat turn that draws two images with a chosen model, streamed."""
    with (
        billing_context(user_id="erin", tenant_id="globex"),
        client.responses.stream(
            model="gpt-4o-mini",
            input="Make two images of a boat",
            tools=[
                {
                    "type": "image_generation",
                    "model": "gpt-image-1.5",
                    "quality": "medium",
                    "partial_images": 1,
                }
            ],
        ) as stream,
    ):
        for _event in stream:
            pass


def frank(client: openai.OpenAI) -> None:
    """No billing context: the request's own `safety_identifier` names the user."""
    client.images.generate(model="gpt-image-1", prompt="A cat", quality="medium", safety_identifier="frank")


def grace(client: openai.OpenAI) -> None:
    """initech / grace: a call that names no model (its cost cannot be known: counted as unpriced),
    and a prompt the service refuses (the app handles the SDK's own error; nothing is billed)."""
    with billing_context(user_id="grace", tenant_id="initech"):
        client.images.generate(prompt="A sunset", quality="low")
        try:
            client.images.generate(model="gpt-image-1", prompt="moderation test")
        except openai.BadRequestError as refused:
            print(f"grace: refused by the service ({refused.code})")


def heidi(client: openai.OpenAI) -> None:
    """globex / heidi: a chat app that keeps one Responses WebSocket open (`responses.connect()`,
    WebSocket mode) for two turns; the second draws two images."""
    tool = {"type": "image_generation", "model": "gpt-image-1", "quality": "low"}
    with billing_context(user_id="heidi", tenant_id="globex"), client.responses.connect() as connection:
        for prompt in ("Draw a kite", "Now two images of a kite"):
            connection.response.create(model="gpt-4o-mini", input=prompt, tools=[tool])
            for event in connection:
                if event.type in ("response.completed", "response.failed", "response.incomplete", "error"):
                    break


def run_workload(client: openai.OpenAI, async_client: openai.AsyncOpenAI) -> None:
    steps: list[Callable[[openai.OpenAI], None]] = [alice, bob, carol, erin, frank, grace, heidi]
    for step in steps:
        step(client)
    asyncio.run(dave(async_client))


def spend_from_spans(spans: list[ReadableSpan]) -> dict[str, float]:
    spend: dict[str, float] = defaultdict(float)
    for span in spans:
        attributes = span.attributes or {}
        if not span.name.startswith("execute_tool"):  # per-image child spans repeat their call's cost
            cost = attributes.get("gen_ai.usage.cost")
            if isinstance(cost, float):
                spend[str(attributes.get("user.id", "(unattributed)"))] += cost
    return dict(spend)


def print_blind_spots(spans: list[ReadableSpan]) -> None:
    """Calls with no cost: unpriced ones (a billing blind spot) and failed ones (nothing billed)."""
    for span in spans:
        attributes = span.attributes or {}
        user = attributes.get("user.id", "(unattributed)")
        if "error.type" in attributes:
            print(f"failed call for {user}: {span.name}, {attributes['error.type']} (no cost)")
        elif attributes.get("openai.image.cost.source") == "unknown":
            reason = attributes.get("openai.image.unpriced.reason")
            print(f"unpriced call for {user}: {span.name}, reason {reason} (see openai.image.unpriced)")


_COST_LINE = re.compile(r"^openai_image_cost_USD_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.MULTILINE)


def spend_from_metrics(metrics_url: str) -> dict[str, float]:
    """The `openai.image.cost` counter, summed per `user.id`, as Prometheus would scrape it."""
    with urllib.request.urlopen(metrics_url, timeout=5) as reply:
        text = reply.read().decode()
    spend: dict[str, float] = defaultdict(float)
    for match in _COST_LINE.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group("labels")))
        spend[labels.get("user_id", "(unattributed)")] += float(match.group("value"))
    return dict(spend)


def print_summary(by_span: dict[str, float], by_metric: dict[str, float] | None) -> bool:
    print(f"\n{'user':<16}{'spend from spans (USD)':>24}{'from openai.image.cost (USD)':>32}")
    agree = True
    for user in sorted(set(by_span) | set(by_metric or {})):
        span_total = by_span.get(user, 0.0)
        metric_total = "(exporter off)" if by_metric is None else f"{by_metric.get(user, 0.0):.6f}"
        if by_metric is not None and abs(by_metric.get(user, 0.0) - span_total) > 1e-9:
            agree = False
        print(f"{user:<16}{span_total:>24.6f}{metric_total:>32}")
    print(f"{'total':<16}{sum(by_span.values()):>24.6f}")
    if by_metric is not None:
        print("spans and metrics agree" if agree else "MISMATCH between spans and metrics")
    return agree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--linger", type=float, default=0.0, help="keep serving /metrics this many seconds")
    options = parser.parse_args()

    collected = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):  # set up by `opentelemetry-instrument`
        provider.add_span_processor(SimpleSpanProcessor(collected))
    client = openai.OpenAI(max_retries=0)
    async_client = openai.AsyncOpenAI(max_retries=0)
    run_workload(client, async_client)

    metrics_url = _prometheus_url()
    by_metric = spend_from_metrics(metrics_url) if metrics_url else None
    spans = list(collected.get_finished_spans())
    agree = print_summary(spend_from_spans(spans), by_metric)
    print_blind_spots(spans)
    if options.linger > 0:
        print(f"serving {metrics_url} for {options.linger:.0f} s", flush=True)
        time.sleep(options.linger)
    return 0 if agree else 1


def _prometheus_url() -> str | None:
    if os.environ.get("OTEL_METRICS_EXPORTER") != "prometheus":
        return None
    host = os.environ.get("OTEL_EXPORTER_PROMETHEUS_HOST", "localhost")
    port = os.environ.get("OTEL_EXPORTER_PROMETHEUS_PORT", "9464")
    return f"http://{host}:{port}/metrics"


if __name__ == "__main__":
    raise SystemExit(main())
