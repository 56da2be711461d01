"""Many tenants through the real watcher: host ownership, conflicts, refused input, broken
certificates and a flood from one namespace — against the API stand-in, nats-server and redis-server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from shardgate.adapters.kube import EVENT, INGRESS, SECRET
from shardgate.model import CATCH_ALL_HOST
from shardgate.watcher.tenancy import HostRecord

from .conftest import STATUS_ADDRESS, Env, StartWatcher, settle, wait_for, wait_until
from .helpers import host, ingress, make_cert, summary, tls_secret, tls_secret_pem

pytestmark = pytest.mark.integration

SHOP = "shop.example.com"


async def events_for(env: Env, name: str, ns: str, kind: str = "Ingress") -> list[str]:
    events, _ = await env.kube.list_raw(EVENT)
    return [
        e["message"]
        for e in events
        if e["involvedObject"]["name"] == name
        and e["involvedObject"]["namespace"] == ns
        and e["involvedObject"]["kind"] == kind
    ]


async def has_event(env: Env, name: str, ns: str, text: str, kind: str = "Ingress") -> None:
    async def found() -> bool:
        return any(text in m for m in await events_for(env, name, ns, kind))

    await wait_for(found, what=f"an Event on {kind} {ns}/{name} saying {text!r}")


async def host_records(env: Env) -> dict[str, HostRecord]:
    r = aioredis.Redis.from_url(env.redis.url)
    raw = await r.hgetall("sg:watcher:hosts")
    await r.aclose()
    return {k.decode(): HostRecord.decode(v) for k, v in raw.items()}


async def lb(env: Env, name: str, ns: str) -> list[Any]:
    obj = await env.kube.get(INGRESS, ns, name)
    return list(((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])


async def test_a_second_namespace_cannot_take_a_host_until_the_owner_releases_it(
    env: Env, start_watcher: StartWatcher
) -> None:
    w = await start_watcher("w1", host_release_grace=0.0)
    await wait_until(w.watcher.publishing, what="leadership")
    await env.kube.create(INGRESS, "team-a", ingress("shop", [SHOP], ns="team-a"))
    await settle(env, w.watcher)
    assert summary(env.log.new()) == {(host(SHOP), "ingress/team-a/shop", True)}

    # The hijack: same host, and a wildcard over it, from another namespace. Nothing is published.
    await env.kube.create(
        INGRESS, "team-b", ingress("grab", [SHOP, "*.example.com", "b.example.org"], ns="team-b")
    )
    await settle(env, w.watcher)
    assert summary(env.log.new()) == {(host("b.example.org"), "ingress/team-b/grab", True)}
    await has_event(env, "grab", "team-b", f"host {SHOP} is owned by namespace team-a")
    await has_event(env, "grab", "team-b", "*.example.com conflicts with shop.example.com")
    assert (await host_records(env))[SHOP] == HostRecord(
        "team-a", {"team-b": (await host_records(env))[SHOP].waiting["team-b"]}
    )

    # The owner lets team-b share: team-b's rule is admitted; ownership does not move.
    obj = await env.kube.get(INGRESS, "team-a", "shop")
    obj["metadata"]["annotations"] = {"shardgate.io/allow-host-sharing-with": "team-b"}
    await env.kube.replace(INGRESS, "team-a", "shop", obj)
    await settle(env, w.watcher)
    # Sharing shop.example.com also lifts the conflict that held back team-b's wildcard over it.
    assert summary(env.log.new()) == {
        (host(SHOP), "ingress/team-b/grab", True),
        (host("*.example.com"), "ingress/team-b/grab", True),
    }
    records = await host_records(env)
    assert records[SHOP].owner == "team-a" and records["*.example.com"].owner == "team-b"

    # Sharing withdrawn, then the owner releases the host: it goes to the waiting namespace.
    obj = await env.kube.get(INGRESS, "team-a", "shop")
    obj["metadata"]["annotations"] = {}
    await env.kube.replace(INGRESS, "team-a", "shop", obj)
    await settle(env, w.watcher)
    assert summary(env.log.new()) == {(host(SHOP), "ingress/team-b/grab", False)}
    await env.kube.delete(INGRESS, "team-a", "shop")
    await settle(env, w.watcher)
    assert summary(env.log.new()) == {
        (host(SHOP), "ingress/team-a/shop", False),
        (host(SHOP), "ingress/team-b/grab", True),
    }
    records = await host_records(env)
    assert records[SHOP].owner == "team-b" and records["*.example.com"].owner == "team-b"
    await wait_for(lambda: _eq(lb(env, "grab", "team-b"), [{"ip": STATUS_ADDRESS}]), what="status written")


async def test_ownership_survives_a_restart_even_against_an_older_ingress(
    env: Env, start_watcher: StartWatcher
) -> None:
    w = await start_watcher("w1", host_release_grace=0.0)
    await wait_until(w.watcher.publishing, what="leadership")
    await env.kube.create(INGRESS, "team-a", ingress("old", [SHOP, "keep.example.com"], ns="team-a"))
    await asyncio.sleep(1.1)  # creationTimestamp has one-second resolution
    await env.kube.create(INGRESS, "team-b", ingress("new", [SHOP], ns="team-b"))
    await settle(env, w.watcher)
    # team-a gives the host up for a moment: the waiting team-b gets it and keeps it.
    obj = await env.kube.get(INGRESS, "team-a", "old")
    obj["spec"]["rules"] = obj["spec"]["rules"][1:]
    await env.kube.replace(INGRESS, "team-a", "old", obj)
    await settle(env, w.watcher)
    obj = await env.kube.get(INGRESS, "team-a", "old")
    obj["spec"]["rules"].append(ingress("x", [SHOP])["spec"]["rules"][0])
    await env.kube.replace(INGRESS, "team-a", "old", obj)
    await settle(env, w.watcher)
    env.log.new()
    assert (await host_records(env))[SHOP].owner == "team-b"

    # A restart (and a re-list) must not hand it back to the older Ingress.
    await w.stop()
    w2 = await start_watcher("w2", host_release_grace=0.0)
    await wait_until(w2.watcher.publishing, what="leadership after restart")
    await settle(env, w2.watcher)
    assert env.log.new() == []
    assert w2.watcher.tenancy.owner(SHOP) == "team-b"
    await has_event(env, "old", "team-a", f"host {SHOP} is owned by namespace team-b")


async def test_a_deleted_and_recreated_ingress_keeps_its_host_and_the_grace_ends_by_itself(
    env: Env, start_watcher: StartWatcher
) -> None:
    w = await start_watcher("w1", host_release_grace=1.0)
    await wait_until(w.watcher.publishing, what="leadership")
    await env.kube.create(INGRESS, "team-a", ingress("shop", [SHOP], ns="team-a"))
    await settle(env, w.watcher)
    await env.kube.create(INGRESS, "team-b", ingress("grab", [SHOP], ns="team-b"))
    await env.kube.delete(INGRESS, "team-a", "shop")
    await env.kube.create(INGRESS, "team-a", ingress("shop", [SHOP], ns="team-a"))
    await settle(env, w.watcher)
    assert (await host_records(env))[SHOP].owner == "team-a"
    env.log.new()
    await env.kube.delete(INGRESS, "team-a", "shop")
    await settle(env, w.watcher)
    assert summary(env.log.new()) == {(host(SHOP), "ingress/team-a/shop", False)}
    assert (await host_records(env))[SHOP].released > 0
    await wait_until(lambda: w.watcher.tenancy.owner(SHOP) == "team-b", timeout=5, what="the grace to end")
    await settle(env, w.watcher)
    assert summary(env.log.new()) == {(host(SHOP), "ingress/team-b/grab", True)}


async def test_same_namespace_conflict_loser_is_told_and_refused_input_is_reported(
    env: Env, start_watcher: StartWatcher
) -> None:
    w = await start_watcher("w1")
    await wait_until(w.watcher.publishing, what="leadership")
    await env.kube.create(INGRESS, "team-a", ingress("a-first", [SHOP], ns="team-a", svc="one"))
    await settle(env, w.watcher)
    assert summary(env.log.new()) == {(host(SHOP), "ingress/team-a/a-first", True)}
    await env.kube.create(INGRESS, "team-a", ingress("b-second", [SHOP], ns="team-a", svc="two"))
    snippet = ingress("snip", ["snip.example.com"], ns="team-a")
    snippet["metadata"]["annotations"] = {"nginx.ingress.kubernetes.io/configuration-snippet": "deny all;"}
    await env.kube.create(INGRESS, "team-a", snippet)
    regex = ingress("rx", ["rx.example.com"], ns="team-a")
    regex["metadata"]["annotations"] = {"nginx.ingress.kubernetes.io/use-regex": "true"}
    regex["spec"]["rules"][0]["http"]["paths"][0].update(path="/(unclosed", pathType="ImplementationSpecific")
    await env.kube.create(INGRESS, "team-a", regex)
    await settle(env, w.watcher)
    # The merge decides same-namespace conflicts (both contributions are published); the loser is told.
    assert summary(env.log.new()) == {(host(SHOP), "ingress/team-a/b-second", True)}
    await has_event(env, "b-second", "team-a", "already routed by the older Ingress team-a/a-first")
    await has_event(env, "snip", "team-a", "snippets would put user text into the gateway")
    await has_event(env, "rx", "team-a", "does not compile as RE2")
    assert await lb(env, "snip", "team-a") == []


async def test_catch_all_and_broken_certificates(env: Env, start_watcher: StartWatcher) -> None:
    w = await start_watcher("w1")
    await wait_until(w.watcher.publishing, what="leadership")
    dflt = ingress("dflt", [], ns="team-a")
    dflt["spec"]["defaultBackend"] = {"service": {"name": "fallback", "port": {"number": 80}}}
    await env.kube.create(INGRESS, "team-a", dflt)
    await env.kube.create(SECRET, "team-a", tls_secret("junk", ns="team-a"))
    await env.kube.create(
        SECRET, "team-a", tls_secret_pem("good", *make_cert(["shop.example.com"]), ns="team-a")
    )
    await settle(env, w.watcher)
    new = env.log.new()
    assert summary(new) == {
        (host(CATCH_ALL_HOST), "ingress/team-a/dflt", True),
        ("t:team-a/junk", "secret/team-a/junk", True),
        ("t:team-a/good", "secret/team-a/good", True),
    }
    bodies = {m.delta.unit: m.delta.body or {} for m in new}
    assert bodies["t:team-a/junk"]["crt"] == b"" and "not a PEM certificate" in bodies["t:team-a/junk"]["err"]
    assert bodies["t:team-a/good"]["names"] == ["shop.example.com"]
    await has_event(env, "junk", "team-a", "certificate not usable", kind="Secret")


async def test_a_flood_from_one_namespace_does_not_hold_back_another(
    env: Env, start_watcher: StartWatcher
) -> None:
    # No status writes here: 2,000 status patches coming back as watch events only slow the test down.
    w = await start_watcher("w1", namespace_rate=400.0, namespace_burst=50.0, status_address="")
    await wait_until(w.watcher.publishing, what="leadership")
    kind = env.api.store.kinds.by_gvk("networking.k8s.io", "v1", "Ingress")
    flood = 2000
    for i in range(flood):  # straight into the store: 2,000 watch events at once
        env.api.store.create(kind, "flood", ingress(f"f{i}", [f"f{i}.flood.example.com"], ns="flood"))
    await env.kube.create(INGRESS, "quiet", ingress("one", ["one.quiet.example.com"], ns="quiet"))
    await wait_until(lambda: any(m.delta.source == "ingress/quiet/one" for m in env.log.messages), timeout=60,
                     what="the quiet namespace's delta")  # fmt: skip
    position = next(i for i, m in enumerate(env.log.messages) if m.delta.source == "ingress/quiet/one")
    flood_published = sum(
        1 for m in env.log.messages[:position] if m.delta.source.startswith("ingress/flood/")
    )
    # Served round-robin: the quiet namespace waits for what the workers already hold, not for the flood.
    print(f"quiet delta at stream position {position}, after {flood_published} flood deltas")
    assert flood_published < flood // 4, (position, flood_published)
    assert len([m for m in env.log.messages if m.delta.source.startswith("ingress/flood/")]) < flood


async def _eq(coro: Any, expected: Any) -> bool:
    return bool(await coro == expected)


async def test_a_certificate_that_expires_while_nothing_changes_becomes_an_error(
    env: Env, start_watcher: StartWatcher
) -> None:
    w = await start_watcher("w1")
    await wait_until(w.watcher.publishing, what="leadership")
    soon = datetime.now(UTC) + timedelta(seconds=2)
    await env.kube.create(
        SECRET, "team-a", tls_secret_pem("short", *make_cert(["s.example.com"], not_after=soon), ns="team-a")
    )
    await settle(env, w.watcher)
    [first] = env.log.new()
    assert (first.delta.body or {}).get("names") == ["s.example.com"] and "err" not in (
        first.delta.body or {}
    )
    await wait_until(lambda: len(env.log.messages) > env.log.seen, timeout=10, what="the expiry delta")
    [second] = env.log.new()
    assert second.delta.unit == "t:team-a/short" and "expired" in (second.delta.body or {}).get("err", "")
    await has_event(env, "short", "team-a", "expired", kind="Secret")


async def test_the_loser_of_a_conflict_gets_one_event_though_our_status_write_brings_it_back(
    env: Env, start_watcher: StartWatcher
) -> None:
    w = await start_watcher("w1")
    await wait_until(w.watcher.publishing, what="leadership")
    await env.kube.create(INGRESS, "team-a", ingress("first", [SHOP], ns="team-a", svc="one"))
    await settle(env, w.watcher)
    await env.kube.create(INGRESS, "team-a", ingress("second", [SHOP], ns="team-a", svc="two"))
    await has_event(env, "second", "team-a", "already routed by the older Ingress team-a/first")
    # Our status write on it comes back as a watch event and is judged again: the same reasons, no Event.
    await wait_for(lambda: _eq(lb(env, "second", "team-a"), [{"ip": STATUS_ADDRESS}]), what="status written")
    await settle(env, w.watcher)
    await asyncio.sleep(0.3)  # what Feedback may still be writing
    assert len(await events_for(env, "second", "team-a")) == 1
