"""Host matching and annotations through real Envoy, fed by the pusher, checked with real HTTP (and gRPC).

Each test applies compiled fragments to one Envoy and polls until every request answers as expected —
behaviour, never timings. The backends say who they are and what they were asked (path, headers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from conftest import NS, WAIT, Gateway, Pusher
from prometheus_client import REGISTRY

from shardgate.keys import host_unit, service_unit
from shardgate.local.echo import EchoServer
from shardgate.merge import CanaryRoute, HostConfig, Route
from shardgate.model import (
    CATCH_ALL_HOST,
    Backend,
    Canary,
    EndpointPort,
    EndpointSliceSpec,
    HostRoutes,
    IngressOptions,
    PathRule,
    PathType,
    ServicePort,
    ServiceSpec,
)
from shardgate.records import Fragment
from shardgate.xds import compile_unit
from shardgate.xds.compile import compile_host

pytestmark = pytest.mark.integration

PREFIX, EXACT = PathType.PREFIX, PathType.EXACT


# ---- fragments ---------------------------------------------------------------------------------------


def host(
    name: str,
    *paths: tuple[str, PathType, str],
    options: IngressOptions | None = None,
    tls: str | None = None,
    default: str | None = None,
    ingress: str = "ing",
) -> Fragment:
    routes = HostRoutes(
        NS,
        ingress,
        "2024-01-01T00:00:00Z",
        tuple(PathRule(p, t, Backend(svc, 80)) for p, t, svc in paths),
        tls_secret=tls,
        options=options or IngressOptions(),
        default_backend=Backend(default, 80) if default else None,
    )
    return compile_unit(host_unit(name), {f"ingress/{NS}/{ingress}-{name}": routes})


def canary_host(name: str, primary: str, canary: str, spec: Canary) -> Fragment:
    """A host whose `/` goes to `primary` with `canary` as its canary (the merge's output, built here)."""
    config = HostConfig(
        name,
        (
            Route(
                "/",
                PREFIX,
                f"{NS}/{primary}:80",
                f"ingress/{NS}/main",
                canaries=(CanaryRoute(f"{NS}/{canary}:80", spec, f"ingress/{NS}/canary"),),
            ),
        ),
        None,
    )
    resources, meta = compile_host(config)
    return Fragment(host_unit(name), resources, meta)


def service(name: str, port: int) -> Fragment:
    return compile_unit(
        service_unit(NS, name),
        {
            f"service/{NS}/{name}": ServiceSpec((ServicePort("http", 80, "http"),)),
            f"endpointslice/{NS}/{name}": EndpointSliceSpec((EndpointPort("http", port),), ("127.0.0.1",)),
        },
    )


# ---- backends ----------------------------------------------------------------------------------------


class SlowBackend:
    """`/slow` answers after far longer than any timeout the tests set; every other path at once."""

    def __init__(self) -> None:
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.release = asyncio.Event()

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            if request.path == "/slow":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.release.wait(), timeout=30)
            return web.json_response({"name": "slow", "path": request.path_qs, "headers": {}})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()


class GrpcBackend:
    """A gRPC server (HTTP/2 only): a call that succeeds through Envoy went upstream over HTTP/2."""

    def __init__(self) -> None:
        self.port = 0
        self.server: grpc.aio.Server | None = None

    async def start(self) -> None:
        async def say(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            return b"grpc:" + request

        handler = grpc.method_handlers_generic_handler(
            "echo.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)}
        )
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)


@dataclass
class Backends:
    echo: dict[str, EchoServer] = field(default_factory=dict)
    slow: SlowBackend = field(default_factory=SlowBackend)
    grpc: GrpcBackend = field(default_factory=GrpcBackend)

    def fragments(self) -> list[Fragment]:
        out = [service(name, s.port) for name, s in self.echo.items()]
        out += [service("slow", self.slow.port), service("grpc", self.grpc.port)]
        return out


@pytest.fixture
async def upstreams() -> AsyncIterator[Backends]:
    b = Backends(echo={name: EchoServer(name) for name in ("web", "api", "auth", "web2", "canary")})
    for s in b.echo.values():
        await s.start()
    await b.slow.start()
    await b.grpc.start()
    yield b
    for s in b.echo.values():
        await s.stop()
    await b.slow.stop()
    await b.grpc.stop()


# ---- client ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    name: str | None = None  # the echo backend that answered
    path: str | None = None  # the path it was asked for
    headers: Mapping[str, str] = field(default_factory=dict)  # response headers (lower-case)
    upstream_headers: Mapping[str, str] = field(default_factory=dict)  # what the backend received


Headers = tuple[tuple[str, str], ...]


def hdr(**headers: str) -> Headers:
    """Request headers as a hashable key (`x_canary="always"` is `x-canary: always`)."""
    return tuple((k.replace("_", "-"), v) for k, v in headers.items())


