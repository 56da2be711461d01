"""Host matching and annotations through real Envoy, fed by the pusher, checked with real HTTP (and gRPC).

Each test applies compiled fragments to one Envoy and polls until every request answers as expected —
behaviour, never timings. The backends say who they are and what they were asked (path, headers).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from conftest import NS, WAIT, Gateway, Pusher
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import REGISTRY

from shardgate.keys import host_unit, service_unit
from shardgate.local.echo import EchoServer
from shardgate.model import (
    CATCH_ALL_HOST,
    Backend,
    Canary,
    Cors,
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
    """A host whose `/` goes to `primary`, with a second (canary) Ingress sending `/` to `canary`."""
    main = HostRoutes(NS, "main", "2024-01-01T00:00:00Z", (PathRule("/", PREFIX, Backend(primary, 80)),))
    extra = HostRoutes(
        NS,
        "canary",
        "2024-01-02T00:00:00Z",
        (PathRule("/", PREFIX, Backend(canary, 80)),),
        options=IngressOptions(canary=spec),
    )
    return compile_unit(host_unit(name), {f"ingress/{NS}/main": main, f"ingress/{NS}/canary": extra})


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
    """`/slow` answers after far longer than any timeout the tests set, `/ws` is a WebSocket echo; every
    other path answers at once."""

    def __init__(self) -> None:
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.release = asyncio.Event()

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.StreamResponse:
            if request.path == "/ws":
                ws = web.WebSocketResponse()
                await ws.prepare(request)
                async for message in ws:
                    await ws.send_str("echo:" + message.data)
                return ws
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

    def __init__(self, tls: tuple[bytes, bytes] | None = None) -> None:
        self.port = 0
        self.tls = tls
        self.server: grpc.aio.Server | None = None

    async def start(self) -> None:
        async def say(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            return b"grpc:" + request

        handler = grpc.method_handlers_generic_handler(
            "echo.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)}
        )
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((handler,))
        if self.tls is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            credentials = grpc.ssl_server_credentials([(self.tls[1], self.tls[0])])
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)


def self_signed() -> tuple[bytes, bytes]:
    """A throwaway certificate and key for the TLS backends (Envoy does not verify them, like nginx)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "backend.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class TlsEcho:
    """An HTTPS-only backend: it answers only if the gateway spoke TLS to it (and says so)."""

    def __init__(self, cert: bytes, key: bytes, workdir: Path) -> None:
        self.port = 0
        self.cert, self.key, self.workdir = cert, key, workdir
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            tls = request.transport is not None and request.transport.get_extra_info("sslcontext") is not None
            return web.json_response(
                {"name": "tls" if tls else "plain", "path": request.path_qs, "headers": {}}
            )

        (self.workdir / "cert.pem").write_bytes(self.cert)
        (self.workdir / "key.pem").write_bytes(self.key)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.workdir / "cert.pem", self.workdir / "key.pem")
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Backends:
    echo: dict[str, EchoServer]
    tls: TlsEcho
    grpcs: GrpcBackend
    slow: SlowBackend = field(default_factory=SlowBackend)
    grpc: GrpcBackend = field(default_factory=GrpcBackend)

    def servers(self) -> list[EchoServer | TlsEcho | GrpcBackend | SlowBackend]:
        return [*self.echo.values(), self.tls, self.grpcs, self.slow, self.grpc]

    def fragments(self) -> list[Fragment]:
        out = [service(name, s.port) for name, s in self.echo.items()]
        out += [service("slow", self.slow.port), service("grpc", self.grpc.port)]
        out += [service("tls", self.tls.port), service("grpcs", self.grpcs.port)]
        return out


@pytest.fixture
async def upstreams(tmp_path: Path) -> AsyncIterator[Backends]:
    cert, key = self_signed()
    b = Backends(
        echo={name: EchoServer(name) for name in ("web", "api", "auth", "web2", "canary")},
        tls=TlsEcho(cert, key, tmp_path),
        grpcs=GrpcBackend((cert, key)),
    )
    for server in b.servers():
        await server.start()
    yield b
    for server in b.servers():
        await server.stop()


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


@pytest.fixture(params=["DELTA_GRPC", "GRPC"], ids=["delta", "sotw"])
async def gw(
    request: pytest.FixtureRequest,
    pusher: Pusher,
    upstreams: Backends,
    gateway_factory: Callable[..., Any],
) -> AsyncIterator[Gateway]:
    """One Envoy per test, over Delta and over State-of-the-World ADS; no NACK allowed."""
    before = nacks()
    pusher.apply(*upstreams.fragments())
    gateway: Gateway = await gateway_factory(request.param)
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
    # A client cannot steer Envoy with its control headers either: they are dropped at the edge.
    reply = await fetch(gw, "shop.example.com", "/", hdr(x_envoy_retry_on="5xx", x_envoy_max_retries="9"))
    assert reply.name == "web" and not {"x-envoy-retry-on", "x-envoy-max-retries"} & set(
        reply.upstream_headers
    )

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


