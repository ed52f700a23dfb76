"""Backpressure for the expensive path (encode + score): a bounded number in flight, a bounded queue, a
queue-wait timeout, and an optional per-client token-bucket rate limit. Beyond them a request is refused at
once (503 or 429 with Retry-After, mapped in service/errors.py) instead of waiting without bound.

Everything here runs on the event loop (no locks needed); one Limiter per app, kept in app.state.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, Request

from service.metrics import Metrics


class Overloaded(RuntimeError):
    """Every slot is busy and the queue is full (or the wait for a slot timed out): 503 with Retry-After."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(RuntimeError):
    """This client sent more than its share: 429 with Retry-After."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TokenBuckets:
    """Per-key token buckets (`rate` tokens/s, at most `burst`), the least recently seen keys forgotten beyond
    `max_keys` so that many clients cannot grow memory without bound."""

    def __init__(self, rate: float, burst: int, max_keys: int = 10_000) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, last time)

    def take(self, key: str, now: float | None = None) -> float:
        """Take a token for `key`: 0.0 when granted, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


class Limiter:
    """`max_concurrency` requests in the expensive path, up to `max_queue` waiting (each at most
    `queue_timeout_s`); beyond that Overloaded at once. `rate_limit` > 0 adds a per-client RateLimited."""

    def __init__(self, max_concurrency: int, max_queue: int, queue_timeout_s: float, rate_limit: float = 0.0,
                 rate_burst: int = 20, metrics: Metrics | None = None) -> None:
        self.max_concurrency, self.max_queue, self.queue_timeout_s = max_concurrency, max_queue, queue_timeout_s
        self.in_flight = 0
        self.waiting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()  # oldest first
        self.buckets = TokenBuckets(rate_limit, rate_burst) if rate_limit > 0 else None
        self.metrics = metrics

    def _gauges(self) -> None:
        if self.metrics:
            self.metrics.in_flight.set(self.in_flight)
            self.metrics.queued.set(self.waiting)

    def _refuse(self, reason: str, message: str) -> Overloaded:
        if self.metrics:
            self.metrics.refused(reason)
        return Overloaded(message, retry_after=max(1, math.ceil(self.queue_timeout_s)))

    def check_admission(self) -> None:
        """Raise Overloaded now if a request arriving would be refused (every slot busy, queue full): lets the
        edge refuse before reading and validating the request (service.middleware.AdmissionMiddleware)."""
        if self.in_flight >= self.max_concurrency and self.waiting >= self.max_queue:
            raise self._refuse("overload", f"the service is busy ({self.in_flight} requests in progress, "
                               f"{self.waiting} waiting); retry shortly")

    def take_token(self, client: str | None) -> None:
        """The per-client rate limit alone (RateLimited when over it): for an answer that needs no slot."""
        if self.buckets is not None and client is not None:
            wait = self.buckets.take(client)
            if wait > 0:
                if self.metrics:
                    self.metrics.refused("rate_limit")
                raise RateLimited(f"more than {self.buckets.rate:g} requests per second from this client; "
                                  f"retry in {wait:.1f} s", retry_after=max(1, math.ceil(wait)))

    @asynccontextmanager
    async def slot(self, client: str | None = None) -> AsyncIterator[None]:
        """Hold one of the slots for the duration of the block (or raise RateLimited / Overloaded).

        Waiting requests are served first come, first served: a freed slot is handed to the oldest waiter
        (never taken by a request that arrives meanwhile, never raced for by every waiter at once), so that
        under a steady overload every request waits about as long as the others (p99 close to p50)."""
        self.take_token(client)
        if self.in_flight >= self.max_concurrency or self._waiters:
            self.check_admission()
            await self._wait_for_handover()
        else:
            self.in_flight += 1
        self._gauges()
        try:
            yield
        finally:
            self._release()

    async def _wait_for_handover(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self.waiting += 1
        self._gauges()
        try:
            await asyncio.wait_for(fut, self.queue_timeout_s)  # at the timeout, a slot handed over is kept
        except TimeoutError:
            raise self._refuse("queue_timeout", f"the service is busy: no slot freed within "
                               f"{self.queue_timeout_s:g} s; retry shortly") from None
        except asyncio.CancelledError:  # the client went away: a slot handed over meanwhile goes on
            if fut.done() and not fut.cancelled():
                self._release()
            raise
        finally:
            self.waiting -= 1

    def _release(self) -> None:
        """Hand this slot to the oldest waiter still waiting, else free it."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():  # skip waiters that timed out or were cancelled
                fut.set_result(None)  # in_flight unchanged: the slot changes hands
                self._gauges()
                return
        self.in_flight -= 1
        self._gauges()


def client_key(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def get_limiter(request: Request) -> Limiter:  # async: sync dependencies run on the thread pool
    return request.app.state.limiter


LimiterDep = Annotated[Limiter, Depends(get_limiter)]
