"""One shard, owned by this process: fetch its deltas in order, compile, commit, announce.

The worker trusts Redis for where the shard stands (revision, applied sequence, fragment hashes) and
keeps the shard's contributions in memory after first use, so a change costs the units it touches; both
are held packed (`held.py`). It stops when told (rebalancing) or when its lease turns out to be lost;
the ownership loop decides what happens next.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from opentelemetry import trace

from shardgate.adapters.errors import LeaseLost, TransientError, UnloadedSources
from shardgate.adapters.jetstream import DeltaBus, DeltaMessage, ShardConsumer
from shardgate.adapters.store import ShardStore
from shardgate.keys import UnitKind, unit_kind, unit_name
from shardgate.records import Notice
from shardgate.telemetry import context_from, link_to, traceparent, tracer

from .batch import BatchPlan, CompileFn, plan_batch
from .held import Digest, PackedSources, digests, pack_sources, sole_source
from .settings import Settings

log = logging.getLogger(__name__)
_tracer = tracer("shardgate.compiler")


class ShardWorker:
    def __init__(
        self,
        shard: int,
        token: str,
        settings: Settings,
        bus: DeltaBus,
        store: ShardStore,
        compile_unit: CompileFn,
    ) -> None:
        self.shard = shard
        self.token = token
        self.settings = settings
        self.bus = bus
        self.store = store
        self.compile_unit = compile_unit
        self.stopping = False
        self.revision = 0
        self.seq = 0  # the last stream sequence committed
        self._hashes: dict[str, Digest] = {}  # unit -> its fragment's hash, for every unit with one
        # unit -> its sources, once loaded. Not held: a unit without any (Redis has none either), and a
        # unit that can have one source only (`held.sole_source`): its every delta is all of its input.
        self._contributions: dict[str, PackedSources] = {}

    async def run(self) -> None:
        state = await self.store.load_shard(self.shard)
        self.revision, self.seq, self._hashes = state.revision, state.seq, digests(state.hashes)
        del state  # its hex hashes: as many strings as the shard has units
        consumer = await self.bus.shard_consumer(self.shard, after_seq=self.seq, owner=self.token)
        log.info("shard %d: resumed at revision %d, stream seq %d", self.shard, self.revision, self.seq)
        try:
            while not self.stopping:
                messages = await consumer.fetch(self.settings.batch_size, self.settings.fetch_timeout_s)
                if messages:
                    # A call of its own, so that the batch (its deltas, fragments and spans) is not
                    # held by this frame while the next fetch waits: 256 of each in every idle shard.
                    await self._apply(messages, consumer)
        finally:
            await consumer.close()

    async def _apply(self, messages: list[DeltaMessage], consumer: ShardConsumer) -> None:
        started = time.time_ns()
        await self._load_missing(messages)
        while True:
            plan = plan_batch(
                messages, self.seq, self.revision, self._hashes, self._contributions, self.compile_unit
            )
            spans = self._start_spans(plan, started)
            try:
                await self._commit(plan)
                break
            except UnloadedSources as exc:
                # A unit without a fragment that has contributions (it failed to compile, or compiled to
                # nothing): read them, plan again. The spans of the refused plan are never ended, so
                # never exported.
                log.info("%s; reading them", exc)
                await self._load(exc.units)
        # Only a successful commit moves the in-memory state.
        self.seq = plan.commit.seq
        for unit, packed in plan.new_contributions.items():
            if packed is None:
                self._contributions.pop(unit, None)
            else:
                self._contributions[unit] = packed
        for unit, h in plan.new_hashes.items():
            if h is None:
                self._hashes.pop(unit, None)
            else:
                self._hashes[unit] = h
        if plan.commit.revision is not None:
            self.revision = plan.commit.revision
            notice = Notice(
                self.shard,
                self.revision,
                tuple(plan.changed_units),
                plan.commit.traces,
                self._inline(plan.commit.fragments),
            )
            await self.bus.publish_notice(notice)
        await consumer.ack()
        for span in spans:
            span.set_attribute("sg.revision", self.revision)
            span.end()

    def _inline(self, fragments: dict[str, tuple[bytes, str] | None]) -> dict[str, bytes | None] | None:
        """The committed fragments for the notice, or None when they are too big to carry."""
        size = sum(len(f[0]) for f in fragments.values() if f is not None)
        if size > self.settings.notice_inline_bytes:
            return None
        return {unit: (f[0] if f is not None else None) for unit, f in fragments.items()}

    async def _load_missing(self, messages: list[DeltaMessage]) -> None:
        """Read the contributions of touched units that have a fragment and are not held yet (after a
        restart, or a handover). A unit without a fragment is almost always new, so it is not read: the
        plan assumes it has none and the commit checks that (`Commit.assumed_empty`), which saves a
        brand-new host a Redis round trip."""
        # Not `set - dict.keys()`: CPython computes that by iterating over every key of the dict (every
        # unit the shard has cached: seen as a fifth of a compiler's time in a burst at 100k).
        known, hashed = self._contributions, self._hashes
        missing = {
            d.unit
            for m in messages
            if (d := m.delta) and d.unit in hashed and d.unit not in known and d.source != sole_source(d.unit)
        }
        if missing:
            await self._load(missing)

    async def _load(self, units: Iterable[str]) -> None:
        for unit, sources in (await self.store.load_contributions(self.shard, units)).items():
            if sources:
                self._contributions[unit] = pack_sources(sources)

    def _start_spans(self, plan: BatchPlan, started_ns: int) -> list[trace.Span]:
        """One `compiler.apply` span in each change's own trace; the notice carries its context."""
        spans: list[trace.Span] = []
        for unit, change in plan.units.items():
            if not change.traceparents:
                continue
            links = [link for tp in change.traceparents[:-1] if (link := link_to(tp))]
            span = _tracer.start_span(
                "compiler.apply",
                context=context_from(change.traceparents[-1]),
                links=links,
                start_time=started_ns,
                attributes={
                    "sg.unit": unit,
                    "sg.shard": self.shard,
                    "sg.batch_size": len(plan.units),
                    "sg.changed": change.changed,
                    "sg.deltas": len(change.traceparents),
                },
            )
            if unit_kind(unit) is UnitKind.HOST:
                span.set_attribute("sg.host", unit_name(unit))
            if change.error:
                span.set_status(trace.StatusCode.ERROR, change.error)
            if change.changed:
                plan.commit.traces[unit] = traceparent(trace.set_span_in_context(span))
            spans.append(span)
        return spans

    async def _commit(self, plan: BatchPlan) -> None:
        delay = 0.05
        while True:
            try:
                await self.store.commit(self.shard, self.token, plan.commit)
                return
            except TransientError as exc:
                if self.stopping:
                    raise
                log.warning("shard %d: commit failed, retrying: %s", self.shard, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except LeaseLost:
                self.stopping = True
                raise
