"""State-of-the-World ADS, for gateways that do not speak Delta.

SotW's nature is that every response carries the *full* set of its type: all listeners, all clusters,
all scopes, or every endpoint assignment Envoy named. So one changed host costs a push of every host's
scope to every SotW gateway — O(domains) per change, exactly what shardgate exists to avoid. It is here
for compatibility; Delta is the protocol to run at scale. A full set containing one resource Envoy
refuses is refused whole, and so would every later one be: the refused version is held back (Envoy's
last accepted version is sent in its place) until the resource changes again. What it still shares
with Delta: pushes are built from the already serialized bytes (no re-encoding), changes collapse
while a write is pending, and a type is pushed only when something it carries changed.

`version_info` is the cache's revision of the type. Envoy repeats the latest nonce it received on every
later request of the type (that is how it changes its subscription between responses). A request whose
nonce is not the latest sent for the type is stale: its ACK/NACK is recorded if that nonce was still
outstanding, but its resource names are not taken as the subscription (they predate the latest push).

Secrets are named by SNI (`certs.py`, `sni.py`): a certificate change marks the type dirty only if it
covers an SNI this Envoy subscribed to. SotW cannot say "removed" for a named type, so an SNI without a
certificate is simply left out of the set; Envoy keeps that subscription until it lists the name no
more. The per-name state here is Envoy's own subscription list, no more.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from shardgate.records import Resource
from shardgate.xds.types import PUSH_ORDER, SECRET, WILDCARD_TYPES

from . import acks
from .cache import Changes, ResourceCache
from .metrics import PUSHED_RESOURCES, PUSHES, short_type
from .nonces import Answered, NonceBook, Sent
from .sni import SniSubscriptions
from .stream import DEFAULT_HOLD_OFF, AdsStream

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _TypeState:
    wildcard: bool = False
    names: frozenset[str] = frozenset()
    dirty: bool = True  # something it carries changed since the last push (the first push is due)
    traces: dict[str, str] = field(default_factory=dict)  # traceparent -> unit
    acked: dict[str, Resource] = field(default_factory=dict)  # what Envoy last accepted
    rejected: dict[str, str] = field(default_factory=dict)  # name -> version Envoy refused

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names


class SotwStream(AdsStream):
    protocol = "sotw"

    def __init__(self, cache: ResourceCache, hold_off: float = DEFAULT_HOLD_OFF) -> None:
        super().__init__(cache, hold_off)
        self._types: dict[str, _TypeState] = {}
        self._book = NonceBook()
        self._pushed: dict[str, dict[str, Resource]] = {}  # outstanding nonce -> what it carried
        self.sni = SniSubscriptions()

    def handle(self, request: discovery_pb2.DiscoveryRequest) -> None:
        if request.node.id:
            self.node_id = request.node.id
        type_url = request.type_url
        state = self._types.get(type_url)
        if state is not None and request.response_nonce:
            answered = self._book.answer(type_url, request.response_nonce)
            if answered is not None:
                self._settle(state, answered, request)
            if request.response_nonce != self._book.latest(type_url):
                log.debug(
                    "stale nonce %s for %s from %r",
                    request.response_nonce,
                    short_type(type_url),
                    self.node_id,
                )
                return
        names = frozenset(n for n in request.resource_names if n != "*")
        wildcard = type_url in WILDCARD_TYPES and (not names or "*" in request.resource_names)
        if type_url == SECRET:
            old = state.names if state is not None else frozenset()
            for name in old - names:
                self.sni.discard(name)
            for name in names - old:
                self.sni.add(name)
        if state is None:
            self._types[type_url] = _TypeState(wildcard=wildcard, names=names)
            self.wake()
        elif (wildcard, names) != (state.wildcard, state.names):
            state.wildcard, state.names, state.dirty = wildcard, names, True
            self.wake()

    def _settle(self, state: _TypeState, answered: Answered, request: discovery_pb2.DiscoveryRequest) -> None:
        for older in answered.superseded:
            self._pushed.pop(older.nonce, None)
            acks.acked(self.node_id, older, self.cache.shard_of, superseded=True)
        pushed = self._pushed.pop(answered.sent.nonce, {})
        if not request.HasField("error_detail"):
            state.acked = pushed
            acks.acked(self.node_id, answered.sent, self.cache.shard_of)
            return
        message = request.error_detail.message
        acks.nacked(self.node_id, answered.sent, message)
        # Every later full set would carry the refused resource again and be refused whole: hold back
        # what Envoy names (its last accepted version goes out instead) and push the rest once more.
        changed = {
            n: v
            for n, v in answered.sent.versions.items()
            if n not in state.acked or state.acked[n].version != v
        }
        blamed = acks.blame(Sent(answered.sent.nonce, answered.sent.type_url, changed, {}), message)
        state.rejected.update(blamed)
        state.dirty = True
        self.wake()

    def on_change(self, changes: Changes) -> None:
        woken = False
        for type_url, names in changes.items():
            state = self._types.get(type_url)
            if state is None:
                continue
            for name, origin in names.items():
                if self.sni.affected(name) if type_url == SECRET else state.wants(name):
                    state.dirty = True
                    if origin.traceparent:
                        state.traces[origin.traceparent] = origin.unit
                    woken = True
        if woken:
            self.wake()

    def responses(self) -> list[discovery_pb2.DiscoveryResponse]:
        out = []
        order = list(PUSH_ORDER) + sorted(set(self._types) - set(PUSH_ORDER))
        for type_url in order:
            state = self._types.get(type_url)
            if state is not None and state.dirty:
                out.append(self._build(type_url, state))
        return out

    def _build(self, type_url: str, state: _TypeState) -> discovery_pb2.DiscoveryResponse:
        if state.wildcard:
            chosen = list(self.cache.resources(type_url).values())
        else:
            chosen = [r for r in (self.cache.get(type_url, n) for n in sorted(state.names)) if r is not None]
        if state.rejected:
            substituted = (self._instead_of_rejected(state, r) for r in chosen)
            chosen = [r for r in substituted if r is not None]
        state.dirty = False
        traces, state.traces = state.traces, {}
        sent = self._book.issue(type_url, {r.name: r.version for r in chosen}, traces)
        self._pushed[sent.nonce] = {r.name: r for r in chosen}
        PUSHES.labels(self.protocol, short_type(type_url)).inc()
        PUSHED_RESOURCES.labels(self.protocol, short_type(type_url)).inc(len(chosen))
        return discovery_pb2.DiscoveryResponse(
            version_info=str(self.cache.revision(type_url)),
            type_url=type_url,
            resources=[any_pb2.Any(type_url=type_url, value=r.body) for r in chosen],
            nonce=sent.nonce,
        )

    @staticmethod
    def _instead_of_rejected(state: _TypeState, res: Resource) -> Resource | None:
        if state.rejected.get(res.name) != res.version:
            state.rejected.pop(res.name, None)  # a new version: give it its chance
            return res
        return state.acked.get(res.name)
