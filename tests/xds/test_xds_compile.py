"""Contributions in, decoded Envoy resources out: the compiler's contract, table by table."""

from __future__ import annotations

from dataclasses import replace

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import scoped_route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from shardgate.keys import host_unit, secret_unit, service_unit
from shardgate.model import (
    Backend,
    Contribution,
    EndpointPort,
    EndpointSliceSpec,
    HostRoutes,
    PathRule,
    PathType,
    ServicePort,
    ServiceSpec,
    TlsCertificate,
)
from shardgate.records import Fragment, content_hash
from shardgate.xds import compile_unit, types
from shardgate.xds.routes import scope_name

ING = "ingress/shop/web"


def ingress(
    *paths: tuple[str, PathType, str, int | str], tls: str | None = None, ns: str = "shop"
) -> HostRoutes:
    return HostRoutes(
        namespace=ns,
        ingress="web",
        created="2024-01-01T00:00:00Z",
        paths=tuple(PathRule(p, t, Backend(svc, port)) for p, t, svc, port in paths),
        tls_secret=tls,
    )


def scope_of(fragment: Fragment) -> scoped_route_pb2.ScopedRouteConfiguration:
    (res,) = fragment.resources
    assert res.type_url == types.SCOPED_ROUTE
    msg = scoped_route_pb2.ScopedRouteConfiguration.FromString(res.body)
    assert msg.name == res.name
    return msg


def matches(scope: scoped_route_pb2.ScopedRouteConfiguration) -> list[tuple[str, str, str]]:
    """(match kind, path, cluster) of the host's routes; the last 404 route (to the catch-all) as "404"."""
    (vhost,) = scope.route_configuration.virtual_hosts
    assert list(vhost.domains) == ["*"]
    return [
        ("prefix", "/", "404")
        if r.HasField("direct_response")
        else (
            r.match.WhichOneof("path_specifier") or "",
            getattr(r.match, r.match.WhichOneof("path_specifier") or "prefix"),
            r.route.cluster,
        )
        for r in vhost.routes
    ]


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        pytest.param(
            [("/", PathType.PREFIX, "web", 80)],
            [("prefix", "/", "shop/web:80")],
            id="root-prefix-is-plain-prefix",
        ),
        pytest.param(
            [("/api/", PathType.PREFIX, "api", "http")],
            [("path_separated_prefix", "/api", "shop/api:http"), ("prefix", "/", "404")],
            id="prefix-trailing-slash-dropped-port-by-name",
        ),
        pytest.param(
            [("/login", PathType.EXACT, "auth", 8080)],
            [("path", "/login", "shop/auth:8080"), ("prefix", "/", "404")],
            id="exact-is-path",
        ),
        pytest.param(
            [
                ("/", PathType.PREFIX, "web", 80),
                ("/api", PathType.PREFIX, "api", 80),
                ("/api", PathType.EXACT, "exact", 80),
                ("/api/v1/users", PathType.IMPLEMENTATION_SPECIFIC, "users", 80),
            ],
            [
                ("path_separated_prefix", "/api/v1/users", "shop/users:80"),
                ("path", "/api", "shop/exact:80"),
                ("path_separated_prefix", "/api", "shop/api:80"),
                ("prefix", "/", "shop/web:80"),
            ],
            id="longest-first-exact-before-prefix",
        ),
    ],
)
def test_host_routes(
    paths: list[tuple[str, PathType, str, int | str]], expected: list[tuple[str, str, str]]
) -> None:
    unit = host_unit("Shop.Example.com")
    fragment = compile_unit(unit, {ING: ingress(*paths)})
    scope = scope_of(fragment)
    assert scope.name == scope_name("shop.example.com")
    assert [f.string_key for f in scope.key.fragments] == ["shop.example.com"]
    assert scope.route_configuration.name == "shop.example.com"
    assert matches(scope) == expected
    assert fragment.meta["host"] == "shop.example.com"


def test_host_meta_carries_tls_secret_and_conflicts() -> None:
    older = ingress(("/", PathType.PREFIX, "web", 80), tls="web-tls")
    newer = replace(
        ingress(("/", PathType.PREFIX, "other", 80)), ingress="late", created="2025-01-01T00:00:00Z"
    )
    fragment = compile_unit(host_unit("a.example.com"), {ING: older, "ingress/shop/late": newer})
    assert fragment.meta["tls_secret"] == "shop/web-tls"
    assert fragment.meta["conflicts"] == [
        {"source": "ingress/shop/late", "winner": ING, "path": "/", "path_type": "Prefix"}
    ]
    # The host has TLS: plain HTTP is redirected first (a redirect has no cluster).
    assert matches(scope_of(fragment)) == [("prefix", "/", ""), ("prefix", "/", "shop/web:80")]


SERVICE = ServiceSpec(ports=(ServicePort("http", 80, 8080), ServicePort("", 9090, 9090)))
SLICE = EndpointSliceSpec(ports=(EndpointPort("http", 8080),), addresses=("10.0.0.2", "10.0.0.1"))


