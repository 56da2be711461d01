"""The pusher's follower against real Redis and NATS: snapshot, notices, gaps healed, deletions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from shardgate.adapters.jetstream import DeltaBus
from shardgate.adapters.store import Commit, ShardStore
from shardgate.local.servers import NatsServer, RedisServer
from shardgate.pusher.cache import ResourceCache
from shardgate.pusher.follower import Follower, behind, still_behind
from shardgate.records import Fragment, Notice, make_resource

SHARDS = 4
ROUTE = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"


def frag(unit: str, body: bytes) -> Fragment:
    return Fragment(unit, (make_resource(ROUTE, unit, body),))


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class Writer:
    """Plays the compiler: commits fragments to one shard and (optionally) announces them."""

    def __init__(self, store: ShardStore, bus: DeltaBus, shard: int) -> None:
        self.store, self.bus, self.shard = store, bus, shard
        self.rev = 0
        self.seq = 0

    async def write(
        self, frags: dict[str, Fragment | None], announce: bool = True, inline: bool = False
    ) -> None:
        """Commit `frags`; announce them (with the fragments in the notice if `inline`, as the compiler
        does when they are small)."""
        self.rev += 1
        self.seq += 1
        c = Commit(
            seq=self.seq,
            fragments={u: ((f.encode(), f.hash) if f else None) for u, f in frags.items()},
            revision=self.rev,
            traces={},
        )
        await self.store.commit(self.shard, "w", c)
        if announce:
            carried = {u: (f.encode() if f else None) for u, f in frags.items()} if inline else None
            await self.bus.publish_notice(Notice(self.shard, self.rev, tuple(sorted(frags)), {}, carried))


@pytest.fixture
async def parts(
    nats_server: NatsServer, redis_server: RedisServer
) -> AsyncIterator[tuple[ShardStore, DeltaBus]]:
    store = ShardStore.from_url(redis_server.url, log_cap=3)
    bus = await DeltaBus.connect(nats_server.url, SHARDS)
    for s in range(SHARDS):
        assert await store.acquire(s, "w", 60_000)
    yield store, bus
    await bus.close()
    await store.close()


def body(cache: ResourceCache, unit: str) -> bytes | None:
    r = cache.get(ROUTE, unit)
    return r.body if r else None


def record_reads(store: ShardStore, monkeypatch: pytest.MonkeyPatch) -> list[dict[int, list[str]]]:
    """Every `store.fragments` call from now on: the units it asked for, per shard."""
    reads: list[dict[int, list[str]]] = []
    real = store.fragments

    async def spy(wanted: dict[int, list[str]]) -> dict[int, dict[str, bytes | None]]:
        reads.append({s: list(u) for s, u in wanted.items()})
        return await real(wanted)

    monkeypatch.setattr(store, "fragments", spy)
    return reads


def drain_again(follower: Follower) -> None:
    """Restart the drain of a stopped follower and have it take every notice pending meanwhile."""
    follower._tasks = [asyncio.create_task(follower._drain())]
    follower._wake.set()


async def test_snapshot_then_notices_then_gaps(parts: tuple[ShardStore, DeltaBus]) -> None:
    store, bus = parts
    w = Writer(store, bus, 1)
    await w.write({"h:a": frag("h:a", b"a1"), "h:b": frag("h:b", b"b1")})

    cache = ResourceCache()
    follower = Follower(store, bus, cache, SHARDS, resync_s=0.3)
    await follower.start()
    try:
        assert body(cache, "h:a") == b"a1" and body(cache, "h:b") == b"b1"

        await w.write({"h:a": frag("h:a", b"a2")})
        await eventually(lambda: body(cache, "h:a") == b"a2")

        # A lost notice is revealed by the next one and healed from the change log.
        await w.write({"h:c": frag("h:c", b"c1")}, announce=False)
        await w.write({"h:b": None})
        await eventually(lambda: body(cache, "h:c") == b"c1" and body(cache, "h:b") is None)

        # A lost last notice is caught by the revision check.
        await w.write({"h:d": frag("h:d", b"d1")}, announce=False)
        await eventually(lambda: body(cache, "h:d") == b"d1")

        # Too far behind for the (capped) log: the snapshot replaces the shard, deletions included.
        await follower.stop()
        behind = w.rev
        await w.write({"h:a": None}, announce=False)
        for i in range(300):
            await w.write({f"h:x{i}": frag(f"h:x{i}", b"x")}, announce=False)
        await w.write({"h:e": frag("h:e", b"e1")})
        assert await store.log_since(1, behind) is None  # the log was trimmed past it
        follower._tasks = [asyncio.create_task(follower._drain()), asyncio.create_task(follower._resync())]
        await eventually(lambda: body(cache, "h:e") == b"e1")
        assert body(cache, "h:a") is None
        assert body(cache, "h:x299") == b"x"
        assert follower.revisions[1] == w.rev
    finally:
        await follower.stop()


async def test_a_host_is_held_with_only_the_meta_the_pusher_reads(parts: tuple[ShardStore, DeltaBus]) -> None:
    store, bus = parts
    w = Writer(store, bus, 2)
    status_meta = {"host": "a.example.com", "conflicts": [{"source": "i:ns/x", "path": "/"}]}

    def host(unit: str, **meta: object) -> Fragment:
        return Fragment(unit, (make_resource(ROUTE, unit, unit.encode()),), {**status_meta, **meta})

    await w.write({"h:a.example.com": host("h:a.example.com", tls_secret="ns/cert")})
    cache = ResourceCache()
    follower = Follower(store, bus, cache, SHARDS, resync_s=0.3)
    await follower.start()
    try:
        loaded = cache.fragment("h:a.example.com")
        assert loaded is not None and loaded.meta == {"tls_secret": "ns/cert"}
        # The SNI index still sees the host's secret: it resolves (to a missing Secret, here).
        assert cache.resolve_sni("a.example.com").secret == "t:ns/cert"

        await w.write({"h:b.example.com": host("h:b.example.com")})
        await eventually(lambda: cache.fragment("h:b.example.com") is not None)
        relayed = cache.fragment("h:b.example.com")
        assert (
            relayed is not None
            and relayed.meta == {}
            and body(cache, "h:b.example.com") == b"h:b.example.com"
        )
    finally:
        await follower.stop()


async def test_notices_of_many_shards_are_read_in_one_round_trip(
    parts: tuple[ShardStore, DeltaBus], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Notices that follow on, from every shard, are read with one call (one pipeline) and relayed
    together; a shard whose notice reveals a gap heals from its change log."""
    store, bus = parts
    writers = [Writer(store, bus, s) for s in range(SHARDS)]
    cache = ResourceCache()
    follower = Follower(store, bus, cache, SHARDS, resync_s=60)  # no revision check during the test
    await follower.start()
    reads = record_reads(store, monkeypatch)
    try:
        await follower.stop()  # the notices below collect until the drain runs again
        await writers[3].write({"h:gap": frag("h:gap", b"g")}, announce=False)  # shard 3 misses one
        for w in writers:
            await w.write({f"h:s{w.shard}": frag(f"h:s{w.shard}", b"1")})
        await eventually(lambda: len(follower._pending) == SHARDS)
        drain_again(follower)
        await eventually(lambda: all(body(cache, f"h:s{s}") == b"1" for s in range(SHARDS)))
        assert body(cache, "h:gap") == b"g"
        assert follower.revisions == [w.rev for w in writers]
        assert reads == [
            {0: ["h:s0"], 1: ["h:s1"], 2: ["h:s2"]},  # the shards that follow on: one read
            {3: ["h:gap", "h:s3"]},  # the gap, from the change log
        ]
    finally:
        await follower.stop()


