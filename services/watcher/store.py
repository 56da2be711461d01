"""Where the published index and host ownership survive a restart or a failover: two Redis hashes.

`sg:watcher:hosts` maps each host to its ownership record (`tenancy.HostRecord`: owner namespace and
waiting claimants); it is written before any delta that depends on it is published, so a new leader
never sees a published admission whose owner was not recorded.

`sg:watcher:index` maps each source key to its encoded `SourceEntry`. The watcher writes a source's
field only after JetStream acknowledged every delta of the change (one HSET, or HDEL when the source
contributes nothing any more), so the hash never claims more than was published. A new leader loads it
whole and diffs its caches against it: it publishes exactly what its predecessor did not.

Redis errors are translated here (`StoreError`); connection failures and timeouts are retried. A save is
tried once before any retry machinery is set up: a burst saves one entry per source, and building a
tenacity retrier for each showed in the watcher's profile. Index saves are group commits (`save`): the
entries of the changes that finish while one write is in flight go out together in the next.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from shardgate.adapters.errors import AdapterError
from shardgate.records import RecordError
from shardgate.watcher.index import SourceEntry
from shardgate.watcher.tenancy import HostRecord

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_TRANSIENT = (RedisConnectionError, RedisTimeoutError)


def _retrieved(future: asyncio.Future[None]) -> None:
    """Mark a write's outcome as seen, so a failure whose savers were all cancelled is not reported
    by asyncio as never retrieved (each saver that still waits gets it)."""
    if not future.cancelled():
        future.exception()


class StoreError(AdapterError):
    """The index store could not be read or written."""


class IndexStore(Protocol):
    async def load(self) -> dict[str, SourceEntry]: ...

    async def save(self, source: str, entry: SourceEntry | None) -> None: ...

    async def load_hosts(self) -> dict[str, HostRecord]: ...

    async def save_hosts(self, records: dict[str, HostRecord | None]) -> None: ...

    async def close(self) -> None: ...


class RedisIndexStore:
    def __init__(
        self,
        client: aioredis.Redis,
        key: str = "sg:watcher:index",
        attempts: int = 5,
        hosts_key: str = "sg:watcher:hosts",
    ) -> None:
        self.client = client
        self.key = key
        self.attempts = attempts
        self.hosts_key = hosts_key
        self._queued: dict[str, SourceEntry | None] = {}  # saves waiting for the next write
        self._next: asyncio.Future[None] | None = None  # resolved when they are written (None: no saves)
        self._writing: asyncio.Task[None] | None = None

    @classmethod
    def from_url(
        cls, url: str, key: str = "sg:watcher:index", hosts_key: str = "sg:watcher:hosts"
    ) -> RedisIndexStore:
        client = aioredis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        return cls(client, key, hosts_key=hosts_key)

    def _retrying(self, attempts: int | None = None) -> AsyncRetrying:
        return AsyncRetrying(
            retry=retry_if_exception_type(_TRANSIENT),
            stop=stop_after_attempt(attempts or self.attempts),
            wait=wait_random_exponential(multiplier=0.1, max=3.0),
            reraise=True,
        )

    async def _write(self, write: Callable[[], Awaitable[object]]) -> None:
        """`write()`, retried on connection trouble (`attempts` in all, the first one included)."""
        try:
            await write()
            return
        except _TRANSIENT:
            if self.attempts <= 1:
                raise
        async for attempt in self._retrying(self.attempts - 1):
            with attempt:
                await write()

    async def _load_hash(self, key: str, decode: Callable[[bytes], _T], dropped: str) -> dict[str, _T]:
        """Every field of hash `key`, decoded; an unreadable value is logged and dropped (`dropped` says
        what forgetting it costs)."""
        out: dict[str, _T] = {}
        try:
            async for attempt in self._retrying():
                with attempt:
                    out.clear()
                    async for field, value in self.client.hscan_iter(key, count=1000):
                        name = field.decode() if isinstance(field, bytes) else str(field)
                        try:
                            out[name] = decode(value)
                        except RecordError as exc:
                            log.warning("%s: entry %s unreadable, dropped (%s): %s", key, name, dropped, exc)
        except RedisError as exc:
            raise StoreError(f"loading {key}: {exc}") from exc
        return out

    async def load(self) -> dict[str, SourceEntry]:
        return await self._load_hash(self.key, SourceEntry.decode, "costs a re-publish of its deltas")

    async def save(self, source: str, entry: SourceEntry | None) -> None:
        """Return once `source`'s entry is in Redis (HSET, or HDEL for None).

        A group commit: the first save starts a write, saves that arrive while a write is in flight
        are written together by the next one, and each caller awaits the write that carries its entry.
        The publish workers finish their changes a few at a time, and a round trip each was the largest
        share of the watcher's Redis writes in a burst. A failed write fails every save it carried."""
        self._queued[source] = entry
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._next.add_done_callback(_retrieved)  # its callers may all be gone (cancelled)
        written = self._next
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._write_queued(), name="index-save")
        await asyncio.shield(written)

    async def _write_queued(self) -> None:
        while self._next is not None:  # set with the first save queued, taken with the batch
            batch, self._queued = self._queued, {}
            written, self._next = self._next, None
            try:
                await self._write(functools.partial(self._write_entries, batch))
            except RedisError as exc:
                written.set_exception(StoreError(f"saving {len(batch)} entries in {self.key}: {exc}"))
            except BaseException as exc:  # cancelled (closing), or a surprise: no saver may wait forever
                failed = StoreError(f"saving {len(batch)} entries in {self.key}: {exc!r}")
                written.set_exception(failed)
                if self._next is not None:  # the saves queued meanwhile are never written by this task
                    self._next.set_exception(failed)
                    self._next, self._queued = None, {}
                raise
            else:
                written.set_result(None)

    async def _write_entries(self, batch: dict[str, SourceEntry | None]) -> None:
        gone = [source for source, entry in batch.items() if entry is None]
        kept = {source: entry.encode() for source, entry in batch.items() if entry is not None}
        async with self.client.pipeline(transaction=False) as pipe:
            if kept:
                pipe.hset(self.key, mapping=kept)  # type: ignore[arg-type]  # bytes values are fine
            if gone:
                pipe.hdel(self.key, *gone)
            await pipe.execute()

    async def load_hosts(self) -> dict[str, HostRecord]:
        return await self._load_hash(
            self.hosts_key, HostRecord.decode, "its owner is re-decided from the current claims"
        )

    async def save_hosts(self, records: dict[str, HostRecord | None]) -> None:
        if not records:
            return

        async def write() -> None:
            pipe = self.client.pipeline(transaction=True)
            for host, record in records.items():
                if record is None:
                    pipe.hdel(self.hosts_key, host)
                else:
                    pipe.hset(self.hosts_key, host, record.encode())
            await pipe.execute()

        try:
            await self._write(write)
        except RedisError as exc:
            raise StoreError(f"saving {len(records)} host records in {self.hosts_key}: {exc}") from exc

    async def close(self) -> None:
        if self._writing is not None and not self._writing.done():
            self._writing.cancel()  # its savers get a StoreError
            await asyncio.gather(self._writing, return_exceptions=True)
        await self.client.aclose()
