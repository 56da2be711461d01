"""The watcher's one owner of concurrency: follow five kinds, keep caches, publish exact deltas.

Tasks, all started and stopped by `Watcher.run`:

- one *follower* per kind (IngressClass, Ingress, Service, EndpointSlice, Secret): list, then watch from
  the list's resourceVersion with bookmarks; on 410 Gone list again, on other errors back off and watch
  again. Followers only update the in-memory caches (what each source contributes now) and enqueue the
  source key. Every replica does this, leader or not, so a standby's caches are warm when it takes over.
- `workers` *publishers* take sources from one `FairQueue` (`fair.py`): a FIFO per namespace, the
  namespaces served round-robin, with a token bucket per namespace, so a flood from one namespace
  delays another's change by at most one round. A source is never processed by two workers at once
  (per-source order), different sources run in parallel. A worker decides which of the source's
  contributions are admitted (host ownership, `tenancy.py`, persisted first), diffs them against the
  published index, publishes the deltas, and commits the index (memory, then Redis) once JetStream
  acked them all; then it tells the Ingress's owner what was not admitted (Events, `status.py`). Jobs
  are coalesced per source: a burst of events on one Ingress publishes its latest state once.
- the *elector* (Lease). Publishing and status writes happen only while `publishing()` holds: we are the
  Lease holder and have loaded the index persisted by the previous holder. Gaining the Lease loads that
  index and re-diffs every synced kind; losing it stops publishing before the next delta goes out.
- *feedback*: Ingress status and Events, in the background (`status.py`).

The Ingress follower waits for the first IngressClass list, since whether a class-less Ingress is ours
depends on it; a change of the default IngressClass re-translates the class-less Ingresses.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from opentelemetry import trace

from shardgate import keys, telemetry
from shardgate.adapters.kube import (
    ENDPOINT_SLICE,
    INGRESS,
    INGRESS_CLASS,
    SECRET,
    SERVICE,
    Expired,
    KubeClient,
    KubeError,
    Resource,
)
from shardgate.keys import SourceKind
from shardgate.model import Contribution, TlsCertificate
from shardgate.records import Delta
from shardgate.watcher.admission import Admission
from shardgate.watcher.certs import check_certificate
from shardgate.watcher.fair import FairQueue
from shardgate.watcher.index import Change, Index, source_kind_of
from shardgate.watcher.leader import LeaderElector
from shardgate.watcher.settings import Settings
from shardgate.watcher.status import Feedback, involved, wanted_status
from shardgate.watcher.store import IndexStore
from shardgate.watcher.tenancy import Claim, Tenancy
from shardgate.watcher.translate import (
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


class Publisher(Protocol):
    async def publish(self, delta: Delta, traceparent: str = "") -> int: ...


class _NotLeader(Exception):
    """Leadership ended while a change was being published: drop the job, the next leader redoes it."""


@dataclass(slots=True)
class _Job:
    source: str
    observed_ns: int
    spans: list[trace.Span] = field(default_factory=list)
    charged: bool = False  # caused by a watch event (the namespace's rate), not by a re-sync


@dataclass(slots=True)
class _IngressState:
    namespace: str
    name: str
    admitted: bool  # what was last published for it admits at least one host
    load_balancer: list[Obj]
    ours: bool = False
    reasons: tuple[str, ...] = ()  # the translation's
    involved: Obj = field(default_factory=dict)  # for Events


_MAX_WARNED_ANNOTATIONS = 1000


class Backoff:
    """Exponential backoff with full jitter, reset after a success."""

    def __init__(self, initial: float = 0.2, cap: float = 10.0) -> None:
        self.initial, self.cap, self.attempt = initial, cap, 0

    def reset(self) -> None:
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.initial * 2**self.attempt)
        self.attempt += 1
        return random.uniform(delay / 2, delay)


def _rv_of(obj: Obj) -> str:
    meta = obj.get("metadata")
    return str(meta.get("resourceVersion") or "") if isinstance(meta, dict) else ""


class Watcher:
    def __init__(self, settings: Settings, kube: KubeClient, bus: Publisher, store: IndexStore) -> None:
        self.settings = settings
        self.kube = kube
        self.bus = bus
        self.store = store
        self.policy = ClassPolicy(settings.ingress_class, settings.controller)
        self.limits = Limits(
            max_hosts_per_ingress=settings.max_hosts_per_ingress,
            max_paths_per_host=settings.max_paths_per_host,
            max_annotation_value_bytes=settings.max_annotation_value_bytes,
            max_path_length=settings.max_path_length,
            regex_max_program_size=settings.regex_max_program_size,
            max_timeout_s=settings.max_timeout_s,
        )
        self.tenancy = Tenancy(
            (n.strip() for n in settings.catch_all_namespaces.split(",") if n.strip()),
            grace_ns=int(settings.host_release_grace * 1e9),
        )
        self._hosts_loaded = False  # the persisted host records are loaded (we lead)
        self._hosts_lock = asyncio.Lock()
        self.admission = Admission(self.tenancy)
        self._expiries: list[tuple[int, str]] = []  # heap of (certificate notAfter ns, Secret source)
        self._secret_refs: dict[str, Obj] = {}  # broken TLS Secret → its reference, for Events
        self._warned_annotations: set[str] = set()
        self.classes = IngressClasses()
        self.current: dict[str, Translation] = {}  # source -> what it contributes now (non-empty only)
        self.ingresses: dict[str, _IngressState] = {}
        self.classless: dict[str, Obj] = {}  # Ingresses without a class, re-translated if the default moves
        self.synced: set[SourceKind] = set()
        self.index = Index()
        self.published = 0  # deltas acked by JetStream, for tests and metrics
        self.seen_rv: dict[str, str] = {}  # kind -> last resourceVersion seen (events and bookmarks)
        self.lists: dict[str, int] = {}  # kind -> complete lists so far (1 + re-lists)
        self._inflight = 0
        self._reasons: dict[str, tuple[str, ...]] = {}
        self._active = False
        self._epoch = 0
        self._classes_synced = asyncio.Event()
        self._fair = FairQueue(settings.namespace_rate, settings.namespace_burst)
        self._pending: dict[str, _Job] = {}
        self._running: set[str] = set()
        self._takeover: asyncio.Task[None] | None = None
        self.elector = LeaderElector(
            kube,
            settings.lease_namespace,
            settings.lease_name,
            settings.identity,
            settings.lease_duration,
            settings.renew_deadline,
            settings.retry_period,
            on_change=self._on_leadership,
        )
        self.feedback = Feedback(kube, settings.component, allowed=self.publishing)

    def publishing(self) -> bool:
        return self._active and self.elector.is_leader

    def idle(self) -> bool:
        """No source waits to be published and none is being published."""
        return not self._pending and self._inflight == 0

    # -- lifecycle ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled; on the way out give the Lease up so a standby takes over at once."""
        self.feedback.start()
        selector = self.settings.secret_field_selector or None
        tasks = [
            asyncio.create_task(self.elector.run(), name="watcher-elector"),
            asyncio.create_task(self._timers(), name="watcher-timers"),
            *(
                asyncio.create_task(self._work(), name=f"watcher-worker-{i}")
                for i in range(max(1, self.settings.workers))
            ),
            self._follow_task("IngressClass", INGRESS_CLASS, self._on_class_list, self._on_class_event),
            self._follow_task(SourceKind.INGRESS, INGRESS, self._on_ingress_list, self._on_ingress_event),
            self._follow_task(SourceKind.SERVICE, SERVICE, *self._source_handlers(SourceKind.SERVICE)),
            self._follow_task(
                SourceKind.ENDPOINTSLICE, ENDPOINT_SLICE, *self._source_handlers(SourceKind.ENDPOINTSLICE)
            ),
            self._follow_task(SourceKind.SECRET, SECRET, *self._source_handlers(SourceKind.SECRET), selector),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            if self._takeover is not None:
                self._takeover.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._active = False
            await self.feedback.stop()
            await self.elector.release()

    def _follow_task(
        self,
        name: str,
        res: Resource,
        on_list: Callable[[list[Obj], int], None],
        on_event: Callable[[str, Obj, int], None],
        field_selector: str | None = None,
    ) -> asyncio.Task[None]:
        return asyncio.create_task(
            self._follow(name, res, on_list, on_event, field_selector), name=f"watch-{name}"
        )

    async def _follow(
        self,
        name: str,
        res: Resource,
        on_list: Callable[[list[Obj], int], None],
        on_event: Callable[[str, Obj, int], None],
        field_selector: str | None,
    ) -> None:
        if res is INGRESS:
            await self._classes_synced.wait()
        backoff = Backoff()
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    items, rv = await self.kube.list_raw(res, self.settings.page_size, field_selector)
                    on_list(items, time.time_ns())
                    self.seen_rv[name] = rv
                    self.lists[name] = self.lists.get(name, 0) + 1
                    log.info("%s: listed %d objects at resourceVersion %s", name, len(items), rv)
                    backoff.reset()
                async for etype, obj in self.kube.watch_raw(
                    res, rv, self.settings.watch_timeout, field_selector
                ):
                    observed_ns = time.time_ns()
                    if etype != "BOOKMARK":
                        on_event(etype, obj, observed_ns)
                    rv = _rv_of(obj) or rv
                    self.seen_rv[name] = rv
                    backoff.reset()
            except Expired as exc:
                log.info("%s: %s; listing again", name, exc)
                rv = None
            except KubeError as exc:
                delay = backoff.next()
                log.warning("%s: %s; retrying in %.1fs", name, exc, delay)
                await asyncio.sleep(delay)
            except Exception:  # a bug in a handler: log it, start over from a fresh list
                delay = backoff.next()
                log.exception("%s: unexpected error; listing again in %.1fs", name, delay)
                rv = None
                await asyncio.sleep(delay)

    # -- IngressClasses ----------------------------------------------------------------------------

    def _on_class_list(self, items: list[Obj], observed_ns: int) -> None:
        before = self.classes.default_for(self.policy.controller)
        self.classes.replace(items)
        self._classes_synced.set()
        self._after_class_change(before, observed_ns)

    def _on_class_event(self, etype: str, obj: Obj, observed_ns: int) -> None:
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
            self._enqueue(t.source, observed_ns)

    # -- Ingresses ---------------------------------------------------------------------------------

    def _on_ingress_list(self, items: list[Obj], observed_ns: int) -> None:
        listed = {self._remember_ingress(obj, observed_ns, settle=False).source for obj in items} - {""}
        for gone in set(self.ingresses) - listed:
            self._forget_ingress(gone, observed_ns, settle=False)
        self.synced.add(SourceKind.INGRESS)
        self._settle(self.tenancy.known_hosts(), observed_ns)
        self._finish_list(SourceKind.INGRESS, listed, observed_ns)
        if self.publishing():
            self._reconcile_status()

    def _on_ingress_event(self, etype: str, obj: Obj, observed_ns: int) -> None:
        raw_meta = obj.get("metadata")
        meta: Obj = raw_meta if isinstance(raw_meta, dict) else {}
        span = tracer.start_span(
            "watcher.event",
            attributes={
                "k8s.kind": "Ingress",
                "k8s.event.type": etype,
                "k8s.resource_version": _rv_of(obj),
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
        self._enqueue(source, observed_ns, span, charged=True)

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
        self.ingresses[t.source] = _IngressState(
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
            self._settle(touched, observed_ns)
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
            self._settle(touched, observed_ns)

    def _settle(self, hosts: set[str], observed_ns: int) -> None:
        """Re-decide ownership of `hosts` (once we lead and know every Ingress) and re-evaluate every
        Ingress whose admission that may have changed."""
        if not self._hosts_loaded or SourceKind.INGRESS not in self.synced:
            return
        for source in sorted(self.tenancy.sources(self.tenancy.settle(hosts, observed_ns))):
            self._enqueue(source, observed_ns)

    async def _timers(self) -> None:
        """What time alone changes: a host whose owner let the release grace pass goes to the longest
        waiting claimant; a certificate that reaches its notAfter becomes an error."""
        while True:
            now = time.time_ns()
            dues = [
                d for d in (self.tenancy.next_due(), self._expiries[0][0] if self._expiries else None) if d
            ]
            await asyncio.sleep(min(1.0, max(0.01, (min(dues) - now) / 1e9)) if dues else 1.0)
            now = time.time_ns()
            if self._hosts_loaded and (hosts := self.tenancy.due(now)):
                self._settle(hosts, now)
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
        self._enqueue(t.source, now)

    def _report_secret(self, t: Translation, obj: Obj | None = None) -> None:
        """A Warning Event on a broken TLS Secret (Feedback writes each distinct message once). The
        reference (with its uid, which `kubectl describe` matches on) is kept for broken ones only."""
        if source_kind_of(t.source) is not SourceKind.SECRET:
            return
        if not t.reasons:
            self._secret_refs.pop(t.source, None)
        elif obj is not None:
            self._secret_refs[t.source] = involved(obj, "Secret", "v1")
        if not self.publishing():
            return
        _, namespace, name = keys.split_source(t.source)
        ref = self._secret_refs.get(t.source) or {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
        }  # fmt: skip
        self.feedback.report(ref, t.reasons)

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

    def _want_status(self, state: _IngressState) -> None:
        wanted = wanted_status(state.admitted, state.load_balancer, self.settings.status_address)
        if wanted is not None:
            self.feedback.want_status(state.namespace, state.name, wanted)

    def _reconcile_status(self) -> None:
        for state in self.ingresses.values():
            self._want_status(state)

    # -- Services, EndpointSlices, Secrets ---------------------------------------------------------

    def _source_handlers(
        self, kind: SourceKind
    ) -> tuple[Callable[[list[Obj], int], None], Callable[[str, Obj, int], None]]:
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
            self._enqueue(t.source, observed_ns, span, charged=True)

        return on_list, on_event

    # -- shared cache plumbing ---------------------------------------------------------------------

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
        """After a (re-)list: diff every source of the kind, including those only the index knows."""
        self.synced.add(kind)
        if not self.publishing():
            return
        prefix = f"{kind}/"
        known = {s for s in self.current if s.startswith(prefix)}
        for source in sorted(listed | known | self.index.sources(kind)):
            self._enqueue(source, observed_ns)

    # -- leadership --------------------------------------------------------------------------------

    def _on_leadership(self, leading: bool) -> None:
        self._epoch += 1
        self._active = False
        self._hosts_loaded = False
        if self._takeover is not None:
            self._takeover.cancel()
            self._takeover = None
        if leading:
            self._takeover = asyncio.create_task(self._take_over(), name="watcher-takeover")

    async def _take_over(self) -> None:
        """Load what the previous holder published, then diff everything we know against it."""
        backoff = Backoff()
        while self.elector.is_leader:
            try:
                entries = await self.store.load()
                records = await self.store.load_hosts()
                break
            except Exception as exc:  # StoreError; keep trying while we hold the Lease
                log.warning("loading the published index: %s", exc)
                await asyncio.sleep(backoff.next())
        else:
            return
        self.index = Index(entries)
        now = time.time_ns()
        self.tenancy.load(records, now)
        self._hosts_loaded = True
        if SourceKind.INGRESS in self.synced:
            self.tenancy.settle(self.tenancy.known_hosts(), now)
        self._active = True
        log.info("leading: %d sources in the published index, %d host records; re-diffing %s", len(entries),
                 len(records), ", ".join(sorted(self.synced)))  # fmt: skip
        for kind in sorted(self.synced):
            prefix = f"{kind}/"
            for source in sorted(
                {s for s in self.current if s.startswith(prefix)} | self.index.sources(kind)
            ):
                self._enqueue(source, now)
        self._reconcile_status()
        for t in [t for s, t in self.current.items() if s.startswith(f"{SourceKind.SECRET}/")]:
            self._report_secret(t)

    # -- publishing --------------------------------------------------------------------------------

    def _enqueue(
        self, source: str, observed_ns: int, span: trace.Span | None = None, charged: bool = False
    ) -> None:
        job = self._pending.get(source)
        if job is None:
            job = self._pending[source] = _Job(source, observed_ns)
            if source not in self._running:  # else the worker running it queues it again when done
                self._fair.put(keys.split_source(source)[1], source)
        job.charged = job.charged or charged
        if span is not None:
            job.spans.append(span)

    async def _work(self) -> None:
        me = asyncio.current_task()
        while True:
            if me is not None and me.cancelling():
                # On 3.11 a library's asyncio.wait_for (nats-py's publish) can swallow a cancel that
                # lands as its future completes; without this check a stopping watcher never stops.
                raise asyncio.CancelledError
            namespace, source = await self._fair.get()
            job = self._pending.pop(source, None)
            if job is None:
                continue
            self._inflight += 1
            self._running.add(source)
            try:
                if await self._process(job) and job.charged:
                    self._fair.charge(namespace)
            finally:
                self._running.discard(source)
                self._inflight -= 1
                for span in job.spans:
                    span.end()
                if source in self._pending:
                    self._fair.put(namespace, source)

    async def _process(self, job: _Job) -> bool:
        """Publish what the source contributes now; True when deltas went out."""
        backoff = Backoff()
        while self.publishing() and source_kind_of(job.source) in self.synced:
            epoch = self._epoch
            try:
                await self._persist_hosts()
                t = self.current.get(job.source)
                contributions = self.admission.admitted(job.source, t.contributions if t else {})
                change = self.index.diff(
                    job.source, t.rv if t else "", contributions if t else None, job.observed_ns
                )
                if change.deltas or change.entry != self.index.get(job.source):
                    await self._publish(change, job.spans[0] if job.spans else None)
                    if epoch != self._epoch:
                        return False
                    await self.store.save(job.source, change.entry)
                    if epoch != self._epoch:
                        return False
                    self.index.commit(change)
                if source_kind_of(job.source) is SourceKind.INGRESS:
                    self._after_ingress(job.source, contributions)
                return bool(change.deltas)
            except _NotLeader:
                return False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS or Redis trouble: retry the (re-diffed) change while leading
                delay = backoff.next()
                log.warning("%s: publishing failed (%s); retrying in %.1fs", job.source, exc, delay)
                await asyncio.sleep(delay)
        return False

    async def _persist_hosts(self) -> None:
        """Write changed ownership records before anything that depends on them is published."""
        async with self._hosts_lock:
            dirty = self.tenancy.take_dirty()
            try:
                await self.store.save_hosts(dirty)
            except BaseException:
                self.tenancy.dirty.update(dirty)
                raise

    def _after_ingress(self, source: str, contributions: dict[str, Contribution]) -> None:
        """Status, and what the Ingress and its neighbours on each host should be told."""
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

    async def _publish(self, change: Change, parent: trace.Span | None) -> None:
        if not change.deltas:
            return
        own_span = None
        if parent is None:
            own_span = parent = tracer.start_span(
                "watcher.resync", attributes={"k8s.object.key": change.source}
            )
        ctx = trace.set_span_in_context(parent)
        try:
            await asyncio.gather(*(self._publish_one(d, ctx) for d in change.deltas))
        finally:
            if own_span is not None:
                own_span.end()

    async def _publish_one(self, delta: Delta, ctx: Any) -> None:
        if not self.publishing():
            raise _NotLeader(delta.unit)
        shard = keys.shard_of(delta.unit, self.settings.shards)
        with tracer.start_as_current_span(
            "watcher.publish",
            context=ctx,
            attributes={
                "sg.unit": delta.unit,
                "sg.shard": shard,
                "sg.tombstone": delta.body is None,
            },
        ) as span:
            if keys.unit_kind(delta.unit) is keys.UnitKind.HOST:
                span.set_attribute("sg.host", keys.unit_name(delta.unit))
            seq = await self.bus.publish(delta, telemetry.traceparent())
            span.set_attribute("messaging.nats.stream_sequence", seq)
        self.published += 1
