"""Status writing (its pure parts; Feedback writes one Event per set of reasons) and settings."""

from __future__ import annotations

import asyncio
from typing import Any

from shardgate.watcher.settings import Settings
from shardgate.watcher.status import Feedback, load_balancer_entry, wanted_status

Obj = dict[str, Any]


def test_load_balancer_entry() -> None:
    assert load_balancer_entry("10.0.0.1") == [{"ip": "10.0.0.1"}]
    assert load_balancer_entry("fd00::1") == [{"ip": "fd00::1"}]
    assert load_balancer_entry("lb.example.com") == [{"hostname": "lb.example.com"}]


def test_wanted_status_table() -> None:
    ours = [{"ip": "10.0.0.1"}]
    other = [{"ip": "192.0.2.9"}]
    cases = [
        # admitted, current, address, wanted
        (True, [], "10.0.0.1", ours),
        (True, ours, "10.0.0.1", None),  # already right: no write (this closes the write loop)
        (True, other, "10.0.0.1", ours),
        (False, ours, "10.0.0.1", []),  # stopped being ours: clear what we wrote
        (False, other, "10.0.0.1", None),  # someone else's status: leave it
        (False, [], "10.0.0.1", None),
        (True, [], "", None),  # no address configured: no status at all
    ]
    for admitted, current, address, wanted in cases:
        target = load_balancer_entry(address) if address else []
        status_ours = bool(target) and current == target  # the flag the watcher keeps
        assert wanted_status(admitted, status_ours, target) == wanted, (admitted, current, address)


def test_settings_env_then_flags() -> None:
    env = {"SHARDGATE_NATS_URL": "nats://n:1", "SHARDGATE_SHARDS": "16", "SHARDGATE_LEASE_DURATION": "3.5"}
    s = Settings.load(["--shards", "32", "--status-address", "1.2.3.4"], env)
    assert s.nats_url == "nats://n:1" and s.shards == 32 and s.lease_duration == 3.5
    assert s.status_address == "1.2.3.4" and s.ingress_class == "shardgate"
    assert Settings.load([], {}).kubeconfig is None


def test_tenancy_settings_from_env() -> None:
    env = {
        "SHARDGATE_NAMESPACE_RATE": "5",
        "SHARDGATE_HOST_RELEASE_GRACE": "2.5",
        "SHARDGATE_CATCH_ALL_NAMESPACES": "platform,ingress",
        "SHARDGATE_MAX_HOSTS_PER_INGRESS": "10",
    }
    s = Settings.load([], env)
    assert s.namespace_rate == 5.0 and s.host_release_grace == 2.5 and s.max_hosts_per_ingress == 10
    assert s.catch_all_namespaces == "platform,ingress" and s.regex_max_program_size == 100


class _SlowEvents:
    """A FeedbackApi whose Event writes wait until the test lets them finish."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.writing = asyncio.Event()
        self.finish = asyncio.Event()

    async def patch_ingress_status(self, namespace: str, name: str, load_balancer: Obj) -> Obj:
        return {}

    async def create_event(self, involved: Obj, reason: str, message: str, component: str, now: str) -> Obj:
        self.writing.set()
        await self.finish.wait()
        self.events.append((involved["metadata"]["name"], message))
        return {}


def _ingress_ref(name: str) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "ns"},
    }


async def test_the_same_reasons_reported_while_their_event_is_being_written_make_one_event() -> None:
    # The loser of a conflict is told when it is published; our status write on it comes back as a watch
    # event, is re-evaluated and reports the same reasons again — while the first Event is still in flight.
    api = _SlowEvents()
    feedback = Feedback(api, "shardgate", allowed=lambda: True)
    feedback.start()
    try:
        lost = ["h: Exact path /same is already routed by the older Ingress ns/first; this rule is not used"]
        feedback.report(_ingress_ref("second"), lost)
        await asyncio.wait_for(api.writing.wait(), 5)
        feedback.report(_ingress_ref("second"), lost)
        api.finish.set()
        for _ in range(20):
            await asyncio.sleep(0)
        assert api.events == [("second", lost[0])]
        feedback.report(_ingress_ref("second"), lost)  # and once written, still the same reasons: nothing
        for _ in range(20):
            await asyncio.sleep(0)
        assert api.events == [("second", lost[0])]
    finally:
        await feedback.stop()


async def test_reasons_withdrawn_while_their_event_is_being_written_are_reported_when_they_come_back() -> (
    None
):
    api = _SlowEvents()
    feedback = Feedback(api, "shardgate", allowed=lambda: True)
    feedback.start()
    try:
        feedback.report(_ingress_ref("second"), ["bad"])
        await asyncio.wait_for(api.writing.wait(), 5)
        feedback.report(_ingress_ref("second"), [])  # fixed meanwhile: forget what was reported
        api.finish.set()
        for _ in range(20):
            await asyncio.sleep(0)
        feedback.report(_ingress_ref("second"), ["bad"])  # broken again: a new Event
        for _ in range(20):
            await asyncio.sleep(0)
        assert api.events == [("second", "bad"), ("second", "bad")]
    finally:
        await feedback.stop()


class _GatedStatus:
    """A FeedbackApi whose status writes wait until the test opens the gate; it records what overlapped."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.inflight: list[tuple[str, str]] = []
        self.most_inflight = 0
        self.written: list[tuple[str, Obj]] = []

    async def patch_ingress_status(self, namespace: str, name: str, load_balancer: Obj) -> Obj:
        self.inflight.append((namespace, name))
        self.most_inflight = max(self.most_inflight, len(self.inflight))
        await self.gate.wait()
        self.inflight.remove((namespace, name))
        self.written.append((name, load_balancer))
        return {}

    async def create_event(self, involved: Obj, reason: str, message: str, component: str, now: str) -> Obj:
        return {}


async def _settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def test_status_writes_overlap_up_to_the_limit_and_the_latest_wish_lands_last() -> None:
    api = _GatedStatus()
    feedback = Feedback(api, "shardgate", allowed=lambda: True, concurrency=3)
    feedback.start()
    try:
        for i in range(5):
            feedback.want_status("ns", f"ing-{i}", [{"ip": "10.0.0.1"}])
        await _settle()
        assert len(api.inflight) == 3  # three at once, not one after another
        first = api.inflight[0][1]
        feedback.want_status("ns", first, [])  # a newer wish while its write is under way: waits for it
        await _settle()
        assert api.inflight.count(("ns", first)) == 1
        api.gate.set()
        await _settle()
        assert api.most_inflight == 3
        assert sorted(name for name, _ in api.written) == sorted([*(f"ing-{i}" for i in range(5)), first])
        assert [lb for name, lb in api.written if name == first] == [
            {"ingress": [{"ip": "10.0.0.1"}]},
            {"ingress": None},
        ]
    finally:
        await feedback.stop()
