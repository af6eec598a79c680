"""Concurrency: 1000 asyncio tasks and 32 threads at once, each for its own user, over mixed paths
(plain, streamed, Responses). No span and no metric point may carry another call's user.

Every call's prompt names its user, and prompts are recorded on spans here
(`capture_message_content`), so each span says who it was really for. Prompt lengths differ per
user, so each user's cost is a different number and a swapped attribution cannot cancel out.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from opentelemetry import baggage
from opentelemetry import context as otel_context

from otel_image_cost import OpenAIImageCostInstrumentor, billing_context

from conftest import Telemetry

TASKS = 1000
THREADS = 32
CALLS_PER_THREAD = 4
TIMEOUT_S = 60.0
# Under this load the local server and httpx2 (openai 3.x) sometimes lose a kept-alive connection
# (ReadError, uninstrumented too); the SDK retries those, within the same call and the same span.
RETRIES = 3
IMAGE_TOOL: list[Any] = [{"type": "image_generation"}]
OPENAI_MAJOR = int(openai.__version__.split(".")[0])
PATHS = ("plain", "stream", "responses")


def pooled_async_http_client() -> Any:
    """The SDK's async HTTP client with fewer connections than tasks. All 1000 calls are in flight
    at once (their spans open together) and queue for a connection, rather than open 1000 sockets
    to a test server whose listen backlog would refuse most of them."""
    http = importlib.import_module("httpx2" if OPENAI_MAJOR >= 3 else "httpx")
    return openai.DefaultAsyncHttpxClient(
        limits=http.Limits(max_connections=32, max_keepalive_connections=32)
    )


def prompt_for(user: str, index: int) -> str:
    """A prompt that names its user, 4 * (index + 8) characters long: its token count is unique."""
    return f"{user} ".ljust(4 * (index + 8), "x")


def user_of_prompt(prompt: str) -> str:
    return prompt.split(" ", 1)[0]


@pytest.fixture
def clean_server(server: Any) -> Iterator[Any]:
    server.reset()
    yield server
    server.reset()


async def async_call(client: openai.AsyncOpenAI, index: int) -> int:
    """One task's call; returns the images the app received."""
    user = f"a{index}"
    path = PATHS[index % 3]
    prompt = prompt_for(user, index)
    if index % 2:  # attributed by Baggage, as an upstream service would propagate it
        ctx = baggage.set_baggage("user.id", user)
        token = otel_context.attach(baggage.set_baggage("tenant.id", f"t-{user}", ctx))
        try:
            return await _async_path(client, path, prompt)
        finally:
            otel_context.detach(token)
    async with billing_context(user_id=user, tenant_id=f"t-{user}"):
        return await _async_path(client, path, prompt)


async def _async_path(client: openai.AsyncOpenAI, path: str, prompt: str) -> int:
    await asyncio.sleep(0)  # let the other tasks interleave before the call starts
    if path == "plain":
        result = await client.images.generate(model="gpt-image-1", prompt=prompt, quality="low")
        return len(result.data or [])
    if path == "stream":
        stream = await client.images.generate(
            model="gpt-image-1", prompt=prompt, quality="low", stream=True, partial_images=1
        )
        return sum([1 async for event in stream if event.type == "image_generation.completed"])
    response = await client.responses.create(model="gpt-5", input=prompt, tools=IMAGE_TOOL)
    return sum(1 for item in response.output if item.type == "image_generation_call")


def thread_calls(
    client: openai.OpenAI, thread: int, received: list[int], errors: list[BaseException]
) -> None:
    user = f"s{thread}"
    try:
        with billing_context(user_id=user, tenant_id=f"t-{user}"):
            for k in range(CALLS_PER_THREAD):
                prompt = prompt_for(user, TASKS + thread * CALLS_PER_THREAD + k)
                path = PATHS[(thread + k) % 3]
                if path == "plain":
                    received.append(
                        len(client.images.generate(model="gpt-image-1", prompt=prompt).data or [])
                    )
                elif path == "stream":
                    stream = client.images.generate(
                        model="gpt-image-1", prompt=prompt, stream=True, partial_images=1
                    )
                    received.append(sum(1 for event in stream if event.type == "image_generation.completed"))
                else:
                    response = client.responses.create(model="gpt-5", input=prompt, tools=IMAGE_TOOL)
                    received.append(
                        sum(1 for item in response.output if item.type == "image_generation_call")
                    )
    except BaseException as exc:
        errors.append(exc)


