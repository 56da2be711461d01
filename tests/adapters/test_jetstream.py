"""DeltaBus against a real nats-server: publish, per-shard consume in order, dedup, resume."""

from __future__ import annotations

import asyncio

from shardgate.adapters.jetstream import DeltaBus
from shardgate.keys import host_unit, shard_of
from shardgate.local.servers import NatsServer
from shardgate.records import Delta, Notice

SHARDS = 8


def _delta(host: str, rv: str, body: dict[str, object] | None = None) -> Delta:
    return Delta(host_unit(host), "ingress/ns/web", rv, body if body is not None else {"x": rv})


async def test_publish_consume_in_order_and_dedup(nats_server: NatsServer) -> None:
    bus = await DeltaBus.connect(nats_server.url, shards=SHARDS)
    try:
        host = "a.example.com"
        shard = shard_of(host_unit(host), SHARDS)
        seqs = [await bus.publish(_delta(host, str(rv)), traceparent=f"tp{rv}") for rv in range(1, 6)]
        # A retry of the same source version is stored once.
        assert await bus.publish(_delta(host, "5")) == seqs[-1]

        consumer = await bus.shard_consumer(shard, after_seq=0, owner="a")
        got = []
        while len(got) < 5:
            got += await consumer.fetch(batch=3, timeout=2)
        assert [m.delta.source_rv for m in got if m.delta] == ["1", "2", "3", "4", "5"]
        assert [m.traceparent for m in got] == ["tp1", "tp2", "tp3", "tp4", "tp5"]
        assert [m.seq for m in got] == seqs
        await consumer.ack()
        await consumer.close()

        # A new owner resumes right after the committed sequence, whatever was acked.
        resumed = await bus.shard_consumer(shard, after_seq=seqs[2], owner="b")
        rest = await resumed.fetch(batch=10, timeout=2)
        assert [m.seq for m in rest] == seqs[3:]
        await resumed.close()
    finally:
        await bus.close()


async def test_other_shards_are_not_delivered(nats_server: NatsServer) -> None:
    bus = await DeltaBus.connect(nats_server.url, shards=SHARDS)
    try:
        hosts = [f"h{i}.example.com" for i in range(40)]
        for h in hosts:
            await bus.publish(_delta(h, "1"))
        shard = shard_of(host_unit(hosts[0]), SHARDS)
        consumer = await bus.shard_consumer(shard, after_seq=0, owner="a")
        msgs = await consumer.fetch(batch=100, timeout=2)
        expected = {host_unit(h) for h in hosts if shard_of(host_unit(h), SHARDS) == shard}
        assert {m.delta.unit for m in msgs if m.delta} == expected
    finally:
        await bus.close()


async def test_undecodable_delta_is_skipped_not_fatal(nats_server: NatsServer) -> None:
    bus = await DeltaBus.connect(nats_server.url, shards=SHARDS)
    try:
        await bus.js.publish("sg.delta.3", b"\x01garbage")
        consumer = await bus.shard_consumer(3, after_seq=0, owner="a")
        msgs = await consumer.fetch(batch=10, timeout=2)
        assert len(msgs) == 1 and msgs[0].delta is None
    finally:
        await bus.close()


async def test_notices_reach_subscribers(nats_server: NatsServer) -> None:
    bus = await DeltaBus.connect(nats_server.url, shards=SHARDS)
    got: asyncio.Queue[Notice] = asyncio.Queue()
    try:
        await bus.subscribe_notices(got.put)
        await bus.nc.flush()
        sent = Notice(5, 42, ("h:a.example.com",), {"h:a.example.com": "tp"})
        await bus.publish_notice(sent)
        assert await asyncio.wait_for(got.get(), 5) == sent
    finally:
        await bus.close()


async def test_a_stale_owner_cannot_take_its_successors_messages(nats_server: NatsServer) -> None:
    """The old owner of a shard, still pulling, must not receive (and so hide) the new owner's deltas."""
    bus = await DeltaBus.connect(nats_server.url, shards=SHARDS)
    try:
        host = "a.example.com"
        shard = shard_of(host_unit(host), SHARDS)
        old = await bus.shard_consumer(shard, after_seq=0, owner="old-owner")
        new = await bus.shard_consumer(shard, after_seq=0, owner="new-owner")
        seqs = [await bus.publish(_delta(host, str(rv))) for rv in range(1, 4)]
        stale_pull = asyncio.create_task(old.fetch(batch=10, timeout=2))
        got: list[int] = []
        while len(got) < 3:
            got += [m.seq for m in await new.fetch(batch=10, timeout=2)]
        assert got == seqs
        await stale_pull
        await old.close()
        await new.close()
    finally:
        await bus.close()
