"""The watcher's one owner of concurrency: follow five kinds, keep caches, publish exact deltas.

Tasks, all started and stopped by `Watcher.run`:

- one *follower* per kind (IngressClass, Ingress, Service, EndpointSlice, Secret, `followers.py`): list,
  then watch with bookmarks, feeding the in-memory caches (`caches.py`: what each source contributes
  now), which enqueue the sources a change affects. Every replica does this, leader or not, so a
  standby's caches are warm when it takes over. The Ingress follower waits for the first IngressClass
  list, since whether a class-less Ingress is ours depends on it.
- `workers` *publishers* (`publishing.py`) take sources from one fair queue, per-source in order and
  parallel across sources, and publish what admission lets through; then the Ingress's owner is told
  what was not admitted (Events, `status.py`).
- the *elector* (Lease). Publishing and status writes happen only while `publishing()` holds: we are the
  Lease holder and have loaded the index persisted by the previous holder. Gaining the Lease loads that
  index and re-diffs every synced kind; losing it stops publishing before the next delta goes out.
- *timers*: what time alone changes (a host's release grace ends, a certificate expires), and dropping
  the PEM of TLS Secrets once they are published (`Caches.withhold_published`).
- *feedback*: Ingress status and Events, in the background (`status.py`).

The caches and the publishers reach each other only through this class (`enqueue`, `settle`,
`resync`), which also decides, from leadership, whether anything is to be published at all.
"""

from __future__ import annotations

import asyncio
import logging
import time

from shardgate.adapters.kube import (
    ENDPOINT_SLICE,
    INGRESS,
    INGRESS_CLASS,
    SECRET,
    SERVICE,
    KubeClient,
    KubeError,
    NotFound,
)
from shardgate.keys import SourceKind

from .admission import Admission
from .backoff import Backoff
from .caches import Caches
from .followers import Followers, consume
from .index import Index
from .leader import LeaderElector
from .publishing import Publisher, Publishers
from .settings import Settings
from .status import Feedback
from .store import IndexStore
from .tenancy import Tenancy
from .traced import EventSpan
from .translate import ClassPolicy, Limits

__all__ = ["Backoff", "Publisher", "Watcher"]

log = logging.getLogger(__name__)

RESTORE_BY_GET = 64  # up to this many Secrets a new leader reads again one by one; more: one list
RESTORE_CONCURRENCY = 16  # Secrets read again at once