def decoded_service(fragment: Fragment) -> dict[str, list[tuple[str, int]] | str]:
    out: dict[str, list[tuple[str, int]] | str] = {}
    for res in fragment.resources:
        if res.type_url == types.CLUSTER:
            c = cluster_pb2.Cluster.FromString(res.body)
            assert c.name == res.name
            assert c.type == cluster_pb2.Cluster.EDS
            assert c.eds_cluster_config.service_name == res.name
            assert c.eds_cluster_config.eds_config.HasField("ads")
            assert c.connect_timeout.seconds > 0
            out[f"cluster {res.name}"] = "eds"
        else:
            assert res.type_url == types.ENDPOINT
            cla = endpoint_pb2.ClusterLoadAssignment.FromString(res.body)
            assert cla.cluster_name == res.name
            out[f"cla {res.name}"] = [
                (e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
                for loc in cla.endpoints
                for e in loc.lb_endpoints
            ]
    return out


@pytest.mark.parametrize(
    ("contributions", "expected"),
    [
        pytest.param(
            {"service/shop/web": SERVICE, "endpointslice/shop/web-abc": SLICE},
            {
                "cluster shop/web:80": "eds",
                "cla shop/web:80": [("10.0.0.1", 8080), ("10.0.0.2", 8080)],
                "cluster shop/web:http": "eds",
                "cla shop/web:http": [("10.0.0.1", 8080), ("10.0.0.2", 8080)],
                "cluster shop/web:9090": "eds",
                "cla shop/web:9090": [],
            },
            id="by-number-and-name-unnamed-port-empty",
        ),
        pytest.param(
            {"service/shop/web": SERVICE},
            {
                "cluster shop/web:80": "eds",
                "cla shop/web:80": [],
                "cluster shop/web:http": "eds",
                "cla shop/web:http": [],
                "cluster shop/web:9090": "eds",
                "cla shop/web:9090": [],
            },
            id="no-endpoints-empty-assignments",
        ),
    ],
)
def test_service(contributions: dict[str, Contribution], expected: dict[str, object]) -> None:
    fragment = compile_unit(service_unit("shop", "web"), contributions)
    assert decoded_service(fragment) == expected
    assert fragment.meta["clusters"] == ["shop/web:80", "shop/web:http", "shop/web:9090"]


def test_secret() -> None:
    fragment = compile_unit(secret_unit("shop", "tls"), {"secret/shop/tls": TlsCertificate(b"CERT", b"KEY")})
    (res,) = fragment.resources
    assert (res.type_url, res.name) == (types.SECRET, "shop/tls")
    secret = secret_pb2.Secret.FromString(res.body)
    assert secret.tls_certificate.certificate_chain.inline_bytes == b"CERT"
    assert secret.tls_certificate.private_key.inline_bytes == b"KEY"


@pytest.mark.parametrize(
    ("unit", "contributions"),
    [
        pytest.param(host_unit("gone.example.com"), {}, id="host-no-ingress"),
        pytest.param(
            service_unit("shop", "web"), {"endpointslice/shop/web-abc": SLICE}, id="slices-without-service"
        ),
        pytest.param(secret_unit("shop", "tls"), {}, id="secret-gone"),
    ],
)
def test_deleted_unit_has_no_resources(unit: str, contributions: dict[str, Contribution]) -> None:
    fragment = compile_unit(unit, contributions)
    assert fragment.unit == unit
    assert fragment.resources == ()


HOST = host_unit("a.example.com")
BASE = {ING: ingress(("/", PathType.PREFIX, "web", 80), ("/api", PathType.EXACT, "api", 80))}


def test_version_is_content_hash_and_stable() -> None:
    a = compile_unit(HOST, BASE)
    b = compile_unit(HOST, dict(BASE))
    assert a.resources == b.resources
    assert a.hash == b.hash
    for res in a.resources:
        assert res.version == content_hash(res.body)
    # Fixed across runs and processes (deterministic bytes), pinned; a protobuf upgrade that changes the
    # encoding would re-push every host once, which this test makes visible.
    assert a.resources[0].version == "9969c87f867df6409ba9456b"


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(
            {ING: ingress(("/", PathType.PREFIX, "web", 81), ("/api", PathType.EXACT, "api", 80))}, id="port"
        ),
        pytest.param(
            {ING: ingress(("/", PathType.PREFIX, "web", 80), ("/api", PathType.PREFIX, "api", 80))},
            id="path-type",
        ),
        pytest.param(
            {ING: ingress(("/", PathType.PREFIX, "web", 80), ("/apx", PathType.EXACT, "api", 80))}, id="path"
        ),
        pytest.param(
            {ING: ingress(("/", PathType.PREFIX, "web", 80), ("/api", PathType.EXACT, "api", 80), ns="x")},
            id="namespace",
        ),
        pytest.param({ING: ingress(("/", PathType.PREFIX, "web", 80))}, id="route-removed"),
    ],
)
def test_any_change_changes_version(changed: dict[str, Contribution]) -> None:
    assert compile_unit(HOST, changed).resources[0].version != compile_unit(HOST, BASE).resources[0].version


def test_endpoint_change_changes_only_the_assignment() -> None:
    unit = service_unit("shop", "web")
    before = {
        r.name + r.type_url: r.version for r in compile_unit(unit, {"service/shop/web": SERVICE}).resources
    }
    after = {
        r.name + r.type_url: r.version
        for r in compile_unit(
            unit, {"service/shop/web": SERVICE, "endpointslice/shop/web-abc": SLICE}
        ).resources
    }
    changed = sorted(k for k in before if before[k] != after[k])
    assert changed == [f"shop/web:80{types.ENDPOINT}", f"shop/web:http{types.ENDPOINT}"]
