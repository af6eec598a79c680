"""Who a call is for: billing context, Baggage, request user, and their precedence."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from opentelemetry import baggage
from opentelemetry import context as otel_context

from otel_image_cost import billing_context
from otel_image_cost.attribution import current_attribution, safe_value


def test_nothing_known_gives_no_attribution() -> None:
    assert current_attribution(None) == {}


def test_request_user_is_the_fallback_user() -> None:
    assert current_attribution("req-user") == {"user.id": "req-user"}


def test_baggage_is_ignored_unless_trusted() -> None:
    ctx = baggage.set_baggage("user.id", "baggage-user")
    ctx = baggage.set_baggage("tenant.id", "baggage-tenant", context=ctx)
    token = otel_context.attach(ctx)
    try:
        assert current_attribution("req-user") == {"user.id": "req-user"}
        assert current_attribution(None) == {}
    finally:
        otel_context.detach(token)


def test_trusted_baggage_beats_request_user_and_billing_context_beats_baggage() -> None:
    ctx = baggage.set_baggage("user.id", "baggage-user")
    ctx = baggage.set_baggage("tenant.id", "baggage-tenant", context=ctx)
    token = otel_context.attach(ctx)
    try:
        trusted = current_attribution("req-user", trust_baggage=True)
        assert trusted == {"user.id": "baggage-user", "tenant.id": "baggage-tenant"}
        with billing_context(user_id="ctx-user"):
            trusted = current_attribution("req-user", trust_baggage=True)
            assert trusted == {"user.id": "ctx-user", "tenant.id": "baggage-tenant"}
    finally:
        otel_context.detach(token)


def test_nested_contexts_merge_per_key_and_restore_on_exit() -> None:
    with billing_context(user_id="u1", tenant_id="t1", attributes={"plan": "pro"}):
        with billing_context(user_id="u2"):
            assert current_attribution(None) == {"user.id": "u2", "tenant.id": "t1", "plan": "pro"}
        assert current_attribution(None) == {"user.id": "u1", "tenant.id": "t1", "plan": "pro"}
    assert current_attribution(None) == {}


def test_decorator_on_sync_and_async_functions() -> None:
    @billing_context(user_id="sync-user")
    def sync_work() -> dict[str, str]:
        return current_attribution(None)

    @billing_context(tenant_id="async-tenant")
    async def async_work() -> dict[str, str]:
        await asyncio.sleep(0)
        return current_attribution(None)

    assert sync_work() == {"user.id": "sync-user"}
    assert asyncio.run(async_work()) == {"tenant.id": "async-tenant"}
    assert current_attribution(None) == {}


def test_async_with_block() -> None:
    async def work() -> dict[str, str]:
        async with billing_context(user_id="a"):
            await asyncio.sleep(0)
            return current_attribution(None)

    assert asyncio.run(work()) == {"user.id": "a"}


def test_200_concurrent_tasks_each_see_only_their_own_user() -> None:
    async def one(i: int) -> tuple[int, dict[str, str]]:
        with billing_context(user_id=f"user-{i}", tenant_id=f"tenant-{i % 7}"):
            for _ in range(3):
                await asyncio.sleep(0)
            return i, current_attribution(None)

    async def main() -> list[tuple[int, dict[str, str]]]:
        return await asyncio.gather(*(one(i) for i in range(200)))

    results = asyncio.run(main())
    assert len(results) == 200
    for i, seen in results:
        assert seen == {"user.id": f"user-{i}", "tenant.id": f"tenant-{i % 7}"}


def test_threads_each_see_only_their_own_user() -> None:
    seen: dict[int, dict[str, str]] = {}
    barrier = threading.Barrier(16)

    def work(i: int) -> None:
        with billing_context(user_id=f"user-{i}"):
            barrier.wait()
            seen[i] = current_attribution(None)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {i: {"user.id": f"user-{i}"} for i in range(16)}


def test_one_instance_entered_by_many_threads_at_once() -> None:
    shared = billing_context(user_id="shared", tenant_id="t")
    barrier = threading.Barrier(16)
    seen: list[dict[str, str]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with shared:
                barrier.wait()  # all 16 inside the same instance at once
                seen.append(current_attribution(None))
                barrier.wait()
            seen.append(current_attribution(None))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(seen, key=len) == [{}] * 16 + [{"user.id": "shared", "tenant.id": "t"}] * 16


def test_one_instance_entered_by_many_tasks_at_once_and_as_a_decorator() -> None:
    shared = billing_context(user_id="shared")

    async def one(i: int) -> tuple[dict[str, str], dict[str, str]]:
        async with shared:
            await asyncio.sleep(0.01 * (i % 3))  # exits interleave in another order than entries
            inside = current_attribution(None)
        return inside, current_attribution(None)

    @shared
    async def decorated() -> dict[str, str]:
        await asyncio.sleep(0)
        return current_attribution(None)

    async def main() -> list[Any]:
        return await asyncio.gather(*(one(i) for i in range(50)), *(decorated() for _ in range(50)))

    results = asyncio.run(main())
    assert results[:50] == [({"user.id": "shared"}, {})] * 50
    assert results[50:] == [{"user.id": "shared"}] * 50


def test_exit_in_a_copied_context_is_harmless() -> None:
    """A sync streaming generator runs each step in a fresh copy of the request's context
    (Starlette's thread pool): the exit happens where the entry is not visible."""
    shared = billing_context(user_id="u")

    def steps() -> Iterator[dict[str, str]]:
        with shared:
            yield current_attribution(None)
        yield current_attribution(None)

    generator = steps()
    first = contextvars.copy_context().run(next, generator)
    second = contextvars.copy_context().run(next, generator)  # raised ValueError before
    assert (first, second) == ({"user.id": "u"}, {})
    assert current_attribution(None) == {}


def test_values_are_made_safe_and_custom_attributes_capped() -> None:
    with billing_context(user_id=12345, tenant_id="t\ud800" + "x" * 500, attributes={"a": object}):
        found = current_attribution(None)
    assert found == {"user.id": "12345", "tenant.id": "t\ufffd" + "x" * 126, "a": "<class 'object'>"}
    assert safe_value(10**5000) == "<int>"  # past Python's int-to-text digit limit
    assert current_attribution("r" * 300) == {"user.id": "r" * 128}


def test_the_documented_async_generator_pattern_does_not_leak_when_abandoned() -> None:
    """README (Security): enter the context around each call, never across a `yield`."""

    async def chunks() -> AsyncIterator[dict[str, str]]:
        for _ in range(3):
            async with billing_context(user_id="generator-user"):
                seen = current_attribution(None)
            yield seen

    async def consumer() -> list[dict[str, str]]:
        seen = []
        stream = chunks()
        seen.append(await anext(stream))
        seen.append(current_attribution(None))  # the consumer, with the generator suspended
        del stream  # abandoned mid-iteration, never closed by the consumer
        await asyncio.sleep(0)
        seen.append(current_attribution(None))
        return seen

    assert asyncio.run(consumer()) == [{"user.id": "generator-user"}, {}, {}]


def test_yielding_inside_the_context_of_an_async_generator_leaks_as_documented() -> None:
    """The limit the README documents (Python gives an async generator its consumer's context)."""

    async def chunks() -> AsyncIterator[int]:
        async with billing_context(user_id="generator-user"):
            yield 1

    async def consumer() -> dict[str, str]:
        stream = chunks()
        await anext(stream)
        leaked = current_attribution(None)
        await stream.aclose()
        return leaked

    assert asyncio.run(consumer()) == {"user.id": "generator-user"}
