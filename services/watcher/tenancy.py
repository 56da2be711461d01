"""Host ownership between namespaces: the first namespace to claim a host owns it.

Pure (the caller passes the time, and persists `dirty` records through `store.py`). The watcher sees
every Ingress, so it is the one place that can decide, before anything is published, whether an
Ingress may route a host at all.

- A *claim* is an Ingress of ours naming a host — valid or not, so that a typo in the owner's
  Ingress never hands its host to somebody else. The catch-all host (`model.CATCH_ALL_HOST`) is a host
  like any other here, optionally restricted to some namespaces.
- Hosts *conflict* when they are equal, or one is a wildcard covering the other (`*.foo.com` covers
  `bar.foo.com`: exactly one label). An Ingress is admitted for a host only if no *other* namespace owns
  a conflicting host — unless that owner allows it: the owner's Ingress that names the host carries
  `shardgate.io/allow-host-sharing-with: ns-b,ns-c`. A guest never becomes the owner by sharing, and
  an owner is always admitted for its own host (sharing `foo.com`'s neighbour `x.foo.com` may let the
  guest own `*.foo.com`; that never takes `x.foo.com` from its owner, and exact beats wildcard).
- An unowned host goes to the claimant that has waited longest (the time the watcher first saw its
  claim, then its oldest Ingress's creationTimestamp, then the namespace name), among claimants no
  conflicting owner blocks. On a fresh start every claim is seen at once, so the oldest Ingress wins.
- Ownership moves only when the owner releases the host: no Ingress of the owner has named it for
  `grace` (so a tenant that deletes and re-creates its Ingress — `kubectl replace --force`, a helm
  reinstall — does not hand its host to whoever waits; nothing routes the host meanwhile). Records
  (owner, when it stopped claiming, waiting claimants with their `since`) are persisted next to the
  published index, so a restart, a re-list or a failover keeps the owner, the grace and the queue.

Conflicts between Ingresses of the owning namespace are not decided here: the merge decides them
(oldest wins) and the watcher tells the loser.

Memory: this holds a few entries per Ingress, so the common case is kept small. A host claimed by one
Ingress (and a parent domain with one exact host) maps to that one string, not to a set of one (216
bytes); a claim's hosts are a tuple; a record with nobody waiting shares one empty, read-only mapping,
and `waiting` is replaced, never changed in place.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import msgpack

from shardgate.model import CATCH_ALL_HOST
from shardgate.records import RecordError

SHARING_ANNOTATION = "shardgate.io/allow-host-sharing-with"


@dataclass(frozen=True, slots=True)
class Claim:
    """One Ingress's claim: the hosts it names (any collection; the watcher passes a tuple) and whom it
    lets share them."""

    namespace: str
    created: str
    hosts: Collection[str]
    sharing: frozenset[str] = frozenset()


NO_WAITING: Mapping[str, int] = MappingProxyType({})
"""The `waiting` of every record nobody waits for: one shared mapping, read-only so that it cannot be
changed in place by mistake."""


@dataclass(slots=True)
class HostRecord:
    """The persisted state of one host: its owner ("" when none) and who waits since when (epoch ns).
    `waiting` is replaced, never changed in place (it may be the shared `NO_WAITING`)."""

    owner: str = ""
    waiting: Mapping[str, int] = field(default_factory=lambda: NO_WAITING)
    released: int = 0  # when the owner stopped naming the host (epoch ns); 0 while it names it

    def encode(self) -> bytes:
        o = {"o": self.owner, "w": dict(self.waiting), "r": self.released}
        return msgpack.packb(o, use_bin_type=True)  # type: ignore[no-any-return]

    def copy(self) -> HostRecord:
        return HostRecord(self.owner, self.waiting, self.released)  # `waiting` is never changed in place

    def wait(self, namespace: str, since: int) -> None:
        self.waiting = {**self.waiting, namespace: since}

    @staticmethod
    def decode(data: bytes) -> HostRecord:
        try:
            o = msgpack.unpackb(data, raw=False)
            waiting = {str(k): int(v) for k, v in o["w"].items()}
            return HostRecord(str(o["o"]), waiting or NO_WAITING, int(o.get("r", 0)))
        except Exception as exc:  # msgpack raises several unrelated types
            raise RecordError(f"host record: {exc}") from exc


def _add(index: dict[str, str | set[str]], key: str, member: str) -> None:
    """Add `member` to `key`'s members: the member itself while it is the only one, else a set."""
    have = index.get(key)
    if have is None:
        index[key] = member
    elif isinstance(have, str):
        if have != member:
            index[key] = {have, member}
    else:
        have.add(member)


def _discard(index: dict[str, str | set[str]], key: str, member: str) -> None:
    have = index.get(key)
    if have is None:
        return
    if isinstance(have, str):
        if have == member:
            del index[key]
        return
    have.discard(member)
    if len(have) == 1:
        index[key] = next(iter(have))
    elif not have:
        del index[key]


