"""ShardStore against a real redis-server: atomic commits, fencing, change log, snapshots."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from shardgate.adapters.errors import LeaseLost, UnloadedSources
from shardgate.adapters.store import Commit, ShardStore, k
from shardgate.local.servers import RedisServer


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[ShardStore]:
    s = ShardStore.from_url(redis_server.url, log_cap=5)
    yield s
    await s.close()


def commit(seq: int, rev: int | None, **frags: bytes | None) -> Commit:
    return Commit(
        seq=seq,
        contributions={u: {"ingress/ns/x": ({"a": seq} if f else None)} for u, f in frags.items()},
        fragments={u: ((f, f"hash-{f!r}") if f else None) for u, f in frags.items()},
        revision=rev,
        traces={u: f"tp-{seq}" for u in frags},
    )


async def test_commit_writes_everything_and_reads_back(store: ShardStore) -> None:
    assert await store.acquire(3, "me", 5000)
    await store.commit(3, "me", commit(10, 1, a=b"A", b=b"B"))
    state = await store.load_shard(3)
    assert (state.revision, state.seq) == (1, 10)
    assert state.hashes == {"a": "hash-b'A'", "b": "hash-b'B'"}
    assert await store.load_contributions(3, ["a"]) == {"a": {"ingress/ns/x": {"a": 10}}}
    assert await store.snapshot(3) == (1, {"a": b"A", "b": b"B"})
    await store.commit(3, "me", commit(11, 2, a=None))
    assert await store.fragments({3: ["a", "b"]}) == {3: {"a": None, "b": b"B"}}
    assert await store.acquire(4, "me", 5000)
    await store.commit(4, "me", commit(12, 1, c=b"C"))
    assert await store.fragments({3: ["b"], 4: ["c", "a"], 5: []}) == {  # one round trip, many shards
        3: {"b": b"B"},
        4: {"c": b"C", "a": None},
        5: {},
    }
    entries = await store.log_since(3, 0)
    assert entries is not None
    assert [(e.revision, e.units) for e in entries] == [(1, ("a", "b")), (2, ("a",))]
    assert entries[1].traces == {"a": "tp-11"}
    assert await store.log_since(3, 2) == []


async def test_commit_without_the_lease_is_refused(store: ShardStore) -> None:
    assert await store.acquire(1, "old", 5000)
    with pytest.raises(LeaseLost):
        await store.commit(1, "intruder", commit(1, 1, a=b"A"))
    assert await store.snapshot(1) == (0, {})
    # Only the holder can renew or release.
    assert not await store.renew(1, "intruder", 5000)
    await store.release(1, "intruder")
    assert await store.lease_holder(1) == "old"
    await store.release(1, "old")
    assert await store.acquire(1, "new", 5000)


async def test_renew_many_renews_only_the_leases_held(store: ShardStore) -> None:
    assert await store.acquire(4, "me", 5000) and await store.acquire(5, "other", 5000)
    assert await store.acquire(6, "me", 200)
    assert await store.renew_many([4, 5, 6, 7], "me", 60_000) == [True, False, True, False]
    assert await store.r.pttl("sg:{6}:lease") > 1000  # extended past its 200 ms
    assert await store.lease_holder(5) == "other" and await store.lease_holder(7) is None
    assert await store.renew_many([], "me", 5000) == []


async def test_a_reader_too_far_behind_is_told_to_take_the_snapshot(store: ShardStore) -> None:
    assert await store.acquire(0, "me", 5000)
    for rev in range(1, 400):
        await store.commit(0, "me", commit(rev, rev, **{f"u{rev}": b"x"}))
    assert await store.log_since(0, 1) is None  # trimmed (approximate MAXLEN)
    recent = await store.log_since(0, 397)
    assert recent is not None and [e.revision for e in recent] == [398, 399]
    assert await store.r.xlen(k(0, "log")) < 399


async def test_membership_expires(store: ShardStore) -> None:
    assert await store.heartbeat("a", 60_000) == ["a"]
    assert await store.heartbeat("b", 60_000) == ["a", "b"]
    await store.heartbeat("short", 20)
    await asyncio.sleep(0.1)
    assert await store.heartbeat("a", 60_000) == ["a", "b"]
    await store.leave("b")
    assert await store.heartbeat("a", 60_000) == ["a"]


async def test_the_owners_own_renewals_never_abort_its_commits(store: ShardStore) -> None:
    """A renewal racing a commit is the owner's own write: the commit must still land (WATCH aborted it)."""
    assert await store.acquire(2, "me", 5000)
    for rev in range(1, 101):
        await asyncio.gather(
            store.renew(2, "me", 5000),
            store.commit(2, "me", commit(rev, rev, **{f"u{rev}": b"x"})),
            store.renew(2, "me", 5000),
        )
    state = await store.load_shard(2)
    assert (state.revision, state.seq, len(state.hashes)) == (100, 100, 100)


async def test_a_commit_with_a_revision_already_logged_writes_nothing(store: ShardStore) -> None:
    assert await store.acquire(4, "me", 5000)
    await store.commit(4, "me", commit(1, 1, a=b"A"))
    with pytest.raises(Exception, match="XADD"):
        await store.commit(4, "me", commit(2, 1, b=b"B"))
    assert await store.snapshot(4) == (1, {"a": b"A"})
    assert (await store.load_shard(4)).seq == 1


async def test_a_commit_assuming_no_sources_where_there_are_some_is_refused_whole(store: ShardStore) -> None:
    assert await store.acquire(2, "me", 5000)
    await store.commit(2, "me", commit(1, 1, a=b"A"))
    before = (await store.snapshot(2), await store.load_shard(2), await store.log_since(2, 0))
    again = commit(2, 2, a=b"A2", b=b"B", c=b"C")
    again.assumed_empty = ["c", "a", "b"]  # "a" has a source stored; "b" and "c" have none
    with pytest.raises(UnloadedSources) as refused:
        await store.commit(2, "me", again)
    assert refused.value.units == ["a"]
    assert (await store.snapshot(2), await store.load_shard(2), await store.log_since(2, 0)) == before
    assert await store.load_contributions(2, ["b", "c"]) == {"b": {}, "c": {}}

    again.assumed_empty = ["b", "c"]  # as the worker plans it once it has read "a"
    await store.commit(2, "me", again)
    assert await store.snapshot(2) == (2, {"a": b"A2", "b": b"B", "c": b"C"})
