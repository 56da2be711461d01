"""Many tenants in one cluster (issue 4): ownership, refusals with Events, limits, fair publishing.

Each test plays two or more namespaces against each other through `kubectl`, and checks both sides: the
refused party sees an Event (`kubectl get events`), the other keeps its traffic. A refusal is only
asserted after something applied later (a sentinel Ingress) has been seen served, so "not yet
propagated" never passes for "refused".

The module's stack runs the watcher with a small per-namespace change budget (20 changes/s, bursts of
20; `SHARDGATE_NAMESPACE_RATE` / `SHARDGATE_NAMESPACE_BURST`), so the flood test's flood outlasts its
assertions by construction instead of by a race against the clock, and with a 2 s host release grace
(`SHARDGATE_HOST_RELEASE_GRACE`, 60 s by default) so a released host changes hands within the test.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import aiohttp
import pytest

from .conftest import (
    E2E,
    event_lines,
    eventually,
    host_rule,
    ingress,
    path_rule,
    request,
    tenant,
    wait_event,
    wait_served,
)

pytestmark = pytest.mark.e2e

A, B = "echo-a", "echo-b"
NGINX = "nginx.ingress.kubernetes.io/"
NAMESPACE_RATE = 20
NAMESPACE_BURST = 20
RELEASE_GRACE = 2  # seconds a released host stays with its owner (a delete + re-create keeps it)


@pytest.fixture(scope="module", autouse=True)
def _small_namespace_budget() -> Iterator[None]:
    """Set before the module's stack starts (autouse fixtures come first): its watcher inherits it."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SHARDGATE_NAMESPACE_RATE", str(NAMESPACE_RATE))
        env.setenv("SHARDGATE_NAMESPACE_BURST", str(NAMESPACE_BURST))
        env.setenv("SHARDGATE_HOST_RELEASE_GRACE", str(RELEASE_GRACE))
        yield


async def assert_only(e2e: E2E, http: aiohttp.ClientSession, host: str, path: str, backend: str) -> None:
    for _ in range(10):
        reply = await request(e2e, http, host, path)
        assert reply.status == 200 and reply.backend == backend, (host, path, reply)


async def sentinel(e2e: E2E, http: aiohttp.ClientSession, ns: str) -> None:
    """An Ingress applied last in `ns`: once it serves, the watcher has processed everything before it."""
    host = f"sentinel.{ns}.test"
    e2e.apply(ingress("zz-sentinel", ns, host_rule(host, path_rule("/"))))
    await wait_served(e2e, http, host, "/", A)


async def assert_not_served(e2e: E2E, http: aiohttp.ClientSession, host: str) -> None:
    reply = await request(e2e, http, host, "/")
    assert reply.status == 404, (host, reply)


# -- host ownership -------------------------------------------------------------------------------------


async def test_host_hijack_from_another_namespace_is_refused(e2e: E2E, http: aiohttp.ClientSession) -> None:
    owner, thief = await tenant(e2e, http, "hijack-owner"), await tenant(e2e, http, "hijack-thief")
    host = "shop.hijack.test"
    e2e.apply(ingress("site", owner, host_rule(host, path_rule("/", "Prefix", A))))
    await wait_served(e2e, http, host, "/", A)

    # The thief names the same host (and a more specific path that would win if it were merged in).
    e2e.apply(
        ingress(
            "grab",
            thief,
            host_rule(host, path_rule("/", "Prefix", B), path_rule("/checkout", "Exact", B)),
        )
    )
    # ...and a wildcard covering it.
    e2e.apply(ingress("grab-wild", thief, host_rule("*.hijack.test", path_rule("/", "Prefix", B))))
    await sentinel(e2e, http, thief)
    await wait_event(e2e, thief, "Ingress", "grab", host)
    await wait_event(e2e, thief, "Ingress", "grab-wild", "hijack.test")
    await assert_only(e2e, http, host, "/", A)
    await assert_only(e2e, http, host, "/checkout", A)
    # The refused wildcard serves nothing of the thief's either.
    reply = await request(e2e, http, "other.hijack.test", "/")
    assert reply.backend != B, reply
    assert not [
        ev for ev in json.loads(e2e.kubectl("get", "events", "-n", owner, "-o", "json"))["items"]
        if (ev.get("involvedObject") or {}).get("name") == "site"
    ], event_lines(e2e, owner)  # fmt: skip


