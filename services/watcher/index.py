"""The index of what has been published, and the exact deltas that bring it up to date.

For every source object (an Ingress, Service, EndpointSlice or TLS Secret) the index holds the
resourceVersion last published and, per unit the source contributes to, the hash of that contribution.
Given what a source contributes now, `Index.diff` returns exactly the deltas the compilers have not
seen: a body for each new or changed unit, a tombstone for each unit the source no longer names, and
nothing for units whose contribution is unchanged — so a status write, a re-list or a restart that
changes nothing publishes nothing.

A delta's version (its `source_rv`, which makes its JetStream `Nats-Msg-Id`) is
`<resourceVersion>.<n>[.<hash>]`: `n` counts the source's published changes (kept in its entry) and
`hash` is the contribution's. The resourceVersion alone is not enough since host ownership decides
what an Ingress may publish: ownership can move and come back while the Ingress stays at one version, and
the second "same" delta must not be dropped as a duplicate. Two watchers diffing the same source against
the same entry still produce the same ids, so a retry or a failover is still deduplicated.

Pure: the watcher publishes a `Change`'s deltas, and only once JetStream has acknowledged all of them
does it `commit` the change here and persist the new entry (`store.py`). A crash in between re-emits the
same deltas with the same `Nats-Msg-Id`, which JetStream's duplicate window drops.

A contribution may be `Withheld`: known by its hash only (a TLS certificate's PEM, which the watcher does
not keep once it is published). It diffs like any other; when its hash is not the published one it cannot
be published, and the diff leaves that unit as it was until the caller holds the body again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, TypeVar

import msgpack

from shardgate.keys import SourceKind
from shardgate.model import Contribution
from shardgate.records import Delta, RecordError, content_hash

_V = TypeVar("_V")


def contribution_hash(contribution: Contribution) -> str:
    """The version of one contribution: the hash of its wire form (which is deterministic)."""
    return content_hash(msgpack.packb(contribution.to_wire(), use_bin_type=True))


@dataclass(frozen=True, slots=True)
class Withheld:
    """A contribution the watcher knows only by its `contribution_hash`: it can be compared with what
    was published, not published itself."""

    digest: str


Held: TypeAlias = Contribution | Withheld
"""A contribution as the watcher keeps it: whole, or withheld."""


class Current(Protocol):
    """What a source contributes now, as the caches keep it: its resourceVersion and contributions."""

    @property
    def rv(self) -> str: ...

    @property
    def contributions(self) -> Mapping[str, Held]: ...


class One(Mapping[str, _V]):
    """A mapping of one key, as nearly every source's units are (an Ingress names one host; a Service,
    an EndpointSlice, a Secret each contribute to their own unit): two slots (48 bytes) instead of a
    one-entry dict (184). The index and the caches hold one or two per source."""

    __slots__ = ("_key", "_value")

    def __init__(self, key: str, value: _V) -> None:
        self._key, self._value = key, value

    def __getitem__(self, key: str) -> _V:
        if key == self._key:
            return self._value
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self._value if key == self._key else default

    def __contains__(self, key: object) -> bool:
        return key == self._key

    def __iter__(self) -> Iterator[str]:
        yield self._key

    def __len__(self) -> int:
        return 1

    def __eq__(self, other: object) -> bool:
        if isinstance(other, One):
            return bool(self._key == other._key and self._value == other._value)
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]  # a mapping, like dict

    def __repr__(self) -> str:
        return f"{{{self._key!r}: {self._value!r}}}"


def compact(mapping: Mapping[str, _V]) -> Mapping[str, _V]:
    """`mapping` as it is kept for long: a `One` when it has one key, else itself."""
    if len(mapping) == 1 and not isinstance(mapping, One):
        ((key, value),) = mapping.items()
        return One(key, value)
    return mapping


@dataclass(frozen=True, slots=True)
class SourceEntry:
    """One source as last published: its resourceVersion, unit → contribution hash, and how many
    changes of it were published (`seq`). An entry may have no units: an Ingress that exists but has
    no admitted host keeps its `seq`. The index holds one per source, so `units` is made `compact`
    where the index builds it."""

    rv: str
    units: Mapping[str, str]
    seq: int = 0

    def encode(self) -> bytes:
        return msgpack.packb({"rv": self.rv, "u": dict(self.units), "n": self.seq}, use_bin_type=True)  # type: ignore[no-any-return]

    @staticmethod
    def decode(data: bytes) -> SourceEntry:
        try:
            o = msgpack.unpackb(data, raw=False)
            units = compact({str(k): str(v) for k, v in o["u"].items()})
            return SourceEntry(str(o["rv"]), units, int(o.get("n", 0)))
        except Exception as exc:  # msgpack raises several unrelated types
            raise RecordError(f"index entry: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Change:
    """The deltas one source needs, and the entry to record once they are all acknowledged."""

    source: str
    deltas: tuple[Delta, ...]
    entry: SourceEntry | None  # None: the source contributes nothing any more; drop it


_KINDS = {str(k): k for k in SourceKind}


def source_kind_of(source: str) -> SourceKind:
    # A dict lookup: the enum's own constructor costs ~1 µs, and this is asked several times per change.
    prefix = source.partition("/")[0]
    return _KINDS.get(prefix) or SourceKind(prefix)


class Index:
    """source key → SourceEntry, with exact diffs."""

    def __init__(self, entries: Mapping[str, SourceEntry] | None = None) -> None:
        self._entries: dict[str, SourceEntry] = dict(entries or {})

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, source: str) -> SourceEntry | None:
        return self._entries.get(source)

    def sources(self, kind: SourceKind | None = None) -> set[str]:
        if kind is None:
            return set(self._entries)
        prefix = f"{kind}/"
        return {s for s in self._entries if s.startswith(prefix)}

    def diff(
        self,
        source: str,
        rv: str,
        contributions: Mapping[str, Held] | None,
        observed_ns: int = 0,
    ) -> Change:
        """The deltas that take `source` from what was published to `contributions` (None: the source
        is gone, or contributes nothing of its own accord; {}: it exists but nothing is admitted).

        A tombstone carries `rv` when the source still exists (it dropped a unit at that version) and
        the last published rv when the source is gone, so every watcher that notices the same deletion
        publishes the same message id. A `Withheld` contribution whose hash is not the published one
        gets no delta, and its unit keeps its published hash (or stays absent) in the entry.
        """
        old = self._entries.get(source)
        old_units: Mapping[str, str] = old.units if old is not None else {}
        seq = (old.seq if old is not None else 0) + 1
        new_units: dict[str, str] = {}
        deltas: list[Delta] = []
        for unit, contribution in sorted((contributions or {}).items()):
            published = old_units.get(unit)
            if isinstance(contribution, Withheld):
                if published is not None:
                    new_units[unit] = published  # unchanged, or not publishable until the body is back
                continue
            wire = contribution.to_wire()  # once: hashed, and the body if it changed
            digest = content_hash(msgpack.packb(wire, use_bin_type=True))
            new_units[unit] = digest
            if published != digest:
                deltas.append(Delta(unit, source, f"{rv}.{seq}.{digest[:8]}", wire, observed_ns))
        tombstone_rv = rv if contributions is not None or old is None else old.rv
        for unit in sorted(old_units):
            if unit not in new_units:
                deltas.append(Delta(unit, source, f"{tombstone_rv}.{seq}", None, observed_ns))
        if contributions is None or (not new_units and old is None):
            return Change(source, tuple(deltas), None)
        if not deltas and old is not None:
            # Nothing to publish: keep the recorded version, so a status write costs no Redis write.
            return Change(source, (), old)
        return Change(source, tuple(deltas), SourceEntry(rv, compact(new_units), seq))

    def relist(
        self,
        kind: SourceKind,
        listed: Mapping[str, tuple[str, Mapping[str, Held]]],
        observed_ns: int = 0,
    ) -> list[Change]:
        """Diff a complete listing of one kind (source → (rv, contributions)) against the index.

        Sources listed get their usual diff; sources of that kind the index has but the listing does
        not were deleted while nobody watched, and get tombstones for all their units.
        """
        changes = [self.diff(src, rv, c, observed_ns) for src, (rv, c) in sorted(listed.items())]
        for src in sorted(self.stale_sources(kind, listed)):
            changes.append(self.diff(src, "", None, observed_ns))
        return [c for c in changes if c.deltas or c.entry != self._entries.get(c.source)]

    def stale_sources(self, kind: SourceKind, present: Iterable[str]) -> set[str]:
        """Sources of `kind` in the index that are not in `present`."""
        return self.sources(kind) - set(present)

    def commit(self, change: Change) -> None:
        if change.entry is None:
            self._entries.pop(change.source, None)
        else:
            self._entries[change.source] = change.entry
