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
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from opentelemetry import trace

from shardgate import keys, telemetry
from shardgate.keys import SourceKind
from shardgate.model import Contribution, TlsCertificate

from .admission import Admission
from .certs import check_certificate
from .followers import OnEvent, OnList, rv_of
from .index import source_kind_of
from .status import Feedback, involved, wanted_status
from .tenancy import Claim, Tenancy
from .translate import (
    ClassPolicy,
    IngressClasses,
    Limits,
    Translation,
    load_balancer_ingress,
    translate_endpoint_slice,
    translate_ingress,
    translate_secret,
    translate_service,
)

log = logging.getLogger(__name__)
tracer = telemetry.tracer("shardgate.watcher")

Obj = dict[str, Any]

_MAX_WARNED_ANNOTATIONS = 1000


class Owner(Protocol):
    """What the caches ask of the one owner of the watcher's concurrency."""

    def publishing(self) -> bool: ...

    def enqueue(
        self, source: str, observed_ns: int, span: trace.Span | None = None, charged: bool = False
    ) -> None: ...

    def settle(self, hosts: set[str], observed_ns: int) -> None: ...

    def resync(self, kind: SourceKind, sources: set[str], observed_ns: int) -> None: ...


@dataclass(slots=True)
class IngressState:
    namespace: str
    name: str
    admitted: bool  # what was last published for it admits at least one host
    load_balancer: list[Obj]
    ours: bool = False
    reasons: tuple[str, ...] = ()  # the translation's
    involved: Obj = field(default_factory=dict)  # for Events


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
        self.current: dict[str, Translation] = {}  # source -> what it contributes now (non-empty only)
        self.ingresses: dict[str, IngressState] = {}
        self.classless: dict[str, Obj] = {}  # Ingresses without a class, re-translated if the default moves
        self.synced: set[SourceKind] = set()
        self._reasons: dict[str, tuple[str, ...]] = {}
        self._expiries: list[tuple[int, str]] = []  # heap of (certificate notAfter ns, Secret source)
        self._secret_refs: dict[str, Obj] = {}  # broken TLS Secret → its reference, for Events
        self._warned_annotations: set[str] = set()
        # Whether a class-less Ingress is ours depends on the IngressClasses: Ingresses wait for them.
        self.classes_synced = asyncio.Event()

    # -- IngressClasses ----------------------------------------------------------------------------

    def on_class_list(self, items: list[Obj], observed_ns: int) -> None:
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
            t = self._remember_ingress(obj, observed_ns)
            self.owner.enqueue(t.source, observed_ns)

    # -- Ingresses ---------------------------------------------------------------------------------

    def on_ingress_list(self, items: list[Obj], observed_ns: int) -> None:
        listed = {self._remember_ingress(obj, observed_ns, settle=False).source for obj in items} - {""}
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
        span = tracer.start_span(
            "watcher.event",
            attributes={
                "k8s.kind": "Ingress",
                "k8s.event.type": etype,
                "k8s.resource_version": rv_of(obj),
                "k8s.creation_timestamp": str(meta.get("creationTimestamp", "")),
                "k8s.generation": int(meta.get("generation") or 0),
            },
        )
        if etype == "DELETED":
            source = keys.source_key(SourceKind.INGRESS, str(meta.get("namespace")), str(meta.get("name")))
            self._forget_ingress(source, observed_ns)
        else:
            t = self._remember_ingress(obj, observed_ns)
            source = t.source
            span.set_attribute("sg.hosts", [keys.unit_name(u) for u in t.contributions])
        span.set_attribute("k8s.object.key", source)
        if not source or not meta.get("name"):
            span.end()
            return
        self.owner.enqueue(source, observed_ns, span, charged=True)

    def _remember_ingress(self, obj: Obj, observed_ns: int, settle: bool = True) -> Translation:
        t = translate_ingress(obj, self.policy, self.classes, self.limits)
        if not t.source:
            self._log_reasons(t, repr(obj.get("metadata"))[:200])
            return t
        self._set_current(t)
        self._log_reasons(t, t.source)
        self._warn_ignored(t)
        _, namespace, name = keys.split_source(t.source)
        previous = self.ingresses.get(t.source)
        self.ingresses[t.source] = IngressState(
            namespace,
            name,
            previous.admitted if previous else False,
            load_balancer_ingress(obj),
            t.ours,
            tuple(t.reasons),
            involved(obj, "Ingress", "networking.k8s.io/v1"),
        )
        if t.classless:
            slim = {k: v for k, v in obj.items() if k != "status"}
            slim["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
            self.classless[t.source] = slim
        else:
            self.classless.pop(t.source, None)
        claim = Claim(namespace, t.created, t.claims, t.sharing) if t.ours else None
        touched = self.tenancy.set_claim(t.source, claim, observed_ns)
        if settle:
            self.owner.settle(touched, observed_ns)
        return t

    def _forget_ingress(self, source: str, observed_ns: int, settle: bool = True) -> None:
        self.current.pop(source, None)
        self.classless.pop(source, None)
        self._reasons.pop(source, None)
        self.admission.forget(source)
        state = self.ingresses.pop(source, None)
        if state is not None:
            self.feedback.forget(state.namespace, state.name)
        touched = self.tenancy.set_claim(source, None, observed_ns)
        if settle:
            self.owner.settle(touched, observed_ns)

    def _warn_ignored(self, t: Translation) -> None:
        for key in t.ignored:
            if (
                key not in self._warned_annotations
                and len(self._warned_annotations) < _MAX_WARNED_ANNOTATIONS
            ):
                self._warned_annotations.add(key)
                log.warning("%s: annotation %s is not supported and is ignored (logged once per annotation)",
                            t.source, key)  # fmt: skip
            else:
                log.debug("%s: annotation %s is not supported and is ignored", t.source, key)

    def published_ingress(self, source: str, contributions: dict[str, Contribution]) -> None:
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
            self.feedback.report(state.involved, [*state.reasons, *self.admission.reasons(source)])

    def _want_status(self, state: IngressState) -> None:
        wanted = wanted_status(state.admitted, state.load_balancer, self.status_address)
        if wanted is not None:
            self.feedback.want_status(state.namespace, state.name, wanted)

    def reconcile_status(self) -> None:
        for state in self.ingresses.values():
            self._want_status(state)

    # -- Services, EndpointSlices, Secrets ---------------------------------------------------------

    def source_handlers(self, kind: SourceKind) -> tuple[OnList, OnEvent]:
        translate: Callable[[Obj, int], Translation] = {
            SourceKind.SERVICE: lambda obj, _ns: translate_service(obj),
            SourceKind.ENDPOINTSLICE: lambda obj, _ns: translate_endpoint_slice(obj),
            SourceKind.SECRET: lambda obj, ns: translate_secret(obj, datetime.fromtimestamp(ns / 1e9, UTC)),
        }[kind]
        prefix = f"{kind}/"

        def on_list(items: list[Obj], observed_ns: int) -> None:
            listed: set[str] = set()
            for obj in items:
                t = translate(obj, observed_ns)
                self._log_reasons(t, t.source or repr(obj.get("metadata"))[:200])
                if t.source:
                    listed.add(t.source)
                    self._set_current(t)
                    self._watch_expiry(t)
                    self._report_secret(t, obj)
            for gone in [s for s in self.current if s.startswith(prefix) and s not in listed]:
                del self.current[gone]
                self._secret_refs.pop(gone, None)
            self._finish_list(kind, listed, observed_ns)

        def on_event(etype: str, obj: Obj, observed_ns: int) -> None:
            t = translate(obj, observed_ns)
            if not t.source:
                self._log_reasons(t, repr(obj.get("metadata"))[:200])
                return
            if etype == "DELETED":
                self.current.pop(t.source, None)
                self._reasons.pop(t.source, None)
                if kind is SourceKind.SECRET:
                    _, ns, name = keys.split_source(t.source)
                    self.feedback.forget(ns, name, "Secret")
                    self._secret_refs.pop(t.source, None)
            else:
                self._log_reasons(t, t.source)
                self._set_current(t)
                self._watch_expiry(t)
                self._report_secret(t, obj)
            span = tracer.start_span(
                "watcher.event",
                attributes={
                    "k8s.kind": str(kind),
                    "k8s.event.type": etype,
                    "k8s.object.key": t.source,
                    "k8s.resource_version": t.rv,
                },
            )
            self.owner.enqueue(t.source, observed_ns, span, charged=True)

        return on_list, on_event

    # -- certificates that expire while nothing changes --------------------------------------------

    def next_expiry(self) -> int | None:
        """When the next watched certificate reaches its notAfter (ns), if any is watched."""
        return self._expiries[0][0] if self._expiries else None

    def expire_due(self, now: int) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            expires, source = heapq.heappop(self._expiries)
            t = self.current.get(source)
            if t is not None and t.expires_ns == expires:
                self._expire_certificate(t, now)

    def _watch_expiry(self, t: Translation) -> None:
        if t.expires_ns:
            heapq.heappush(self._expiries, (t.expires_ns, t.source))  # stale entries are skipped when due

    def _expire_certificate(self, t: Translation, now: int) -> None:
        _, namespace, name = keys.split_source(t.source)
        unit = keys.secret_unit(namespace, name)
        cert = t.contributions.get(unit)
        if not isinstance(cert, TlsCertificate):
            return
        checked = check_certificate(cert.cert_pem, cert.key_pem, datetime.fromtimestamp(now / 1e9, UTC))
        expired = Translation(t.source, t.rv, {unit: checked}, [f"certificate not usable: {checked.error}"])
        self._set_current(expired)
        self._log_reasons(expired, expired.source)
        self._report_secret(expired)
        self.owner.enqueue(t.source, now)

    def report_secrets(self) -> None:
        """Tell every broken TLS Secret (when we take the lead)."""
        for t in [t for s, t in self.current.items() if s.startswith(f"{SourceKind.SECRET}/")]:
            self._report_secret(t)

    def _report_secret(self, t: Translation, obj: Obj | None = None) -> None:
        """A Warning Event on a broken TLS Secret (Feedback writes each distinct message once). The
        reference (with its uid, which `kubectl describe` matches on) is kept for broken ones only."""
        if source_kind_of(t.source) is not SourceKind.SECRET:
            return
        if not t.reasons:
            self._secret_refs.pop(t.source, None)
        elif obj is not None:
            self._secret_refs[t.source] = involved(obj, "Secret", "v1")
        if not self.owner.publishing():
            return
        _, namespace, name = keys.split_source(t.source)
        ref = self._secret_refs.get(t.source) or {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
        }  # fmt: skip
        self.feedback.report(ref, t.reasons)

    # -- shared cache plumbing ---------------------------------------------------------------------

    def sources(self, kind: SourceKind) -> set[str]:
        """The sources of `kind` that contribute something now."""
        prefix = f"{kind}/"
        return {s for s in self.current if s.startswith(prefix)}

    def _set_current(self, t: Translation) -> None:
        if t.contributions:
            self.current[t.source] = t
        else:
            self.current.pop(t.source, None)

    def _log_reasons(self, t: Translation, key: str) -> None:
        reasons = tuple(t.reasons)
        if self._reasons.get(t.source, ()) == reasons:
            return
        if t.source and reasons:
            self._reasons[t.source] = reasons
        else:
            self._reasons.pop(t.source, None)
        for reason in reasons:
            log.warning("%s: %s", key, reason)

    def _finish_list(self, kind: SourceKind, listed: set[str], observed_ns: int) -> None:
        """After a (re-)list: the kind is synced, and every source of it is to be diffed."""
        self.synced.add(kind)
        self.owner.resync(kind, listed, observed_ns)
