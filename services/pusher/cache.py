"""The pusher's view of the compiled state: every unit's fragment, indexed by resource, and its watchers.

The compiler already built and serialized every resource; this cache only indexes the bytes by
(type URL, name) and tells the ADS streams *which names* changed. `apply` costs what the change costs:
it compares the old and new fragment of each changed unit (never the whole state), bumps a revision per
type touched, and hands each watcher the changed names with the trace of the change that caused them.
Streams look the current bytes up when they send, so changes that pile up while a stream is busy
collapse into one push.

Resource names are global in Envoy but owned by units here; a unit cannot take a name another unit (or
the static listeners) already owns. The clash is logged and counted, the first owner keeps the name,
and the contender takes it over when the owner lets go — all without scanning other units.

Secrets are the exception to "a resource is what a unit compiled": gateways ask for a certificate by
SNI, so secret units go into a `CertificateIndex` (with each host's `tls_secret`) instead of the
resource table, `get(SECRET, sni)` resolves the SNI through it, and a change is reported under the
Secret type as the *host patterns* whose answer changed (`shop.example.com`, `*.wild.example.com`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import NamedTuple

from shardgate.keys import UnitKind, shard_of, unit_kind, unit_name
from shardgate.model import Wire
from shardgate.records import Fragment, Resource
from shardgate.xds.types import SECRET

from .certs import CertificateIndex, Resolution
from .metrics import NAME_CLASHES, SNI_ANSWERS, short_type

log = logging.getLogger(__name__)

STATIC_OWNER = ""  # owner of the resources the pusher serves itself; no unit key is empty


class Origin(NamedTuple):
    """Which unit's change touched a resource, and that change's W3C traceparent ("" if untraced)."""

    unit: str
    traceparent: str


# type URL -> resource name -> origin of the change. Names whose resource is gone are removals.
Changes = Mapping[str, Mapping[str, Origin]]
Watcher = Callable[[Changes], None]
_Key = tuple[str, str]


# What the cache reads of a host fragment's meta (`_index_host`): the rest (the host's own name,
# conflicts, ignored and rejected paths) is for the watcher's status reports, and a dict per host held
# for nothing was ~20 % of the cache at 100k hosts.
_HOST_META = "tls_secret"
_NO_META: Wire = {}


def _slim_host(fragment: Fragment) -> Fragment:
    """A host's fragment as the cache keeps it: its meta cut to what the cache reads."""
    if not fragment.meta:
        return fragment
    secret = fragment.meta.get(_HOST_META)
    return Fragment(fragment.unit, fragment.resources, {_HOST_META: secret} if secret else _NO_META)


