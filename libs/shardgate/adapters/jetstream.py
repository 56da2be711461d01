"""NATS JetStream adapter: the delta stream between the watcher and the compilers.

One stream holds every shard's subject `sg.delta.<shard>`; the stream order is the per-shard order.
Publishes carry `Nats-Msg-Id` (the delta's id) so a retry or a watcher failover within the duplicate
window is stored once. Each shard has one durable pull consumer `sgc-<shard>`. Redis, not the consumer,
is the authority on how far a shard has been applied (its commit records the last stream sequence in the
same transaction as the fragments), so a new owner re-creates the consumer to start right after that
sequence: nothing is skipped, and anything delivered twice is recognised by its sequence and dropped.
Change notices to the pushers go over core NATS (`sg.changed.<shard>`); they are hints, not the record —
a pusher that misses one heals from the Redis change log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError, NoServersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from shardgate.adapters.errors import TransientError
from shardgate.keys import DEFAULT_SHARDS, shard_of
from shardgate.records import Delta, Notice, RecordError

log = logging.getLogger(__name__)

DELTA_SUBJECT = "sg.delta.{shard}"
NOTICE_SUBJECT = "sg.changed.{shard}"
CONSUMER_INACTIVE_S = 60.0
"""A consumer nobody has pulled from for this long (its owner crashed) is removed by the server."""
_TRANSIENT = (
    NatsTimeoutError,
    NoRespondersError,
    ConnectionClosedError,
    NoServersError,
    asyncio.TimeoutError,
)


async def connect_nats(url: str, name: str) -> NatsClient:
    """Connect with endless reconnects: a NATS restart must pause the pipeline, not end it."""
    return await nats.connect(
        url, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.25, connect_timeout=5
    )


@dataclass(frozen=True, slots=True)
class DeltaMessage:
    seq: int  # stream sequence
    delta: Delta | None  # None when the payload could not be decoded (logged, then skipped)
    traceparent: str


class DeltaBus:
    """Publishing and consuming per-shard deltas on one JetStream stream."""

    def __init__(self, nc: NatsClient, js: JetStreamContext, shards: int, stream: str) -> None:
        self.nc = nc
        self.js = js
        self.shards = shards
        self.stream = stream

    @classmethod
    async def connect(
        cls,
        url: str,
        shards: int = DEFAULT_SHARDS,
        stream: str = "SHARDGATE",
        name: str = "shardgate",
        duplicate_window_s: float = 300.0,
    ) -> DeltaBus:
        nc = await connect_nats(url, name)
        bus = cls(nc, nc.jetstream(timeout=5), shards, stream)
        await bus.ensure_stream(duplicate_window_s)
        return bus

    async def ensure_stream(self, duplicate_window_s: float) -> None:
        config = StreamConfig(
            name=self.stream,
            subjects=["sg.delta.*"],
            storage=StorageType.FILE,
            duplicate_window=duplicate_window_s,
        )
        try:
            await self.js.stream_info(self.stream)
        except NotFoundError:
            await self.js.add_stream(config)

    async def close(self) -> None:
        await self.nc.drain()

    async def publish(self, delta: Delta, traceparent: str = "") -> int:
        subject = DELTA_SUBJECT.format(shard=shard_of(delta.unit, self.shards))
        headers = {"Nats-Msg-Id": delta.msg_id}
        if traceparent:
            headers["traceparent"] = traceparent
        payload = delta.encode()
        try:  # the usual case, without setting up the retry machinery for every delta of a burst
            ack = await self.js.publish(subject, payload, headers=headers, timeout=5)
        except _TRANSIENT:
            await asyncio.sleep(0.05)  # the first backoff step, then tenacity's
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_TRANSIENT),
                wait=wait_exponential(multiplier=0.05, max=2),
                stop=stop_after_delay(60),
                reraise=True,
            ):
                with attempt:
                    ack = await self.js.publish(subject, payload, headers=headers, timeout=5)
        return int(ack.seq)

    async def shard_consumer(self, shard: int, after_seq: int, owner: str) -> ShardConsumer:
        """A consumer of the shard's deltas after `after_seq`, in order, private to one owner's tenure.

        Each tenure gets a consumer of its own (`sgc-<shard>-<owner>`): a previous owner that has not
        noticed yet that it lost the shard can never pull (and so hide) a message from its successor,
        whose acks would then cover it. Consumers left by crashed owners expire once inactive.
        """
        durable = f"sgc-{shard}-{_consumer_suffix(owner)}"
        with contextlib.suppress(NotFoundError):
            await self.js.delete_consumer(self.stream, durable)
        config = ConsumerConfig(
            durable_name=durable,
            filter_subject=DELTA_SUBJECT.format(shard=shard),
            ack_policy=AckPolicy.ALL,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after_seq else DeliverPolicy.ALL,
            opt_start_seq=after_seq + 1 if after_seq else None,
            ack_wait=60,
            max_ack_pending=-1,
            inactive_threshold=CONSUMER_INACTIVE_S,
        )
        await self.js.add_consumer(self.stream, config)
        sub = await self.js.pull_subscribe_bind(durable=durable, stream=self.stream)
        return ShardConsumer(shard, sub, self.js, self.stream, durable)

    async def publish_notice(self, notice: Notice) -> None:
        """Send `notice`; one whose fragments make it bigger than the server takes (its `max_payload`)
        goes without them, and the pushers read them from Redis."""
        data = notice.encode()
        if len(data) > self.nc.max_payload and notice.fragments is not None:
            data = replace(notice, fragments=None).encode()
        try:
            await self.nc.publish(NOTICE_SUBJECT.format(shard=notice.shard), data)
        except _TRANSIENT as exc:  # a lost notice is healed by the pushers' revision check
            log.warning("notice for shard %d rev %d not sent: %s", notice.shard, notice.revision, exc)

    async def subscribe_notices(self, handler: Callable[[Notice], Awaitable[None]]) -> None:
        async def on_msg(msg: Msg) -> None:
            try:
                notice = Notice.decode(msg.data)
            except RecordError as exc:
                log.error("dropping undecodable notice on %s: %s", msg.subject, exc)
                return
            await handler(notice)

        await self.nc.subscribe("sg.changed.*", cb=on_msg)


def _consumer_suffix(owner: str) -> str:
    """A consumer-name-safe tag of an owner token (names allow no dots, spaces, `*` or `>`)."""
    return hashlib.blake2b(owner.encode(), digest_size=6).hexdigest()


BACKLOG_PULL_S = 0.05
"""How long the pull of deltas already counted behind the first may take; they are delivered at once, so
this bounds only a stale count (a redelivered delta's), never a wait for new ones."""


class ShardConsumer:
    """In-order batches of one shard's deltas."""

    def __init__(
        self, shard: int, sub: JetStreamContext.PullSubscription, js: JetStreamContext, stream: str, name: str
    ) -> None:
        self.shard = shard
        self.sub = sub
        self.js = js
        self.stream = stream
        self.name = name
        self._last: Msg | None = None

    async def fetch(self, batch: int = 256, timeout: float = 1.0) -> list[DeltaMessage]:
        """The next deltas: waits up to `timeout` for one, then takes those already waiting behind it.

        Two pulls instead of nats-py's `fetch(batch)`: its long poll, once in its lingering phase (after a
        stale status from an earlier poll), held the first delta until the whole timeout was up to gather
        more, and in a burst returned one or a few per call (measured with 8-32 shards polling on one
        connection: lone deltas up to 0.6-0.9 s late, the compiler's 250-500 ms JetStream→compiler
        outliers; 1,000-1,600 of a 2,000 burst still undelivered 3 s on). A pull of one returns the
        moment a delta arrives; the consumer's pending count in its metadata says how many wait behind
        it, and a second pull of exactly those comes back at once.
        """
        try:
            msgs = await self.sub.fetch(1, timeout=timeout)
        except (TimeoutError, NatsTimeoutError):  # nothing to fetch: the normal idle case
            return []
        except _TRANSIENT as exc:
            raise TransientError(f"shard {self.shard}: fetch failed: {exc}") from exc
        behind = min(batch - 1, msgs[-1].metadata.num_pending or 0) if msgs else 0
        if behind:
            try:
                msgs += await self.sub.fetch(behind, timeout=BACKLOG_PULL_S)
            except (TimeoutError, NatsTimeoutError, *_TRANSIENT) as exc:
                # Fewer than counted (a redelivery's stale count): the rest come with the next call.
                log.debug("shard %d: backlog pull of %d ended early: %s", self.shard, behind, exc)
        out: list[DeltaMessage] = []
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            try:
                delta: Delta | None = Delta.decode(msg.data)
            except RecordError as exc:
                log.error("shard %d: skipping undecodable delta at seq %d: %s", self.shard, seq, exc)
                delta = None
            out.append(DeltaMessage(seq, delta, (msg.headers or {}).get("traceparent", "")))
        if msgs:
            self._last = msgs[-1]
        return out

    async def ack(self) -> None:
        """Ack everything fetched so far (AckPolicy.ALL); call after the batch is committed."""
        if self._last is not None:
            try:
                await self._last.ack()
            except _TRANSIENT as exc:  # Redis holds the position; an un-acked batch is only redelivered
                log.warning("shard %d: ack failed: %s", self.shard, exc)
            self._last = None

    async def close(self) -> None:
        try:
            await self.sub.unsubscribe()
            await self.js.delete_consumer(self.stream, self.name)
        except Exception as exc:  # closing during a reconnect must not mask the real shutdown cause
            log.debug("shard %d: closing consumer %s: %s", self.shard, self.name, exc)
