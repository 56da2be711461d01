"""DeltaBus against a real nats-server: publish, per-shard consume in order, dedup, resume."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

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


async def test_idle_shards_get_each_delta_at_once_and_backlogs_in_batches(nats_server: NatsServer) -> None:
    """Shards that poll while idle, as the compiler's do, get a lone delta by itself and a backlog in
    batches.

    nats-py's `fetch(256)` could land in its lingering phase (after a stale status from an earlier poll):
    it then returned the first delta only when its whole timeout was up, together with whatever else came
    meanwhile (seen: 268-526 ms for a lone delta; 1,557 of a burst of 2,000 still undelivered 3 s later,
    with 32 shards on one connection). That stall depends on timing and is measured by the benchmarks
    (bench.pipeline's JetStream → compiler stage); this pins what the fetch must do instead: every delta
    delivered, a lone one by itself, a backlog in batches.
    """
    shards = 8
    bus = await DeltaBus.connect(nats_server.url, shards=shards)
    batches: list[list[str]] = []
    total = 30 + 400
    all_in = asyncio.Event()

    async def follow(shard: int) -> None:
        consumer = await bus.shard_consumer(shard, after_seq=0, owner="a")
        try:
            while True:
                got = await consumer.fetch(batch=256, timeout=1.0)  # the compiler's settings
                if got:
                    batches.append([m.delta.source_rv for m in got if m.delta])
                    if sum(map(len, batches)) >= total:
                        all_in.set()
                    await asyncio.sleep(0.02)  # a commit's worth of work: a backlog builds meanwhile
                    await consumer.ack()
        finally:
            await consumer.close()

    followers = [asyncio.create_task(follow(s)) for s in range(shards)]
    try:
        await asyncio.sleep(0.5)  # every shard is polling
        sent: list[str] = []
        for i in range(30):  # lone deltas, 100-190 ms apart, some landing while a poll turns over
            await asyncio.sleep(0.1 + 0.015 * (i % 7))
            sent.append(f"lone-{i}")
            await bus.publish(_delta(f"lone-{i}.example.com", f"lone-{i}"))
        for i in range(400):  # a burst
            sent.append(f"burst-{i}")
            await bus.publish(_delta(f"burst-{i}.example.com", f"burst-{i}"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), 15)
        received = [rv for batch in batches for rv in batch]
        assert sorted(received) == sorted(sent), f"{len(sent) - len(received)} deltas missing"
        gathered = [b for b in batches if sum(rv.startswith("lone") for rv in b) > 1]
        assert not gathered, f"lone deltas held back until later ones came: {gathered}"
        assert max(map(len, batches)) > 1  # the burst came in batches, not one delta per round trip
    finally:
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        await bus.close()


class SmallPayloadNats(NatsServer):
    """A nats-server that takes messages of at most 4 KiB (`max_payload`, a config-file setting)."""

    def command(self) -> list[str]:
        conf = self.workdir / "small.conf"
        conf.write_text("max_payload: 4096\n")
        return [*super().command(), "-c", str(conf)]


async def test_a_notice_too_big_for_the_server_goes_without_its_fragments(tmp_path: Path) -> None:
    server = SmallPayloadNats(tmp_path / "nats")
    server.start()
    bus = await DeltaBus.connect(server.url, shards=SHARDS)
    try:
        got: list[Notice] = []
        arrived = asyncio.Event()

        async def on_notice(n: Notice) -> None:
            got.append(n)
            if len(got) == 2:
                arrived.set()

        await bus.subscribe_notices(on_notice)
        small = Notice(1, 1, ("h:a",), {}, {"h:a": b"x" * 100})
        big = Notice(1, 2, ("h:a", "h:b"), {"h:a": "tp"}, {"h:a": b"x" * 3000, "h:b": b"y" * 3000})
        assert bus.nc.max_payload == 4096
        await bus.publish_notice(small)
        await bus.publish_notice(big)
        await asyncio.wait_for(arrived.wait(), 5)
        assert got == [small, Notice(1, 2, ("h:a", "h:b"), {"h:a": "tp"}, None)]
    finally:
        await bus.close()
        server.stop(kill=True)
