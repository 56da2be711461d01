"""HTTPS through real Envoy: certificates chosen by SNI over on-demand SDS, served by the pusher.

Every check is a real TLS handshake from Python's `ssl` with SNI, verifying the chain against the test
CA and the host name, and reading back which certificate (serial) the gateway served.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import string
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import WAIT, Gateway, service_fragment
from tls_certs import Handshake, Leaf, TestCA, handshake, https_get

from shardgate.keys import host_unit, secret_unit
from shardgate.local.echo import EchoServer
from shardgate.local.servers import free_port
from shardgate.model import Backend, HostRoutes, IngressOptions, PathRule, PathType, TlsCertificate
from shardgate.pusher.cache import ResourceCache
from shardgate.pusher.delta import DeltaStream
from shardgate.pusher.server import bound_port, serve_ads
from shardgate.records import Fragment
from shardgate.xds import compile_unit, types
from shardgate.xds.bootstrap import ApiType
from shardgate.xds.listeners import http_connection_manager, static_resources
from shardgate.xds.tls import HTTPS_LISTENER, https_listener_resource

pytestmark = pytest.mark.integration

NS = "shop"
SHOP, API, WILD = "shop.example.com", "api.example.com", "*.wild.example.com"
PLAIN_HTTP = IngressOptions(ssl_redirect=False)  # so a test can see HTTP still served


def tls_host(host: str, secret: str | None, options: IngressOptions = PLAIN_HTTP) -> Fragment:
    routes = HostRoutes(
        NS,
        f"ing-{host.replace('*', 'star')}",
        "2024-01-01T00:00:00Z",
        (PathRule("/", PathType.PREFIX, Backend("web", 80)),),
        tls_secret=secret,
        options=options,
    )
    return compile_unit(host_unit(host), {f"ingress/{NS}/{routes.ingress}": routes})


def tls_secret(name: str, leaf: Leaf | None, error: str | None = None) -> Fragment:
    cert = TlsCertificate(leaf.cert_pem, leaf.key_pem) if leaf else TlsCertificate(b"", b"", error=error)
    return compile_unit(secret_unit(NS, name), {f"secret/{NS}/{name}": cert})


class TlsStack:
    """An in-process pusher serving the HTTP and HTTPS listeners, and one real Envoy fed by it."""

    def __init__(self, workdir: Path, api_type: ApiType, max_wildcard_sni: int) -> None:
        self.workdir = workdir
        self.api_type = api_type
        self.max_wildcard_sni = max_wildcard_sni
        self.http_port, self.https_port = free_port(), free_port()
        manager = http_connection_manager(HTTPS_LISTENER, https=True)
        self.cache = ResourceCache(
            (
                *static_resources("127.0.0.1", self.http_port),
                https_listener_resource(manager, "127.0.0.1", self.https_port),
            )
        )
        self.ca = TestCA()
        self.client = self.ca.client_context()

    async def start(self) -> None:
        self.server = await serve_ads(self.cache, "127.0.0.1", 0, max_wildcard_sni=self.max_wildcard_sni)
        self.gateway = Gateway(
            self.workdir, bound_port(self.server), self.http_port, self.api_type, node_id="gw-tls"
        )
        await self.gateway.start()

    async def stop(self) -> None:
        await self.gateway.stop()
        await self.server.stop(grace=None)

    def apply(self, *fragments: Fragment) -> None:
        self.cache.apply({f.unit: f for f in fragments})

    async def handshake(self, sni: str) -> Handshake:
        return await asyncio.to_thread(handshake, self.client, self.https_port, sni)

    async def until_served(self, expected: dict[str, int | None]) -> dict[str, Handshake]:
        """Poll until every SNI is served the certificate with that serial (None: the handshake fails)."""
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            seen = {sni: await self.handshake(sni) for sni in expected}
            if {sni: h.serial for sni, h in seen.items()} == expected:
                return seen
            assert asyncio.get_running_loop().time() < deadline, f"expected {expected}, saw {seen}"
            await asyncio.sleep(0.05)

    def stats(self, prefix: str) -> dict[str, int]:
        url = f"{self.gateway.envoy.admin_url}/stats?format=json&filter={prefix}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            data = json.load(resp)
        return {s["name"]: s["value"] for s in data["stats"] if "value" in s}

    def stat(self, suffix: str) -> int:
        return sum(v for k, v in self.stats(suffix.replace(".", r"\.") + "$").items())

    def rss_mb(self) -> float:
        assert self.gateway.envoy.proc is not None
        for line in Path(f"/proc/{self.gateway.envoy.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


StackFactory = Callable[..., Awaitable[TlsStack]]


@pytest.fixture
async def tls_stack(tmp_path: Path) -> AsyncIterator[StackFactory]:
    stacks: list[TlsStack] = []

    async def make(api_type: ApiType = "DELTA_GRPC", max_wildcard_sni: int = 4096) -> TlsStack:
        stack = TlsStack(tmp_path / f"gw{len(stacks)}", api_type, max_wildcard_sni)
        await stack.start()
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        await stack.stop()


def random_label() -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=16))


@pytest.mark.parametrize(
    "api_type", [pytest.param("DELTA_GRPC", id="delta"), pytest.param("GRPC", id="sotw")]
)
async def test_each_tls_host_serves_its_own_certificate(
    api_type: ApiType, tls_stack: StackFactory, backends: dict[str, EchoServer]
) -> None:
    stack = await tls_stack(api_type)
    shop, api, wild = stack.ca.leaf(SHOP), stack.ca.leaf(API), stack.ca.leaf(WILD)
    stack.apply(
        service_fragment("web", backends["web"]), tls_host(SHOP, "shop-tls"), tls_secret("shop-tls", shop)
    )
    seen = await stack.until_served({SHOP: shop.serial})
    assert seen[SHOP].subject_cn == SHOP
    listeners_before = stack.stat("listener_manager.lds.update_success")

    # More TLS hosts, one through a wildcard certificate: no listener update, each its own certificate.
    stack.apply(
        tls_host(API, "api-tls"),
        tls_secret("api-tls", api),
        tls_host(WILD, "wild-tls"),
        tls_secret("wild-tls", wild),
    )
    seen = await stack.until_served(
        {
            SHOP: shop.serial,
            API: api.serial,
            "a.wild.example.com": wild.serial,
            "b.wild.example.com": wild.serial,
        }
    )
    assert seen["a.wild.example.com"].subject_cn == WILD
    assert stack.stat("listener_manager.lds.update_success") == listeners_before

    # Real HTTPS traffic through the same routes as HTTP; plain HTTP still answers.
    for host in (SHOP, "a.wild.example.com"):
        status, body = await asyncio.to_thread(https_get, stack.client, stack.https_port, host, "/x")
        assert status == 200 and json.loads(body)["name"] == "web", (host, status, body[:200])
    await stack.gateway.until({(SHOP, "/x"): (200, "web")})

    if api_type == "DELTA_GRPC":
        # SotW cannot say "removed" for a named type: there an unknown name waits (see ARCHITECTURE).
        for sni in ("nope.example.com", "x.y.wild.example.com", "wild.example.com"):
            h = await stack.handshake(sni)
            assert not h.ok and "TimeoutError" not in (h.error or ""), (sni, h)


async def test_rotation_reaches_only_the_rotated_host(tls_stack: StackFactory) -> None:
    stack = await tls_stack()
    shop, api = stack.ca.leaf(SHOP), stack.ca.leaf(API)
    stack.apply(tls_host(SHOP, "shop-tls"), tls_secret("shop-tls", shop))
    stack.apply(tls_host(API, "api-tls"), tls_secret("api-tls", api))
    await stack.until_served({SHOP: shop.serial, API: api.serial})
    api_updates = stack.stat(f"sds.{API}.update_success")
    assert api_updates >= 1

    rotated = stack.ca.leaf(SHOP, API)  # valid for both names: API moves to it below
    stack.apply(tls_secret("shop-tls", rotated))
    await stack.until_served({SHOP: rotated.serial, API: api.serial})
    assert stack.stat(f"sds.{API}.update_success") == api_updates  # the other host was not touched

    # A host moving to another Secret takes its certificate; a wildcard Secret rotates for all its names.
    stack.apply(tls_host(API, "shop-tls"))
    await stack.until_served({API: rotated.serial})
    wild = stack.ca.leaf(WILD)
    stack.apply(tls_host(WILD, "wild-tls"), tls_secret("wild-tls", wild))
    await stack.until_served({"a.wild.example.com": wild.serial, "b.wild.example.com": wild.serial})
    wild2 = stack.ca.leaf(WILD)
    stack.apply(tls_secret("wild-tls", wild2))
    await stack.until_served(
        {"a.wild.example.com": wild2.serial, "b.wild.example.com": wild2.serial, SHOP: rotated.serial}
    )


async def test_broken_secret_fails_only_its_host(
    tls_stack: StackFactory, backends: dict[str, EchoServer], caplog: pytest.LogCaptureFixture
) -> None:
    stack = await tls_stack()
    shop, api = stack.ca.leaf(SHOP), stack.ca.leaf(API)
    stack.apply(
        service_fragment("web", backends["web"]),
        tls_host(SHOP, "shop-tls"),
        tls_secret("shop-tls", shop),
        tls_host(API, "api-tls"),
        tls_secret("api-tls", api),
    )
    await stack.until_served({SHOP: shop.serial, API: api.serial})

    with caplog.at_level(logging.WARNING, logger="shardgate.pusher"):
        stack.apply(tls_secret("shop-tls", None, error="tls.key does not match tls.crt"))
    # Logged once, with the Secret's key (the watcher reports the reason on the Secret itself).
    assert any("shop/shop-tls" in r.getMessage() for r in caplog.records), caplog.records
    # Envoy drops the certificate it held; new handshakes for the host fail, the other host is fine,
    # and plain HTTP to the host is still served (this host does not force a redirect).
    await stack.until_served({SHOP: None, API: api.serial})
    await stack.gateway.until({(SHOP, "/"): (200, "web")})

    # A Secret that does not exist at all: the same.
    stack.apply(tls_host("new.example.com", "missing-tls"))
    await stack.until_served({"new.example.com": None, API: api.serial})

    # Fixed: served again.
    fixed = stack.ca.leaf(SHOP)
    stack.apply(tls_secret("shop-tls", fixed))
    await stack.until_served({SHOP: fixed.serial, API: api.serial})


async def test_unknown_names_leave_nothing_behind(tls_stack: StackFactory) -> None:
    stack = await tls_stack()
    shop = stack.ca.leaf(SHOP)
    stack.apply(tls_host(SHOP, "shop-tls"), tls_secret("shop-tls", shop))
    await stack.until_served({SHOP: shop.serial})
    for _ in range(20):
        h = await stack.handshake(f"{random_label()}.example.com")
        assert not h.ok and "TimeoutError" not in (h.error or ""), h
    no_sni = await asyncio.to_thread(handshake, stack.client, stack.https_port, None)
    assert not no_sni.ok and "TimeoutError" not in (no_sni.error or ""), no_sni
    assert stack.stat("on_demand_secret.cert_active") == 1  # only shop.example.com is held

    # A name that was unknown and becomes a TLS host is served on its next handshake.
    late = stack.ca.leaf("late.example.com")
    assert not (await stack.handshake("late.example.com")).ok
    stack.apply(tls_host("late.example.com", "late-tls"), tls_secret("late-tls", late))
    await stack.until_served({"late.example.com": late.serial, SHOP: shop.serial})


def _flood(stack: TlsStack, names: list[str]) -> list[Handshake]:
    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(lambda n: handshake(stack.client, stack.https_port, n), names))


async def test_random_sni_flood_is_bounded_and_real_hosts_keep_working(tls_stack: StackFactory) -> None:
    cap = 50
    stack = await tls_stack(max_wildcard_sni=cap)
    shop, wild = stack.ca.leaf(SHOP), stack.ca.leaf(WILD)
    stack.apply(tls_host(SHOP, "shop-tls"), tls_secret("shop-tls", shop))
    stack.apply(tls_host(WILD, "wild-tls"), tls_secret("wild-tls", wild))
    await stack.until_served({SHOP: shop.serial, "a.wild.example.com": wild.serial})
    rss_before = stack.rss_mb()

    unknown = [f"{random_label()}.example.com" for _ in range(1500)]
    under_wildcard = [f"{random_label()}.wild.example.com" for _ in range(400)]
    names = unknown + under_wildcard
    random.shuffle(names)
    flood = asyncio.create_task(asyncio.to_thread(_flood, stack, names))

    # While the flood runs: the real host keeps serving, and a TLS host added now activates.
    fresh = stack.ca.leaf("fresh.example.com")
    stack.apply(tls_host("fresh.example.com", "fresh-tls"), tls_secret("fresh-tls", fresh))
    checks = 0
    while not flood.done() or checks < 3:
        seen = await stack.until_served({SHOP: shop.serial, "fresh.example.com": fresh.serial})
        assert seen[SHOP].subject_cn == SHOP
        checks += 1
    results = dict(zip(names, await flood, strict=True))

    assert not any(results[n].ok for n in unknown)
    assert all(results[n].ok and results[n].serial == wild.serial for n in under_wildcard)
    # Envoy holds the exact hosts and at most `cap` names under the wildcard, whatever was sent.
    held = stack.stat("on_demand_secret.cert_active")
    assert 2 <= held <= 2 + cap, held
    # And the pusher's stream remembers no more than Envoy holds.
    (stream,) = [w.__self__ for w in stack.cache._watchers.values() if isinstance(w.__self__, DeltaStream)]  # type: ignore[attr-defined]
    assert len(stream.sni) <= 2 + cap and stream.sni.wildcard_count() <= cap
    await stack.until_served({SHOP: shop.serial, "fresh.example.com": fresh.serial})
    logging.getLogger(__name__).warning(
        "flood of %d SNIs (%d unknown, %d under a wildcard, cap %d): Envoy RSS %.1f -> %.1f MB, %d held",
        len(names),
        len(unknown),
        len(under_wildcard),
        cap,
        rss_before,
        stack.rss_mb(),
        held,
    )


async def test_pusher_restart_keeps_and_updates_certificates(tls_stack: StackFactory) -> None:
    """Envoy re-subscribes the SNIs it holds on a new pusher; a rotation made meanwhile reaches it."""
    stack = await tls_stack()
    shop, api = stack.ca.leaf(SHOP), stack.ca.leaf(API)
    stack.apply(tls_host(SHOP, "shop-tls"), tls_secret("shop-tls", shop))
    stack.apply(tls_host(API, "api-tls"), tls_secret("api-tls", api))
    await stack.until_served({SHOP: shop.serial, API: api.serial})
    port = bound_port(stack.server)
    await stack.server.stop(grace=None)

    rotated = stack.ca.leaf(SHOP)
    listeners = [stack.cache.get(types.LISTENER, name) for name in ("http", HTTPS_LISTENER)]
    stack.cache = ResourceCache([r for r in listeners if r is not None])
    stack.apply(tls_host(SHOP, "shop-tls"), tls_secret("shop-tls", rotated))
    stack.apply(tls_host(API, "api-tls"), tls_secret("api-tls", api))
    stack.server = await serve_ads(stack.cache, "127.0.0.1", port)
    await stack.until_served({SHOP: rotated.serial, API: api.serial})


async def test_certificate_envoy_refuses_fails_its_handshake_at_once(tls_stack: StackFactory) -> None:
    """A certificate that got past validation but that Envoy NACKs: the SNI is answered with a removal
    (never left waiting), other hosts are untouched, and a new version gets its chance."""
    stack = await tls_stack()
    api = stack.ca.leaf(API)
    stack.apply(tls_host(API, "api-tls"), tls_secret("api-tls", api))
    stack.apply(tls_host(SHOP, "shop-tls"), tls_secret("shop-tls", Leaf(b"not a PEM", b"not a key", 0, ())))
    await stack.until_served({API: api.serial, SHOP: None})
    for _ in range(3):
        h = await stack.handshake(SHOP)
        assert not h.ok and "TimeoutError" not in (h.error or ""), h
    fixed = stack.ca.leaf(SHOP)
    stack.apply(tls_secret("shop-tls", fixed))
    await stack.until_served({API: api.serial, SHOP: fixed.serial})