# ---- annotations -------------------------------------------------------------------------------------


async def test_rewrite_redirects_and_app_root(pusher: Pusher, gw: Gateway) -> None:
    opts = IngressOptions
    pusher.apply(
        host("rw.example.com", ("/foo", PREFIX, "web"), options=opts(rewrite_target="/")),
        host("rw2.example.com", ("/foo", PREFIX, "web"), options=opts(rewrite_target="/new")),
        host("rw3.example.com", ("/exact", EXACT, "web"), options=opts(rewrite_target="/there")),
        host(
            "rx.example.com",
            ("/api(/|$)(.*)", PathType.IMPLEMENTATION_SPECIFIC, "web"),
            options=opts(rewrite_target="/v2/$2", use_regex=True),
        ),
        host("tls.example.com", ("/", PREFIX, "web"), tls="tls-secret"),
        host("optout.example.com", ("/", PREFIX, "web"), tls="tls-secret", options=opts(ssl_redirect=False)),
        host("force.example.com", ("/", PREFIX, "web"), options=opts(force_ssl_redirect=True)),
        host(
            "acme.example.com",
            ("/.well-known/acme-challenge", PREFIX, "api"),
            ("/", PREFIX, "web"),
            tls="tls-secret",
        ),
        host(
            "moved.example.com",
            ("/", PREFIX, "web"),
            options=opts(permanent_redirect="https://new.example.org/landing", permanent_redirect_code=308),
        ),
        host(
            "moved301.example.com",
            ("/", PREFIX, "web"),
            options=opts(permanent_redirect="http://x.test:8081/"),
        ),
        host("app.example.com", ("/", PREFIX, "web"), options=opts(app_root="/app1")),
    )
    await until(
        gw,
        {
            ("rw.example.com", "/foo/bar?q=1"): answers("web", path="/bar?q=1"),
            ("rw.example.com", "/foo"): answers("web", path="/"),
            ("rw2.example.com", "/foo/bar"): answers("web", path="/new/bar"),
            ("rw2.example.com", "/foo"): answers("web", path="/new"),
            ("rw3.example.com", "/exact"): answers("web", path="/there"),
            ("rx.example.com", "/api/users/7"): answers("web", path="/v2/users/7"),
            ("rx.example.com", "/API"): answers("web", path="/v2/"),  # nginx's ~* is case-insensitive
            ("tls.example.com", "/a?b=c"): redirects(308, "https://tls.example.com/a?b=c"),
            ("optout.example.com", "/a"): answers("web"),
            ("force.example.com", "/a"): redirects(308, "https://force.example.com/a"),
            ("acme.example.com", "/.well-known/acme-challenge/tok"): answers("api"),
            ("acme.example.com", "/x"): redirects(308, "https://acme.example.com/x"),
            ("moved.example.com", "/any?x=1"): redirects(308, "https://new.example.org/landing"),
            ("moved301.example.com", "/any"): redirects(301, "http://x.test:8081/"),
            ("app.example.com", "/"): redirects(302, "http://app.example.com/app1"),
            ("app.example.com", "/other"): answers("web", path="/other"),
        },
    )


async def test_canary(pusher: Pusher, gw: Gateway) -> None:
    pusher.apply(
        canary_host("all.example.com", "web", "canary", Canary(weight=100)),
        canary_host("none.example.com", "web", "canary", Canary(weight=0)),
        canary_host("hdr.example.com", "web", "canary", Canary(weight=100, header="X-Canary")),
        canary_host("val.example.com", "web", "canary", Canary(header="x-env", header_value="blue")),
    )
    await until(
        gw,
        {
            ("all.example.com", "/x"): answers("canary"),
            ("none.example.com", "/x"): answers("web"),
            ("hdr.example.com", "/", hdr(x_canary="always")): answers("canary"),
            ("hdr.example.com", "/", hdr(x_canary="never")): answers("web"),  # never beats the weight
            ("hdr.example.com", "/", hdr(x_canary="other")): answers("canary"),  # weight decides
            ("val.example.com", "/", hdr(x_env="blue")): answers("canary"),
            ("val.example.com", "/", hdr(x_env="always")): answers("web"),
            ("val.example.com", "/"): answers("web"),
        },
    )


