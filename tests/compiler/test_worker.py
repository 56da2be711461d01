"""ShardWorker against in-memory stand-ins for its bus and store: what it holds between batches (packed
sources, digests), and that only a committed batch moves it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from shardgate.adapters.errors import LeaseLost, UnloadedSources
from shardgate.adapters.jetstream import DeltaMessage
from shardgate.adapters.store import Commit, ShardState, ShardStore
from shardgate.compiler.batch import CompileFn
from shardgate.compiler.held import digest, unpack_sources
from shardgate.compiler.settings import Settings
from shardgate.compiler.worker import ShardWorker
from shardgate.keys import host_unit, secret_unit
from shardgate.local.servers import RedisServer
from shardgate.model import Backend, Contribution, HostRoutes, PathRule, PathType, TlsCertificate, Wire
from shardgate.records import Delta, Fragment, Notice, make_resource

A = host_unit("a.example.com")
WEB, API = "ingress/ns/web", "ingress/ns/api"


def routes(service: str, ingress: str = "web") -> Wire:
    rule = PathRule("/", PathType.PREFIX, Backend(service, 80))
    return HostRoutes("ns", ingress, "2026-01-01T00:00:00Z", (rule,)).to_wire()


def fake_compile(unit: str, contributions: Mapping[str, Contribution]) -> Fragment:
    """One resource naming the services (a host) or holding the certificates (a secret)."""
    parts = sorted(
        p.backend.service.encode()
        for c in contributions.values()
        if isinstance(c, HostRoutes)
        for p in c.paths
    ) + sorted(c.cert_pem for c in contributions.values() if isinstance(c, TlsCertificate))
    if not parts:
        return Fragment(unit, ())
    return Fragment(unit, (make_resource("t", unit, b",".join(parts)),))


class FakeStore:
    """Redis as the worker sees it: committed sources (decoded, as load_contributions returns them),
    fragment hashes, revision and sequence."""

    def __init__(self, state: ShardState | None = None, sources: dict[str, dict[str, Wire]] | None = None):
        self.state = state or ShardState(0, 0, {})
        self.sources = sources or {}
        self.commits: list[Commit] = []
        self.loads: list[set[str]] = []
        self.unread: list[list[str]] = []  # commits refused for assuming these units had no sources
        self.refuse_from = 10**9  # commits from this one on raise LeaseLost

    async def load_shard(self, shard: int) -> ShardState:
        return ShardState(self.state.revision, self.state.seq, dict(self.state.hashes))

    async def load_contributions(self, shard: int, units: Any) -> dict[str, dict[str, Wire]]:
        self.loads.append(set(units))
        return {u: dict(self.sources.get(u, {})) for u in units}

    async def commit(self, shard: int, token: str, c: Commit) -> None:
        if len(self.commits) >= self.refuse_from:
            raise LeaseLost("not ours")
        if unread := [u for u in c.assumed_empty if self.sources.get(u)]:
            self.unread.append(unread)
            raise UnloadedSources(shard, unread)
        self.commits.append(c)
        for unit, by_source in c.contributions.items():
            held = self.sources.setdefault(unit, {})
            for source, wire in by_source.items():
                if wire is None:
                    held.pop(source, None)
                else:
                    held[source] = wire
        for unit, frag in c.fragments.items():
            if frag is None:
                self.state.hashes.pop(unit, None)
            else:
                self.state.hashes[unit] = frag[1]
        self.state.seq = c.seq
        self.state.revision = c.revision or self.state.revision


class FakeConsumer:
    def __init__(self, batches: list[list[DeltaMessage]], worker: ShardWorker) -> None:
        self.batches = batches
        self.worker = worker
        self.acks = 0

    async def fetch(self, batch: int = 256, timeout: float = 1.0) -> list[DeltaMessage]:
        if not self.batches:
            self.worker.stopping = True
            return []
        return self.batches.pop(0)

    async def ack(self) -> None:
        self.acks += 1

    async def close(self) -> None:
        pass


class FakeBus:
    def __init__(self) -> None:
        self.batches: list[list[DeltaMessage]] = []
        self.notices: list[Notice] = []
        self.consumer: FakeConsumer | None = None
        self.worker: ShardWorker | None = None

    async def shard_consumer(self, shard: int, after_seq: int, owner: str) -> FakeConsumer:
        assert self.worker is not None
        self.consumer = FakeConsumer(self.batches, self.worker)
        return self.consumer

    async def publish_notice(self, notice: Notice) -> None:
        self.notices.append(notice)


def msg(seq: int, body: Wire | None, source: str = WEB, unit: str = A) -> DeltaMessage:
    return DeltaMessage(seq, Delta(unit, source, str(seq), body), "")


async def run(
    store: FakeStore, *batches: list[DeltaMessage], settings: Settings | None = None
) -> ShardWorker:
    return (await run_with_bus(store, *batches, settings=settings))[0]


async def run_with_bus(
    store: FakeStore,
    *batches: list[DeltaMessage],
    settings: Settings | None = None,
    compile_unit: CompileFn = fake_compile,
) -> tuple[ShardWorker, FakeBus]:
    bus = FakeBus()
    worker = ShardWorker(0, "me", settings or Settings(), bus, store, compile_unit)  # type: ignore[arg-type]
    bus.worker = worker
    bus.batches.extend(batches)
    await worker.run()
    return worker, bus


async def test_units_are_held_packed_with_their_digest() -> None:
    store = FakeStore()
    worker = await run(store, [msg(1, routes("v1")), msg(2, routes("api", "api"), API)])
    packed = worker._contributions[A]
    assert isinstance(packed, bytes)
    assert unpack_sources(packed) == {WEB: routes("v1"), API: routes("api", "api")} == store.sources[A]
    assert worker._hashes == {A: digest(store.state.hashes[A])}
    assert (worker.seq, worker.revision) == (2, 1)


async def test_a_refused_commit_leaves_the_held_state_as_it_was() -> None:
    store = FakeStore()
    store.refuse_from = 1
    bus = FakeBus()
    worker = ShardWorker(0, "me", Settings(), bus, store, fake_compile)  # type: ignore[arg-type]
    bus.worker = worker
    bus.batches += [[msg(1, routes("v1"))], [msg(2, routes("v2"))]]
    with pytest.raises(LeaseLost):
        await worker.run()
    assert unpack_sources(worker._contributions[A]) == {WEB: routes("v1")}
    assert worker._hashes == {A: digest(store.state.hashes[A])}
    assert (worker.seq, worker.revision) == (1, 1)
    assert bus.consumer is not None and bus.consumer.acks == 1


async def test_a_new_unit_is_not_read_the_commit_checks_it_has_no_sources() -> None:
    store = FakeStore()
    await run(store, [msg(1, routes("v1"))])
    assert store.loads == [] and store.unread == []
    assert store.commits[-1].assumed_empty == [A]


async def test_a_unit_without_sources_is_not_held_and_read_again_when_it_comes_back() -> None:
    store = FakeStore()
    worker = await run(store, [msg(1, routes("v1"))], [msg(2, None)])
    assert A not in worker._contributions and A not in worker._hashes
    assert store.commits[-1].fragments == {A: None}

    store.sources[A] = {API: routes("api", "api")}  # as if another writer's commit were there
    worker = await run(store, [msg(3, routes("v3"))])
    assert store.unread == [[A]] and store.loads[-1] == {A}  # the commit said so; then it was read
    assert unpack_sources(worker._contributions[A]) == {API: routes("api", "api"), WEB: routes("v3")}
    assert store.commits[-1].assumed_empty == []


async def test_a_unit_whose_sources_compile_to_nothing_keeps_them_across_a_restart() -> None:
    """The case the commit's check exists for: sources in Redis, no fragment (here the only other
    source has no paths the fake compiles), so the unit is not read at first touch after a restart."""
    empty = HostRoutes("ns", "api", "2026-01-01T00:00:00Z", ()).to_wire()
    store = FakeStore()
    await run(store, [msg(1, empty, API)])
    assert store.sources[A] == {API: empty} and A not in store.state.hashes
    worker = await run(store, [msg(2, routes("v2"))])  # a new owner: nothing held
    assert store.unread == [[A]] and store.loads == [{A}]
    assert unpack_sources(worker._contributions[A]) == {API: empty, WEB: routes("v2")} == store.sources[A]
    assert len(store.commits) == 2  # the refused plan wrote nothing


async def test_after_a_restart_an_unchanged_unit_is_not_rewritten() -> None:
    store = FakeStore()
    await run(store, [msg(1, routes("v1"))])
    revision = store.state.revision
    # A new owner: hashes from Redis, sources read on first touch; the same routes again change nothing.
    worker = await run(store, [msg(2, routes("v1"))])
    assert store.loads[-1] == {A}
    assert store.commits[-1].fragments == {} and store.commits[-1].revision is None
    assert store.state.revision == revision and worker.revision == revision
    # A redelivery of an applied delta changes nothing either.
    worker = await run(store, [msg(2, routes("other"))])
    assert store.commits[-1].contributions == {} and store.commits[-1].seq == 2
    assert unpack_sources(worker._contributions[A]) == {WEB: routes("v1")} == store.sources[A]


async def test_a_secret_unit_is_neither_held_nor_read() -> None:
    unit, source = secret_unit("ns", "tls"), "secret/ns/tls"

    def cert(pem: bytes) -> Wire:
        return TlsCertificate(pem, b"key").to_wire()

    store = FakeStore()
    worker = await run(store, [msg(1, cert(b"one"), source, unit)], [msg(2, cert(b"two"), source, unit)])
    assert store.loads == [] and worker._contributions == {}
    assert unit in worker._hashes and store.sources[unit] == {}  # nothing stored: nothing reads it
    frag = Fragment.decode(store.commits[-1].fragments[unit][0])  # type: ignore[index]
    assert frag.resources[0].body == b"two"  # the delta alone is the unit's input
    # The same certificate again (a new resourceVersion) is not rewritten; a tombstone deletes it.
    worker = await run(store, [msg(3, cert(b"two"), source, unit)], [msg(4, None, source, unit)])
    assert store.commits[-2].fragments == {}
    assert store.commits[-1].fragments == {unit: None} and unit not in worker._hashes
    assert store.loads == []


async def test_notices_carry_the_committed_fragments_up_to_the_inline_limit() -> None:
    store = FakeStore()
    _, bus = await run_with_bus(store, [msg(1, routes("v1"))], [msg(2, None)])
    committed = store.commits[0].fragments[A]
    assert committed is not None
    assert [n.fragments for n in bus.notices] == [{A: committed[0]}, {A: None}]

    limit = len(committed[0]) - 1  # one byte short: the pushers read it from Redis
    _, bus = await run_with_bus(store, [msg(3, routes("v1"))], settings=Settings(notice_inline_bytes=limit))
    assert bus.notices[0].units == (A,) and bus.notices[0].fragments is None


async def test_the_commit_check_and_the_re_read_against_real_redis(redis_server: RedisServer) -> None:
    """With the real store: a unit whose sources failed to compile keeps them and has no fragment; after
    a restart, Redis refuses the commit that assumed it had none, writing nothing, and the unit is
    compiled from every source once they are read."""

    def failing(unit: str, contributions: Mapping[str, Contribution]) -> Fragment:
        raise ValueError("boom")

    store = ShardStore.from_url(redis_server.url)
    try:
        assert await store.acquire(0, "me", 60_000)
        await run_with_bus(store, [msg(1, routes("api", "api"), API)], compile_unit=failing)  # type: ignore[arg-type]
        assert (await store.load_shard(0)).hashes == {}  # its source stored, no fragment
        await run(store, [msg(2, routes("v2"))])  # type: ignore[arg-type]
        assert await store.load_contributions(0, [A]) == {A: {API: routes("api", "api"), WEB: routes("v2")}}
        revision, fragments = await store.snapshot(0)
        assert revision == 1 and Fragment.decode(fragments[A]).resources[0].body == b"api,v2"
    finally:
        await store.close()