class Watcher:
    def __init__(self, settings: Settings, kube: KubeClient, bus: Publisher, store: IndexStore) -> None:
        self.settings = settings
        self.kube = kube
        self.bus = bus
        self.store = store
        self.tenancy = Tenancy(
            (n.strip() for n in settings.catch_all_namespaces.split(",") if n.strip()),
            grace_ns=int(settings.host_release_grace * 1e9),
        )
        self.admission = Admission(self.tenancy)
        self._hosts_loaded = False  # the persisted host records are loaded (we lead)
        self._active = False
        self._resumable = False  # our last tenure finished its takeover: a continued tenure may resume
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
        self.caches = Caches(
            self,
            ClassPolicy(settings.ingress_class, settings.controller),
            Limits(
                max_hosts_per_ingress=settings.max_hosts_per_ingress,
                max_paths_per_host=settings.max_paths_per_host,
                max_annotation_value_bytes=settings.max_annotation_value_bytes,
                max_path_length=settings.max_path_length,
                regex_max_program_size=settings.regex_max_program_size,
                max_timeout_s=settings.max_timeout_s,
            ),
            self.tenancy,
            self.admission,
            self.feedback,
            settings.status_address,
        )
        self.publishers = Publishers(
            bus,
            store,
            self.tenancy,
            self.admission,
            self.caches.current,
            self.caches.synced,
            shards=settings.shards,
            namespace_rate=settings.namespace_rate,
            namespace_burst=settings.namespace_burst,
            allowed=self.publishing,
            published_ingress=self.caches.published_ingress,
        )
        self.followers = Followers(kube, settings.page_size, settings.watch_timeout)

    def publishing(self) -> bool:
        return self._active and self.elector.is_leader

    def idle(self) -> bool:
        """No source waits to be published and none is being published."""
        return self.publishers.idle()

    @property
    def published(self) -> int:
        """Deltas acked by JetStream, for tests and metrics."""
        return self.publishers.published

    @property
    def seen_rv(self) -> dict[str, str]:
        """Kind -> last resourceVersion seen (events and bookmarks)."""
        return self.followers.seen_rv

    @property
    def lists(self) -> dict[str, int]:
        """Kind -> complete lists so far (1 + re-lists)."""
        return self.followers.lists

    # -- lifecycle ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled; on the way out give the Lease up so a standby takes over at once."""
        self.feedback.start()
        selector = self.settings.secret_field_selector or None
        c, follow = self.caches, self.followers.task
        tasks = [
            asyncio.create_task(self.elector.run(), name="watcher-elector"),
            asyncio.create_task(self._timers(), name="watcher-timers"),
            *(
                asyncio.create_task(self.publishers.work(), name=f"watcher-worker-{i}")
                for i in range(max(1, self.settings.workers))
            ),
            follow("IngressClass", INGRESS_CLASS, c.on_class_list, c.on_class_event),
            follow(
                SourceKind.INGRESS, INGRESS, c.on_ingress_list, c.on_ingress_event, after=c.classes_synced
            ),
            follow(SourceKind.SERVICE, SERVICE, *c.source_handlers(SourceKind.SERVICE)),
            follow(SourceKind.ENDPOINTSLICE, ENDPOINT_SLICE, *c.source_handlers(SourceKind.ENDPOINTSLICE)),
            follow(SourceKind.SECRET, SECRET, *c.source_handlers(SourceKind.SECRET), selector),
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

    async def _timers(self) -> None:
        """What time alone changes: a host whose owner let the release grace pass goes to the longest
        waiting claimant; a certificate that reaches its notAfter becomes an error. And, at most a second
        after a TLS Secret is published, its PEM is dropped (all of them while we do not lead)."""
        while True:
            now = time.time_ns()
            dues = [d for d in (self.tenancy.next_due(), self.caches.next_expiry()) if d]
            await asyncio.sleep(min(1.0, max(0.01, (min(dues) - now) / 1e9)) if dues else 1.0)
            now = time.time_ns()
            if self._hosts_loaded and (hosts := self.tenancy.due(now)):
                self.settle(hosts, now)
            self.caches.expire_due(now)
            if self.publishing():
                self.caches.withhold_published(self.publishers.index.get)
            elif not self.elector.is_leader:  # (leading but not publishing: the index is being loaded)
                self.caches.withhold_published(None)

    # -- what the caches ask for -------------------------------------------------------------------

    def enqueue(
        self, source: str, observed_ns: int, span: EventSpan | None = None, charged: bool = False
    ) -> None:
        """Publish what `source` contributes now (coalesced with what is already queued for it)."""
        self.publishers.enqueue(source, observed_ns, span, charged)

    def settle(self, hosts: set[str], observed_ns: int) -> None:
        """Re-decide ownership of `hosts` (once we lead and know every Ingress) and re-evaluate every
        Ingress whose admission that may have changed."""
        if not self._hosts_loaded or SourceKind.INGRESS not in self.caches.synced:
            return
        for source in sorted(self.tenancy.sources(self.tenancy.settle(hosts, observed_ns))):
            self.enqueue(source, observed_ns)

    def resync(self, kind: SourceKind, sources: set[str], observed_ns: int) -> None:
        """After a (re-)list of `kind`: diff every source of it, including those only the index knows."""
        if self.publishing():
            self._rediff(kind, sources, observed_ns)

    def _rediff(self, kind: SourceKind, sources: set[str], observed_ns: int) -> None:
        for source in sorted(sources | self.caches.sources(kind) | self.publishers.index.sources(kind)):
            self.enqueue(source, observed_ns)

    # -- leadership --------------------------------------------------------------------------------

    def _on_leadership(self, leading: bool) -> None:
        self.publishers.epoch += 1
        if not leading:
            # What we published is complete only if our takeover had finished: then a tenure that goes
            # on (nobody else took the Lease meanwhile) can resume from it.
            self._resumable = self._active
        self._active = False
        self._hosts_loaded = False
        if self._takeover is not None:
            self._takeover.cancel()
            self._takeover = None
        if leading:
            resume = self._resumable and self.elector.continued
            self._resumable = False
            dropped = self.publishers.take_dropped()
            if resume and dropped is not None:
                self._takeover = asyncio.create_task(self._resume(dropped), name="watcher-resume")
            else:
                self._takeover = asyncio.create_task(self._take_over(), name="watcher-takeover")

    async def _resume(self, dropped: set[str]) -> None:
        """Lead again after a lapse in which nobody else held the Lease: the index and host records in
        memory are still what is published, so nothing is reloaded and only what leadership cut short is
        published again, not every source (a full takeover re-diffs all of them: at 100k Ingresses that
        held new changes back for the whole re-diff)."""
        now = time.time_ns()
        self._hosts_loaded = True
        self._active = True
        log.info("leading again, nobody else held the Lease: re-diffing %d sources", len(dropped))
        if SourceKind.INGRESS in self.caches.synced:
            # Host ownership decisions wait while we do not lead: take them now (in memory).
            self.settle(self.tenancy.known_hosts(), now)
        for source in sorted(dropped):
            self.enqueue(source, now)
        await self._tell_and_restore()

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
        self.publishers.index = Index(entries)
        now = time.time_ns()
        self.tenancy.load(records, now)
        self._hosts_loaded = True
        synced = self.caches.synced
        if SourceKind.INGRESS in synced:
            self.tenancy.settle(self.tenancy.known_hosts(), now)
        self._active = True
        log.info("leading: %d sources in the published index, %d host records; re-diffing %s", len(entries),
                 len(records), ", ".join(sorted(synced)))  # fmt: skip
        for kind in sorted(synced):
            self._rediff(kind, set(), now)
        await self._tell_and_restore()

    async def _tell_and_restore(self) -> None:
        """What a new tenure owes once it publishes (a takeover or a resume): every Ingress's status and
        every broken Secret's Event (not written while we did not lead), and the certificates we know only
        by a hash that is not the published one."""
        self.caches.reconcile_status()
        self.caches.report_secrets()
        await self._restore_withheld()

    async def _restore_withheld(self) -> None:
        """Read again the TLS Secrets we know only by a hash that is not the published one (they changed
        while we did not lead, so we kept no PEM), and publish them: normally none; many only when the
        published index was lost, and then with one list rather than a read each."""
        missing = self.caches.withheld_unpublished(self.publishers.index.get)
        if not missing:
            return
        log.info("leading: reading %d TLS Secrets again to publish their certificates", len(missing))
        if len(missing) > RESTORE_BY_GET:
            await self._restore_by_list(set(missing))
            return
        slots = asyncio.Semaphore(RESTORE_CONCURRENCY)

        async def restore(source: str) -> None:
            _, namespace, name = source.split("/", 2)
            backoff = Backoff()
            async with slots:
                while self.publishing():
                    try:
                        obj = await self.kube.get(SECRET, namespace, name)
                    except NotFound:
                        return  # deleted meanwhile: its watch event removes it
                    except KubeError as exc:
                        log.warning("%s: reading it again: %s", source, exc)
                        await asyncio.sleep(backoff.next())
                        continue
                    self.caches.restore_secret(obj, time.time_ns())
                    return

        await asyncio.gather(*(restore(s) for s in missing))

    async def _restore_by_list(self, missing: set[str]) -> None:
        backoff = Backoff()
        selector = self.settings.secret_field_selector or None
        while self.publishing():
            try:
                items, _ = await self.kube.list_raw(SECRET, self.settings.page_size, selector)
                break
            except KubeError as exc:
                log.warning("listing TLS Secrets again: %s", exc)
                await asyncio.sleep(backoff.next())
        else:
            return
        now = time.time_ns()
        async for obj in consume(items):
            meta = obj.get("metadata") or {}
            if f"{SourceKind.SECRET}/{meta.get('namespace')}/{meta.get('name')}" in missing:
                self.caches.restore_secret(obj, now)