async def test_fragments_carried_by_their_notices_are_not_read_from_redis(
    parts: tuple[ShardStore, DeltaBus], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shards whose notices all carry their fragments are relayed from the notices; a shard with one
    notice that does not (too big for the compiler to carry) is read, all of its units at once."""
    store, bus = parts
    writers = [Writer(store, bus, s) for s in range(SHARDS)]
    cache = ResourceCache()
    follower = Follower(store, bus, cache, SHARDS, resync_s=60)  # no revision check during the test
    await follower.start()
    await writers[2].write({"h:old": frag("h:old", b"o")})
    await eventually(lambda: body(cache, "h:old") == b"o")
    reads = record_reads(store, monkeypatch)
    try:
        await follower.stop()  # the notices below collect until the drain runs again
        await writers[0].write({"h:a": frag("h:a", b"a1")}, inline=True)
        await writers[0].write({"h:a": frag("h:a", b"a2"), "h:b": frag("h:b", b"b")}, inline=True)
        await writers[1].write({"h:c": frag("h:c", b"c")}, inline=True)
        await writers[1].write({"h:d": frag("h:d", b"d")})
        await writers[2].write({"h:old": None}, inline=True)
        await eventually(lambda: sum(len(n) for n in follower._pending.values()) == 5)
        drain_again(follower)
        await eventually(lambda: body(cache, "h:d") == b"d")
        assert (body(cache, "h:a"), body(cache, "h:b"), body(cache, "h:c")) == (b"a2", b"b", b"c")
        assert body(cache, "h:old") is None
        assert reads == [{1: ["h:c", "h:d"]}]
        assert follower.revisions == [w.rev for w in writers]
    finally:
        await follower.stop()


async def test_the_revision_check_leaves_the_healing_to_the_drain(parts: tuple[ShardStore, DeltaBus]) -> None:
    """A shard found behind on two checks in a row (its notice lost) is handed to the drain, the one task
    that writes the cache: nothing moves until the drain runs."""
    store, bus = parts
    w = Writer(store, bus, 2)
    cache = ResourceCache()
    follower = Follower(store, bus, cache, SHARDS, resync_s=0.05)
    await follower.start()
    try:
        await follower.stop()
        await w.write({"h:lost": frag("h:lost", b"l")}, announce=False)
        follower._tasks = [asyncio.create_task(follower._resync())]
        await eventually(lambda: 2 in follower._heal)
        assert body(cache, "h:lost") is None and follower.revisions[2] == 0
        follower._tasks.append(asyncio.create_task(follower._drain()))
        await eventually(lambda: body(cache, "h:lost") == b"l")
        assert follower.revisions[2] == w.rev
    finally:
        await follower.stop()


@pytest.mark.parametrize(
    ("seen", "held", "expected"),
    [
        ({}, [3, 3], []),
        ({0: 4}, [4, 3], []),  # the notice arrived between the checks
        ({0: 4}, [3, 3], [0]),  # a whole check later, still short of what Redis had: a gap
        ({1: 9}, [3, 10], []),  # moved past it meanwhile
    ],
)
def test_a_shard_is_healed_only_when_still_behind_a_check_later(
    seen: dict[int, int], held: list[int], expected: list[int]
) -> None:
    assert still_behind(seen, held) == expected


def test_behind_counts_only_shards_redis_is_ahead_of() -> None:
    # shard 0 level, shard 1 behind Redis, shard 2 ahead of a revision read before its notices came
    assert behind([5, 8, 2], [5, 7, 3]) == {1: 8}
