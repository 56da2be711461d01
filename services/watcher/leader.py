"""Leader election over a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it.

Only the holder publishes deltas and writes status; standbys keep their caches warm and take over when
the holder stops renewing. Every write to the Lease is an update guarded by the resourceVersion it was
read at, so two candidates racing for it cannot both win (the loser gets 409 Conflict).

Expiry is judged by the local monotonic clock, never by comparing `renewTime` with our wall clock: a
standby notes *when it saw* the holder's record change, and takes the Lease only after it has not changed
for `leaseDurationSeconds`. The holder, for its part, stops calling itself leader `renew_deadline`
seconds after its last successful renewal (less than the lease duration), so it has stopped publishing
before any standby can take over — even when the API server is unreachable and it cannot tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from shardgate.adapters.kube import Conflict, KubeError

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class LeaseApi(Protocol):
    async def get_lease(self, namespace: str, name: str) -> Obj | None: ...

    async def create_lease(self, namespace: str, name: str, spec: Obj) -> Obj: ...

    async def update_lease(self, lease: Obj, spec: Obj) -> Obj: ...


class _Lost(Exception):
    """The Lease we held is somebody else's now."""


def micro_time(now: datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds, in UTC."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Acquires and renews one Lease; `is_leader` is what the publishers check before each write."""

    def __init__(
        self,
        api: LeaseApi,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_change: Callable[[bool], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_change = on_change
        self._monotonic = monotonic
        self._wall = wall
        self._valid_until = -math.inf  # monotonic time our leadership ends unless renewed
        self._leading = False
        self._observed: tuple[Any, ...] | None = None  # the other holder's record as last seen
        self._observed_at = 0.0
        self._lease: Obj | None = None
        self._held = False  # this process has held the Lease at some point
        self._lapsed = False  # the last success came after our deadline had passed, while leading
        self.continued = False
        """Whether the tenure just begun follows on from this process's previous one with nobody else
        holding the Lease in between (what it published is still all there is): set on each acquisition."""

    @property
    def is_leader(self) -> bool:
        return self._leading and self._monotonic() < self._valid_until

    def _set_leading(self, leading: bool) -> None:
        if leading != self._leading:
            self._leading = leading
            log.info(
                "%s %s the lease %s/%s",
                self.identity,
                "holds" if leading else "lost",
                self.namespace,
                self.name,
            )
            if self.on_change is not None:
                self.on_change(leading)

    def _spec(self, acquire_time: str, transitions: int, now: str) -> Obj:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, math.ceil(self.lease_duration)),
            "acquireTime": acquire_time,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def try_acquire_or_renew(self) -> bool:
        """One round: True when we hold the Lease afterwards."""
        started = self._monotonic()
        now = micro_time(self._wall())
        if self.is_leader and self._lease is not None:
            # The holder's fast path (client-go's too): update the record it wrote last, one request
            # instead of a read and a write. A busy API server answers each request late, and a renewal
            # that misses the deadline costs a failover; a Conflict means someone else wrote the Lease
            # since, and the full round below decides.
            spec = self._lease.get("spec") or {}
            renewed = self._spec(spec.get("acquireTime") or now, int(spec.get("leaseTransitions") or 0), now)
            with contextlib.suppress(Conflict):
                self._lease = await self.api.update_lease(self._lease, renewed)
                self._won(started, renewal=True, continued=True)  # nobody wrote it since we did
                return True
        lease = await self.api.get_lease(self.namespace, self.name)
        if lease is None:
            try:
                self._lease = await self.api.create_lease(self.namespace, self.name, self._spec(now, 0, now))
            except Conflict:
                return False
            self._won(started, renewal=False, continued=False)
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity:
            # Any write bumps the resourceVersion, so a renewal counts even if the clocks are coarse.
            record = (holder, spec.get("renewTime"), (lease.get("metadata") or {}).get("resourceVersion"))
            if record != self._observed:
                self._observed, self._observed_at = record, started
            duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
            if started < self._observed_at + duration:
                if self._leading:
                    raise _Lost(holder)
                return False  # somebody else's Lease, still fresh
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            new_spec = self._spec(spec.get("acquireTime") or now, transitions, now)
        else:
            new_spec = self._spec(now, transitions + 1, now)
        try:
            self._lease = await self.api.update_lease(lease, new_spec)
        except Conflict as exc:
            if self._leading:
                raise _Lost(str(exc)) from exc  # someone wrote the Lease since we read it
            return False
        # The record still naming us means nobody else acquired it since we last wrote it (a taker writes
        # its own name; a release writes none): our previous tenure goes on.
        ours = holder == self.identity
        self._won(started, renewal=ours, continued=ours and self._held)
        return True

    def _won(self, started: float, renewal: bool, continued: bool) -> None:
        """The Lease is ours from `started`. A renewal that lands after our deadline passed is a lapse
        (`is_leader` was False meanwhile, and the publishers stopped): `run` reports it as one."""
        lapsed = self._monotonic() >= self._valid_until
        self._lapsed = self._leading and lapsed
        if not renewal or lapsed:
            self.continued = continued
        self._valid_until = started + self.renew_deadline
        self._held = True

    async def run(self) -> None:
        """Acquire, then renew every `retry_period`, until cancelled; leadership changes call on_change."""
        try:
            while True:
                try:
                    held = await self.try_acquire_or_renew()
                except KubeError as exc:
                    log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
                    held = False
                except _Lost:
                    # Somebody else holds the Lease now: stop at once, do not wait for our deadline.
                    self._valid_until = -math.inf
                    held = False
                if held:
                    if self._lapsed:
                        # Our deadline passed while the renewal was in flight: the publishers stopped
                        # meanwhile, so the owner must see the lapse, and then the tenure going on.
                        self._set_leading(False)
                    self._set_leading(True)
                elif not self.is_leader:
                    self._set_leading(False)
                wait = self.retry_period
                if self._leading:
                    # Less than a retry period left (a slow renewal ate it): try again halfway to the
                    # deadline rather than sleep until it and step down; close to it, wake up at it, so
                    # a stale leader steps down on time.
                    left = self._valid_until - self._monotonic()
                    if left < wait:
                        wait = left / 2 if left > self.retry_period / 4 else left
                    wait = max(0.0, wait)
                await asyncio.sleep(wait)
                if self._leading and not self.is_leader:
                    self._set_leading(False)
        finally:
            if self._leading:
                self._set_leading(False)

    async def release(self) -> None:
        """Give the Lease up so a standby takes over at once rather than after the lease duration."""
        self._valid_until = -math.inf
        self._set_leading(False)
        if self._lease is None:
            return
        with contextlib.suppress(KubeError):
            lease = await self.api.get_lease(self.namespace, self.name)
            spec = (lease or {}).get("spec") or {}
            if lease is not None and spec.get("holderIdentity") == self.identity:
                now = micro_time(self._wall())
                released = dict(spec, holderIdentity="", leaseDurationSeconds=1, renewTime=now)
                await self.api.update_lease(lease, released)
        self._lease = None
