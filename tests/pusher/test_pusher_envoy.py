"""The pusher feeding real Envoy over Delta and SotW ADS, checked with real HTTP traffic."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Gateway, Pusher, host_fragment, service_fragment
from envoy.config.core.v3 import address_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from prometheus_client import REGISTRY

from shardgate.local.echo import EchoServer
from shardgate.model import PathType
from shardgate.pusher.cache import ResourceCache
from shardgate.records import Fragment, make_resource
from shardgate.xds import types
from shardgate.xds.listeners import static_resources
from shardgate.xds.routes import scope_name

pytestmark = pytest.mark.integration

PROTOCOLS = [pytest.param("DELTA_GRPC", id="delta"), pytest.param("GRPC", id="sotw")]
HOST = "shop.example.com"
EXACT, PREFIX = PathType.EXACT, PathType.PREFIX


def shop(backends: dict[str, EchoServer]) -> list[Fragment]:
    return [
        host_fragment(HOST, ("/", PREFIX, "web"), ("/api", PREFIX, "api"), ("/login", EXACT, "auth")),
        service_fragment("web", backends["web"]),
        service_fragment("api", backends["api"]),
        service_fragment("auth", backends["auth"]),
    ]


@pytest.mark.parametrize("api_type", PROTOCOLS)
async def test_routes_follow_every_kind_of_change(
    api_type: str, pusher: Pusher, backends: dict[str, EchoServer], gateway_factory: Callable[..., Any]
) -> None:
    gw: Gateway = await gateway_factory(api_type)
    pusher.apply(*shop(backends))
    await gw.until(
        {
            (HOST, "/"): (200, "web"),
            (HOST, "/api"): (200, "api"),
            (HOST, "/api/v1"): (200, "api"),
            (HOST, "/apix"): (200, "web"),  # Prefix matches whole path elements
            (HOST, "/login"): (200, "auth"),
            (HOST, "/login/more"): (200, "web"),  # Exact is exact
            ("other.example.com", "/"): (404, None),
        }
    )

    # A route's cluster changes: /api moves to the auth service.
    pusher.apply(
        host_fragment(HOST, ("/", PREFIX, "web"), ("/api", PREFIX, "auth"), ("/login", EXACT, "auth"))
    )
    await gw.until({(HOST, "/api/v1"): (200, "auth"), (HOST, "/"): (200, "web")})

    # Endpoints change: web's only endpoint becomes web2.
    pusher.apply(service_fragment("web", backends["web2"]))
    await gw.until({(HOST, "/"): (200, "web2"), (HOST, "/api/v1"): (200, "auth")})

    # A service with no ready endpoint answers 503 at once.
    pusher.apply(service_fragment("web"))
    await gw.until({(HOST, "/"): (503, None), (HOST, "/login"): (200, "auth")})

    # A second host next to the first, then the first host deleted: 404 for it, the other unaffected.
    pusher.apply(host_fragment("b.example.com", ("/", PREFIX, "api")))
    await gw.until({("b.example.com", "/x"): (200, "api")})
    pusher.apply(delete=(host_fragment(HOST).unit,))
    await gw.until({(HOST, "/login"): (404, None), ("b.example.com", "/x"): (200, "api")})

    # A request with a port in its Host header selects the same scope.
    await gw.until({("b.example.com:8080", "/x"): (200, "api")})


async def test_two_envoys_one_delta_one_sotw_converge(
    pusher: Pusher, backends: dict[str, EchoServer], gateway_factory: Callable[..., Any]
) -> None:
    """Both gateways share the listener port (SO_REUSEPORT), so convergence is read from each admin."""
    delta: Gateway = await gateway_factory("DELTA_GRPC", name="gw-delta")
    sotw: Gateway = await gateway_factory("GRPC", name="gw-sotw")
    pusher.apply(*shop(backends))
    for gw in (delta, sotw):
        await _until_config(gw, "dynamic_scoped_route_configs", {scope_name(HOST)})
    await delta.until({(HOST, "/api"): (200, "api")})
    pusher.apply(host_fragment("b.example.com", ("/", PREFIX, "web")), delete=(host_fragment(HOST).unit,))
    for gw in (delta, sotw):
        await _until_config(gw, "dynamic_scoped_route_configs", {scope_name("b.example.com")})
    await delta.until({("b.example.com", "/"): (200, "web"), (HOST, "/"): (404, None)})


async def _until_config(gw: Gateway, resource: str, expected: set[str]) -> None:
    deadline = asyncio.get_running_loop().time() + 20
    while (seen := await gw.config_names(resource)) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"{gw.api_type}: {resource} {seen} != {expected}"
        await asyncio.sleep(0.05)


def _nacks(type_name: str) -> float:
    return REGISTRY.get_sample_value("shardgate_pusher_nacks_total", {"type": type_name}) or 0.0


def bad_endpoints_fragment() -> Fragment:
    """A service whose endpoint port is out of range: the protos allow it, Envoy refuses it."""
    good = service_fragment("bad")
    cla = endpoint_pb2.ClusterLoadAssignment(
        cluster_name="shop/bad:80",
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(
                            address=address_pb2.Address(
                                socket_address=address_pb2.SocketAddress(
                                    address="127.0.0.1", port_value=70000
                                )
                            )
                        )
                    )
                ]
            )
        ],
    )
    resources = tuple(
        make_resource(types.ENDPOINT, r.name, cla.SerializeToString()) if r.type_url == types.ENDPOINT else r
        for r in good.resources
        if r.name == "shop/bad:80"
    )
    return Fragment(good.unit, resources)


@pytest.mark.parametrize("api_type", PROTOCOLS)
async def test_nack_is_reported_and_not_fatal(
    api_type: str,
    pusher: Pusher,
    backends: dict[str, EchoServer],
    gateway_factory: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw: Gateway = await gateway_factory(api_type)
    pusher.apply(*shop(backends))
    await gw.until({(HOST, "/api"): (200, "api")})

    before = _nacks("ClusterLoadAssignment")
    with caplog.at_level(logging.WARNING, logger="shardgate.pusher"):
        pusher.apply(bad_endpoints_fragment())
        deadline = asyncio.get_running_loop().time() + 20
        while _nacks("ClusterLoadAssignment") == before:
            assert asyncio.get_running_loop().time() < deadline, "no NACK seen"
            await asyncio.sleep(0.05)
    nack_logs = [r.getMessage() for r in caplog.records if "NACK" in r.getMessage()]
    assert any("shop/bad:80" in m and "ClusterLoadAssignment" in m and "gw" in m for m in nack_logs), (
        nack_logs
    )

    # Envoy kept its good config, and later changes still arrive.
    await gw.until({(HOST, "/api"): (200, "api"), (HOST, "/login"): (200, "auth")})
    pusher.apply(host_fragment("b.example.com", ("/", PREFIX, "web")))
    pusher.apply(service_fragment("web", backends["web2"]))
    await gw.until({("b.example.com", "/"): (200, "web2"), (HOST, "/"): (200, "web2")})


@pytest.mark.parametrize("api_type", PROTOCOLS)
async def test_envoy_restart_reconverges(
    api_type: str, pusher: Pusher, backends: dict[str, EchoServer], gateway_factory: Callable[..., Any]
) -> None:
    gw: Gateway = await gateway_factory(api_type)
    pusher.apply(*shop(backends))
    await gw.until({(HOST, "/api"): (200, "api")})
    await gw.stop()
    # Changes while the gateway is down.
    pusher.apply(host_fragment("b.example.com", ("/", PREFIX, "auth")), delete=(host_fragment(HOST).unit,))
    await gw.start()
    await gw.until({("b.example.com", "/"): (200, "auth"), (HOST, "/api"): (404, None)})


@pytest.mark.parametrize("api_type", PROTOCOLS)
async def test_pusher_restart_reconverges(
    api_type: str, pusher: Pusher, backends: dict[str, EchoServer], gateway_factory: Callable[..., Any]
) -> None:
    """Envoy reconnects to a new pusher process; over Delta it names what it holds, and only the
    difference is sent (a host deleted while the pusher was away is removed)."""
    gw: Gateway = await gateway_factory(api_type)
    pusher.apply(*shop(backends), host_fragment("b.example.com", ("/", PREFIX, "web")))
    await gw.until({(HOST, "/api"): (200, "api"), ("b.example.com", "/"): (200, "web")})
    port = pusher.port
    await pusher.stop()

    # The new pusher's state: b.example.com is gone, the rest the same.
    pusher.cache = ResourceCache(static_resources("127.0.0.1", pusher.http_port))
    pusher.apply(*shop(backends))
    pushed_before = _pushed(api_type, "ScopedRouteConfiguration")
    await pusher.start(port)
    await gw.until({(HOST, "/api"): (200, "api"), ("b.example.com", "/"): (404, None)})
    if api_type == "DELTA_GRPC":
        # Only the removal: the unchanged host was not sent again.
        assert _pushed(api_type, "ScopedRouteConfiguration") - pushed_before == 1


def _pushed(api_type: str, type_name: str) -> float:
    protocol = "delta" if api_type == "DELTA_GRPC" else "sotw"
    labels = {"protocol": protocol, "type": type_name}
    return REGISTRY.get_sample_value("shardgate_pusher_pushed_resources_total", labels) or 0.0
