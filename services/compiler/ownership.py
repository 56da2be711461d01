"""Which compiler owns which shard: rendezvous hashing over live members, enforced by leases.

Every member computes the same desired owner for each shard from the live member set (highest
`hash(member/shard)` wins), so a join or a leave moves only the shards that must move. The desired
owner takes a shard only by acquiring its lease in Redis (SET NX with a TTL); the previous owner gives
it up after its current batch. A member that dies stops renewing: its heartbeat and leases expire after
one TTL and the survivors take its shards, each resuming from the shard's committed sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence

from shardgate.adapters.errors import AdapterError
from shardgate.adapters.jetstream import DeltaBus
from shardgate.adapters.store import TRANSIENT_REDIS, ShardStore
from shardgate.keys import stable_hash64

from .batch import CompileFn
from .settings import Settings
from .worker import ShardWorker

log = logging.getLogger(__name__)


def desired_owner(shard: int, members: Sequence[str]) -> str | None:
    return max(members, key=lambda m: stable_hash64(f"{m}/{shard}"), default=None)


def desired_shards(me: str, members: Sequence[str], shards: int) -> set[int]:
    return {s for s in range(shards) if desired_owner(s, members) == me}


class Ownership:
    """The one loop that owns this compiler's concurrency: one task per owned shard.

    The loop itself never waits on a shard: every tick heartbeats and renews every lease it holds,
    whatever else is going on, so a slow handover can never let a lease lapse while its worker still runs
    (which is how two workers came to run one shard). A shard being handed over is *draining*: its worker
    finishes its batch while the lease is still renewed, and only when the worker has ended is the lease
    released for the new owner.
    """

    def __init__(self, settings: Settings, bus: DeltaBus, store: ShardStore, compile_unit: CompileFn):
        self.settings = settings
        self.bus = bus
        self.store = store
        self.compile_unit = compile_unit
        self.token = f"{settings.worker_id}:{uuid.uuid4().hex[:8]}"
        self.workers: dict[int, tuple[ShardWorker, asyncio.Task[None]]] = {}
        self.draining: dict[int, tuple[ShardWorker, asyncio.Task[None]]] = {}
        self.leases_lost = 0  # renewals that failed: each one is a shard this process lost unexpectedly
        self._stop = asyncio.Event()

    @property
    def owned(self) -> set[int]:
        return set(self.workers)

    async def run(self) -> None:
        period = self.settings.lease_ttl_ms / 3000
        while not self._stop.is_set():
            try:
                await self.tick()
            except (AdapterError, *TRANSIENT_REDIS) as exc:
                log.warning("ownership tick failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), period)
        await self.shutdown()

    def stop(self) -> None:
        self._stop.set()

    async def tick(self) -> None:
        ttl = self.settings.lease_ttl_ms
        members = await self.store.heartbeat(self.settings.worker_id, ttl)
        want = desired_shards(self.settings.worker_id, members, self.settings.shards)
        await self._reap()
        held = [*self.workers, *self.draining]
        renewed = await self.store.renew_many(held, self.token, ttl)
        for shard, ok in zip(held, renewed, strict=True):
            if not ok:
                # Someone else may own it now: stop at once (a late commit is fenced anyway).
                self.leases_lost += 1
                log.warning("shard %d: lease lost", shard)
                table = self.workers if shard in self.workers else self.draining
                _, task = table.pop(shard)
                task.cancel()
        for shard in sorted(set(self.workers) - want):
            worker, task = self.workers.pop(shard)
            worker.stopping = True  # finishes its batch; released by _reap once it has ended
            self.draining[shard] = (worker, task)
        for shard in sorted(want - set(self.workers) - set(self.draining)):
            if await self.store.acquire(shard, self.token, ttl):
                self._start_worker(shard)

    async def _reap(self) -> None:
        """Release the leases of workers that have ended: handed over, or failed (then retried)."""
        for table in (self.workers, self.draining):
            for shard, (_, task) in list(table.items()):
                if not task.done():
                    continue
                del table[shard]
                exc = task.exception() if not task.cancelled() else None
                if exc is not None and table is self.workers:
                    log.warning("shard %d worker ended: %r", shard, exc)
                await self.store.release(shard, self.token)

    def _start_worker(self, shard: int) -> None:
        worker = ShardWorker(shard, self.token, self.settings, self.bus, self.store, self.compile_unit)
        task = asyncio.create_task(worker.run(), name=f"shard-{shard}")
        self.workers[shard] = (worker, task)

    async def shutdown(self) -> None:
        running = {**self.workers, **self.draining}
        for worker, _ in running.values():
            worker.stopping = True
        tasks = [task for _, task in running.values()]
        if tasks:
            # Let current batches commit; a fetch wakes up within fetch_timeout_s.
            _, late = await asyncio.wait(tasks, timeout=self.settings.fetch_timeout_s + 5)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(self.store.release(s, self.token) for s in running), return_exceptions=True)
        self.workers.clear()
        self.draining.clear()
        with contextlib.suppress(Exception):
            await self.store.leave(self.settings.worker_id)
