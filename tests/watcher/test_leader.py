"""The Lease elector against an in-memory Lease API with optimistic concurrency and a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from shardgate.adapters.kube import Conflict, Transient
from shardgate.watcher.leader import LeaderElector, _Lost

from ..clock import ManualClock


class FakeLeases:
    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.down = False
        self.requests = 0

    def _check(self) -> None:
        self.requests += 1
        if self.down:
            raise Transient("down")

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._check()
        return copy.deepcopy(self.lease)

    async def create_lease(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        self._check()
        if self.lease is not None:
            raise Conflict("exists")
        self.rv += 1
        self.lease = {
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": str(self.rv)},
            "spec": spec,
        }
        return copy.deepcopy(self.lease)

    async def update_lease(self, lease: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
        self._check()
        assert self.lease is not None
        if lease["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise Conflict("stale")
        self.rv += 1
        self.lease = {"metadata": {**self.lease["metadata"], "resourceVersion": str(self.rv)}, "spec": spec}
        return copy.deepcopy(self.lease)


def elector(api: FakeLeases, clock: ManualClock, identity: str) -> LeaderElector:
    return LeaderElector(
        api, "ns", "lease", identity, lease_duration=15, renew_deadline=10, retry_period=2,
        monotonic=clock, wall=lambda: datetime(2024, 1, 1, tzinfo=UTC),
    )  # fmt: skip


async def test_acquire_renew_and_take_over_after_expiry() -> None:
    api, clock = FakeLeases(), ManualClock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    assert await a.try_acquire_or_renew()
    assert api.lease is not None and api.lease["spec"]["holderIdentity"] == "a"
    assert api.lease["spec"]["leaseTransitions"] == 0
    assert not await b.try_acquire_or_renew()  # fresh: b first notes when it saw the record
    clock.now += 14
    assert not await b.try_acquire_or_renew()  # unchanged for 14 s < 15 s
    clock.now += 2
    assert await b.try_acquire_or_renew()  # unchanged for 16 s: taken
    assert api.lease["spec"]["holderIdentity"] == "b" and api.lease["spec"]["leaseTransitions"] == 1


async def test_renewals_keep_a_standby_out() -> None:
    api, clock = FakeLeases(), ManualClock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    assert await a.try_acquire_or_renew()
    for _ in range(20):
        assert not await b.try_acquire_or_renew()
        clock.now += 2
        assert await a.try_acquire_or_renew()


async def test_holder_stops_leading_at_its_renew_deadline() -> None:
    api, clock = FakeLeases(), ManualClock()
    a = elector(api, clock, "a")
    assert await a.try_acquire_or_renew()
    a._set_leading(True)
    api.down = True
    clock.now += 9.9
    assert a.is_leader
    clock.now += 0.2
    assert not a.is_leader  # 10 s after the last renewal, before any standby may take over (15 s)


async def test_release_hands_over_at_once() -> None:
    api, clock = FakeLeases(), ManualClock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    assert await a.try_acquire_or_renew()
    await a.release()
    assert api.lease is not None and api.lease["spec"]["holderIdentity"] == ""
    assert await b.try_acquire_or_renew()  # released: taken at once


async def test_the_holder_renews_with_one_request_and_notices_another_writer() -> None:
    api, clock = FakeLeases(), ManualClock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    assert await a.try_acquire_or_renew()
    a._set_leading(True)
    before = api.requests
    clock.now += 2
    assert await a.try_acquire_or_renew()
    assert api.requests == before + 1  # the update alone, no read first
    assert (
        api.lease is not None
        and api.lease["spec"]["renewTime"]
        and api.lease["spec"]["leaseTransitions"] == 0
    )
    # Someone else takes the Lease (a's record went stale, say): a's update conflicts, the full round
    # reads the Lease, sees the other holder and gives up at once.
    assert not await b.try_acquire_or_renew()  # b notes when it saw a's record
    clock.now += 16
    assert not a.is_leader and await b.try_acquire_or_renew()
    a._valid_until = clock.now + 10  # as if a still believed it led
    with pytest.raises(_Lost):
        await a.try_acquire_or_renew()
    assert api.lease["spec"]["holderIdentity"] == "b"


def test_timings_must_nest() -> None:
    with pytest.raises(ValueError):
        LeaderElector(FakeLeases(), "ns", "l", "a", lease_duration=5, renew_deadline=6, retry_period=1)


async def test_a_tenure_continues_only_if_nobody_else_held_the_lease_between() -> None:
    api, clock = FakeLeases(), ManualClock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    assert await a.try_acquire_or_renew() and not a.continued  # a first tenure continues nothing
    a._set_leading(True)
    api.down = True
    clock.now += 11  # past a's renew deadline, within the lease duration
    assert not a.is_leader
    api.down = False
    assert await a.try_acquire_or_renew() and a.continued  # the record still names a: it goes on

    # a stops renewing; b takes the Lease once it has seen a's record go unrenewed for the lease
    # duration, then a takes it back from b the same way.
    a._set_leading(False)
    assert not await b.try_acquire_or_renew()
    clock.now += 16
    assert await b.try_acquire_or_renew()
    assert not await a.try_acquire_or_renew()
    clock.now += 16
    assert await a.try_acquire_or_renew() and not a.continued

    await a.release()  # a release writes no holder: the next tenure starts afresh as well
    assert await a.try_acquire_or_renew() and not a.continued


async def test_a_renewal_answered_after_the_deadline_is_reported_as_a_lapse() -> None:
    """The publishers stopped when the deadline passed; the owner must hear of it even though the
    renewal then succeeded (and leaves us leading: it started in time), or what the publishers dropped
    meanwhile would never be published. Renewals every 0.25 s, deadline 0.3 s after a renewal starts:
    one taking 0.15 s ends ~0.1 s after the last deadline and well before the new one."""

    class SlowOnce(FakeLeases):
        slow = False

        async def update_lease(self, lease: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
            if self.slow:
                self.slow = False
                await asyncio.sleep(0.15)  # ends past the last deadline, within the new one
            return await super().update_lease(lease, spec)

    api = SlowOnce()
    changes: asyncio.Queue[bool] = asyncio.Queue()
    a = LeaderElector(
        api, "ns", "lease", "a", lease_duration=1.0, renew_deadline=0.3, retry_period=0.25,
        on_change=changes.put_nowait,
    )  # fmt: skip
    task = asyncio.create_task(a.run())
    try:
        assert await asyncio.wait_for(changes.get(), 5) is True
        api.slow = True
        seen = [await asyncio.wait_for(changes.get(), 5) for _ in range(2)]
        assert seen == [False, True] and a.continued and a.is_leader
        await asyncio.sleep(0.6)  # and it goes on renewing in time: no further step-down
        assert changes.empty() and a.is_leader
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_renewal_that_lands_after_the_deadline_is_flagged_as_a_lapse() -> None:
    api, clock = FakeLeases(), ManualClock()
    a = elector(api, clock, "a")
    assert await a.try_acquire_or_renew()
    a._set_leading(True)
    clock.now += 2
    assert await a.try_acquire_or_renew() and not a._lapsed  # in time: a plain renewal

    real_update = api.update_lease

    async def slow_update(lease: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
        clock.now += 10.5  # the API answers after our deadline (10 s) has passed
        return await real_update(lease, spec)

    api.update_lease = slow_update  # type: ignore[method-assign]
    clock.now += 1
    assert await a.try_acquire_or_renew()
    assert a._lapsed and a.continued  # run() reports it as a lapse, then the tenure going on
