"""Who a call is for: billing context, Baggage, request user, and their precedence."""

from __future__ import annotations

import asyncio
import threading

from opentelemetry import baggage
from opentelemetry import context as otel_context

from otel_image_cost import billing_context
from otel_image_cost.attribution import current_attribution


def test_nothing_known_gives_no_attribution() -> None:
    assert current_attribution(None) == {}


def test_request_user_is_the_fallback_user() -> None:
    assert current_attribution("req-user") == {"user.id": "req-user"}


def test_baggage_beats_request_user_and_billing_context_beats_baggage() -> None:
    ctx = baggage.set_baggage("user.id", "baggage-user")
    ctx = baggage.set_baggage("tenant.id", "baggage-tenant", context=ctx)
    token = otel_context.attach(ctx)
    try:
        assert current_attribution("req-user") == {"user.id": "baggage-user", "tenant.id": "baggage-tenant"}
        with billing_context(user_id="ctx-user"):
            assert current_attribution("req-user") == {"user.id": "ctx-user", "tenant.id": "baggage-tenant"}
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
