"""Keeps the pusher's cache equal to Redis: snapshot at start, then change notices, healing any gap.

Notices are hints over core NATS (at most once). Each carries the shard's new revision; the follower
knows the revision it holds per shard, so a notice that skips ahead reveals a gap, healed from the
shard's change log (the units changed since), or from the shard's snapshot when the log no longer
reaches back. A periodic revision check catches a gap no later notice would reveal (a lost last notice,
a NATS outage). Fragments are relayed as the compiler wrote them: nothing is rebuilt here.

One task, the drain, changes the cache and the revisions held: notices and the revision check's heals
alike go through it, so two reads of one shard never interleave (a slower one landing last would put
older fragments back and move the revision held backwards).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from opentelemetry import trace

from shardgate import heap
from shardgate.adapters.jetstream import DeltaBus
from shardgate.adapters.store import TRANSIENT_REDIS, ShardStore
from shardgate.keys import UnitKind, unit_kind, unit_name
from shardgate.records import Fragment, Notice, RecordError
from shardgate.telemetry import context_from, traceparent, tracer

from .cache import ResourceCache

log = logging.getLogger(__name__)
_tracer = tracer("shardgate.pusher")


class _FollowOn(NamedTuple):
    """A shard's notices that follow on from the revision held: the units to read and relay."""

    units: list[str]
    traces: dict[str, str]  # unit -> traceparent
    revision: int  # the last notice's
    received_ns: int  # when the first of them arrived (the relay span starts there)
    fragments: dict[str, bytes | None] | None  # the units' fragments, when every notice carried its own