async def test_released_host_moves_to_the_waiting_namespace(e2e: E2E, http: aiohttp.ClientSession) -> None:
    first, second = await tenant(e2e, http, "release-first"), await tenant(e2e, http, "release-second")
    host = "moving.release.test"
    e2e.apply(ingress("site", first, host_rule(host, path_rule("/", "Prefix", A))))
    await wait_served(e2e, http, host, "/", A)
    e2e.apply(ingress("site", second, host_rule(host, path_rule("/", "Prefix", B))))
    await wait_event(e2e, second, "Ingress", "site", host)
    await assert_only(e2e, http, host, "/", A)
    # Ownership moves only when the owner releases the host: its last Ingress naming the host is gone
    # (for the release grace); then the waiting claimant gets it.
    e2e.kubectl("delete", "ingress", "site", "-n", first)

    async def unrouted() -> bool:
        return (await request(e2e, http, host, "/")).status == 404

    await eventually(unrouted, timeout=10, what="the owner's routes withdrawn")
    await wait_served(e2e, http, host, "/", B, timeout=RELEASE_GRACE + 10)
    # ...and the first namespace coming back is now the one refused.
    e2e.apply(ingress("again", first, host_rule(host, path_rule("/", "Prefix", A))))
    await wait_event(e2e, first, "Ingress", "again", host)
    await assert_only(e2e, http, host, "/", B)


async def test_owner_can_share_a_host_explicitly(e2e: E2E, http: aiohttp.ClientSession) -> None:
    owner, guest = await tenant(e2e, http, "share-owner"), await tenant(e2e, http, "share-guest")
    host = "shared.share.test"
    e2e.apply(
        ingress(
            "site",
            owner,
            host_rule(host, path_rule("/", "Prefix", A)),
            annotations={"shardgate.io/allow-host-sharing-with": guest},
        )
    )
    await wait_served(e2e, http, host, "/", A)
    e2e.apply(ingress("guest-path", guest, host_rule(host, path_rule("/guest", "Prefix", B))))
    await wait_served(e2e, http, host, "/guest/x", B)
    await assert_only(e2e, http, host, "/", A)


# -- refusals -------------------------------------------------------------------------------------------


async def test_snippet_annotations_are_refused(e2e: E2E, http: aiohttp.ClientSession) -> None:
    ns = await tenant(e2e, http, "snippet")
    marker = "x-injected-by-tenant"
    e2e.apply(
        ingress(
            "config-snippet",
            ns,
            host_rule("config.snippet.test", path_rule("/")),
            annotations={NGINX + "configuration-snippet": f'more_set_headers "{marker}: 1";'},
        )
    )
    e2e.apply(
        ingress(
            "server-snippet",
            ns,
            host_rule("server.snippet.test", path_rule("/")),
            annotations={NGINX + "server-snippet": f"location /{marker} {{ return 200; }}"},
        )
    )
    await sentinel(e2e, http, ns)
    await wait_event(e2e, ns, "Ingress", "config-snippet", "configuration-snippet")
    await wait_event(e2e, ns, "Ingress", "server-snippet", "server-snippet")
    for host in ("config.snippet.test", "server.snippet.test"):
        await assert_not_served(e2e, http, host)
    # Nothing of the user's text reached the gateway.
    async with http.get(f"http://127.0.0.1:{e2e.stack.port['admin']}/config_dump") as resp:
        assert resp.status == 200
        dump = await resp.text()
    assert "sentinel.snippet.test" in dump  # the dump does hold the routes
    assert marker not in dump


async def test_invalid_regex_is_refused(e2e: E2E, http: aiohttp.ClientSession) -> None:
    ns = await tenant(e2e, http, "regex")
    use_regex = {NGINX + "use-regex": "true"}
    good = host_rule("good.regex.test", path_rule("/v[0-9]+", "ImplementationSpecific"))
    e2e.apply(ingress("good", ns, good, annotations=use_regex))
    await wait_served(e2e, http, "good.regex.test", "/v1", A)
    bad = {
        "unclosed": "/broken(",
        "backreference": "/(a)\\1",  # not RE2: would need backtracking
    }
    for name, pattern in bad.items():
        e2e.apply(
            ingress(
                name,
                ns,
                host_rule(f"{name}.regex.test", path_rule(pattern, "ImplementationSpecific")),
                annotations={NGINX + "use-regex": "true"},
            )
        )
    await sentinel(e2e, http, ns)
    for name in bad:
        await wait_event(e2e, ns, "Ingress", name, "regex")
        await assert_not_served(e2e, http, f"{name}.regex.test")
    # The good regex Ingress of the same namespace is untouched.
    await assert_only(e2e, http, "good.regex.test", "/v22", A)


