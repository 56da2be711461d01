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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgpack

from shardgate.keys import SourceKind
from shardgate.model import Contribution
from shardgate.records import Delta, RecordError, content_hash


def contribution_hash(contribution: Contribution) -> str:
    """The version of one contribution: the hash of its wire form (which is deterministic)."""
    return content_hash(msgpack.packb(contribution.to_wire(), use_bin_type=True))


@dataclass(frozen=True, slots=True)
class SourceEntry:
    """One source as last published: its resourceVersion, unit → contribution hash, and how many
    changes of it were published (`seq`). An entry may have no units: an Ingress that exists but has
    no admitted host keeps its `seq`."""

    rv: str
    units: Mapping[str, str]
    seq: int = 0

    def encode(self) -> bytes:
        return msgpack.packb({"rv": self.rv, "u": dict(self.units), "n": self.seq}, use_bin_type=True)  # type: ignore[no-any-return]

    @staticmethod
    def decode(data: bytes) -> SourceEntry:
        try:
            o = msgpack.unpackb(data, raw=False)
            return SourceEntry(str(o["rv"]), {str(k): str(v) for k, v in o["u"].items()}, int(o.get("n", 0)))
        except Exception as exc:  # msgpack raises several unrelated types
            raise RecordError(f"index entry: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Change:
    """The deltas one source needs, and the entry to record once they are all acknowledged."""

    source: str
    deltas: tuple[Delta, ...]
    entry: SourceEntry | None  # None: the source contributes nothing any more; drop it


def source_kind_of(source: str) -> SourceKind:
    return SourceKind(source.partition("/")[0])


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
        contributions: Mapping[str, Contribution] | None,
        observed_ns: int = 0,
    ) -> Change:
        """The deltas that take `source` from what was published to `contributions` (None: the source
        is gone, or contributes nothing of its own accord; {}: it exists but nothing is admitted).

        A tombstone carries `rv` when the source still exists (it dropped a unit at that version) and
        the last published rv when the source is gone, so every watcher that notices the same deletion
        publishes the same message id.
        """
        old = self._entries.get(source)
        old_units: Mapping[str, str] = old.units if old is not None else {}
        seq = (old.seq if old is not None else 0) + 1
        new_units: dict[str, str] = {}
        deltas: list[Delta] = []
        for unit, contribution in sorted((contributions or {}).items()):
            digest = contribution_hash(contribution)
            new_units[unit] = digest
            if old_units.get(unit) != digest:
                deltas.append(
                    Delta(unit, source, f"{rv}.{seq}.{digest[:8]}", contribution.to_wire(), observed_ns)
                )
        tombstone_rv = rv if contributions is not None or old is None else old.rv
        for unit in sorted(old_units):
            if unit not in new_units:
                deltas.append(Delta(unit, source, f"{tombstone_rv}.{seq}", None, observed_ns))
        if contributions is None or (not new_units and old is None):
            return Change(source, tuple(deltas), None)
        if not deltas and old is not None:
            # Nothing to publish: keep the recorded version, so a status write costs no Redis write.
            return Change(source, (), old)
        return Change(source, tuple(deltas), SourceEntry(rv, new_units, seq))

    def relist(
        self,
        kind: SourceKind,
        listed: Mapping[str, tuple[str, Mapping[str, Contribution]]],
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
