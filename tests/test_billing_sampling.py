"""The ledger sampling cannot drop: 500 mixed calls through the real SDK over loopback, with spans
sampled away (ALWAYS_OFF, and a 1 % trace-id ratio), give exactly 500 billing records whose costs
add up, per user, to the `openai.image.cost` counter and to the hand-computed prices.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from google.protobuf.json_format import MessageToJson
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler, TraceIdRatioBased

from otel_image_cost import OpenAIImageCostInstrumentor, billing_context
from otel_image_cost.prices import load_price_table
from otel_image_cost.reprice import reprice

from conftest import Telemetry
from local_openai_server import LocalOpenAIServer

CALLS = 500
USERS = ("u-0", "u-1", "u-2", "u-3", "u-4")
FOX = "a red fox"  # 9 chars: 3 prompt tokens on the local server
TREE = "Draw a tree"  # 11 chars: 3 tokens
LOW_TOOL: Any = {"type": "image_generation", "model": "gpt-image-1", "quality": "low"}
MODEL = "gpt-4o-mini"


def images(client: openai.OpenAI, server: LocalOpenAIServer) -> None:
    client.images.generate(model="gpt-image-1", prompt=FOX, quality="low")


def images_stream(client: openai.OpenAI, server: LocalOpenAIServer) -> None:
    for _ in client.images.generate(model="gpt-image-1", prompt=FOX, quality="low", stream=True):
        pass


def images_abandoned(client: openai.OpenAI, server: LocalOpenAIServer) -> None:
    stream = client.images.generate(
        model="gpt-image-1", prompt=FOX, quality="low", stream=True, partial_images=1
    )
    with stream:
        next(stream)  # the partial image, then the app stops reading


def responses(client: openai.OpenAI, server: LocalOpenAIServer) -> None:
    client.responses.create(model=MODEL, input=TREE, tools=[LOW_TOOL])


def responses_stream(client: openai.OpenAI, server: LocalOpenAIServer) -> None:
    for _ in client.responses.create(model=MODEL, input=TREE, tools=[LOW_TOOL], stream=True):
        pass


def responses_abandoned(until: str) -> Callable[[openai.OpenAI, LocalOpenAIServer], None]:
    def call(client: openai.OpenAI, server: LocalOpenAIServer) -> None:
        with client.responses.create(model=MODEL, input=TREE, tools=[LOW_TOOL], stream=True) as stream:
            for event in stream:
                if event.type == until:
                    break

    return call


def failed(client: openai.OpenAI, server: LocalOpenAIServer) -> None:
    server.inject(500)
    with pytest.raises(openai.InternalServerError):
        client.images.generate(model="gpt-image-1", prompt=FOX, quality="low")


# (call, its cost in USD by hand, its outcome)
KINDS: list[tuple[Callable[[openai.OpenAI, LocalOpenAIServer], None], float, str]] = [
    # gpt-image-1 low 1024x1024, usage 3 text in, 272 out: 3 x 5e-6 + 272 x 40e-6 = 0.010895
    (images, 0.010895, "ok"),
    (images_stream, 0.010895, "ok"),
    # abandoned after its partial, estimated: 272 x 40e-6 + 100 x 40e-6 + 3 x 5e-6 = 0.014895
    (images_abandoned, 0.014895, "abandoned"),
    # image 10 x 5e-6 + 272 x 40e-6 = 0.01093; mainline 1503 x 0.15e-6 + 28 x 0.6e-6 = 0.00024225
    (responses, 0.01117225, "ok"),
    (responses_stream, 0.01117225, "ok"),
    # one image begun, estimated 272 x 40e-6 = 0.01088; the mainline part unpriced
    (responses_abandoned("response.image_generation_call.in_progress"), 0.01088, "abandoned"),
    # nothing begun: both parts unpriced
    (responses_abandoned("response.created"), 0.0, "abandoned"),
    (failed, 0.0, "error"),
]


@pytest.mark.parametrize("sampler", [ALWAYS_OFF, TraceIdRatioBased(0.01)], ids=["always_off", "one_percent"])
def test_every_call_has_one_billing_record_whatever_the_sampler(
    sampler: Sampler,
    telemetry: Telemetry,
    instrument: Callable[..., OpenAIImageCostInstrumentor],
    client: openai.OpenAI,
    server: LocalOpenAIServer,
    tmp_path: Path,
) -> None:
    telemetry.tracer_provider = TracerProvider(sampler=sampler)
    instrument()
    expected: dict[str, float] = dict.fromkeys(USERS, 0.0)
    outcomes: Counter[str] = Counter()
    for index in range(CALLS):
        call, cost, outcome = KINDS[index % len(KINDS)]
        user = USERS[index % len(USERS)]  # 8 kinds and 5 users: every kind for every user
        with billing_context(user_id=user, tenant_id="acme"):
            call(client, server)
        expected[user] += cost
        outcomes[outcome] += 1

    records = [dict(record.attributes or {}) for record in telemetry.records()]
    assert len(records) == CALLS
    assert Counter(str(r["openai.image.outcome"]) for r in records) == outcomes
    ids = {(record.trace_id, record.span_id) for record in telemetry.records()}
    assert len(ids) == CALLS and all(trace_id and span_id for trace_id, span_id in ids)
    sampled_calls = [span for span in telemetry.spans() if span.name.startswith(("chat", "generate"))]
    assert len(sampled_calls) < 50  # spans: at most a few sampled; records: all

    counted = {user: telemetry.total("openai.image.cost", user__id=user) for user in USERS}
    billed = dict.fromkeys(USERS, 0.0)
    for record in records:
        billed[str(record["user.id"])] += float(record.get("gen_ai.usage.cost", 0.0))
    for user in USERS:
        assert billed[user] == pytest.approx(counted[user], abs=1e-9), user
        assert billed[user] == pytest.approx(expected[user], abs=1e-9), user

    # The same records as the collector's file exporter writes them (OTLP JSON lines), read back
    # by `otel-image-cost reprice`: every call, and the same per-user totals.
    ledger = tmp_path / "billing.jsonl"
    ledger.write_text(
        MessageToJson(encode_logs(telemetry.log_exporter.get_finished_logs()), indent=None) + "\n"
    )
    result = reprice([ledger], load_price_table(None))
    assert result.read_from == "billing records"
    assert {user: totals.calls for user, totals in result.users.items()} == dict.fromkeys(USERS, CALLS // 5)
    for user in USERS:
        assert float(result.users[user].old) == pytest.approx(counted[user], abs=1e-9), user
