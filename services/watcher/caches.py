"""What every replica keeps of the cluster, and what it tells the owners of the objects it keeps.

The followers (`followers.py`) hand each kind's lists and events to the handlers here, which translate
the objects (`translate.py`) and keep what each source contributes now, the Ingresses' claims on hosts
(`tenancy.py`), the IngressClasses, and the Ingresses without a class (re-translated when the default
IngressClass moves). Leader or not, every replica does this, so a standby's caches are warm when it
takes over. Whatever a change may affect is handed to the owner (`Watcher`) to be published, or to
have its hosts' ownership re-decided; nothing here awaits anything.

What users see comes from here too, through `Feedback` (`status.py`): an Ingress's status once its
admitted contributions are published, Warning Events for what translation or admission left out, and
for TLS Secrets that are broken or whose certificate expires while nothing changes.

The caches hold every Ingress of the cluster, so what they keep is what later decisions need and no
more (each byte per Ingress is 100 kB at 100k Ingresses; `bench/watcher_memory.py` measures it):

- per Ingress one `IngressState`: its resourceVersion and uid (an Event names both), a fingerprint of
  what translation read, three flags, the translation's reasons, and its contributions (interned
  strings, backends and path rules shared between Ingresses (`shared.py`), a one-key mapping (`One`)
  for one host; the same mapping admission records as published). No raw object, no copy of its status (a
  flag says whether it is ours), no Event reference (built when an Event is written). An update whose
  fingerprint is unchanged — a status write, our own coming back among them — is not translated again;
  re-translating an Ingress whose contributions come out equal keeps the mapping it had.
- per TLS Secret its certificate's PEM only until it is published (`withhold_published`, at most a
  second later): then it is `Withheld`, known by its hash, and its expiry time is kept apart. A replica
  that does not lead drops every PEM the same way; a new leader reads again, from the API, the Secrets
  it finds unpublished (`withheld_unpublished`: normally none).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from shardgate import keys
from shardgate.keys import SourceKind
from shardgate.model import TlsCertificate

from .admission import Admission
from .certs import expired_error, not_after
from .followers import OnEvent, OnList, consume, rv_of
from .index import Current, Held, One, SourceEntry, Withheld, compact, contribution_hash, source_kind_of
from .shared import Shared
from .status import Feedback, involved, load_balancer_entry, wanted_status
from .tenancy import Claim, Tenancy
from .traced import EventSpan
from .translate import (
    ClassPolicy,
    IngressClasses,
    Limits,
    Translation,
    ingress_fingerprint,
    load_balancer_ingress,
    translate_endpoint_slice,
    translate_ingress,
    translate_secret,
    translate_service,
)

log = logging.getLogger(__name__)

Obj = dict[str, Any]

_MAX_WARNED_ANNOTATIONS = 1000
_CLASSLESS_META = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp", "annotations")


class Owner(Protocol):
    """What the caches ask of the one owner of the watcher's concurrency."""

    def publishing(self) -> bool: ...

    def enqueue(
        self, source: str, observed_ns: int, span: EventSpan | None = None, charged: bool = False
    ) -> None: ...

    def settle(self, hosts: set[str], observed_ns: int) -> None: ...

    def resync(self, kind: SourceKind, sources: set[str], observed_ns: int) -> None: ...


@dataclass(slots=True)
class SourceState:
    """What a Service, EndpointSlice or TLS Secret contributes now."""

    rv: str
    contributions: Mapping[str, Held]


@dataclass(slots=True)
class IngressState:
    """What is kept of one Ingress (see the module's docstring)."""

    source: str  # its key, one string object shared by every map that names the Ingress
    rv: str
    uid: str  # an Event's involvedObject carries it: `kubectl describe` matches Events on it
    fingerprint: int | None  # `translate.ingress_fingerprint` of what was translated
    contributions: Mapping[str, Held]  # HostRoutes per host unit, before admission
    ours: bool = False
    admitted: bool = False  # what was last published for it admits at least one host
    status_ours: bool = False  # its status.loadBalancer.ingress is the one we write
    reasons: tuple[str, ...] = ()  # the translation's


