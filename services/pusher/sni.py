"""The SNIs one gateway stream has asked certificates for, and the bound on what a flood of them costs.

Envoy's on-demand certificate selector subscribes to one Secret per SNI a client sends, and Envoy 1.40
has no cap and no idle eviction for those subscriptions (notes/facts.md). What a client can make it hold
is bounded here, per stream:

- An SNI no TLS host covers is answered with a removal; Envoy then fails the handshake and drops its
  subscription itself (it sends the unsubscribe), and the stream forgets the name at once. A flood of
  random names therefore leaves no state behind, in Envoy or in the pusher, beyond the requests in
  flight (measured: Envoy's RSS flat across 5,000 random SNIs).
- An SNI covered only by a wildcard host *is* a certificate Envoy keeps — and a client can invent any
  number of them (`<random>.wild.example.com`). Those are kept in an LRU of `max_wildcard` names per
  stream; past it, the oldest is evicted by sending Envoy a removal for it (Envoy drops it; its next
  handshake costs one SDS round trip again). Exact hosts are not capped: there are only as many as the
  cluster's Ingresses declare.

Changes arrive as host patterns (`certs.py`); `affected` maps a pattern to the subscribed SNIs it
covers in O(those names): exact hosts by normalized name, wildcards by the SNI's parent domain.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Set

from .certs import normalize_sni

DEFAULT_MAX_WILDCARD = 4096


def _parent(host: str) -> str | None:
    _, dot, parent = host.partition(".")
    return parent if dot and parent else None


class SniSubscriptions:
    def __init__(self, max_wildcard: int = DEFAULT_MAX_WILDCARD) -> None:
        self.max_wildcard = max_wildcard
        self._by_host: dict[str, set[str]] = {}  # normalized SNI -> SNIs as Envoy subscribed them
        self._by_parent: dict[str, set[str]] = {}  # parent domain -> SNIs under it
        self._wildcard_lru: OrderedDict[str, None] = OrderedDict()  # SNIs served through a wildcard

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_host.values())

    def __contains__(self, name: str) -> bool:
        return name in self._by_host.get(normalize_sni(name), ())

    def add(self, name: str) -> None:
        host = normalize_sni(name)
        self._by_host.setdefault(host, set()).add(name)
        parent = _parent(host)
        if parent is not None:
            self._by_parent.setdefault(parent, set()).add(name)

    def discard(self, name: str) -> None:
        host = normalize_sni(name)
        _discard(self._by_host, host, name)
        parent = _parent(host)
        if parent is not None:
            _discard(self._by_parent, parent, name)
        self._wildcard_lru.pop(name, None)

    def affected(self, pattern: str) -> Set[str]:
        """The subscribed SNIs whose certificate a change to host `pattern` (exact or `*.parent`) may move.

        A wildcard pattern covers the names under its parent, including those an exact host answers:
        harmless, their lookup finds the same answer and nothing is sent.
        """
        if pattern.startswith("*."):
            return self._by_parent.get(pattern[2:], set())
        return self._by_host.get(pattern, set())

    def served_by_wildcard(self, name: str) -> list[str]:
        """Note an SNI answered through a wildcard host; return the names to evict to stay in bounds."""
        self._wildcard_lru[name] = None
        self._wildcard_lru.move_to_end(name)
        evicted: list[str] = []
        while len(self._wildcard_lru) > self.max_wildcard:
            oldest, _ = self._wildcard_lru.popitem(last=False)
            evicted.append(oldest)
        return evicted

    def served_exactly(self, name: str) -> None:
        """An SNI now answered by an exact host no longer counts against the wildcard cap."""
        self._wildcard_lru.pop(name, None)

    def wildcard_count(self) -> int:
        return len(self._wildcard_lru)


def _discard(index: dict[str, set[str]], key: str, name: str) -> None:
    names = index.get(key)
    if names is not None:
        names.discard(name)
        if not names:
            del index[key]
