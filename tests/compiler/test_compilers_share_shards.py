"""Compilers against real nats-server and redis-server: ownership, commits, notices, takeover."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from shardgate.adapters.jetstream import DeltaBus
from shardgate.adapters.store import ShardStore, k
from shardgate.compiler.ownership import Ownership, desired_shards
from shardgate.compiler.settings import Settings
from shardgate.keys import host_unit, shard_of
from shardgate.local.servers import NatsServer, RedisServer
from shardgate.model import Backend, HostRoutes, PathRule, PathType
from shardgate.records import Delta, Fragment, Notice
from shardgate.xds import compile_unit

SHARDS = 8


def settings(nats: NatsServer, redis: RedisServer, worker: str) -> Settings:
    return Settings(
        nats_url=nats.url,
        redis_url=redis.url,
        shards=SHARDS,
        worker_id=worker,
        lease_ttl_ms=900,
        fetch_timeout_s=0.2,
    )


def host_delta(host: str, service: str, rv: int) -> Delta:
    rule = PathRule("/", PathType.PREFIX, Backend(service, 80))
    body = HostRoutes("ns", "web", "2026-01-01T00:00:00Z", (rule,)).to_wire()
    return Delta(host_unit(host), f"ingress/ns/{host}", str(rv), body)


async def eventually(check: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


class Compiler:
    def __init__(self, s: Settings) -> None:
        self.s = s
        self.task: asyncio.Task[None] | None = None
        self.own: Ownership | None = None

    async def start(self) -> None:
        self.bus = await DeltaBus.connect(self.s.nats_url, SHARDS)
        self.store = ShardStore.from_url(self.s.redis_url)
        self.own = Ownership(self.s, self.bus, self.store, compile_unit)
        self.task = asyncio.create_task(self.own.run())

    async def stop(self) -> None:
        assert self.own and self.task
        self.own.stop()
        await self.task
        await self.bus.close()
        await self.store.close()

    async def crash(self) -> None:
        """Vanish without releasing anything, like a SIGKILL: leases must expire."""
        assert self.task and self.own
        for _, task in self.own.workers.values():
            task.cancel()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.bus.nc.close()
        await self.store.close()


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[DeltaBus]:
    b = await DeltaBus.connect(nats_server.url, SHARDS)
    yield b
    await b.close()


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[ShardStore]:
    s = ShardStore.from_url(redis_server.url)
    yield s
    await s.close()


@pytest.fixture
async def notices(bus: DeltaBus) -> list[Notice]:
    """Every change notice the compilers publish during the test."""
    received: list[Notice] = []

    async def on_notice(n: Notice) -> None:
        received.append(n)

    await bus.subscribe_notices(on_notice)
    return received


async def fragment(store: ShardStore, host: str) -> Fragment | None:
    unit = host_unit(host)
    raw = await store.r.hget(k(shard_of(unit, SHARDS), "frag"), unit)
    return Fragment.decode(raw) if raw else None


async def test_two_compilers_split_shards_and_take_over(
    nats_server: NatsServer,
    redis_server: RedisServer,
    bus: DeltaBus,
    store: ShardStore,
    notices: list[Notice],
) -> None:
    one = Compiler(settings(nats_server, redis_server, "one"))
    await one.start()
    await eventually(lambda: one.own and len(one.own.owned) == SHARDS)

    hosts = [f"h{i}.example.com" for i in range(30)]
    for i, h in enumerate(hosts):
        await bus.publish(host_delta(h, "svc-a", i + 1), traceparent="")

    async def all_compiled(service: str) -> bool:
        frags = [await fragment(store, h) for h in hosts]
        return all(f is not None and service.encode() in b"".join(r.body for r in f.resources) for f in frags)

    await eventually(lambda: all_compiled("svc-a"))
    assert {n.shard for n in notices} <= set(range(SHARDS)) and notices

    two = Compiler(settings(nats_server, redis_server, "two"))
    await two.start()
    members = ["one", "two"]
    await eventually(
        lambda: (
            one.own.owned == desired_shards("one", members, SHARDS)
            and two.own.owned == desired_shards("two", members, SHARDS)
        )
    )
    assert one.own.owned.isdisjoint(two.own.owned)
    # The handover was clean: no lease lapsed while its worker still ran.
    assert one.own.leases_lost == 0 and two.own.leases_lost == 0

    # Both keep compiling their halves.
    for i, h in enumerate(hosts):
        await bus.publish(host_delta(h, "svc-b", 100 + i))
    await eventually(lambda: all_compiled("svc-b"))

    # One dies without a word: the other takes every shard back and nothing is lost.
    await one.crash()
    await eventually(lambda: two.own.owned == set(range(SHARDS)))
    for i, h in enumerate(hosts):
        await bus.publish(host_delta(h, "svc-c", 200 + i))
    await eventually(lambda: all_compiled("svc-c"))
    await two.stop()
    assert await store.lease_holder(0) is None  # a clean stop releases its leases


async def test_redelivery_and_unchanged_are_not_announced(
    nats_server: NatsServer,
    redis_server: RedisServer,
    bus: DeltaBus,
    store: ShardStore,
    notices: list[Notice],
) -> None:
    c = Compiler(settings(nats_server, redis_server, "solo"))
    await c.start()
    host = "same.example.com"
    shard = shard_of(host_unit(host), SHARDS)
    await bus.publish(host_delta(host, "svc", 1))
    await eventually(lambda: len(notices) == 1)
    rev_before = (await store.load_shard(shard)).revision
    # A new source version with identical routes: stored, not recompiled into a new revision.
    seq = await bus.publish(host_delta(host, "svc", 2))

    async def applied() -> bool:
        return (await store.load_shard(shard)).seq >= seq

    await eventually(applied)
    await c.stop()
    assert (await store.load_shard(shard)).revision == rev_before

    # A restart re-creates the consumer after the committed sequence: nothing is applied twice.
    c2 = Compiler(settings(nats_server, redis_server, "solo"))
    await c2.start()
    await eventually(lambda: c2.own and shard in c2.own.owned)
    await asyncio.sleep(0.5)
    await c2.stop()
    assert (await store.load_shard(shard)).revision == rev_before
    assert len(notices) == 1
