"""The publish workers: from what a source contributes now to acked deltas and a committed index.

Sources to publish wait in one `FairQueue` (`fair.py`): a FIFO per namespace, the namespaces served
round-robin, with a token bucket per namespace, so a flood from one namespace delays another's change
by at most one round. Jobs are coalesced per source (a burst of events on one Ingress publishes its
latest state once), and a source is never processed by two workers at once (per-source order), while
different sources run in parallel.

For a source a worker persists changed host ownership records first, asks admission (`admission.py`)
which contributions may go out, diffs them against the published index, publishes the deltas, and
commits the index (memory, then Redis) once JetStream acked them all; then it tells the caller what an
Ingress now has published, so its owner can be told about the rest. All of it only while `allowed()`
holds (we lead and have loaded the previous holder's index); a change of leadership (a new `epoch`)
drops the job, since the next leader redoes it from its own diff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from shardgate import keys, telemetry
from shardgate.keys import SourceKind
from shardgate.records import Delta

from .admission import Admission
from .backoff import Backoff
from .fair import FairQueue
from .index import Change, Current, Held, Index, source_kind_of
from .store import IndexStore
from .tenancy import HostRecord, Tenancy
from .traced import EventSpan

log = logging.getLogger(__name__)
tracer = telemetry.tracer("shardgate.watcher")
MAX_DROPPED = 10_000
"""Sources a lapsed holder remembers to redo when it takes the Lease back; beyond, it re-diffs all."""
_HOST_UNIT = keys.host_unit("")  # "h:", what a host unit's key starts with


class Publisher(Protocol):
    async def publish(self, delta: Delta, traceparent: str = "") -> int: ...


class NotLeader(Exception):
    """Leadership ended while a change was being published: drop the job, the next leader redoes it."""


@dataclass(slots=True)
class Job:
    source: str
    observed_ns: int
    spans: list[EventSpan] = field(default_factory=list)  # started when the job is taken up
    charged: bool = False  # caused by a watch event (the namespace's rate), not by a re-sync


class Publishers:
    """The fair queue of sources to publish and what the workers share: the published index, the host
    records to persist, and the count of acked deltas."""

    def __init__(
        self,
        bus: Publisher,
        store: IndexStore,
        tenancy: Tenancy,
        admission: Admission,
        current: Mapping[str, Current],
        synced: set[SourceKind],
        *,
        shards: int,
        namespace_rate: float,
        namespace_burst: float,
        allowed: Callable[[], bool],
        published_ingress: Callable[[str, Mapping[str, Held]], None],
    ) -> None:
        self.bus = bus
        self.store = store
        self.tenancy = tenancy
        self.admission = admission
        self.current = current  # source -> what it contributes now (the caches')
        self.synced = synced  # kinds listed at least once (the caches')
        self.shards = shards
        self.allowed = allowed  # we lead and have loaded the previous holder's index
        self.published_ingress = published_ingress  # an Ingress has these contributions published now
        self.index = Index()  # replaced by the persisted one when we take the lead
        self.epoch = 0  # bumped by the owner on every change of leadership
        self.published = 0  # deltas acked by JetStream, for tests and metrics
        self._hosts_saving: asyncio.Task[None] | None = None
        self._fair = FairQueue(namespace_rate, namespace_burst)
        self._pending: dict[str, Job] = {}
        # Sources whose publishing a change of leadership cut short, for a holder that takes the Lease
        # back with nobody else having held it (`take_dropped`); past MAX_DROPPED only a full re-diff
        # will do, and a replica that never leads stops counting there.
        self._dropped: set[str] | None = set()
        self._running: set[str] = set()
        self._inflight = 0

    def take_dropped(self) -> set[str] | None:
        """The sources dropped since the last call (None: too many were, re-diff everything); resets."""
        dropped, self._dropped = self._dropped, set()
        return dropped

    def _drop(self, job: Job) -> None:
        """Leadership cut `job` short. If we lead again already (a lapse and a resume while it was in
        flight), it is queued again at once; else it waits for the next tenure in `take_dropped`."""
        if self.allowed():
            self.enqueue(job.source, job.observed_ns, charged=False)
        elif self._dropped is not None:
            self._dropped.add(job.source)
            if len(self._dropped) > MAX_DROPPED:
                self._dropped = None

    def idle(self) -> bool:
        """No source waits to be published and none is being published."""
        return not self._pending and self._inflight == 0

    def enqueue(
        self, source: str, observed_ns: int, span: EventSpan | None = None, charged: bool = False
    ) -> None:
        job = self._pending.get(source)
        if job is None:
            job = self._pending[source] = Job(source, observed_ns)
            if source not in self._running:  # else the worker running it queues it again when done
                self._fair.put(source.split("/", 2)[1], source)
        job.charged = job.charged or charged
        if span is not None:
            job.spans.append(span)

    async def work(self) -> None:
        me = asyncio.current_task()
        while True:
            if me is not None and me.cancelling():
                # On 3.11 a library's asyncio.wait_for (nats-py's publish) can swallow a cancel that
                # lands as its future completes; without this check a stopping watcher never stops.
                raise asyncio.CancelledError
            namespace, source = await self._fair.get()
            job = self._pending.pop(source, None)
            if job is None:
                continue
            self._inflight += 1
            self._running.add(source)
            spans = [event.start() for event in job.spans]
            try:
                if await self._process(job, spans[0] if spans else None) and job.charged:
                    self._fair.charge(namespace)
            finally:
                self._running.discard(source)
                self._inflight -= 1
                for span in spans:
                    span.end()
                if source in self._pending:
                    self._fair.put(namespace, source)

    async def _process(self, job: Job, span: trace.Span | None) -> bool:
        """Publish what the source contributes now; True when deltas went out."""
        backoff = Backoff()
        while self.allowed() and source_kind_of(job.source) in self.synced:
            epoch = self.epoch
            try:
                await self._persist_hosts()
                t = self.current.get(job.source)
                contributions = self.admission.admitted(job.source, t.contributions if t else {})
                change = self.index.diff(
                    job.source, t.rv if t else "", contributions if t else None, job.observed_ns
                )
                if change.deltas or change.entry != self.index.get(job.source):
                    await self._publish(change, span)
                    if epoch != self.epoch:
                        self._drop(job)
                        return False
                    await self.store.save(job.source, change.entry)
                    if epoch != self.epoch:
                        self._drop(job)
                        return False
                    self.index.commit(change)
                if source_kind_of(job.source) is SourceKind.INGRESS:
                    self.published_ingress(job.source, contributions)
                return bool(change.deltas)
            except NotLeader:
                self._drop(job)
                return False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS or Redis trouble: retry the (re-diffed) change while leading
                delay = backoff.next()
                log.warning("%s: publishing failed (%s); retrying in %.1fs", job.source, exc, delay)
                await asyncio.sleep(delay)
        if not self.allowed():
            self._drop(job)
        return False

    async def _persist_hosts(self) -> None:
        """Return once every ownership record changed before the call is in Redis (anything that depends
        on them is published after this).

        A group commit: one save is in flight at a time and takes every record dirty when it starts, and
        every worker that needs those records awaits that same save. Holding a lock across each worker's
        own round trip instead serialized the workers on Redis: one source per round trip, ~60 a second
        in a burst, whatever the number of workers.
        """
        while True:
            saving = self._hosts_saving
            if saving is not None and not saving.done():
                if not self.tenancy.dirty:  # what we need was taken by the save in flight (or before it)
                    await asyncio.shield(saving)
                    return
                await asyncio.wait({saving})  # a later record must not race an earlier one: one at a time
                continue
            if not self.tenancy.dirty:
                return
            saving = self._hosts_saving = asyncio.create_task(self._save_hosts(self.tenancy.take_dirty()))
            await asyncio.shield(saving)
            return

    async def _save_hosts(self, records: dict[str, HostRecord | None]) -> None:
        try:
            await self.store.save_hosts(records)
        except BaseException:
            self.tenancy.dirty.update(records)  # saved again (as they are then) by the next save
            raise

    async def _publish(self, change: Change, parent: trace.Span | None) -> None:
        if not change.deltas:
            return
        own_span = None
        if parent is None:
            own_span = parent = tracer.start_span(
                "watcher.resync", attributes={"k8s.object.key": change.source}
            )
        ctx = trace.set_span_in_context(parent)
        try:
            if len(change.deltas) == 1:  # the usual change (one host): no task of its own
                await self._publish_one(change.deltas[0], ctx)
            else:
                await asyncio.gather(*(self._publish_one(d, ctx) for d in change.deltas))
        finally:
            if own_span is not None:
                own_span.end()

    async def _publish_one(self, delta: Delta, ctx: Any) -> None:
        if not self.allowed():
            raise NotLeader(delta.unit)
        attributes: dict[str, str | int | bool] = {
            "sg.unit": delta.unit,
            "sg.shard": keys.shard_of(delta.unit, self.shards),
            "sg.tombstone": delta.body is None,
        }
        if delta.unit.startswith(_HOST_UNIT):
            attributes["sg.host"] = delta.unit[len(_HOST_UNIT) :]
        # Not made the current span: its traceparent is all the publish needs, and attaching it to the
        # context (and detaching) cost more than the rest of the span.
        span = tracer.start_span("watcher.publish", context=ctx, attributes=attributes)
        try:
            seq = await self.bus.publish(delta, telemetry.traceparent(trace.set_span_in_context(span)))
            span.set_attribute("messaging.nats.stream_sequence", seq)
        except BaseException as exc:  # as `start_as_current_span` records it
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            span.end()
        self.published += 1