class ResourceCache:
    """Fragments by unit and resources by (type URL, name); not thread-safe: one event loop owns it."""

    def __init__(self, static_resources: Iterable[Resource] = (), shards: int | None = None) -> None:
        self._by_type: dict[str, dict[str, Resource]] = {}
        self._owner: dict[_Key, str] = {}
        self._contenders: dict[_Key, set[str]] = {}
        self._fragments: dict[str, Fragment] = {}
        self._revisions: dict[str, int] = {}
        self._watchers: dict[int, Watcher] = {}
        self._next_watch = 0
        self.shards = shards  # only to label spans with a unit's shard
        self.certs = CertificateIndex(lambda host: f"{UnitKind.HOST}:{host}" in self._fragments)
        changed: dict[str, dict[str, Origin]] = {}
        for res in static_resources:
            self._claim(res, STATIC_OWNER, Origin(STATIC_OWNER, ""), changed)
        for type_url in changed:
            self._revisions[type_url] = 1

    # -- reads ---------------------------------------------------------------------------------------

    def get(self, type_url: str, name: str) -> Resource | None:
        if type_url == SECRET:
            return self.resolve_sni(name).resource
        by_name = self._by_type.get(type_url)
        return None if by_name is None else by_name.get(name)

    def resolve_sni(self, sni: str) -> Resolution:
        """The certificate a gateway gets for an SNI (a Secret named by the SNI), or why there is none."""
        resolution = self.certs.resolve(sni)
        SNI_ANSWERS.labels(resolution.outcome).inc()
        return resolution

    def resources(self, type_url: str) -> Mapping[str, Resource]:
        """Every resource of a type, read-only (a view, not a copy)."""
        return MappingProxyType(self._by_type.get(type_url, {}))

    def revision(self, type_url: str) -> int:
        """Bumped by every apply that changes a resource of this type: SotW's `version_info`."""
        return self._revisions.get(type_url, 0)

    def fragment(self, unit: str) -> Fragment | None:
        return self._fragments.get(unit)

    def unit_count(self) -> int:
        return len(self._fragments)

    def owner(self, type_url: str, name: str) -> str | None:
        return self._owner.get((type_url, name))

    def shard_of(self, unit: str) -> int | None:
        return None if self.shards is None or not unit else shard_of(unit, self.shards)

    # -- watches -------------------------------------------------------------------------------------

    def watch(self, watcher: Watcher) -> Callable[[], None]:
        """Call `watcher` with the changed names after every apply that changes something; returns cancel."""
        key = self._next_watch
        self._next_watch += 1
        self._watchers[key] = watcher

        def cancel() -> None:
            self._watchers.pop(key, None)

        return cancel

    # -- writes --------------------------------------------------------------------------------------

    def apply(self, changes: Mapping[str, Fragment | None], traces: Mapping[str, str] = {}) -> Changes:
        """Replace (or, with None or an empty fragment, remove) units' fragments; wake watchers.

        Returns what changed: type URL -> name -> origin. A fragment equal to the one held changes nothing.
        """
        changed: dict[str, dict[str, Origin]] = {}
        for unit, fragment in changes.items():
            self._apply_unit(unit, fragment, Origin(unit, traces.get(unit, "")), changed)
        if changed:
            for type_url in changed:
                self._revisions[type_url] = self._revisions.get(type_url, 0) + 1
            for watcher in list(self._watchers.values()):
                watcher(changed)
        return changed

    def _apply_unit(
        self, unit: str, fragment: Fragment | None, origin: Origin, changed: dict[str, dict[str, Origin]]
    ) -> None:
        if not unit:
            raise ValueError("a unit key cannot be empty")
        kind = unit_kind(unit)
        if kind is UnitKind.SECRET:
            self._apply_secret(unit, fragment, origin, changed)
            return
        old = self._fragments.pop(unit, None)
        if kind is UnitKind.HOST:
            if fragment is not None:
                fragment = _slim_host(fragment)
            self._index_host(unit, old, fragment, origin, changed)
        new_keys: set[_Key] = set()
        if fragment is not None and fragment.resources:
            self._fragments[unit] = fragment
            new_keys = {(r.type_url, r.name) for r in fragment.resources}
        if old is not None:
            for res in old.resources:
                key = (res.type_url, res.name)
                if key not in new_keys:
                    self._release(key, unit, origin, changed)
        if fragment is not None:
            for res in fragment.resources:
                self._claim(res, unit, origin, changed)

    def _apply_secret(
        self, unit: str, fragment: Fragment | None, origin: Origin, changed: dict[str, dict[str, Origin]]
    ) -> None:
        if fragment is not None and (fragment.resources or fragment.meta):
            self._fragments[unit] = fragment
        else:
            fragment = None
            self._fragments.pop(unit, None)
        for host in self.certs.set_secret(unit, fragment):
            changed.setdefault(SECRET, {})[host] = origin

    def _index_host(
        self,
        unit: str,
        old: Fragment | None,
        new: Fragment | None,
        origin: Origin,
        changed: dict[str, dict[str, Origin]],
    ) -> None:
        exists = new is not None and bool(new.resources)
        secret = new.meta.get("tls_secret") if new is not None and exists else None
        host = unit_name(unit)
        tls_changed = self.certs.set_host(host, secret)
        # A host appearing or going under a TLS wildcard moves its SNI too (an exact host wins).
        if tls_changed or (exists != (old is not None) and self.certs.has_wildcard_for(host)):
            changed.setdefault(SECRET, {})[host] = origin

    def _claim(self, res: Resource, unit: str, origin: Origin, changed: dict[str, dict[str, Origin]]) -> None:
        key = (res.type_url, res.name)
        owner = self._owner.get(key)
        if owner is not None and owner != unit:
            contenders = self._contenders.setdefault(key, set())
            if unit not in contenders:
                contenders.add(unit)
                NAME_CLASHES.labels(short_type(res.type_url)).inc()
                log.warning(
                    "resource name clash: %s %r of unit %r is already owned by %r; keeping the owner's",
                    short_type(res.type_url),
                    res.name,
                    unit,
                    owner or "<static>",
                )
            return
        self._owner[key] = unit
        by_name = self._by_type.setdefault(res.type_url, {})
        current = by_name.get(res.name)
        if current is None or current.version != res.version:
            by_name[res.name] = res
            changed.setdefault(res.type_url, {})[res.name] = origin

    def _release(self, key: _Key, unit: str, origin: Origin, changed: dict[str, dict[str, Origin]]) -> None:
        if self._owner.get(key) != unit:
            rivals = self._contenders.get(key)
            if rivals is not None:
                rivals.discard(unit)
                if not rivals:
                    del self._contenders[key]
            return
        del self._owner[key]
        type_url, name = key
        contenders = sorted(self._contenders.pop(key, ()))
        if contenders:
            # A contender still has the name in its fragment: one that dropped it was discarded above.
            successor = contenders[0]
            if len(contenders) > 1:
                self._contenders[key] = set(contenders[1:])
            res = next(r for r in self._fragments[successor].resources if (r.type_url, r.name) == key)
            log.warning(
                "resource %s %r passes from unit %r to %r", short_type(type_url), name, unit, successor
            )
            self._claim(res, successor, origin, changed)
            return
        del self._by_type[type_url][name]
        changed.setdefault(type_url, {})[name] = origin
