"""Host ownership records are saved as a group commit before anything that depends on them is published."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from shardgate.watcher.publishing import Publishers


class _Tenancy:
    def __init__(self) -> None:
        self.dirty: set[str] = set()

    def take_dirty(self) -> dict[str, Any]:
        out = {h: f"record-{h}" for h in sorted(self.dirty)}
        self.dirty.clear()
        return out


class _GatedHostStore:
    """Each save waits for its own gate; saves that overlap are recorded."""

    def __init__(self) -> None:
        self.saves: list[list[str]] = []
        self.gates: list[asyncio.Event] = []
        self.active = 0
        self.overlapped = False
        self.fail_next = False

    async def save_hosts(self, records: dict[str, Any]) -> None:
        self.active += 1
        self.overlapped = self.overlapped or self.active > 1
        gate = asyncio.Event()
        self.gates.append(gate)
        self.saves.append(sorted(records))
        try:
            await gate.wait()
            if self.fail_next:
                self.fail_next = False
                raise ConnectionError("redis went away")
        finally:
            self.active -= 1


def _publishers(tenancy: _Tenancy, store: _GatedHostStore) -> Publishers:
    return Publishers(
        bus=cast(Any, None),
        store=cast(Any, store),
        tenancy=cast(Any, tenancy),
        admission=cast(Any, None),
        current={},
        synced=set(),
        shards=4,
        namespace_rate=0,
        namespace_burst=1,
        allowed=lambda: True,
        published_ingress=lambda source, contributions: None,
    )


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_workers_share_one_save_and_saves_never_overlap() -> None:
    tenancy, store = _Tenancy(), _GatedHostStore()
    pubs = _publishers(tenancy, store)
    tenancy.dirty.add("a")
    first = asyncio.create_task(pubs._persist_hosts())
    await _settle()
    tenancy.dirty.add("b")
    waiting = [asyncio.create_task(pubs._persist_hosts()) for _ in range(5)]  # all need b
    await _settle()
    assert store.saves == [["a"]] and not first.done()
    store.gates[0].set()
    await _settle()
    assert first.done()
    assert store.saves == [["a"], ["b"]]  # one save of b for the five of them, after a's
    assert not any(t.done() for t in waiting)
    late = asyncio.create_task(pubs._persist_hosts())  # nothing dirty, but b is not in Redis yet
    await _settle()
    assert not late.done()
    tenancy.dirty.add("c")
    needs_c = asyncio.create_task(pubs._persist_hosts())
    await _settle()
    store.gates[1].set()
    await _settle()
    # b's waiters go on once b is saved: they do not also wait for c's round trip
    assert all(t.done() for t in [*waiting, late]) and not needs_c.done()
    assert store.saves == [["a"], ["b"], ["c"]]
    store.gates[2].set()
    await needs_c
    assert not store.overlapped
    nothing = asyncio.create_task(pubs._persist_hosts())  # nothing dirty, nothing in flight: at once
    await _settle()
    assert nothing.done() and len(store.saves) == 3


async def test_a_failed_save_fails_its_waiters_and_its_records_are_saved_again() -> None:
    tenancy, store = _Tenancy(), _GatedHostStore()
    pubs = _publishers(tenancy, store)
    tenancy.dirty.add("a")
    store.fail_next = True
    waiters = [asyncio.create_task(pubs._persist_hosts()) for _ in range(3)]
    await _settle()
    store.gates[0].set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert tenancy.dirty == {"a"}
    retry = asyncio.create_task(pubs._persist_hosts())
    await _settle()
    store.gates[1].set()
    await retry
    assert store.saves == [["a"], ["a"]] and not tenancy.dirty