class Follower:
    def __init__(
        self, store: ShardStore, bus: DeltaBus, cache: ResourceCache, shards: int, resync_s: float = 2.0
    ) -> None:
        self.store = store
        self.bus = bus
        self.cache = cache
        self.shards = shards
        self.resync_s = resync_s
        self.revisions = [0] * shards
        self.units: list[set[str]] = [set() for _ in range(shards)]  # units held, per shard
        self._pending: dict[int, list[tuple[Notice, int]]] = defaultdict(list)
        self._heal: set[int] = set()  # shards the revision check found behind: the drain catches them up
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = asyncio.Event()

    async def start(self) -> None:
        # Subscribe first so nothing committed during the snapshot load is missed.
        await self.bus.subscribe_notices(self._on_notice)
        started = time.monotonic()
        units = 0
        for shard in range(self.shards):
            units += await self._load_snapshot(shard)
        log.info("loaded %d units from %d shards in %.2fs", units, self.shards, time.monotonic() - started)
        heap.trim("loading every shard")  # the raw replies are gone; malloc kept their pages
        self.ready.set()
        self._tasks = [
            asyncio.create_task(self._drain(), name="follower-drain"),
            asyncio.create_task(self._resync(), name="follower-resync"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_notice(self, notice: Notice) -> None:
        self._pending[notice.shard].append((notice, time.time_ns()))
        self._wake.set()

    async def _drain(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, defaultdict(list)
            heal, self._heal = self._heal, set()
            for shard in heal:  # with no notice of its own, a shard is caught up from its change log
                pending.setdefault(shard, [])
            following: dict[int, _FollowOn] = {}
            for shard, notices in pending.items():
                follow_on = self._follows_on(shard, notices)
                if follow_on is not None:
                    following[shard] = follow_on
            if following:
                try:
                    await self._relay_following(following)
                except (*TRANSIENT_REDIS, RecordError) as exc:  # each shard tries again on its own below
                    log.warning("shards %s: reading notified fragments failed: %s", sorted(following), exc)
                else:
                    for shard in following:
                        del pending[shard]
            for shard, notices in pending.items():
                try:
                    await self._catch_up(shard, notices)
                except (*TRANSIENT_REDIS, RecordError) as exc:
                    # The periodic revision check retries; nothing is lost, only late.
                    log.warning("shard %d: catching up failed: %s", shard, exc)
                except Exception:  # one shard's surprise must not stop the pusher following the rest
                    log.exception("shard %d: catching up failed", shard)

    def _follows_on(self, shard: int, notices: list[tuple[Notice, int]]) -> _FollowOn | None:
        """The common case: the shard's notices follow on from the revision held, so their units are all
        that changed. None otherwise (a gap, or only stale notices): `_catch_up` reads the change log."""
        known = self.revisions[shard]
        fresh = sorted((n for n in notices if n[0].revision > known), key=lambda n: n[0].revision)
        revs = [n.revision for n, _ in fresh]
        if not fresh or revs != list(range(known + 1, known + 1 + len(revs))):
            return None
        units = sorted({u for n, _ in fresh for u in n.units})
        traces = {u: tp for n, _ in fresh for u, tp in n.traces.items()}
        fragments: dict[str, bytes | None] | None = {}
        for n, _ in fresh:  # in revision order: a later notice's fragment replaces an earlier one's
            if n.fragments is None or fragments is None or not n.fragments.keys() >= set(n.units):
                fragments = None
                break
            fragments.update(n.fragments)
        return _FollowOn(units, traces, revs[-1], fresh[0][1], fragments)

    async def _relay_following(self, following: dict[int, _FollowOn]) -> None:
        """Every shard that follows on relayed together (so the streams push them together). Fragments
        that came in their notices are taken from there; the rest are read in one Redis round trip: in
        a burst, notices of many shards arrive in one turn of the loop, and a round trip per shard was
        a quarter of the pusher's busy time."""
        unread = {shard: f.units for shard, f in following.items() if f.fragments is None}
        raw = await self.store.fragments(unread) if unread else {}
        for shard, f in following.items():
            got = f.fragments if f.fragments is not None else raw[shard]
            self._relay(shard, got, f.traces, f.revision, f.received_ns)
            self.revisions[shard] = f.revision

    async def _resync(self) -> None:
        seen: dict[int, int] = {}  # shards behind Redis at the last check: the revision Redis had
        while True:
            await asyncio.sleep(self.resync_s)
            try:
                current = await self.store.revisions(self.shards)
            except TRANSIENT_REDIS as exc:
                log.warning("revision check failed: %s", exc)
                continue
            for shard in still_behind(seen, self.revisions):
                log.info(
                    "shard %d: at %d, Redis at %d a check ago: healing",
                    shard,
                    self.revisions[shard],
                    seen[shard],
                )
                self._heal.add(shard)
            if self._heal:
                self._wake.set()
            seen = behind(current, self.revisions)

    async def _catch_up(self, shard: int, notices: list[tuple[Notice, int]]) -> None:
        follow_on = self._follows_on(shard, notices)
        if follow_on is not None:
            await self._relay_following({shard: follow_on})
            return
        known = self.revisions[shard]
        entries = await self.store.log_since(shard, known)
        if entries is None:
            log.info("shard %d: change log does not reach revision %d: taking the snapshot", shard, known)
            await self._load_snapshot(shard)
            return
        if not entries:
            return
        units = sorted({u for e in entries for u in e.units})
        traces = {u: tp for e in entries for u, tp in e.traces.items()}
        raw = (await self.store.fragments({shard: units}))[shard]
        received = min((r for n, r in notices if n.revision > known), default=time.time_ns())
        self._relay(shard, raw, traces, entries[-1].revision, received)
        self.revisions[shard] = entries[-1].revision

    async def _load_snapshot(self, shard: int) -> int:
        rev, raw = await self.store.snapshot(shard)
        changes: dict[str, Fragment | None] = {u: Fragment.decode(b) for u, b in raw.items()}
        # Units this pusher holds that the snapshot no longer has were deleted meanwhile.
        for unit in self.units[shard] - raw.keys():
            changes[unit] = None
        self.cache.apply(changes)
        self.units[shard] = set(raw)
        self.revisions[shard] = rev
        return len(raw)

    def _relay(
        self,
        shard: int,
        raw: dict[str, bytes | None],
        traces: dict[str, str],
        revision: int,
        received_ns: int,
    ) -> None:
        changes = {u: (Fragment.decode(b) if b is not None else None) for u, b in raw.items()}
        spans = []
        relay_traces: dict[str, str] = {}
        for unit in changes:
            tp = traces.get(unit)
            if not tp:
                continue
            span = _tracer.start_span(
                "pusher.relay",
                context=context_from(tp),
                start_time=received_ns,
                attributes={"sg.unit": unit, "sg.shard": shard, "sg.revision": revision},
            )
            if unit_kind(unit) is UnitKind.HOST:
                span.set_attribute("sg.host", unit_name(unit))
            relay_traces[unit] = traceparent(trace.set_span_in_context(span))
            spans.append(span)
        self.cache.apply(changes, relay_traces)
        held = self.units[shard]
        for unit, fragment in changes.items():
            if fragment is None:
                held.discard(unit)
            else:
                held.add(unit)
        for span in spans:
            span.end()


def behind(redis_revisions: Sequence[int], held: Sequence[int]) -> dict[int, int]:
    """The shards whose revision in Redis is past the one held, with Redis's."""
    return {shard: rev for shard, rev in enumerate(redis_revisions) if rev > held[shard]}


def still_behind(seen: Mapping[int, int], held: Sequence[int]) -> list[int]:
    """The shards that have not reached, a whole check later, the revision Redis had for them: a gap.

    Not every shard behind at one check: in a burst, every busy shard has a commit whose notice is on
    its way, and healing those read the change log (and, racing the notice, took whole snapshots) for
    nothing. A shard ahead of Redis (a revision read before the notices that passed it) is not behind."""
    return [shard for shard, rev in seen.items() if held[shard] < rev]
