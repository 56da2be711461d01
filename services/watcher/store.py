"""Where the published index survives a restart or a failover: one Redis hash.

`sg:watcher:index` maps each source key to its encoded `SourceEntry`. The watcher writes a source's
field only after JetStream acknowledged every delta of the change (one HSET, or HDEL when the source
contributes nothing any more), so the hash never claims more than was published. A new leader loads it
whole and diffs its caches against it: it publishes exactly what its predecessor did not.

Redis errors are translated here (`StoreError`); connection failures and timeouts are retried.
"""

from __future__ import annotations

import logging
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from shardgate.adapters.errors import AdapterError
from shardgate.records import RecordError
from shardgate.watcher.index import SourceEntry

log = logging.getLogger(__name__)


class StoreError(AdapterError):
    """The index store could not be read or written."""


class IndexStore(Protocol):
    async def load(self) -> dict[str, SourceEntry]: ...

    async def save(self, source: str, entry: SourceEntry | None) -> None: ...

    async def close(self) -> None: ...


class RedisIndexStore:
    def __init__(self, client: aioredis.Redis, key: str = "sg:watcher:index", attempts: int = 5) -> None:
        self.client = client
        self.key = key
        self.attempts = attempts

    @classmethod
    def from_url(cls, url: str, key: str = "sg:watcher:index") -> RedisIndexStore:
        return cls(aioredis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5), key)

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            retry=retry_if_exception_type((RedisConnectionError, RedisTimeoutError)),
            stop=stop_after_attempt(self.attempts),
            wait=wait_random_exponential(multiplier=0.1, max=3.0),
            reraise=True,
        )

    async def load(self) -> dict[str, SourceEntry]:
        entries: dict[str, SourceEntry] = {}
        try:
            async for attempt in self._retrying():
                with attempt:
                    entries.clear()
                    async for field, value in self.client.hscan_iter(self.key, count=1000):
                        source = field.decode() if isinstance(field, bytes) else str(field)
                        try:
                            entries[source] = SourceEntry.decode(value)
                        except RecordError as exc:
                            # Forgetting the entry only costs a re-publish of that source's deltas.
                            log.warning("index entry %s unreadable, dropped: %s", source, exc)
        except RedisError as exc:
            raise StoreError(f"loading {self.key}: {exc}") from exc
        return entries

    async def save(self, source: str, entry: SourceEntry | None) -> None:
        try:
            async for attempt in self._retrying():
                with attempt:
                    if entry is None:
                        await self.client.hdel(self.key, source)
                    else:
                        await self.client.hset(self.key, source, entry.encode())
        except RedisError as exc:
            raise StoreError(f"saving {source} in {self.key}: {exc}") from exc

    async def close(self) -> None:
        await self.client.aclose()
