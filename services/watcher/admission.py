"""Which contributions of an Ingress may be published, and what its owner must be told about the rest.

Translation (`translate.py`) judges an Ingress on its own; admission judges it among its neighbours:

- host ownership (`tenancy.py`): a host another namespace owns is left out, with the owner's name;
- conflicts inside the owning namespace: both contributions are published and the merge decides
  (oldest wins); the watcher runs the same merge over what it published for the host
  (`conflicts.py`) so that the loser — which may be an Ingress that did not change — is told now.

Pure bookkeeping over what was published; the publish workers (`publishing.py`) call it, and the
caches (`caches.py`) turn `reasons` into Events and log lines. What it keeps of a published Ingress is
the caches' own mapping of its contributions when everything was admitted (the usual case), not a copy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from shardgate import keys
from shardgate.keys import SourceKind
from shardgate.model import HostRoutes

from .conflicts import conflict_reasons
from .index import Held, source_kind_of
from .tenancy import Tenancy

log = logging.getLogger(__name__)


class Admission:
    def __init__(self, tenancy: Tenancy) -> None:
        self.tenancy = tenancy
        self._published: dict[str, Mapping[str, HostRoutes]] = {}  # Ingress → host unit → what went out
        self._denied: dict[str, tuple[str, ...]] = {}  # Ingress → hosts it may not route, and why (if any)
        self._conflicts: dict[str, dict[str, list[str]]] = {}  # Ingress → host → rules of it unused
        self._logged: dict[str, tuple[str, ...]] = {}

    def admitted(self, source: str, contributions: Mapping[str, Held]) -> Mapping[str, Held]:
        """The contributions that may be published: for an Ingress, the hosts its namespace owns or
        shares by the owner's leave. `contributions` itself when all of it is (never changed here)."""
        if source_kind_of(source) is not SourceKind.INGRESS:
            return contributions
        namespace = source.split("/", 2)[1]
        out: dict[str, Held] = {}
        denied: list[str] = []
        for unit, contribution in contributions.items():
            why = self.tenancy.admits(namespace, keys.unit_name(unit))
            if why is None:
                out[unit] = contribution
            else:
                denied.append(f"{why} (host not admitted)")
        if denied:
            self._denied[source] = tuple(denied)
            return out
        self._denied.pop(source, None)
        return contributions

    def published(self, source: str, contributions: Mapping[str, Held]) -> set[str]:
        """`source` now has `contributions` published: returns the Ingresses whose reasons may have
        changed (itself, and the losers and winners of conflicts on its hosts)."""
        new: Mapping[str, HostRoutes]
        if all(isinstance(c, HostRoutes) for c in contributions.values()):
            new = contributions  # type: ignore[assignment]  # checked: all HostRoutes; kept, not copied
        else:
            new = {u: c for u, c in contributions.items() if isinstance(c, HostRoutes)}
        old = self._published.get(source)
        tell = {source}
        if old is not new and old != new:
            if new:
                self._published[source] = new
            else:
                self._published.pop(source, None)
            for unit in sorted(set(new) | set(old or {})):
                tell |= self._recompute(unit)
        return tell

    def _recompute(self, unit: str) -> set[str]:
        host = keys.unit_name(unit)
        parts = {
            s: pub[unit] for s in self.tenancy.sources({host}) if unit in (pub := self._published.get(s, {}))
        }
        reasons = conflict_reasons(unit, parts)
        changed: set[str] = set()
        for s in set(parts) | {s for s, hosts in self._conflicts.items() if host in hosts}:
            before = self._conflicts.get(s, {}).get(host)
            now = reasons.get(s)
            if before == now:
                continue
            changed.add(s)
            if now:
                self._conflicts.setdefault(s, {})[host] = now
            else:
                self._conflicts.get(s, {}).pop(host, None)
                if not self._conflicts.get(s):
                    self._conflicts.pop(s, None)
        return changed

    def reasons(self, source: str) -> tuple[str, ...]:
        """What admission left out of `source`, logged (with its key) when it changes."""
        conflicts = self._conflicts.get(source, {})
        out = (*self._denied.get(source, ()), *(r for h in sorted(conflicts) for r in conflicts[h]))
        if self._logged.get(source, ()) != out:
            for reason in out:
                log.warning("%s: %s", source, reason)
            self._logged[source] = out
        return out

    def forget(self, source: str) -> None:
        """The Ingress is gone (its tombstones still go out through `published`)."""
        self._denied.pop(source, None)
        self._logged.pop(source, None)
