"""What users see of the watcher's decisions: Ingress status and Events.

An admitted Ingress (our class, at least one valid host) gets `status.loadBalancer.ingress` set to the
configured address; an Ingress that stops being ours has it cleared — but only if it holds exactly what
we write, so we never erase another controller's status. Writes happen only when the observed status
differs from the wanted one: our own status write comes back as a watch event whose contributions are
unchanged, so it produces no delta and, now matching, no further write. That is what keeps the loop
closed.

Rejections (a bad rule, a bad path, a host owned by another namespace, a lost conflict, a broken
certificate) are reported as Warning Events on the object — Ingress or Secret — once per distinct set of
reasons per object, so an unchanged bad object does not produce an Event on every resync.

`Feedback` owns one background task; callers only state what they want (`want_status`, `report`),
latest wins per Ingress, and nothing here blocks the delta path.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from shardgate.adapters.kube import KubeError, NotFound, Transient

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class FeedbackApi(Protocol):
    async def patch_ingress_status(self, namespace: str, name: str, load_balancer: Obj) -> Obj: ...

    async def create_event(
        self, involved: Obj, reason: str, message: str, component: str, now: str
    ) -> Obj: ...


def load_balancer_entry(address: str) -> list[Obj]:
    """`[{"ip": address}]` for an IP address, `[{"hostname": address}]` otherwise."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return [{"hostname": address}]
    return [{"ip": address}]


def involved(obj: Obj, kind: str, api_version: str) -> Obj:
    """The little of an object an Event needs (list items carry no kind; Secrets carry data)."""
    raw = obj.get("metadata")
    meta: Obj = raw if isinstance(raw, dict) else {}
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "resourceVersion") if meta.get(k)},
    }


def wanted_status(admitted: bool, status_ours: bool, target: list[Obj]) -> list[Obj] | None:
    """The `status.loadBalancer.ingress` to write, or None when the current one is right (or not ours).

    `target` is what we write (`load_balancer_entry` of the configured address; empty: no address, no
    status at all) and `status_ours` whether the Ingress holds exactly that now: the watcher keeps that
    flag, not the status."""
    if not target:
        return None
    if admitted:
        return None if status_ours else target
    return [] if status_ours else None


class Feedback:
    """Writes Ingress status and Events in the background, latest wish per Ingress wins."""

    def __init__(
        self,
        api: FeedbackApi,
        component: str,
        allowed: Callable[[], bool],
        retry_delay: float = 1.0,
        concurrency: int = 16,
    ) -> None:
        self.api = api
        self.component = component
        self.allowed = allowed  # only the leader writes
        self.retry_delay = retry_delay
        self.concurrency = concurrency  # status writes in flight: one at a time trailed a burst by minutes
        self._status: dict[tuple[str, str], list[Obj]] = {}
        self._events: dict[tuple[str, str, str], tuple[Obj, str]] = {}
        self._reported: dict[tuple[str, str, str], str] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="watcher-feedback")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def want_status(self, namespace: str, name: str, load_balancer_ingress: list[Obj]) -> None:
        self._status[(namespace, name)] = load_balancer_ingress
        self._wake.set()

    def report(self, obj: Obj, reasons: list[str]) -> None:
        """A Warning Event on `obj` (see `involved`) listing `reasons`, unless exactly these were reported
        already; no reasons: forget what was reported, so the same problem coming back is reported."""
        meta = obj.get("metadata") or {}
        key = (str(obj.get("kind")), str(meta.get("namespace")), str(meta.get("name")))
        message = "; ".join(reasons)
        if self._reported.get(key) == message:
            return
        if not reasons:
            self._reported.pop(key, None)
            self._events.pop(key, None)
            return
        self._events[key] = (obj, message)
        self._wake.set()

    def forget(self, namespace: str, name: str, kind: str = "Ingress") -> None:
        """The object is gone: drop what we meant to write about it."""
        self._status.pop((namespace, name), None)
        self._events.pop((kind, namespace, name), None)
        self._reported.pop((kind, namespace, name), None)

    async def _write_statuses(self) -> bool:
        """Write the wanted statuses, `concurrency` at a time; True when one failed transiently (the
        caller waits before trying again). One Ingress never has two writes in flight: a wish made
        while its write is under way waits for it, so the latest wish is the one that lands."""
        failed = False
        inflight: set[tuple[str, str]] = set()
        finished = asyncio.Event()  # a write ended: a slot is free, or a waiting wish may go

        async def write(key: tuple[str, str], lb: list[Obj]) -> None:
            nonlocal failed
            try:
                await self.api.patch_ingress_status(key[0], key[1], {"ingress": lb or None})
            except NotFound:
                pass
            except KubeError as exc:
                log.warning("status of ingress %s/%s not written: %s", key[0], key[1], exc)
                if isinstance(exc, Transient):
                    self._status.setdefault(key, lb)
                    failed = True
            finally:
                inflight.discard(key)
                finished.set()

        async with asyncio.TaskGroup() as group:
            while not failed and self.allowed():
                # Skips at most the Ingresses being written (`concurrency` of them).
                key = next((k for k in self._status if k not in inflight), None)
                if key is None and not inflight:
                    break
                if key is None or len(inflight) >= self.concurrency:
                    finished.clear()
                    await finished.wait()
                    continue
                inflight.add(key)
                group.create_task(write(key, self._status.pop(key)))
        if not self._status:
            self._status = {}  # a dict keeps the table of its largest size (a burst's) until it grows again
        return failed

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self.allowed():
                self._status.clear()
                self._events.clear()
                continue
            failed = await self._write_statuses()
            while self._events and self.allowed() and not failed:
                ekey, (obj, message) = self._events.popitem()
                now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                # Reported from now on, not once written: the same reasons reported meanwhile (our status
                # write on the Ingress comes back and is judged again) must not queue a second Event, and
                # reasons withdrawn meanwhile must stay forgotten.
                before = self._reported.get(ekey)
                self._reported[ekey] = message
                try:
                    await self.api.create_event(obj, "Rejected", message, self.component, now)
                except KubeError as exc:
                    log.warning("event for %s %s/%s not written: %s", *ekey, exc)
                    if self._reported.get(ekey) == message:  # not written: as if never tried
                        if before is None:
                            del self._reported[ekey]
                        else:
                            self._reported[ekey] = before
            if failed:
                await asyncio.sleep(self.retry_delay)
                self._wake.set()
