"""Backpressure primitives: the limiter's slots, queue and timeout; the per-client token buckets."""

import asyncio

import pytest

from service.limits import Limiter, Overloaded, RateLimited, TokenBuckets
from service.metrics import Metrics


def _refusals(metrics: Metrics, reason: str) -> float:
    return metrics.refusals.labels(reason)._value.get()


def test_slots_queue_and_refusal():
    async def scenario():
        metrics = Metrics()
        lim = Limiter(max_concurrency=1, max_queue=1, queue_timeout_s=5.0, metrics=metrics)
        release = asyncio.Event()
        order = []

        async def work(name):
            async with lim.slot():
                order.append(f"start {name}")
                await release.wait()
                order.append(f"end {name}")

        first = asyncio.create_task(work("a"))
        await asyncio.sleep(0)
        queued = asyncio.create_task(work("b"))
        await asyncio.sleep(0)
        assert lim.in_flight == 1 and lim.waiting == 1
        with pytest.raises(Overloaded) as e:  # slot busy and queue full: refused at once
            async with lim.slot():
                pass
        assert e.value.retry_after >= 1 and "busy" in str(e.value)
        assert _refusals(metrics, "overload") == 1
        release.set()
        await asyncio.gather(first, queued)
        assert order == ["start a", "end a", "start b", "end b"]
        assert lim.in_flight == 0 and lim.waiting == 0
        async with lim.slot():  # free again
            assert lim.in_flight == 1

    asyncio.run(scenario())


def test_queue_wait_times_out():
    async def scenario():
        metrics = Metrics()
        lim = Limiter(max_concurrency=1, max_queue=5, queue_timeout_s=0.05, metrics=metrics)
        hold = asyncio.Event()

        async def holder():
            async with lim.slot():
                await hold.wait()

        t = asyncio.create_task(holder())
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="no slot freed"):
            async with lim.slot():
                pass
        assert lim.waiting == 0 and _refusals(metrics, "queue_timeout") == 1
        hold.set()
        await t

    asyncio.run(scenario())


def test_zero_queue_refuses_whenever_busy():
    async def scenario():
        lim = Limiter(max_concurrency=2, max_queue=0, queue_timeout_s=1.0)
        async with lim.slot(), lim.slot():
            with pytest.raises(Overloaded):
                async with lim.slot():
                    pass

    asyncio.run(scenario())


def test_token_buckets():
    b = TokenBuckets(rate=2.0, burst=3, max_keys=2)
    assert [b.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("a", now=0.0) == pytest.approx(0.5)  # empty: one token comes in 1/rate s
    assert b.take("a", now=0.5) == 0.0  # refilled
    assert b.take("b", now=0.5) == 0.0  # each client has its own bucket
    b.take("c", now=0.5)
    assert "a" not in b._buckets and len(b._buckets) == 2  # least recently seen forgotten, memory bounded


def test_rate_limit_in_the_limiter():
    async def scenario():
        metrics = Metrics()
        lim = Limiter(max_concurrency=4, max_queue=0, queue_timeout_s=1.0, rate_limit=1.0, rate_burst=2,
                      metrics=metrics)
        for _ in range(2):
            async with lim.slot("10.0.0.1"):
                pass
        with pytest.raises(RateLimited) as e:
            async with lim.slot("10.0.0.1"):
                pass
        assert e.value.retry_after >= 1 and _refusals(metrics, "rate_limit") == 1
        async with lim.slot("10.0.0.2"):  # another client is not affected
            pass

    asyncio.run(scenario())


def _holder(lim: Limiter, gate: asyncio.Event):
    """A request that holds the one slot until `gate` is set."""
    async def holder():
        async with lim.slot():
            await gate.wait()

    return holder


def test_waiters_are_served_in_arrival_order_and_newcomers_queue_behind_them():
    """A freed slot goes to the oldest waiter; a request arriving while others wait queues behind them."""
    order: list[int] = []

    async def main():
        lim = Limiter(max_concurrency=1, max_queue=16, queue_timeout_s=5)
        gate = asyncio.Event()
        holder = _holder(lim, gate)

        async def req(i: int):
            async with lim.slot():
                order.append(i)
                await asyncio.sleep(0)

        h = asyncio.create_task(holder())
        await asyncio.sleep(0)
        tasks = []
        for i in range(6):
            tasks.append(asyncio.create_task(req(i)))
            await asyncio.sleep(0)
        assert lim.waiting == 6 and lim.in_flight == 1
        gate.set()
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(req(99)))  # arrives while six still wait: goes last
        await asyncio.gather(h, *tasks)
        assert lim.in_flight == 0 and lim.waiting == 0

    asyncio.run(main())
    assert order == [0, 1, 2, 3, 4, 5, 99]


def test_a_waiter_that_times_out_or_is_cancelled_loses_no_slot():
    async def main():
        lim = Limiter(max_concurrency=1, max_queue=16, queue_timeout_s=0.05)
        gate = asyncio.Event()
        holder = _holder(lim, gate)

        async def req():
            async with lim.slot():
                return "served"

        h = asyncio.create_task(holder())
        await asyncio.sleep(0)
        late = asyncio.create_task(req())
        cancelled = asyncio.create_task(req())
        await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(Overloaded):
            await late  # timed out in the queue
        gate.set()
        await h
        assert lim.in_flight == 0 and lim.waiting == 0
        assert await req() == "served"  # the slot was freed, not handed to a waiter that left
        assert lim.in_flight == 0

    asyncio.run(main())