async def test_timeouts_and_protocols(pusher: Pusher, gw: Gateway, upstreams: Backends) -> None:
    pusher.apply(
        host("slow.example.com", ("/", PREFIX, "slow"), options=IngressOptions(read_timeout_s=0.5)),
        host(
            "conn.example.com",
            ("/", PREFIX, "web"),
            options=IngressOptions(connect_timeout_s=1.5, send_timeout_s=120),
        ),
        host("grpc.example.com", ("/", PREFIX, "grpc"), options=IngressOptions(backend_protocol="GRPC")),
        host("grpcs.example.com", ("/", PREFIX, "grpcs"), options=IngressOptions(backend_protocol="GRPCS")),
        host("tls.example.com", ("/", PREFIX, "tls"), options=IngressOptions(backend_protocol="HTTPS")),
        host("notls.example.com", ("/", PREFIX, "tls")),
    )
    # The per-host clusters read assignments Envoy already holds: a bound well under Envoy's 15 s initial
    # fetch timeout shows they do not wait it out (clusters.SHARED_EDS_INITIAL_FETCH).
    await until(
        gw,
        {
            ("slow.example.com", "/slow"): status(504),
            ("slow.example.com", "/fast"): answers("slow"),
            ("conn.example.com", "/"): answers("web"),
            ("tls.example.com", "/x"): answers("tls", path="/x"),  # spoke TLS to the backend
            ("notls.example.com", "/x"): status(503),  # without the annotation: plain HTTP, refused
        },
        timeout=10,
    )
    # gRPC through Envoy to an HTTP/2-only server (and one behind TLS): the per-host clusters speak
    # HTTP/2 upstream.
    for authority in ("grpc.example.com", "grpcs.example.com"):
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{gw.http_port}", options=[("grpc.default_authority", authority)]
        ) as channel:
            say = channel.unary_unary("/echo.Echo/Say")
            deadline = asyncio.get_running_loop().time() + WAIT
            while True:
                try:
                    assert await say(b"hi", timeout=5) == b"grpc:hi"
                    break
                except grpc.aio.AioRpcError:
                    assert asyncio.get_running_loop().time() < deadline, f"{authority}: gRPC never answered"
                    await asyncio.sleep(0.1)
    # WebSocket upgrades pass, as they do on every ingress-nginx location.
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"http://127.0.0.1:{gw.http_port}/ws",
            headers={"Host": "slow.example.com"},
            timeout=aiohttp.ClientWSTimeout(ws_receive=10, ws_close=10),
        ) as ws,
    ):
        await ws.send_str("hi")
        assert (await ws.receive(timeout=5)).data == "echo:hi"
    clusters = await gw.config_names("dynamic_active_clusters")
    assert {"grpc.example.com|shop/grpc:80|grpc", "conn.example.com|shop/web:80|connect=1.5s"} <= clusters


async def test_whitelist_and_cors(pusher: Pusher, gw: Gateway) -> None:
    pusher.apply(
        host(
            "in.example.com",
            ("/", PREFIX, "web"),
            options=IngressOptions(whitelist_source_range=("127.0.0.0/8",)),
        ),
        host(
            "out.example.com",
            ("/", PREFIX, "web"),
            options=IngressOptions(whitelist_source_range=("10.0.0.0/8", "fd00::/8")),
        ),
        host(
            "cors.example.com",
            ("/", PREFIX, "web"),
            options=IngressOptions(cors=Cors(allow_origins=("https://app.test",), allow_credentials=False)),
        ),
        host("anycors.example.com", ("/", PREFIX, "web"), options=IngressOptions(cors=Cors())),
        host(
            "wildcors.example.com",
            ("/", PREFIX, "web"),
            options=IngressOptions(cors=Cors(allow_origins=("https://*.app.test",))),
        ),
    )
    preflight = hdr(origin="https://app.test", access_control_request_method="PUT")
    await until(
        gw,
        {
            ("in.example.com", "/"): answers("web"),
            ("out.example.com", "/"): status(403),
            ("OUT.Example.com", "/"): status(403),  # found by the fallback: still checked
            ("out.example.com.", "/"): status(403),
            ("out.example.com", "/", hdr(x_forwarded_for="10.1.2.3")): status(403),  # not forgeable
            ("cors.example.com", "/", preflight, "OPTIONS"): status(200),
            ("cors.example.com", "/", hdr(origin="https://app.test")): answers("web"),
        },
    )
    reply = await fetch(gw, "cors.example.com", "/", preflight, "OPTIONS")
    assert reply.headers["access-control-allow-origin"] == "https://app.test"
    assert "PUT" in reply.headers["access-control-allow-methods"]
    assert reply.headers["access-control-max-age"] == "1728000"
    assert "access-control-allow-credentials" not in reply.headers
    other = await fetch(gw, "cors.example.com", "/", hdr(origin="https://evil.test"))
    assert other.status == 200 and "access-control-allow-origin" not in other.headers
    anyone = await fetch(
        gw,
        "anycors.example.com",
        "/",
        hdr(origin="https://x.test", access_control_request_method="GET"),
        "OPTIONS",
    )
    assert anyone.headers["access-control-allow-origin"] == "https://x.test"
    assert anyone.headers["access-control-allow-credentials"] == "true"
    for origin, allowed in [
        ("https://a.app.test", True),
        ("https://A.App.test", True),  # origins compare case-insensitively, as nginx's ~*
        ("https://a.b.app.test", False),  # one label, as nginx
        ("http://a.app.test", False),  # the scheme is part of the origin
        ("https://app.test", False),
    ]:
        reply = await fetch(gw, "wildcors.example.com", "/", hdr(origin=origin))
        assert reply.status == 200
        assert (reply.headers.get("access-control-allow-origin") == origin) is allowed, origin