async def fetch(
    gw: Gateway, host_header: str, path: str, headers: Headers = (), method: str = "GET"
) -> Reply:
    url = f"http://127.0.0.1:{gw.http_port}{path}"
    sent = {"Host": host_header, **dict(headers)}
    try:
        async with (
            aiohttp.ClientSession(skip_auto_headers=("User-Agent",)) as session,
            session.request(
                method, url, headers=sent, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=10)
            ) as resp,
        ):
            got = {k.lower(): v for k, v in resp.headers.items()}
            if resp.content_type == "application/json" and resp.status == 200:
                body = json.loads(await resp.read())
                upstream = {k.lower(): v for k, v in body.get("headers", {}).items()}
                return Reply(resp.status, body["name"], body["path"], got, upstream)
            return Reply(resp.status, headers=got)
    except (aiohttp.ClientError, TimeoutError):
        return Reply(0)


Check = Callable[[Reply], bool]


def answers(name: str | None, status: int = 200, path: str | None = None) -> Check:
    def check(r: Reply) -> bool:
        return r.status == status and r.name == name and (path is None or r.path == path)

    check.__doc__ = f"{status} from {name}" + (f" at {path}" if path else "")
    return check


def redirects(status: int, location: str) -> Check:
    def check(r: Reply) -> bool:
        return r.status == status and r.headers.get("location") == location

    check.__doc__ = f"{status} to {location}"
    return check


def status(code: int) -> Check:
    def check(r: Reply) -> bool:
        return r.status == code

    check.__doc__ = f"status {code}"
    return check


Request = tuple[str, str] | tuple[str, str, Headers] | tuple[str, str, Headers, str]


async def until(gw: Gateway, expected: Mapping[Request, Check], timeout: float = WAIT) -> None:
    """Poll until every request answers as its check says; fail listing those that did not."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        replies = await asyncio.gather(*(fetch(gw, *req) for req in expected))
        wrong = {req: r for (req, check), r in zip(expected.items(), replies, strict=True) if not check(r)}
        if not wrong:
            return
        if asyncio.get_running_loop().time() > deadline:
            lines = [f"{req}: expected {expected[req].__doc__}, got {r}" for req, r in wrong.items()]
            raise AssertionError("\n".join(lines))
        await asyncio.sleep(0.05)


def nacks() -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "shardgate_pusher_nacks":
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total


@pytest.fixture
async def gw(
    pusher: Pusher, upstreams: Backends, gateway_factory: Callable[..., Any]
) -> AsyncIterator[Gateway]:
    before = nacks()
    pusher.apply(*upstreams.fragments())
    gateway: Gateway = await gateway_factory("DELTA_GRPC")
    yield gateway
    assert nacks() == before, "Envoy refused a resource"


# ---- hosts -------------------------------------------------------------------------------------------


async def test_wildcard_exact_and_catch_all(pusher: Pusher, gw: Gateway) -> None:
    pusher.apply(
        host("shop.example.com", ("/", PREFIX, "web")),
        host("*.example.com", ("/", PREFIX, "api")),
        host("only.example.com", ("/api", PREFIX, "web2")),
    )
    await until(
        gw,
        {
            ("shop.example.com", "/"): answers("web"),
            ("SHOP.Example.COM", "/"): answers("web"),
            ("shop.example.com:8080", "/"): answers("web"),
            ("shop.example.com.", "/"): answers("web"),
            ("Shop.Example.com.:80", "/x"): answers("web"),
            ("bar.example.com", "/"): answers("api"),  # exactly one label more
            ("BAR.example.com:99", "/"): answers("api"),
            ("bar.example.com.", "/"): answers("api"),
            ("a.bar.example.com", "/"): status(404),  # not two labels
            ("example.com", "/"): status(404),  # not zero
            (".example.com", "/"): status(404),  # not an empty label
            ("only.example.com", "/api/x"): answers("web2"),  # exact beats wildcard
            ("only.example.com", "/other"): status(404),  # ... and a path it lacks is not the wildcard's
            ("nobody.test", "/", hdr(x_shardgate_scope="shop.example.com")): status(404),  # spoofed
            ("bar.example.com", "/", hdr(x_shardgate_scope="shop.example.com")): answers("api"),
        },
    )
    reply = await fetch(gw, "bar.example.com", "/", hdr(x_shardgate_scope="shop.example.com"))
    assert "x-shardgate-scope" not in reply.upstream_headers

    # The catch-all: a host-less rule and a default backend answer what no host (or path) does.
    pusher.apply(host(CATCH_ALL_HOST, ("/hostless", PREFIX, "auth"), default="canary"))
    await until(
        gw,
        {
            ("a.bar.example.com", "/"): answers("canary"),
            ("example.com", "/x"): answers("canary"),
            ("nobody.test", "/hostless/y"): answers("auth"),
            ("nobody.test", "/", hdr(x_shardgate_scope="shop.example.com")): answers("canary"),
            ("only.example.com", "/other"): answers("canary"),  # a path the host lacks
            ("only.example.com", "/api"): answers("web2"),
            ("shop.example.com", "/hostless"): answers("web"),  # a host's own "/" wins
            ("bar.example.com", "/"): answers("api"),
        },
    )

    # Removing the wildcard sends its hosts to the catch-all; the exact host stays.
    pusher.apply(delete=(host_unit("*.example.com"),))
    await until(gw, {("bar.example.com", "/"): answers("canary"), ("shop.example.com", "/"): answers("web")})