async def test_invalid_values_are_refused_with_a_reason(e2e: E2E, http: aiohttp.ClientSession) -> None:
    ns = await tenant(e2e, http, "invalid")
    annotated = {
        "weight": ({NGINX + "canary": "true", NGINX + "canary-weight": "lots"}, "canary-weight"),
        "timeout": ({NGINX + "proxy-read-timeout": "forever"}, "proxy-read-timeout"),
        "cidr": ({NGINX + "whitelist-source-range": "10.0.0.0/33"}, "whitelist-source-range"),
        "protocol": ({NGINX + "backend-protocol": "FTP"}, "backend-protocol"),
        "redirect": ({NGINX + "permanent-redirect": "javascript:alert(1)"}, "permanent-redirect"),
        "boolean": ({NGINX + "ssl-redirect": "maybe"}, "ssl-redirect"),
        "cors": (
            {NGINX + "enable-cors": "true", NGINX + "cors-allow-origin": "not an origin"},
            "cors-allow-origin",
        ),
    }
    for name, (values, _) in annotated.items():
        e2e.apply(ingress(name, ns, host_rule(f"{name}.invalid.test", path_rule("/")), annotations=values))
    shapes = {
        "host": (host_rule("bad_host.invalid.test", path_rule("/")), "bad_host"),
        "deep-wildcard": (host_rule("*.*.invalid.test", path_rule("/")), "*.*.invalid.test"),
        "dotdot": (host_rule("dotdot.invalid.test", path_rule("/a/../b")), "/a/../b"),
    }
    for name, (rule, _) in shapes.items():
        e2e.apply(ingress(name, ns, rule))
    await sentinel(e2e, http, ns)
    for name, (_, word) in {**annotated, **shapes}.items():
        await wait_event(e2e, ns, "Ingress", name, word)
    for name in annotated:
        await assert_not_served(e2e, http, f"{name}.invalid.test")
    await assert_not_served(e2e, http, "dotdot.invalid.test")


async def test_limits_per_ingress(e2e: E2E, http: aiohttp.ClientSession) -> None:
    """Defaults: 100 hosts per Ingress, 100 paths per host (SHARDGATE_MAX_HOSTS_PER_INGRESS, ...)."""
    ns = await tenant(e2e, http, "limits")
    many_hosts = [host_rule(f"h{i}.many.limits.test", path_rule("/")) for i in range(101)]
    e2e.apply(ingress("many-hosts", ns, *many_hosts))
    many_paths = host_rule("paths.limits.test", *(path_rule(f"/p{i}") for i in range(101)))
    e2e.apply(ingress("many-paths", ns, many_paths))
    # At the limit is fine.
    e2e.apply(
        ingress("enough", ns, host_rule("enough.limits.test", *(path_rule(f"/p{i}") for i in range(100))))
    )
    await sentinel(e2e, http, ns)
    await wait_served(e2e, http, "enough.limits.test", "/p99", A)
    await wait_event(e2e, ns, "Ingress", "many-hosts", "100")
    await wait_event(e2e, ns, "Ingress", "many-paths", "100")
    for host in ("h0.many.limits.test", "h100.many.limits.test"):
        await assert_not_served(e2e, http, host)
    reply = await request(e2e, http, "paths.limits.test", "/p0")
    assert reply.status == 404, reply


# -- fairness -------------------------------------------------------------------------------------------


async def test_flood_from_one_namespace_does_not_hold_back_another(
    e2e: E2E, http: aiohttp.ClientSession
) -> None:
    flood_ns, calm_ns = await tenant(e2e, http, "flood"), await tenant(e2e, http, "calm")
    count = 200
    hosts = [f"f{i}.flood.test" for i in range(count)]
    url = f"{e2e.kubeapi}/apis/networking.k8s.io/v1/namespaces/{flood_ns}/ingresses"

    async def create(i: int) -> None:
        body = json.loads(ingress(f"flood-{i}", flood_ns, host_rule(hosts[i], path_rule("/", "Prefix", B))))
        async with http.post(url, json=body) as resp:
            assert resp.status == 201, await resp.text()

    for start in range(0, count, 50):
        await asyncio.gather(*(create(i) for i in range(start, min(start + 50, count))))
    # The other namespace's change comes after the whole flood is in the API server.
    calm = "new.calm.test"
    e2e.apply(ingress("new", calm_ns, host_rule(calm, path_rule("/", "Prefix", A))))
    await wait_served(e2e, http, calm, "/", A, timeout=20)

    # It activated while the flood was still being served: ordering, not a clock.
    replies = await asyncio.gather(*(request(e2e, http, h, "/") for h in hosts))
    served_then = sum(r.status == 200 and r.backend == B for r in replies)
    assert served_then < count, "the flood was fully served before the other namespace's host"

    # Throttled is not dropped: every flooded host arrives in the end.
    pending = set(hosts)

    async def all_served() -> bool:
        batch = sorted(pending)[:50]
        replies = await asyncio.gather(*(request(e2e, http, h, "/") for h in batch))
        for host, reply in zip(batch, replies, strict=True):
            if reply.status == 200 and reply.backend == B:
                pending.discard(host)
        return not pending

    drain = (count + 10) / NAMESPACE_RATE  # the configured budget, not a performance claim
    try:
        await eventually(all_served, timeout=drain + 30, what=f"all {count} flood hosts served")
    except AssertionError as exc:
        missing = f"{len(pending)} missing, e.g. {sorted(pending)[:3]}"
        raise AssertionError(f"{exc}: {served_then} served at first, {missing}") from None
