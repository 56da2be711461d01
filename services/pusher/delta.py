"""Delta (incremental) ADS: the primary protocol. Each push carries only what changed.

Per type the stream keeps what Envoy subscribed to (the whole type for listeners, clusters and scopes;
names for endpoints and secrets) and the version of each resource Envoy holds, seeded from
`initial_resource_versions` when Envoy reconnects so nothing it already has is sent again. A change in
the cache marks names pending; the push sends the pending names whose version differs from Envoy's and
a removal for names that are gone.

Protocol points that matter (notes/facts.md): the first request of a type is the first time that type
appears on the stream, whatever its nonce says; a request naming a nonce that is not outstanding is
stale — its ACK/NACK is ignored, but its subscription changes still apply, because Delta sends each
subscription change exactly once. A NACK leaves Envoy on its last good resources and refuses the whole
response: the resources Envoy's message names (`acks.blame`) are held back until their version changes,
never retried in a loop; the others in that response are sent again.

Secrets are asked for by SNI, one name at a time, by the HTTPS listener's on-demand certificate
selector; they are never a wildcard subscription. The stream keeps them in `SniSubscriptions` so a
certificate change reaches exactly the SNIs it answers, forgets an SNI as soon as it answered it with a
removal (Envoy drops the subscription itself then), and evicts SNIs answered through a wildcard host
past a per-stream cap — the bounds against a flood of random server names (`sni.py`). A certificate
Envoy NACKs is remembered by version and its SNIs answered with a removal: a handshake waiting on it
would otherwise hang until the client gave up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from shardgate.records import Resource
from shardgate.xds.types import PUSH_ORDER, SECRET

from . import acks
from .cache import Changes, ResourceCache
from .certs import Outcome
from .metrics import PUSHED_RESOURCES, PUSHES, SNI_EVICTIONS, short_type
from .nonces import NonceBook
from .sni import DEFAULT_MAX_WILDCARD, SniSubscriptions
from .stream import DEFAULT_HOLD_OFF, AdsStream

log = logging.getLogger(__name__)

WILDCARD = "*"
MAX_REFUSED_CERTS = 1024
# Flow control: at most one unanswered response per type. Envoy applies updates one at a time (~65 ms
# each at 100k scopes, measured in bench/pipeline), so pushing every 2 ms queued thousands of small updates
# in a burst; holding changes until the previous push is answered folds them into one. A response Envoy
# has not answered after this long no longer holds the type back.
ACK_PATIENCE_NS = 5_000_000_000


@dataclass(slots=True)
class _TypeState:
    wildcard: bool = False
    names: set[str] = field(default_factory=set)  # explicit subscriptions
    known: dict[str, str] = field(default_factory=dict)  # name -> version Envoy holds, as far as we know
    pending: set[str] = field(default_factory=set)  # names to look at on the next push
    fresh: set[str] = field(default_factory=set)  # newly subscribed: answer even if only with a removal
    traces: dict[str, str] = field(default_factory=dict)  # traceparent -> unit, carried by pending names
    must_answer: bool = False  # the type's first request is answered even when there is nothing
    rejected: dict[str, str] = field(default_factory=dict)  # name -> version Envoy refused: not resent

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names


class DeltaStream(AdsStream):
    protocol = "delta"

    def __init__(
        self,
        cache: ResourceCache,
        hold_off: float = DEFAULT_HOLD_OFF,
        max_wildcard_sni: int = DEFAULT_MAX_WILDCARD,
    ) -> None:
        super().__init__(cache, hold_off)
        self._types: dict[str, _TypeState] = {}
        self._book = NonceBook()
        self.sni = SniSubscriptions(max_wildcard_sni)
        # Certificate versions Envoy refused (keyed by version, not SNI: a refused wildcard certificate
        # must not make every random name under it a remembered entry). Their SNIs get a removal, so a
        # handshake fails at once instead of waiting for an answer that will never be accepted.
        self._refused_certs: OrderedDict[str, None] = OrderedDict()

    # -- Envoy's requests ----------------------------------------------------------------------------

    def handle(self, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        if request.node.id:
            self.node_id = request.node.id
        type_url = request.type_url
        state = self._types.get(type_url)
        if state is None:
            self._first_request(type_url, request)
            return
        if request.response_nonce:
            self._answer(type_url, state, request)
        self._subscribe(type_url, state, request.resource_names_subscribe)
        for name in request.resource_names_unsubscribe:
            if name == WILDCARD:
                state.wildcard = False
            else:
                self._forget(type_url, state, name)
        if state.pending:
            self.wake()

    def _first_request(self, type_url: str, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        state = _TypeState(must_answer=True)
        self._types[type_url] = state
        subscribe = list(request.resource_names_subscribe)
        # Legacy wildcard: a first request naming nothing subscribes to everything of the type. Secrets
        # are looked up by SNI and never sent as a whole.
        state.wildcard = type_url != SECRET and (not subscribe or WILDCARD in subscribe)
        state.known = dict(request.initial_resource_versions)
        state.names = {n for n in subscribe if n != WILDCARD}
        if type_url == SECRET:
            for name in state.names:
                self.sni.add(name)
        state.pending.update(state.names)
        state.fresh.update(state.names)
        if state.wildcard:
            state.pending.update(self.cache.resources(type_url).keys())
            state.pending.update(state.known)  # what Envoy still holds but we no longer have: removals
        self.wake()

    def _subscribe(self, type_url: str, state: _TypeState, names: Iterable[str]) -> None:
        for name in names:
            if name == WILDCARD:
                if type_url != SECRET and not state.wildcard:
                    state.wildcard = True
                    state.pending.update(self.cache.resources(type_url).keys())
            elif name not in state.names:
                state.names.add(name)
                state.known.pop(name, None)  # Envoy asks afresh: send what we have
                state.pending.add(name)
                state.fresh.add(name)
                if type_url == SECRET:
                    self.sni.add(name)

    def _forget(self, type_url: str, state: _TypeState, name: str) -> None:
        state.names.discard(name)
        state.known.pop(name, None)
        state.pending.discard(name)
        state.rejected.pop(name, None)
        if type_url == SECRET:
            self.sni.discard(name)

    def _answer(self, type_url: str, state: _TypeState, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        answered = self._book.answer(type_url, request.response_nonce)
        if answered is None:
            log.debug(
                "stale nonce %s for %s from %r", request.response_nonce, short_type(type_url), self.node_id
            )
            return
        for older in answered.superseded:
            acks.acked(self.node_id, older, self.cache.shard_of, superseded=True)
        if request.HasField("error_detail"):
            acks.nacked(self.node_id, answered.sent, request.error_detail.message)
            # Envoy kept what it had: we no longer know its versions of anything in the response. The
            # resources its message names are held back until they change; the rest go out again.
            blamed = acks.blame(answered.sent, request.error_detail.message)
            if type_url == SECRET:
                self._refuse_certs(state, blamed)
            else:
                state.rejected.update((n, v) for n, v in blamed.items() if v)
            for name in answered.sent.names:
                state.known.pop(name, None)
                if name not in blamed:
                    state.pending.add(name)
            if state.pending:
                self.wake()
        else:
            acks.acked(self.node_id, answered.sent, self.cache.shard_of)

    def _refuse_certs(self, state: _TypeState, blamed: dict[str, str]) -> None:
        for name, version in blamed.items():
            if version:
                self._refused_certs[version] = None
                self._refused_certs.move_to_end(version)
                state.fresh.add(name)  # owed an answer: a removal
                state.pending.add(name)
        while len(self._refused_certs) > MAX_REFUSED_CERTS:
            self._refused_certs.popitem(last=False)

    # -- the cache's changes -------------------------------------------------------------------------

    def on_change(self, changes: Changes) -> None:
        woken = False
        for type_url, names in changes.items():
            state = self._types.get(type_url)
            if state is None:
                continue
            for name, origin in names.items():
                # Secrets change by host pattern; the SNIs it covers are what Envoy subscribed to.
                if type_url == SECRET:
                    wanted: Iterable[str] = self.sni.affected(name)
                else:
                    wanted = (name,) if state.wants(name) else ()
                for sni in wanted:
                    state.pending.add(sni)
                    woken = True
                if wanted and origin.traceparent:
                    state.traces[origin.traceparent] = origin.unit
        if woken:
            self.wake()

    # -- pushes --------------------------------------------------------------------------------------

    def responses(self) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        out = []
        held_back = False
        order = list(PUSH_ORDER) + sorted(set(self._types) - set(PUSH_ORDER))
        for type_url in order:
            state = self._types.get(type_url)
            if state is None or not (state.pending or state.must_answer):
                continue
            if self._book.awaiting(type_url, ACK_PATIENCE_NS):
                held_back = True  # Envoy's answer wakes the stream (handle); patience is the backstop
                continue
            response = self._build(type_url, state)
            if response is not None:
                out.append(response)
        if held_back:
            with contextlib.suppress(RuntimeError):  # no loop: driven by hand (tests), no backstop needed
                asyncio.get_running_loop().call_later(ACK_PATIENCE_NS / 1e9, self.wake)
        return out

    def _build(self, type_url: str, state: _TypeState) -> discovery_pb2.DeltaDiscoveryResponse | None:
        resources: list[discovery_pb2.Resource] = []
        removed: list[str] = []
        evicted: list[str] = []
        for name in list(state.pending):
            if not state.wants(name):
                continue
            res = self._secret(name, evicted) if type_url == SECRET else self.cache.get(type_url, name)
            if res is None:
                if name in state.known or name in state.fresh:
                    removed.append(name)
                    state.known.pop(name, None)
                if type_url == SECRET:
                    # Envoy fails the handshake and drops the subscription on a removal: so do we, so
                    # a random SNI leaves nothing behind.
                    self._forget(type_url, state, name)
            elif state.known.get(name) != res.version and state.rejected.get(name) != res.version:
                resources.append(
                    discovery_pb2.Resource(
                        name=name,
                        version=res.version,
                        resource=any_pb2.Any(type_url=type_url, value=res.body),
                    )
                )
                state.known[name] = res.version
        if evicted:
            resources, removed = self._evict(state, evicted, resources, removed)
        state.pending.clear()
        state.fresh.clear()
        traces, state.traces = state.traces, {}
        if not resources and not removed and not state.must_answer:
            return None
        state.must_answer = False
        versions = {r.name: r.version for r in resources}
        versions.update((name, "") for name in removed)
        sent = self._book.issue(type_url, versions, traces)
        PUSHES.labels(self.protocol, short_type(type_url)).inc()
        PUSHED_RESOURCES.labels(self.protocol, short_type(type_url)).inc(len(versions))
        return discovery_pb2.DeltaDiscoveryResponse(
            type_url=type_url, resources=resources, removed_resources=removed, nonce=sent.nonce
        )

    def _secret(self, sni: str, evicted: list[str]) -> Resource | None:
        """The certificate for an SNI; SNIs pushed past the wildcard cap are added to `evicted`."""
        resolution = self.cache.resolve_sni(sni)
        if resolution.outcome is not Outcome.SERVED:
            if resolution.outcome is not Outcome.NO_HOST:
                log.info(
                    "SNI %r of node %r: host %s uses TLS secret %s, which %s: handshake refused",
                    sni,
                    self.node_id,
                    resolution.host,
                    resolution.secret,
                    "does not exist" if resolution.outcome is Outcome.NO_SECRET else "is unusable",
                )
            return None
        res = resolution.resource
        if res is None or res.version in self._refused_certs:
            log.debug("SNI %r of node %r: Envoy refused its certificate: removal", sni, self.node_id)
            return None
        if resolution.wildcard:
            evicted.extend(self.sni.served_by_wildcard(sni))
        else:
            self.sni.served_exactly(sni)
        return res

    def _evict(
        self,
        state: _TypeState,
        evicted: list[str],
        resources: list[discovery_pb2.Resource],
        removed: list[str],
    ) -> tuple[list[discovery_pb2.Resource], list[str]]:
        """Tell Envoy to drop SNIs evicted by the wildcard cap (a removal also answers a fresh one)."""
        gone = set(evicted)
        for name in evicted:
            SNI_EVICTIONS.inc()
            if name in state.known or name in state.fresh:
                removed.append(name)
            self._forget(SECRET, state, name)
        return [r for r in resources if r.name not in gone], removed
