"""One shard, owned by this process: fetch its deltas in order, compile, commit, announce.

The worker trusts Redis for where the shard stands (revision, applied sequence, fragment hashes) and
keeps the shard's contributions in memory after first use, so a change costs the units it touches. It
stops when told (rebalancing) or when its lease turns out to be lost; the ownership loop decides what
happens next.
"""

from __future__ import annotations

import asyncio
import logging
import time

from opentelemetry import trace

from shardgate.adapters.errors import LeaseLost, TransientError
from shardgate.adapters.jetstream import DeltaBus, DeltaMessage
from shardgate.adapters.store import ShardStore
from shardgate.keys import UnitKind, unit_kind, unit_name
from shardgate.model import Wire
from shardgate.records import Notice
from shardgate.telemetry import context_from, link_to, traceparent, tracer

from .batch import BatchPlan, CompileFn, plan_batch
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
        self._contributions: dict[str, dict[str, Wire]] = {}

    async def run(self) -> None:
        state = await self.store.load_shard(self.shard)
        revision, seq, hashes = state.revision, state.seq, state.hashes
        consumer = await self.bus.shard_consumer(self.shard, after_seq=seq, owner=self.token)
        log.info("shard %d: resumed at revision %d, stream seq %d", self.shard, revision, seq)
        try:
            while not self.stopping:
                messages = await consumer.fetch(self.settings.batch_size, self.settings.fetch_timeout_s)
                if not messages:
                    continue
                started = time.time_ns()
                await self._load_missing(messages)
                plan = plan_batch(messages, seq, revision, hashes, self._contributions, self.compile_unit)
                spans = self._start_spans(plan, started)
                await self._commit(plan)
                # Only a successful commit moves the in-memory state.
                seq = plan.commit.seq
                self._contributions.update(plan.new_contributions)
                for unit, h in plan.new_hashes.items():
                    if h is None:
                        hashes.pop(unit, None)
                    else:
                        hashes[unit] = h
                if plan.commit.revision is not None:
                    revision = plan.commit.revision
                    notice = Notice(self.shard, revision, tuple(plan.changed_units), plan.commit.traces)
                    await self.bus.publish_notice(notice)
                await consumer.ack()
                for span in spans:
                    span.set_attribute("sg.revision", revision)
                    span.end()
        finally:
            await consumer.close()

    async def _load_missing(self, messages: list[DeltaMessage]) -> None:
        # Not `set - dict.keys()`: CPython computes that by iterating over every key of the dict (every
        # unit the shard has cached: seen as a fifth of a compiler's time in a burst at 100k).
        known = self._contributions
        missing = {m.delta.unit for m in messages if m.delta and m.delta.unit not in known}
        if missing:
            self._contributions.update(await self.store.load_contributions(self.shard, missing))

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
