"""The watcher's index store against a real Redis: index saves are group commits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from shardgate.local.servers import RedisServer
from shardgate.watcher.index import SourceEntry
from shardgate.watcher.store import RedisIndexStore, StoreError


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisIndexStore]:
    s = RedisIndexStore.from_url(redis_server.url)
    yield s
    await s.close()


def entry(i: int) -> SourceEntry:
    return SourceEntry(str(i), {f"h:host-{i}.example": f"hash-{i}"}, seq=i)


def count_writes(store: RedisIndexStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every write the store makes."""
    sizes: list[int] = []
    real = store._write_entries

    async def spy(batch: dict[str, SourceEntry | None]) -> None:
        sizes.append(len(batch))
        await real(batch)

    monkeypatch.setattr(store, "_write_entries", spy)
    return sizes


async def test_saves_that_arrive_together_are_written_together(
    store: RedisIndexStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = count_writes(store, monkeypatch)
    await asyncio.gather(*(store.save(f"ingress/ns/i{i}", entry(i)) for i in range(50)))
    assert sizes == [50]  # one round trip for all of them
    assert await store.load() == {f"ingress/ns/i{i}": entry(i) for i in range(50)}

    # A removal and new entries in one write; a lone save is written at once, on its own.
    await asyncio.gather(store.save("ingress/ns/i0", None), store.save("ingress/ns/new", entry(99)))
    await store.save("ingress/ns/i1", entry(101))
    assert sizes == [50, 2, 1]
    loaded = await store.load()
    assert "ingress/ns/i0" not in loaded
    assert loaded["ingress/ns/new"] == entry(99) and loaded["ingress/ns/i1"] == entry(101)


async def test_saves_during_a_write_go_out_in_the_next_one(
    store: RedisIndexStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = count_writes(store, monkeypatch)
    first = asyncio.create_task(store.save("ingress/ns/a", entry(1)))
    await asyncio.sleep(0)  # the first write has started (and is in flight)
    later = [asyncio.create_task(store.save(f"ingress/ns/b{i}", entry(i))) for i in range(5)]
    await asyncio.gather(first, *later)
    assert sizes == [1, 5]
    assert len(await store.load()) == 6


async def test_a_failed_write_fails_every_save_it_carried_and_the_next_one_works(
    store: RedisIndexStore,
) -> None:
    await store.client.config_set("maxmemory", "1")  # Redis refuses every write: OOM
    try:
        results = await asyncio.gather(
            *(store.save(f"ingress/ns/i{i}", entry(i)) for i in range(3)), return_exceptions=True
        )
    finally:
        await store.client.config_set("maxmemory", "0")
    assert all(isinstance(r, StoreError) and "3 entries" in str(r) for r in results), results
    assert await store.load() == {}

    await store.save("ingress/ns/i0", entry(0))
    assert await store.load() == {"ingress/ns/i0": entry(0)}


async def test_a_cancelled_saver_does_not_cancel_the_write_of_the_others(store: RedisIndexStore) -> None:
    gone = asyncio.create_task(store.save("ingress/ns/gone", entry(1)))
    kept = asyncio.create_task(store.save("ingress/ns/kept", entry(2)))
    await asyncio.sleep(0)
    gone.cancel()
    await kept
    with pytest.raises(asyncio.CancelledError):
        await gone
    # The write carried both: a cancelled caller only stops waiting for it.
    assert await store.load() == {"ingress/ns/gone": entry(1), "ingress/ns/kept": entry(2)}


async def test_closing_fails_the_saves_in_flight_and_queued(redis_server: RedisServer) -> None:
    """A store closed while a write is in flight fails that write's saves and the ones queued behind it,
    instead of leaving them waiting."""
    store = RedisIndexStore.from_url(redis_server.url)
    admin = aioredis.Redis.from_url(redis_server.url)
    await admin.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")  # the write waits in Redis
    started = asyncio.Event()
    real = store._write_entries

    async def spy(batch: dict[str, SourceEntry | None]) -> None:
        started.set()
        await real(batch)

    store._write_entries = spy  # type: ignore[method-assign]
    try:
        first = asyncio.create_task(store.save("ingress/ns/a", entry(1)))
        await started.wait()
        queued = asyncio.create_task(store.save("ingress/ns/b", entry(2)))
        await asyncio.sleep(0)
        await store.close()
        for task in (first, queued):
            with pytest.raises(StoreError):
                await asyncio.wait_for(task, 5)
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await admin.aclose()
