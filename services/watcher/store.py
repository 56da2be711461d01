"""Where the published index and host ownership survive a restart or a failover: two Redis hashes.

`sg:watcher:hosts` maps each host to its ownership record (`tenancy.HostRecord`: owner namespace and
waiting claimants); it is written before any delta that depends on it is published, so a new leader
never sees a published admission whose owner was not recorded.

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
from shardgate.watcher.tenancy import HostRecord

log = logging.getLogger(__name__)


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

    @classmethod
    def from_url(
        cls, url: str, key: str = "sg:watcher:index", hosts_key: str = "sg:watcher:hosts"
    ) -> RedisIndexStore:
        client = aioredis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        return cls(client, key, hosts_key=hosts_key)

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

    async def load_hosts(self) -> dict[str, HostRecord]:
        records: dict[str, HostRecord] = {}
        try:
            async for attempt in self._retrying():
                with attempt:
                    records.clear()
                    async for field, value in self.client.hscan_iter(self.hosts_key, count=1000):
                        host = field.decode() if isinstance(field, bytes) else str(field)
                        try:
                            records[host] = HostRecord.decode(value)
                        except RecordError as exc:
                            # Losing a record re-decides that host's owner from the current claims.
                            log.warning("host record %s unreadable, dropped: %s", host, exc)
        except RedisError as exc:
            raise StoreError(f"loading {self.hosts_key}: {exc}") from exc
        return records

    async def save_hosts(self, records: dict[str, HostRecord | None]) -> None:
        if not records:
            return
        try:
            async for attempt in self._retrying():
                with attempt:
                    pipe = self.client.pipeline(transaction=True)
                    for host, record in records.items():
                        if record is None:
                            pipe.hdel(self.hosts_key, host)
                        else:
                            pipe.hset(self.hosts_key, host, record.encode())
                    await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"saving {len(records)} host records in {self.hosts_key}: {exc}") from exc

    async def close(self) -> None:
        await self.client.aclose()
