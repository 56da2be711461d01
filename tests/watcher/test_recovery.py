"""Restart, 410 Gone and failover: each emits exactly the deltas nobody published yet."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import redis.asyncio as aioredis

from shardgate.adapters.kube import INGRESS, LEASE, SECRET, Transient
from shardgate.kubeapi.server import ApiServer
from shardgate.records import decode_contribution
from shardgate.watcher.index import SourceEntry, Withheld, contribution_hash
from shardgate.watcher.service import Watcher

from .conftest import Env, StartWatcher, settle, wait_for, wait_until
from .helpers import host, ingress, make_cert, summary, tls_secret_pem

pytestmark = pytest.mark.integration


async def _seed(env: Env, start_watcher: StartWatcher) -> Any:
    w = await start_watcher("w1")
    await wait_until(w.watcher.publishing, what="leadership")
    await env.kube.create(INGRESS, "default", ingress("keep", ["keep.example.com"]))
    await env.kube.create(INGRESS, "default", ingress("touch", ["touch.example.com"]))
    await env.kube.create(INGRESS, "default", ingress("edit", ["e1.example.com", "e2.example.com"]))
    await env.kube.create(INGRESS, "default", ingress("drop", ["drop.example.com"]))
    await settle(env, w.watcher)
    assert len(env.log.new()) == 5
    return w


MISSED = {
    (host("e2.example.com"), "ingress/default/edit", False),
    (host("e3.example.com"), "ingress/default/edit", True),
    (host("drop.example.com"), "ingress/default/drop", False),
    (host("new.example.com"), "ingress/default/new", True),
}


async def _miss_changes(kube: Any) -> None:
    """Changes a stopped or disconnected watcher does not see: only some change contributions."""
    obj = await kube.get(INGRESS, "default", "touch")
    obj["metadata"]["labels"] = {"touched": "yes"}  # new resourceVersion, same contributions: nothing
    await kube.replace(INGRESS, "default", "touch", obj)
    obj = await kube.get(INGRESS, "default", "edit")
    obj["spec"]["rules"][1]["host"] = "e3.example.com"
    await kube.replace(INGRESS, "default", "edit", obj)
    await kube.delete(INGRESS, "default", "drop")
    await kube.create(INGRESS, "default", ingress("new", ["new.example.com"]))


async def test_restart_publishes_exactly_what_was_missed(env: Env, start_watcher: StartWatcher) -> None:
    w = await _seed(env, start_watcher)
    await w.stop()
    await _miss_changes(env.kube)
    w2 = await start_watcher("w2")
    await wait_until(w2.watcher.publishing, what="leadership after restart")
    await settle(env, w2.watcher)
    assert summary(env.log.new()) == MISSED


async def test_410_relist_publishes_exactly_what_was_missed(env: Env, start_watcher: StartWatcher) -> None:
    w = await _seed(env, start_watcher)
    # Cut the watcher off, change things behind its back, compact the history so that its watches
    # cannot resume (410 Gone), and bring the same server back on the same port.
    port, store = env.api.port, env.api.store
    await env.api.stop()
    await _miss_changes(_StoreKube(store))
    store.compact()
    env.api = ApiServer(env.api.config, store=store)
    await env.api.start(port=port)
    await wait_until(lambda: w.watcher.lists.get("ingress", 0) >= 2, what="a re-list after 410")
    await settle(env, w.watcher)
    assert summary(env.log.new()) == MISSED


class _StoreKube:
    """The same calls as KubeClient, made straight on the store while the server is down."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.kind = store.kinds.by_gvk("networking.k8s.io", "v1", "Ingress")

    async def get(self, _res: Any, ns: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.store.get(self.kind, ns, name).obj)

    async def replace(self, _res: Any, ns: str, name: str, obj: dict[str, Any]) -> None:
        self.store.update(self.kind, ns, name, obj)

    async def delete(self, _res: Any, ns: str, name: str) -> None:
        self.store.delete(self.kind, ns, name)

    async def create(self, _res: Any, ns: str, obj: dict[str, Any]) -> None:
        self.store.create(self.kind, ns, obj)


async def test_only_the_lease_holder_publishes_and_a_standby_takes_over(
    env: Env, start_watcher: StartWatcher
) -> None:
    a = await start_watcher("a")
    await wait_until(a.watcher.publishing, what="a leads")
    b = await start_watcher("b")
    await env.kube.create(INGRESS, "default", ingress("one", ["one.example.com"]))
    await settle(env, a.watcher, b.watcher)
    assert summary(env.log.new()) == {(host("one.example.com"), "ingress/default/one", True)}
    assert a.watcher.published == 1 and b.watcher.published == 0 and not b.watcher.elector.is_leader
    lease = await env.kube.get(LEASE, "default", "shardgate-watcher")
    assert lease["spec"]["holderIdentity"] == "a"

    # The holder stops: the standby takes over and publishes only what is new.
    await a.stop()
    await env.kube.create(INGRESS, "default", ingress("two", ["two.example.com"]))
    await wait_until(b.watcher.publishing, what="b takes over")
    await settle(env, b.watcher)
    assert summary(env.log.new()) == {(host("two.example.com"), "ingress/default/two", True)}
    lease = await env.kube.get(LEASE, "default", "shardgate-watcher")
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1


class _LeaseOutage:
    """The watcher's own Lease requests fail (an API server too busy to answer them in time); its watches
    and the test's client are unaffected."""

    def __init__(self, w: Watcher) -> None:
        self.api = w.elector.api
        self.real = {name: getattr(self.api, name) for name in ("get_lease", "update_lease", "create_lease")}

    def start(self) -> None:
        async def busy(*args: Any, **kwargs: Any) -> Any:
            raise Transient("the API server is too busy")

        for name in self.real:
            setattr(self.api, name, busy)

    def end(self) -> None:
        for name, method in self.real.items():
            setattr(self.api, name, method)


