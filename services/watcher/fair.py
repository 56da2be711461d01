"""Fair publishing: one namespace's flood must not delay another namespace's change.

The publish workers take sources from a `FairQueue`: one FIFO per namespace, the namespaces with work
served round-robin, so a source of a namespace with one pending change waits for at most one source of
every other busy namespace (plus what the workers are already doing), however long the other queues are.

On top of that, each namespace has a token bucket for the changes it *causes* (watch events that
publish something): `rate` per second, bursts of `burst`. A namespace over its rate is skipped until it
has a token again; its changes are kept (and coalesced per source by the caller), never dropped.
Re-syncs (a list, a takeover) are not the tenant's doing and are not charged, so a cold start is not
throttled. A `rate` of 0 disables the bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable


class FairQueue:
    def __init__(self, rate: float = 0.0, burst: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = max(1.0, burst)
        self.clock = clock
        self._queues: dict[str, deque[str]] = {}
        self._ring: deque[str] = deque()  # namespaces with queued work, in service order
        self._tokens: dict[str, tuple[float, float]] = {}  # namespace -> (tokens, when last refilled)
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def put(self, namespace: str, item: str) -> None:
        queue = self._queues.get(namespace)
        if queue is None:
            queue = self._queues[namespace] = deque()
            self._ring.append(namespace)
        queue.append(item)
        self._wake.set()

    def charge(self, namespace: str) -> None:
        """`namespace` caused one published change."""
        if self.rate > 0:
            tokens = self._refill(namespace)
            self._tokens[namespace] = (tokens - 1.0, self.clock())

    def _refill(self, namespace: str) -> float:
        tokens, since = self._tokens.get(namespace, (self.burst, self.clock()))
        tokens = min(self.burst, tokens + (self.clock() - since) * self.rate)
        if tokens >= self.burst:
            self._tokens.pop(namespace, None)  # full: forget it, so idle namespaces cost nothing
        else:
            self._tokens[namespace] = (tokens, self.clock())
        return tokens

    def take(self) -> tuple[str, str] | float | None:
        """The next (namespace, item); else the seconds until a throttled namespace may go on; else None."""
        wait: float | None = None
        for _ in range(len(self._ring)):
            namespace = self._ring[0]
            self._ring.rotate(-1)
            if self.rate > 0:
                tokens = self._refill(namespace)
                if tokens < 1.0:
                    delay = (1.0 - tokens) / self.rate
                    wait = delay if wait is None else min(wait, delay)
                    continue
            queue = self._queues[namespace]
            item = queue.popleft()
            if not queue:
                del self._queues[namespace]
                self._ring.remove(namespace)
            return namespace, item
        return wait

    async def get(self) -> tuple[str, str]:
        while True:
            got = self.take()
            if isinstance(got, tuple):
                return got
            self._wake.clear()
            if got is None:
                await self._wake.wait()
            else:
                # Not wait_for: on 3.11 a cancel that lands as the timeout fires is lost in it.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(got):
                        await self._wake.wait()
