"""The pure core of the compiler: one batch of a shard's deltas in, one commit out.

Deltas are applied in stream order; several changes to one unit in a batch cost one compilation (the
last state wins). A delta at or below the shard's applied sequence is a redelivery and changes nothing.
A unit whose fragment hash did not change is neither rewritten nor announced. A unit that fails to
compile keeps its last good fragment and is reported with its key: one bad unit never stops its shard.

The shard's state comes in as the worker holds it (`held.py`): each unit's contributions packed, its
fragment hash as a digest. Only the touched units are unpacked, and their new state comes out packed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from shardgate.adapters.jetstream import DeltaMessage
from shardgate.adapters.store import Commit
from shardgate.model import Contribution
from shardgate.records import Fragment, decode_contribution

from .held import Digest, PackedSources, Sources, digest, pack_sources, sole_source, unpack_sources

log = logging.getLogger(__name__)

CompileFn = Callable[[str, Mapping[str, Contribution]], Fragment]


@dataclass(slots=True)
class UnitChange:
    """What one batch did to one unit, for tracing and notices."""

    unit: str
    traceparents: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    changed: bool = False
    error: str | None = None


@dataclass(slots=True)
class BatchPlan:
    commit: Commit
    units: dict[str, UnitChange]  # every unit a delta touched
    # touched units' sources after it, as the worker holds them (None: none left, or a unit with one
    # source only, never held: `held.sole_source`)
    new_contributions: dict[str, PackedSources | None]
    new_hashes: dict[str, Digest | None]  # changed units' fragment hashes (None: deleted)
    skipped: int = 0  # redelivered deltas

    @property
    def changed_units(self) -> list[str]:
        return sorted(u for u, c in self.units.items() if c.changed)


def plan_batch(
    messages: list[DeltaMessage],
    applied_seq: int,
    revision: int,
    hashes: Mapping[str, Digest],
    contributions: Mapping[str, PackedSources],
    compile_unit: CompileFn,
) -> BatchPlan:
    """Apply `messages` on top of the shard's state. A touched unit missing from `contributions` is
    planned as having none, and listed in `commit.assumed_empty` for the commit to check (except a
    delta from the one source its unit's kind allows: it is all the unit's input)."""
    units: dict[str, UnitChange] = {}
    new_contrib: dict[str, Sources] = {}
    commit = Commit(seq=applied_seq)
    skipped = 0
    for m in messages:
        commit.seq = max(commit.seq, m.seq)
        if m.seq <= applied_seq:
            skipped += 1
            continue
        if m.delta is None:
            continue
        d = m.delta
        change = units.setdefault(d.unit, UnitChange(d.unit))
        if m.traceparent:
            change.traceparents.append(m.traceparent)
        change.sources.append(d.source)
        whole = d.source == sole_source(d.unit)  # the delta is all of its unit's input
        if d.unit not in new_contrib:
            held = contributions.get(d.unit)
            if held is None and not whole:
                commit.assumed_empty.append(d.unit)
            new_contrib[d.unit] = unpack_sources(held)
        sources = new_contrib[d.unit]
        if d.body is None:
            sources.pop(d.source, None)
        else:
            sources[d.source] = d.body
        # Such a delta is never read back, so it is not stored (a deletion instead, which also clears
        # what a version that stored them left behind).
        commit.contributions.setdefault(d.unit, {})[d.source] = None if whole else d.body

    new_hashes: dict[str, Digest | None] = {}
    packed: dict[str, PackedSources | None] = {}
    for unit, change in units.items():
        kept = bool(new_contrib[unit]) and sole_source(unit) is None
        packed[unit] = pack_sources(new_contrib[unit]) if kept else None
        try:
            decoded = {src: decode_contribution(src, w) for src, w in new_contrib[unit].items()}
            fragment = compile_unit(unit, decoded)
        except Exception as exc:  # a bad unit must not stop the shard: keep its last good fragment
            change.error = f"{type(exc).__name__}: {exc}"
            log.error("unit %s (from %s) failed to compile: %s", unit, ", ".join(change.sources), exc)
            continue
        deleted = not fragment.resources and not fragment.meta
        new_hash = None if deleted else fragment.hash
        new_digest = None if new_hash is None else digest(new_hash)
        if new_digest == hashes.get(unit):
            continue
        change.changed = True
        new_hashes[unit] = new_digest
        commit.fragments[unit] = None if new_hash is None else (fragment.encode(), new_hash)
    if commit.fragments:
        commit.revision = revision + 1
    return BatchPlan(commit, units, packed, new_hashes, skipped)