def _count_index_loads(w: Watcher) -> list[int]:
    loads = [0]
    real = w.store.load

    async def load() -> Any:
        loads[0] += 1
        return await real()

    w.store.load = load  # type: ignore[method-assign]
    return loads


async def test_a_lapse_nobody_else_used_resumes_without_a_reload(
    env: Env, start_watcher: StartWatcher
) -> None:
    """Renewals that fail past the deadline stop the holder; taking the Lease back with nobody else having
    held it, it publishes what it missed from what it holds: no reload, no re-diff of every source."""
    w = await _seed(env, start_watcher)
    loads = _count_index_loads(w.watcher)
    outage = _LeaseOutage(w.watcher)
    outage.start()
    await wait_until(lambda: not w.watcher.publishing(), timeout=5, what="the holder steps down")
    await _miss_changes(env.kube)
    await settle_standby(env, w)
    assert env.log.new() == []  # nothing went out while it did not lead
    outage.end()
    await wait_until(w.watcher.publishing, what="the holder leads again")
    await settle(env, w.watcher)
    assert summary(env.log.new()) == MISSED
    assert w.watcher.elector.continued and loads[0] == 0
    lease = await env.kube.get(LEASE, "default", "shardgate-watcher")
    assert lease["spec"]["holderIdentity"] == "w1" and lease["spec"]["leaseTransitions"] == 0


async def test_a_lapse_someone_else_used_takes_over_in_full(env: Env, start_watcher: StartWatcher) -> None:
    """If another replica held the Lease meanwhile, what it published is not in our memory: reload."""
    w = await _seed(env, start_watcher)
    loads = _count_index_loads(w.watcher)
    outage = _LeaseOutage(w.watcher)
    outage.start()
    await wait_until(lambda: not w.watcher.publishing(), timeout=5, what="the holder steps down")
    lease = await env.kube.get(LEASE, "default", "shardgate-watcher")
    spec = dict(lease["spec"], holderIdentity="other", leaseDurationSeconds=1, leaseTransitions=1)
    await env.kube.update_lease(lease, spec)  # another replica held it (and then stopped renewing)
    await _miss_changes(env.kube)
    outage.end()
    await wait_until(w.watcher.publishing, timeout=10, what="the holder takes the Lease back")
    await settle(env, w.watcher)
    assert summary(env.log.new()) == MISSED
    assert not w.watcher.elector.continued and loads[0] == 1


async def test_a_holder_that_loses_the_lease_stops_publishing(env: Env, start_watcher: StartWatcher) -> None:
    a = await start_watcher("a")
    await wait_until(a.watcher.publishing, what="a leads")
    # Somebody else takes the Lease (as after a long pause of ours): we must stop at once.
    lease = await env.kube.get(LEASE, "default", "shardgate-watcher")
    spec = dict(lease["spec"], holderIdentity="intruder", leaseDurationSeconds=30)
    await env.kube.update_lease(lease, spec)
    await wait_until(lambda: not a.watcher.publishing(), timeout=3, what="a steps down")
    await env.kube.create(INGRESS, "default", ingress("three", ["three.example.com"]))
    await settle_standby(env, a)
    assert env.log.new() == [] and a.watcher.published == 0


async def settle_standby(env: Env, r: Any) -> None:
    target = env.api.store.resource_version
    await wait_until(
        lambda: all(int(v) >= target for v in r.watcher.seen_rv.values()), what="standby caught up"
    )


async def test_410_on_open_watches_relists_and_publishes_nothing_unchanged(
    env: Env, start_watcher: StartWatcher
) -> None:
    w = await _seed(env, start_watcher)
    before = dict(w.watcher.lists)
    env.api.store.compact(expire_watchers=True)  # every open watch gets the 410 ERROR event
    await wait_until(
        lambda: all(w.watcher.lists[k] > n for k, n in before.items()), what="every kind to list again"
    )
    await settle(env, w.watcher)
    assert env.log.new() == []


async def test_a_new_leader_reads_again_a_certificate_it_knows_only_by_hash(
    env: Env, start_watcher: StartWatcher
) -> None:
    a = await start_watcher("a")
    await wait_until(a.watcher.publishing, what="a leads")
    b = await start_watcher("b")
    await env.kube.create(SECRET, "default", tls_secret_pem("shop", *make_cert(["shop.example.com"])))
    await settle(env, a.watcher, b.watcher)
    [published] = env.log.new()
    digest = contribution_hash(decode_contribution(published.delta.source, published.delta.body or {}))

    def withheld(w: Watcher) -> bool:
        held = w.caches.current["secret/default/shop"].contributions["t:default/shop"]
        return isinstance(held, Withheld) and held.digest == digest

    # Neither keeps the PEM: the leader once it is published, the standby at once.
    await wait_until(lambda: withheld(a.watcher) and withheld(b.watcher), what="the PEM dropped")

    # The published index loses the Secret, as if a had died between the ack and the index write: b,
    # taking over, must read the Secret again to publish it.
    r = aioredis.Redis.from_url(env.redis.url)
    try:
        await r.hdel("sg:watcher:index", "secret/default/shop")
        await a.stop()
        await wait_until(b.watcher.publishing, what="b takes over")

        async def republished() -> bool:
            raw = await r.hget("sg:watcher:index", "secret/default/shop")
            return raw is not None and SourceEntry.decode(raw).units == {"t:default/shop": digest}

        await wait_for(republished, what="b publishing the certificate again")
    finally:
        await r.aclose()
    # The same change with the same message id: JetStream kept the first, the stream has no second.
    assert b.watcher.published == 1
    await settle(env, b.watcher)
    assert env.log.new() == []
