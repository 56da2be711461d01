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
    """The one loop that owns this compiler's concurrency: one task per owned shard."""

    def __init__(self, settings: Settings, bus: DeltaBus, store: ShardStore, compile_unit: CompileFn):
        self.settings = settings
        self.bus = bus
        self.store = store
        self.compile_unit = compile_unit
        self.token = f"{settings.worker_id}:{uuid.uuid4().hex[:8]}"
        self.workers: dict[int, tuple[ShardWorker, asyncio.Task[None]]] = {}
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
        # Reap workers that ended on their own (lease lost, an error): the shard is retried below.
        for shard, (_worker, task) in list(self.workers.items()):
            if task.done():
                del self.workers[shard]
                exc = task.exception() if not task.cancelled() else None
                if exc is not None:
                    log.warning("shard %d worker ended: %r", shard, exc)
                await self.store.release(shard, self.token)
        held = list(self.workers)
        renewed = await asyncio.gather(*(self.store.renew(s, self.token, ttl) for s in held))
        for shard, ok in zip(held, renewed, strict=True):
            if not ok:
                log.warning("shard %d: lease lost", shard)
                await self._stop_worker(shard, release=False)
        for shard in sorted(set(self.workers) - want):
            await self._stop_worker(shard, release=True)
        for shard in sorted(want - set(self.workers)):
            if await self.store.acquire(shard, self.token, ttl):
                self._start_worker(shard)

    def _start_worker(self, shard: int) -> None:
        worker = ShardWorker(shard, self.token, self.settings, self.bus, self.store, self.compile_unit)
        task = asyncio.create_task(worker.run(), name=f"shard-{shard}")
        self.workers[shard] = (worker, task)

    async def _stop_worker(self, shard: int, release: bool) -> None:
        worker, task = self.workers.pop(shard)
        worker.stopping = True
        try:
            # Let the current batch commit; a fetch wakes up within fetch_timeout_s.
            await asyncio.wait_for(asyncio.shield(task), self.settings.fetch_timeout_s + 5)
        except TimeoutError:
            task.cancel()
        except Exception as exc:
            log.warning("shard %d worker ended with %r", shard, exc)
        if release:
            await self.store.release(shard, self.token)

    async def shutdown(self) -> None:
        for shard in list(self.workers):
            await self._stop_worker(shard, release=True)
        with contextlib.suppress(Exception):
            await self.store.leave(self.settings.worker_id)