class Caches:
    """The per-kind list and event handlers, and the state they keep (see the module's docstring)."""

    def __init__(
        self,
        owner: Owner,
        policy: ClassPolicy,
        limits: Limits,
        tenancy: Tenancy,
        admission: Admission,
        feedback: Feedback,
        status_address: str,
    ) -> None:
        self.owner = owner
        self.policy = policy
        self.limits = limits
        self.tenancy = tenancy
        self.admission = admission
        self.feedback = feedback
        self.status_address = status_address
        self.classes = IngressClasses()
        self.current: dict[str, Current] = {}  # source -> what it contributes now (non-empty only)
        self.ingresses: dict[str, IngressState] = {}
        self.classless: dict[str, Obj] = {}  # Ingresses without a class, re-translated if the default moves
        self.synced: set[SourceKind] = set()
        self._target = load_balancer_entry(status_address) if status_address else []  # the status we write
        self._reasons: dict[str, tuple[str, ...]] = {}
        self._expiries: list[tuple[int, str]] = []  # heap of (certificate notAfter ns, Secret source)
        self._expires: dict[str, int] = {}  # TLS Secret -> its usable certificate's notAfter (epoch ns)
        self._held: set[str] = set()  # TLS Secrets whose PEM is kept until it is published
        self._secret_refs: dict[str, Obj] = {}  # broken TLS Secret → its reference, for Events
        self._warned_annotations: set[str] = set()
        self._shared = Shared()  # one instance of each equal backend, path rule and list of them
        # Whether a class-less Ingress is ours depends on the IngressClasses: Ingresses wait for them.
        self.classes_synced = asyncio.Event()

    # -- IngressClasses ----------------------------------------------------------------------------

    async def on_class_list(self, items: list[Obj], observed_ns: int) -> None:
        before = self.classes.default_for(self.policy.controller)
        self.classes.replace(items)
        self.classes_synced.set()
        self._after_class_change(before, observed_ns)

    def on_class_event(self, etype: str, obj: Obj, observed_ns: int) -> None:
        before = self.classes.default_for(self.policy.controller)
        self.classes.apply(etype, obj)
        self._after_class_change(before, observed_ns)

    def _after_class_change(self, before: bool, observed_ns: int) -> None:
        if self.classes.default_for(self.policy.controller) == before:
            return
        log.info("default IngressClass for %s changed: re-translating %d Ingresses", self.policy.controller,
                 len(self.classless))  # fmt: skip
        for obj in list(self.classless.values()):
            source, _, _ = self._remember_ingress(obj, observed_ns, slim=True)
            if source:
                self.owner.enqueue(source, observed_ns)

    # -- Ingresses ---------------------------------------------------------------------------------

    async def on_ingress_list(self, items: list[Obj], observed_ns: int) -> None:
        listed = {
            source
            async for obj in consume(items)
            if (source := self._remember_ingress(obj, observed_ns, settle=False)[0])
        }
        for gone in set(self.ingresses) - listed:
            self._forget_ingress(gone, observed_ns, settle=False)
        self.synced.add(SourceKind.INGRESS)
        self.owner.settle(self.tenancy.known_hosts(), observed_ns)
        self._finish_list(SourceKind.INGRESS, listed, observed_ns)
        if self.owner.publishing():
            self.reconcile_status()

    def on_ingress_event(self, etype: str, obj: Obj, observed_ns: int) -> None:
        raw_meta = obj.get("metadata")
        meta: Obj = raw_meta if isinstance(raw_meta, dict) else {}
        attributes: dict[str, Any] = {
            "k8s.kind": "Ingress",
            "k8s.event.type": etype,
            "k8s.resource_version": rv_of(obj),
            "k8s.creation_timestamp": str(meta.get("creationTimestamp", "")),
            "k8s.generation": int(meta.get("generation") or 0),
        }
        translated = True
        if etype == "DELETED":
            source = keys.source_key(SourceKind.INGRESS, str(meta.get("namespace")), str(meta.get("name")))
            self._forget_ingress(source, observed_ns)
        else:
            source, state, translated = self._remember_ingress(obj, observed_ns)
            units = state.contributions if state is not None else ()
            attributes["sg.hosts"] = [keys.unit_name(u) for u in units]
        if not translated:
            # Nothing translation reads changed (our own status write coming back, mostly): no change to
            # trace. Still published (a no-op diff) so that its status is judged again.
            self.owner.enqueue(source, observed_ns, None, charged=True)
            return
        attributes["k8s.object.key"] = source
        # Started when its change is published (`traced.py`), dated from when the event arrived, which
        # is what the span measures.
        span = EventSpan(attributes, observed_ns)
        if not source or not meta.get("name"):
            span.start().end()
            return
        self.owner.enqueue(source, observed_ns, span, charged=True)

    def _remember_ingress(
        self, obj: Obj, observed_ns: int, settle: bool = True, slim: bool = False
    ) -> tuple[str, IngressState | None, bool]:
        """Keep what `obj` contributes now; its source ("" when it has no valid key), state, and whether
        it was translated (False: nothing translation reads changed since the last time).

        `slim`: `obj` is the copy kept in `classless` (the default IngressClass moved): translated
        again whatever its fingerprint, and its status is not in it (the state's flag stands)."""
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = {}
        previous = self.ingresses.get(_ingress_source(meta))
        fingerprint = ingress_fingerprint(obj)
        uid = str(meta.get("uid") or "")
        status_ours = previous.status_ours if slim and previous else self._status_ours(obj)
        unchanged = fingerprint is not None and previous is not None and fingerprint == previous.fingerprint
        if previous is not None and unchanged and not slim:
            # Nothing translation reads has changed (a status write, a label): only the version and status.
            previous.rv = str(meta.get("resourceVersion", ""))
            previous.uid, previous.status_ours = uid, status_ours
            if previous.source in self.classless:
                self.classless[previous.source] = _slim(obj)
            return previous.source, previous, False

        t = translate_ingress(obj, self.policy, self.classes, self.limits, self._shared.share)
        if not t.source:
            self._log_reasons(t.source, tuple(t.reasons), repr(obj.get("metadata"))[:200])
            return t.source, None, True
        source = previous.source if previous is not None else t.source
        reasons = tuple(t.reasons)
        self._log_reasons(source, reasons, source)
        self._warn_ignored(source, t)
        contributions: Mapping[str, Held] = compact(t.contributions)
        if previous is not None and previous.contributions == contributions:
            contributions = previous.contributions  # the mapping admission may hold as published
        state = IngressState(
            source,
            t.rv,
            uid,
            fingerprint,
            contributions,
            t.ours,
            previous.admitted if previous else False,
            status_ours,
            reasons,
        )
        self.ingresses[source] = state
        if contributions:
            self.current[source] = state
        else:
            self.current.pop(source, None)
        if t.classless:
            self.classless[source] = obj if slim else _slim(obj)
        else:
            self.classless.pop(source, None)
        _, namespace, _ = source.split("/", 2)
        claim = Claim(namespace, t.created, tuple(sorted(t.claims)), t.sharing) if t.ours else None
        touched = self.tenancy.set_claim(source, claim, observed_ns)
        if settle and touched:
            self.owner.settle(touched, observed_ns)
        return source, state, True

    def _status_ours(self, obj: Obj) -> bool:
        return bool(self._target) and load_balancer_ingress(obj) == self._target

    def _forget_ingress(self, source: str, observed_ns: int, settle: bool = True) -> None:
        self.current.pop(source, None)
        self.classless.pop(source, None)
        self._reasons.pop(source, None)
        self.admission.forget(source)
        state = self.ingresses.pop(source, None)
        if state is not None:
            _, namespace, name = source.split("/", 2)
            self.feedback.forget(namespace, name)
        touched = self.tenancy.set_claim(source, None, observed_ns)
        if settle and touched:
            self.owner.settle(touched, observed_ns)

    def _warn_ignored(self, source: str, t: Translation) -> None:
        for key in t.ignored:
            if (
                key not in self._warned_annotations
                and len(self._warned_annotations) < _MAX_WARNED_ANNOTATIONS
            ):
                self._warned_annotations.add(key)
                log.warning("%s: annotation %s is not supported and is ignored (logged once per annotation)",
                            source, key)  # fmt: skip
            else:
                log.debug("%s: annotation %s is not supported and is ignored", source, key)

    def published_ingress(self, source: str, contributions: Mapping[str, Held]) -> None:
        """`source` has `contributions` published now: its status, and what it and its neighbours on
        each host should be told."""
        state = self.ingresses.get(source)
        if state is not None:
            state.admitted = bool(contributions)
            self._want_status(state)
        for s in self.admission.published(source, contributions):
            self._report(s)

    def _report(self, source: str) -> None:
        state = self.ingresses.get(source)
        if state is not None and state.ours:
            self.feedback.report(_involved(state), [*state.reasons, *self.admission.reasons(source)])

    def _want_status(self, state: IngressState) -> None:
        wanted = wanted_status(state.admitted, state.status_ours, self._target)
        if wanted is not None:
            _, namespace, name = state.source.split("/", 2)
            self.feedback.want_status(namespace, name, wanted)

    def reconcile_status(self) -> None:
        for state in self.ingresses.values():
            self._want_status(state)

    # -- Services, EndpointSlices, Secrets ---------------------------------------------------------

    def source_handlers(self, kind: SourceKind) -> tuple[OnList, OnEvent]:
        translate = self._translator(kind)
        prefix = f"{kind}/"

        async def on_list(items: list[Obj], observed_ns: int) -> None:
            listed: set[str] = set()
            async for obj in consume(items):
                t = translate(obj, observed_ns)
                self._log_reasons(t.source, tuple(t.reasons), t.source or repr(obj.get("metadata"))[:200])
                if t.source:
                    listed.add(t.source)
                    self._set_source(t)
                    self._report_secret(t.source, tuple(t.reasons), obj)
            for gone in [s for s in self.current if s.startswith(prefix) and s not in listed]:
                self._drop_source(gone)
            self._finish_list(kind, listed, observed_ns)

        def on_event(etype: str, obj: Obj, observed_ns: int) -> None:
            t = translate(obj, observed_ns)
            if not t.source:
                self._log_reasons(t.source, tuple(t.reasons), repr(obj.get("metadata"))[:200])
                return
            if etype == "DELETED":
                self._drop_source(t.source)
                self._reasons.pop(t.source, None)
                if kind is SourceKind.SECRET:
                    _, ns, name = keys.split_source(t.source)
                    self.feedback.forget(ns, name, "Secret")
            else:
                self._log_reasons(t.source, tuple(t.reasons), t.source)
                self._set_source(t)
                self._report_secret(t.source, tuple(t.reasons), obj)
            span = EventSpan(
                {
                    "k8s.kind": str(kind),
                    "k8s.event.type": etype,
                    "k8s.object.key": t.source,
                    "k8s.resource_version": t.rv,
                },
                observed_ns,
            )
            self.owner.enqueue(t.source, observed_ns, span, charged=True)

        return on_list, on_event

    @staticmethod
    def _translator(kind: SourceKind) -> Callable[[Obj, int], Translation]:
        return {
            SourceKind.SERVICE: lambda obj, _ns: translate_service(obj),
            SourceKind.ENDPOINTSLICE: lambda obj, _ns: translate_endpoint_slice(obj),
            SourceKind.SECRET: lambda obj, ns: translate_secret(obj, datetime.fromtimestamp(ns / 1e9, UTC)),
        }[kind]

    def restore_secret(self, obj: Obj, observed_ns: int) -> None:
        """A TLS Secret read again from the API because its PEM is needed (`withheld_unpublished`):
        kept and published as an event would be, but as a re-sync (not charged, no span of its own)."""
        t = self._translator(SourceKind.SECRET)(obj, observed_ns)
        if not t.source:
            return
        self._log_reasons(t.source, tuple(t.reasons), t.source)
        self._set_source(t)
        self.owner.enqueue(t.source, observed_ns)

    def _set_source(self, t: Translation) -> None:
        """Keep what a Service, EndpointSlice or Secret contributes now (a Secret's PEM only while it
        may be published: see the module's docstring)."""
        if not t.contributions:
            self._drop_source(t.source)
            return
        if source_kind_of(t.source) is SourceKind.SECRET:
            if t.expires_ns:
                self._expires[t.source] = t.expires_ns
                heapq.heappush(self._expiries, (t.expires_ns, t.source))  # stale ones are skipped when due
            else:
                self._expires.pop(t.source, None)
            (cert,) = t.contributions.values()  # a Secret contributes to its own unit only
            if isinstance(cert, TlsCertificate) and cert.cert_pem:
                self._held.add(t.source)  # until `withhold_published`
            else:
                self._held.discard(t.source)
        self.current[t.source] = SourceState(t.rv, compact(t.contributions))

    def _drop_source(self, source: str) -> None:
        self.current.pop(source, None)
        self._secret_refs.pop(source, None)
        self._expires.pop(source, None)
        self._held.discard(source)

    # -- certificates: PEM kept only until published; expiry while nothing changes ----------------

    def withhold_published(self, published: Callable[[str], SourceEntry | None] | None) -> None:
        """Drop the PEM of every TLS Secret whose certificate is published (`published`: the index's
        entry of a source), or of all of them when this replica does not lead (`published` is None):
        from then on the Secret is `Withheld`, known by its hash."""
        for source in list(self._held):
            state = self.current.get(source)
            if state is None:
                self._held.discard(source)
                continue
            ((unit, cert),) = state.contributions.items()
            if isinstance(cert, Withheld):
                self._held.discard(source)
                continue
            digest = contribution_hash(cert)
            entry = published(source) if published is not None else None
            if published is None or (entry is not None and entry.units.get(unit) == digest):
                self.current[source] = SourceState(state.rv, One(unit, Withheld(digest)))
                self._held.discard(source)
        if not self._held:
            self._held = set()  # a set keeps the table of its largest size (a list's) until it grows

    def withheld_unpublished(self, published: Callable[[str], SourceEntry | None]) -> list[str]:
        """TLS Secrets known only by a hash that is not the published one: what a new leader must read
        again from the API to publish."""
        out = []
        for source in self.sources(SourceKind.SECRET):
            ((unit, held),) = self.current[source].contributions.items()
            entry = published(source)
            if isinstance(held, Withheld) and (entry is None or entry.units.get(unit) != held.digest):
                out.append(source)
        return sorted(out)

    def next_expiry(self) -> int | None:
        """When the next watched certificate reaches its notAfter (ns), if any is watched."""
        return self._expiries[0][0] if self._expiries else None

    def expire_due(self, now: int) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            expires, source = heapq.heappop(self._expiries)
            if self._expires.get(source) == expires:
                self._expire_certificate(source, expires, now)

    def _expire_certificate(self, source: str, expires: int, now: int) -> None:
        """The certificate reached its notAfter: it becomes the error a check of its PEM would give."""
        state = self.current.get(source)
        if state is None:
            return
        _, namespace, name = keys.split_source(source)
        unit = keys.secret_unit(namespace, name)
        cert = TlsCertificate(b"", b"", error=expired_error(not_after(expires)))
        reasons = (f"certificate not usable: {cert.error}",)
        self._expires.pop(source, None)
        self._held.discard(source)
        self.current[source] = SourceState(state.rv, One(unit, cert))
        self._log_reasons(source, reasons, source)
        self._report_secret(source, reasons)
        self.owner.enqueue(source, now)

    def report_secrets(self) -> None:
        """Tell every broken TLS Secret (when we take the lead)."""
        for source, reasons in list(self._reasons.items()):
            if source in self.current:
                self._report_secret(source, reasons)

    def _report_secret(self, source: str, reasons: tuple[str, ...], obj: Obj | None = None) -> None:
        """A Warning Event on a broken TLS Secret (Feedback writes each distinct message once). The
        reference (with its uid, which `kubectl describe` matches on) is kept for broken ones only."""
        if source_kind_of(source) is not SourceKind.SECRET:
            return
        if not reasons:
            self._secret_refs.pop(source, None)
        elif obj is not None:
            self._secret_refs[source] = involved(obj, "Secret", "v1")
        if not self.owner.publishing():
            return
        _, namespace, name = keys.split_source(source)
        ref = self._secret_refs.get(source) or {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
        }  # fmt: skip
        self.feedback.report(ref, list(reasons))

    # -- shared cache plumbing ---------------------------------------------------------------------

    def sources(self, kind: SourceKind) -> set[str]:
        """The sources of `kind` that contribute something now."""
        prefix = f"{kind}/"
        return {s for s in self.current if s.startswith(prefix)}

    def _log_reasons(self, source: str, reasons: tuple[str, ...], key: str) -> None:
        if self._reasons.get(source, ()) == reasons:
            return
        if source and reasons:
            self._reasons[source] = reasons
        else:
            self._reasons.pop(source, None)
        for reason in reasons:
            log.warning("%s: %s", key, reason)

    def _finish_list(self, kind: SourceKind, listed: set[str], observed_ns: int) -> None:
        """After a (re-)list: the kind is synced, and every source of it is to be diffed."""
        self.synced.add(kind)
        self.owner.resync(kind, listed, observed_ns)


def _ingress_source(meta: Obj) -> str:
    """The source key an Ingress's metadata names (unchecked: only to look up what we keep)."""
    return f"{SourceKind.INGRESS}/{meta.get('namespace')}/{meta.get('name')}"


def _slim(obj: Obj) -> Obj:
    """What translation reads of an Ingress: kept for the class-less ones, to translate them again."""
    meta = obj.get("metadata") or {}
    return {"metadata": {k: meta[k] for k in _CLASSLESS_META if k in meta}, "spec": obj.get("spec")}


def _involved(state: IngressState) -> Obj:
    """The Ingress as an Event names it (`status.involved` of the object it was read from)."""
    _, namespace, name = state.source.split("/", 2)
    meta = {"name": name, "namespace": namespace, "uid": state.uid, "resourceVersion": state.rv}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {k: v for k, v in meta.items() if v},
    }