def _members(index: dict[str, str | set[str]], key: str) -> Collection[str]:
    have = index.get(key)
    if have is None:
        return ()
    return (have,) if isinstance(have, str) else have


def parent(host: str) -> str:
    """`bar.foo.com` → `foo.com`; the domain a wildcard would have to name to cover the host."""
    return host.partition(".")[2]


class Tenancy:
    def __init__(self, catch_all_namespaces: Iterable[str] = (), grace_ns: int = 0) -> None:
        self.catch_all_namespaces = frozenset(catch_all_namespaces)  # empty: any namespace may claim it
        self.grace_ns = grace_ns
        self._releasing: set[str] = set()  # hosts whose owner stopped naming them, within the grace
        self._sharing_changed: set[str] = set()  # hosts whose owner changed whom it lets share them
        self._claims: dict[str, Claim] = {}  # source -> claim
        self._by_host: dict[str, str | set[str]] = {}  # host -> sources claiming it (see `_add`)
        self._records: dict[str, HostRecord] = {}
        self._exact_by_parent: dict[str, str | set[str]] = {}  # parent domain -> exact hosts claimed/owned
        self.dirty: set[str] = set()  # hosts whose record changed since the last `take_dirty`

    # -- state in ----------------------------------------------------------------------------------

    def load(self, records: Mapping[str, HostRecord], now: int) -> None:
        """Replace the records with the persisted ones (a new leader's first step); claims the records
        do not know yet start waiting `now`."""
        old, self._records = self._records, {}
        for host in old:
            self._untrack(host)
        self._records = {h: r.copy() for h, r in records.items()}
        self._releasing = {h for h, r in self._records.items() if r.released}
        for host in self._records:
            self._track(host)
        self.dirty.clear()
        for claim in self._claims.values():
            for host in claim.hosts:
                record = self._records.setdefault(host, HostRecord())
                if record.owner != claim.namespace and claim.namespace not in record.waiting:
                    record.wait(claim.namespace, now)
                    self.dirty.add(host)

    def known_hosts(self) -> set[str]:
        """Every host claimed or on record: what a leader settles after loading."""
        return set(self._records) | set(self._by_host)

    def set_claim(self, source: str, claim: Claim | None, now: int) -> set[str]:
        """Record what `source` claims now (None: nothing); returns the hosts to `settle` (none when the
        claim is the one already recorded: nothing about its hosts changed)."""
        old = self._claims.get(source)
        if claim is not None and not claim.hosts:
            claim = None
        if old == claim:
            return set()
        new_hosts = set(claim.hosts) if claim is not None else set()
        touched = set(old.hosts) if old else set()
        touched |= new_hosts
        owned = {h for h in touched if self.owner(h)}
        sharing_before = {h: self.sharing(self.owner(h), h) for h in owned}
        self._claims.pop(source, None)
        if claim is not None:
            self._claims[source] = claim
            for host in claim.hosts:
                _add(self._by_host, host, source)
                self._track(host)
                record = self._records.setdefault(host, HostRecord())
                if record.owner != claim.namespace and claim.namespace not in record.waiting:
                    record.wait(claim.namespace, now)
                    self.dirty.add(host)
        if old is not None:
            for host in set(old.hosts) - new_hosts:
                _discard(self._by_host, host, source)
        self._sharing_changed |= {h for h in owned if self.sharing(self.owner(h), h) != sharing_before[h]}
        return touched

    def due(self, now: int) -> set[str]:
        """Hosts whose release grace is over: `settle` them."""
        return {
            h for h in self._releasing if (r := self._records.get(h)) and now - r.released >= self.grace_ns
        }

    def next_due(self) -> int | None:
        """When the next release grace ends (epoch ns), if any host is in one."""
        ends = [r.released + self.grace_ns for h in self._releasing if (r := self._records.get(h))]
        return min(ends, default=None)

    def settle(self, hosts: Iterable[str], now: int) -> set[str]:
        """Release hosts their owner has not claimed for the grace, give unowned hosts to the longest
        waiting admissible claimant, drop waiters that stopped claiming. Returns the hosts whose
        claimants' admission may have changed: those whose owner (or owner's sharing) changed, and
        the hosts conflicting with them."""
        shared, self._sharing_changed = self._sharing_changed, set()
        # Sharing changes what conflicting hosts' claimants may do: settle those too.
        start = set(hosts) | shared | {c for h in shared for c in self.conflicting(h)}
        work = deque(sorted(start, key=self._priority))
        queued = set(work)
        changed: set[str] = set()
        visits: dict[str, int] = {}
        while work:
            host = work.popleft()
            queued.discard(host)
            visits[host] = visits.get(host, 0) + 1
            if visits[host] > 4:  # an owner change can only unblock a neighbour so often: stop a cycle
                continue
            if self._settle_one(host, now):
                changed.add(host)
                for other in sorted(self.conflicting(host) - queued):
                    work.append(other)
                    queued.add(other)
        changed |= shared
        return changed | {c for h in changed for c in self.conflicting(h)}

    def _priority(self, host: str) -> tuple[int, str, str]:
        """Settle the host with the longest-waiting claim first, so that arrival order decides."""
        record = self._records.get(host) or HostRecord()
        claimants = self.claimants(host)
        return min(((record.waiting.get(ns, 0), created, host) for ns, created in claimants.items()),
                   default=(0, "", host))  # fmt: skip

    def _settle_one(self, host: str, now: int) -> bool:
        record = self._records.get(host)
        if record is None:
            return False
        claimants = self.claimants(host)
        before = (record.owner, record.waiting, record.released)
        if record.owner and record.owner not in claimants:
            record.released = record.released or now
            if now - record.released >= self.grace_ns:
                record.owner, record.released = "", 0
        else:
            record.released = 0
        if record.released:
            self._releasing.add(host)
        else:
            self._releasing.discard(host)
        if any(ns not in claimants or ns == record.owner for ns in record.waiting):
            waiting = {ns: t for ns, t in record.waiting.items() if ns in claimants and ns != record.owner}
            record.waiting = waiting or NO_WAITING
        if not record.owner and claimants:
            candidates = [ns for ns in claimants if self._blocked(ns, host, include_self=False) is None]
            if candidates:
                winner = min(candidates, key=lambda ns: (record.waiting.get(ns, 0), claimants[ns], ns))
                record.owner = winner
                if winner in record.waiting:
                    record.waiting = {ns: t for ns, t in record.waiting.items() if ns != winner} or NO_WAITING
        if (record.owner, record.waiting, record.released) != before:
            self.dirty.add(host)
        if not record.owner and not record.waiting and not claimants:
            del self._records[host]
            self._untrack(host)
            self.dirty.add(host)
        return record.owner != before[0]

    # -- questions ---------------------------------------------------------------------------------

    def owner(self, host: str) -> str:
        record = self._records.get(host)
        return record.owner if record else ""

    def claimants(self, host: str) -> dict[str, str]:
        """namespace → its oldest claiming Ingress's creationTimestamp."""
        out: dict[str, str] = {}
        for source in _members(self._by_host, host):
            claim = self._claims[source]
            if claim.namespace not in out or claim.created < out[claim.namespace]:
                out[claim.namespace] = claim.created
        return out

    def conflicting(self, host: str) -> set[str]:
        """Hosts known here (claimed or owned) that conflict with `host`, other than itself."""
        if host == CATCH_ALL_HOST:
            return set()
        if host.startswith("*."):
            return set(_members(self._exact_by_parent, host[2:]))
        wildcard = f"*.{parent(host)}"
        return {wildcard} if wildcard in self._records or wildcard in self._by_host else set()

    def admits(self, namespace: str, host: str) -> str | None:
        """None when `namespace` may route `host` now, else the reason it may not."""
        return self._blocked(namespace, host, include_self=True)

    def _blocked(self, namespace: str, host: str, include_self: bool) -> str | None:
        if (
            host == CATCH_ALL_HOST
            and self.catch_all_namespaces
            and namespace not in self.catch_all_namespaces
        ):
            return "the catch-all (rules without a host, defaultBackend) is reserved for other namespaces"
        if self.owner(host) == namespace:
            return None  # an owner keeps its host even when sharing let a neighbour own a wildcard over it
        others = sorted(self.conflicting(host))
        for other in ([host] if include_self else []) + others:
            owner = self.owner(other)
            if not owner or owner == namespace or namespace in self.sharing(owner, other):
                continue
            if other == host:
                return (
                    f"host {host} is owned by namespace {owner}; it is routed only from there unless "
                    f"{owner} lists {namespace} in {SHARING_ANNOTATION} on its Ingress"
                )
            return f"host {host} conflicts with {other}, which namespace {owner} owns"
        if include_self and not self.owner(host):
            return f"host {host} has no owner yet"  # transient: settle() runs before publishing
        return None

    def sharing(self, owner: str, host: str) -> frozenset[str]:
        """The namespaces `owner`'s Ingresses naming `host` let share it."""
        out: set[str] = set()
        for source in _members(self._by_host, host):
            claim = self._claims[source]
            if claim.namespace == owner:
                out |= claim.sharing
        return frozenset(out)

    def sources(self, hosts: Iterable[str]) -> set[str]:
        """The Ingresses claiming any of `hosts`."""
        return {s for h in hosts for s in _members(self._by_host, h)}

    def record(self, host: str) -> HostRecord | None:
        return self._records.get(host)

    def take_dirty(self) -> dict[str, HostRecord | None]:
        """The records to persist (None: delete), and forget that they were dirty."""
        out = {h: self._records.get(h) for h in sorted(self.dirty)}
        self.dirty.clear()
        return out

    # -- bookkeeping -------------------------------------------------------------------------------

    def _track(self, host: str) -> None:
        if not host.startswith("*.") and host != CATCH_ALL_HOST:
            _add(self._exact_by_parent, parent(host), host)

    def _untrack(self, host: str) -> None:
        if host in self._records or host in self._by_host:
            return
        _discard(self._exact_by_parent, parent(host), host)