def test_concurrent_calls_are_never_misattributed(
    clean_server: Any, instrument: Any, telemetry: Telemetry
) -> None:
    instrument(capture_message_content=True, trust_baggage=True)  # half the tasks use Baggage
    sync_client = openai.OpenAI(
        base_url=clean_server.base_url, api_key="sk-test", max_retries=RETRIES, timeout=TIMEOUT_S
    )
    received: list[int] = []
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=thread_calls, args=(sync_client, t, received, errors), name=f"app-{t}")
        for t in range(THREADS)
    ]

    async def tasks() -> list[int]:
        client = openai.AsyncOpenAI(
            base_url=clean_server.base_url, api_key="sk-test", max_retries=RETRIES, timeout=TIMEOUT_S
        )
        async with client:
            return list(await asyncio.gather(*(async_call(client, i) for i in range(TASKS))))

    for thread in threads:
        thread.start()
    received_async = asyncio.run(tasks())
    for thread in threads:
        thread.join(timeout=300)
    sync_client.close()
    assert not [t.name for t in threads if t.is_alive()]
    assert errors == []
    calls = TASKS + THREADS * CALLS_PER_THREAD
    assert received_async == [1] * TASKS
    assert received == [1] * (THREADS * CALLS_PER_THREAD)

    # Spans: every call span's attribution is the user its prompt names.
    spans = telemetry.spans()
    call_spans = [s for s in spans if not s.name.startswith("execute_tool")]
    assert len(call_spans) == calls
    span_user: dict[int, str] = {}
    calls_per_user: Counter[str] = Counter()
    partials_per_user: Counter[str] = Counter()
    responses_users: set[str] = set()
    cost_per_user: dict[str, float] = defaultdict(float)
    for span in call_spans:
        attributes = dict(span.attributes or {})
        user = user_of_prompt(str(attributes["openai.image.prompt"]))
        assert attributes["user.id"] == user, span.name
        assert attributes["tenant.id"] == f"t-{user}"
        assert attributes["openai.image.count"] == 1
        assert span.context is not None
        span_user[span.context.span_id] = user
        calls_per_user[user] += 1
        partials_per_user[user] += int(attributes["openai.image.partial_images"])  # type: ignore[call-overload]
        if span.name.startswith("chat"):
            responses_users.add(user)
        cost_per_user[user] += float(attributes["gen_ai.usage.cost"])  # type: ignore[arg-type]
    assert len(calls_per_user) == TASKS + THREADS
    assert set(calls_per_user.values()) == {1, CALLS_PER_THREAD}
    # Each image span of a Responses call sits under its own call's span and carries its user.
    tool_spans = [s for s in spans if s.name.startswith("execute_tool")]
    responses_calls = sum(1 for s in call_spans if s.name.startswith("chat"))
    assert len(tool_spans) == responses_calls > 0
    for span in tool_spans:
        assert span.parent is not None
        assert dict(span.attributes or {})["user.id"] == span_user[span.parent.span_id]
    # Within a path each asyncio user's cost is a different number, so a swap would show; across
    # paths the partial-image counts and the cost parts (mainline only on Responses) tell them apart.
    for path in PATHS:
        costs = [cost_per_user[f"a{i}"] for i in range(TASKS) if PATHS[i % 3] == path]
        assert len(set(costs)) == len(costs), path

    # Metric points: user and tenant always belong together, and each user's totals are its own.
    for name in ("openai.image.cost", "openai.image.generated", "openai.image.partial_images"):
        for attributes, _ in telemetry.sums(name):
            assert attributes["tenant.id"] == f"t-{attributes['user.id']}", name
    generated: Counter[str] = Counter()
    for attributes, value in telemetry.sums("openai.image.generated"):
        generated[attributes["user.id"]] += int(value)
    assert generated == calls_per_user
    metric_cost: dict[str, float] = defaultdict(float)
    for attributes, value in telemetry.sums("openai.image.cost"):
        metric_cost[attributes["user.id"]] += value
    assert metric_cost.keys() == cost_per_user.keys()
    for user, cost in cost_per_user.items():
        assert metric_cost[user] == pytest.approx(cost, rel=1e-12), user
    partials: Counter[str] = Counter()
    for attributes, value in telemetry.sums("openai.image.partial_images"):
        partials[attributes["user.id"]] += int(value)
    assert partials == +partials_per_user
    mainline_users = {
        a["user.id"]
        for a, _ in telemetry.sums("openai.image.cost")
        if a["openai.image.cost.part"] == "mainline"
    }
    assert mainline_users == responses_users
    durations: Counter[str] = Counter()
    for attributes, point in telemetry.points("gen_ai.client.operation.duration"):
        assert attributes["tenant.id"] == f"t-{attributes['user.id']}"
        durations[attributes["user.id"]] += point.count
    assert durations == calls_per_user


def test_instrumentor_is_usable_from_many_threads_at_once(
    clean_server: Any, instrumented: OpenAIImageCostInstrumentor, telemetry: Telemetry
) -> None:
    """Threads that start calls while others finish theirs share one runtime: no call is lost."""
    client = openai.OpenAI(
        base_url=clean_server.base_url, api_key="sk-test", max_retries=RETRIES, timeout=TIMEOUT_S
    )
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def burst(thread: int) -> None:
        try:
            barrier.wait(timeout=30)
            with billing_context(user_id=f"b{thread}"):
                for _ in range(3):
                    client.images.generate(model="gpt-image-1", prompt="a cat", quality="low")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=burst, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    client.close()
    assert errors == []
    assert Counter(dict(s.attributes or {})["user.id"] for s in telemetry.spans()) == {
        f"b{t}": 3 for t in range(THREADS)
    }
    assert {a["user.id"]: v for a, v in telemetry.sums("openai.image.generated")} == {
        f"b{t}": 3 for t in range(THREADS)
    }
