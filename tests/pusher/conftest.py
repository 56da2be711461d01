"""A pusher (in process), real Envoys fed by it, and echo backends: the harness of the pusher's tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from shardgate.keys import host_unit, service_unit
from shardgate.local.echo import EchoServer
from shardgate.local.servers import Envoy, free_port
from shardgate.model import (
    Backend,
    EndpointPort,
    EndpointSliceSpec,
    HostRoutes,
    PathRule,
    PathType,
    ServicePort,
    ServiceSpec,
)
from shardgate.pusher.cache import ResourceCache
from shardgate.pusher.server import bound_port, serve_ads
from shardgate.records import Fragment
from shardgate.xds import compile_unit
from shardgate.xds.bootstrap import ApiType, bootstrap
from shardgate.xds.listeners import static_resources

NS = "shop"
WAIT = 20.0  # a bound, never an expectation: every wait polls and returns as soon as it holds


def host_fragment(host: str, *paths: tuple[str, PathType, str]) -> Fragment:
    """A host whose paths route to services (port 80) in namespace `shop`."""
    routes = HostRoutes(
        NS, "ing", "2024-01-01T00:00:00Z", tuple(PathRule(p, t, Backend(svc, 80)) for p, t, svc in paths)
    )
    return compile_unit(host_unit(host), {f"ingress/{NS}/ing-{host}": routes})


def service_fragment(service: str, *backends: EchoServer) -> Fragment:
    """A service with port 80 → the backends' ports (one slice per backend: ports may differ)."""
    contributions: dict[str, Any] = {
        f"service/{NS}/{service}": ServiceSpec((ServicePort("http", 80, "http"),)),
    }
    for i, b in enumerate(backends):
        contributions[f"endpointslice/{NS}/{service}-{i}"] = EndpointSliceSpec(
            (EndpointPort("http", b.port),), (b.host,)
        )
    return compile_unit(service_unit(NS, service), contributions)


class Gateway:
    """One real Envoy fed by the pusher, and a client for its HTTP listener."""

    def __init__(self, workdir: Path, ads_port: int, http_port: int, api_type: ApiType, node_id: str) -> None:
        self.http_port = http_port
        self.api_type = api_type
        admin_port = free_port()
        boot = bootstrap(
            node_id=node_id, ads_host="127.0.0.1", ads_port=ads_port, admin_port=admin_port, api_type=api_type
        )
        self.envoy = Envoy(workdir, boot, admin_port)

    async def config_names(self, resource: str) -> set[str]:
        """Names Envoy holds in its config dump, e.g. `dynamic_active_clusters` → cluster names."""
        url = f"{self.envoy.admin_url}/config_dump?resource={resource}"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            if resp.status != 200:  # e.g. before the first scope arrives Envoy answers 404 in plain text
                return set()
            dump = await resp.json(content_type=None)
        names: set[str] = set()
        for entry in dump.get("configs", []):
            for key in ("cluster", "endpoint_config", "scoped_route_configs"):
                value = entry.get(key)
                if isinstance(value, dict):
                    names.add(value.get("name") or value.get("cluster_name") or "")
                elif isinstance(value, list):
                    names.update(v.get("name", "") for v in value)
        return names

    async def start(self) -> None:
        await asyncio.to_thread(self.envoy.start)

    async def stop(self) -> None:
        await asyncio.to_thread(self.envoy.stop)

    async def get(self, host: str, path: str) -> tuple[int, str | None]:
        """(status, name of the backend that answered or None)."""
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(url, headers={"Host": host}, timeout=aiohttp.ClientTimeout(total=5)) as resp,
            ):
                if resp.status == 200 and resp.content_type == "application/json":
                    body = await resp.json()
                    assert body["host"] == host and body["path"] == path
                    return 200, str(body["name"])
                return resp.status, None
        except (aiohttp.ClientError, TimeoutError):
            return 0, None

    async def until(
        self, expected: Mapping[tuple[str, str], tuple[int, str | None]], timeout: float = WAIT
    ) -> None:
        """Poll until every (host, path) answers as expected; fail with what was last seen."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            seen = {key: await self.get(*key) for key in expected}
            if seen == dict(expected):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{self.api_type} gateway: expected {dict(expected)}, last saw {seen}")
            await asyncio.sleep(0.05)


class Pusher:
    """The cache and ADS server under test, in this process."""

    def __init__(self, http_port: int) -> None:
        self.http_port = http_port
        self.cache = ResourceCache(static_resources("127.0.0.1", http_port))
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> None:
        self.server = await serve_ads(self.cache, "127.0.0.1", port)
        self.port = bound_port(self.server)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)
            self.server = None

    def apply(self, *fragments: Fragment, delete: tuple[str, ...] = ()) -> None:
        changes: dict[str, Fragment | None] = {f.unit: f for f in fragments}
        changes.update({u: None for u in delete})
        self.cache.apply(changes)


@pytest.fixture
async def pusher() -> AsyncIterator[Pusher]:
    p = Pusher(free_port())
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def backends() -> AsyncIterator[dict[str, EchoServer]]:
    servers = {name: EchoServer(name) for name in ("web", "api", "auth", "web2")}
    for s in servers.values():
        await s.start()
    yield servers
    for s in servers.values():
        await s.stop()


@pytest.fixture
async def gateway_factory(tmp_path: Path, pusher: Pusher) -> AsyncIterator[Callable[..., Any]]:
    started: list[Gateway] = []

    async def make(api_type: ApiType, name: str = "gw", http_port: int | None = None) -> Gateway:
        gw = Gateway(tmp_path / name, pusher.port, http_port or pusher.http_port, api_type, node_id=name)
        await gw.start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        await gw.stop()
