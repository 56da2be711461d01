"""merge: every contribution to a unit in, one deterministic configuration out (table-driven)."""

from __future__ import annotations

import pytest

from shardgate.merge import ClusterConfig, Conflict, merge_host, merge_secret, merge_service, normalize_path
from shardgate.model import (
    Backend,
    EndpointPort,
    EndpointSliceSpec,
    HostRoutes,
    PathRule,
    PathType,
    ServicePort,
    ServiceSpec,
    TlsCertificate,
)

E, P, IS = PathType.EXACT, PathType.PREFIX, PathType.IMPLEMENTATION_SPECIFIC
HOST = "h:shop.example.com"


def ing(name: str, created: str, *paths: tuple[str, PathType, str], tls: str | None = None) -> HostRoutes:
    rules = tuple(PathRule(p, t, Backend(svc, 80)) for p, t, svc in paths)
    return HostRoutes("ns", name, created, rules, tls)


@pytest.mark.parametrize(
    ("path", "ptype", "expected"),
    [("/", P, "/"), ("/foo/", P, "/foo"), ("/foo", P, "/foo"), ("/foo/", E, "/foo/"), ("//", P, "/")],
)
def test_normalize_path(path: str, ptype: PathType, expected: str) -> None:
    assert normalize_path(path, ptype) == expected


def test_routes_longest_first_exact_before_prefix_implementation_specific_as_prefix() -> None:
    config = merge_host(
        HOST,
        {
            "ingress/ns/a": ing(
                "a", "t1", ("/", P, "root"), ("/api", P, "api"), ("/api", E, "exact"), ("/x/", IS, "x")
            )
        },
    )
    assert config is not None
    assert [(r.path, r.path_type, r.cluster) for r in config.routes] == [
        ("/api", E, "ns/exact:80"),
        ("/api", P, "ns/api:80"),
        ("/x", P, "ns/x:80"),
        ("/", P, "ns/root:80"),
    ]


def test_conflict_oldest_wins_then_name_and_the_loser_is_recorded() -> None:
    contributions = {
        "ingress/ns/new": ing("new", "2026-02-01T00:00:00Z", ("/", P, "new")),
        "ingress/ns/old-b": ing("old-b", "2026-01-01T00:00:00Z", ("/", P, "b")),
        "ingress/ns/old-a": ing("old-a", "2026-01-01T00:00:00Z", ("/", P, "a"), ("/only-a", P, "a")),
    }
    config = merge_host(HOST, contributions)
    assert config is not None
    assert {r.path: r.cluster for r in config.routes} == {"/only-a": "ns/a:80", "/": "ns/a:80"}
    assert set(config.conflicts) == {
        Conflict("ingress/ns/old-b", "ingress/ns/old-a", "/", P),
        Conflict("ingress/ns/new", "ingress/ns/old-a", "/", P),
    }


def test_tls_secret_from_the_oldest_ingress_that_asks() -> None:
    config = merge_host(
        HOST,
        {
            "ingress/ns/b": ing("b", "t2", ("/b", P, "b"), tls="cert-b"),
            "ingress/ns/a": ing("a", "t1", ("/a", P, "a")),
        },
    )
    assert config is not None and config.tls_secret == "ns/cert-b"


def test_no_ingress_left_means_no_host() -> None:
    assert merge_host(HOST, {}) is None


def test_service_ports_by_number_and_name_with_ready_endpoints_of_every_slice() -> None:
    spec = ServiceSpec((ServicePort("http", 80, 8080), ServicePort("", 9000, 9000)))
    contributions = {
        "service/ns/web": spec,
        "endpointslice/ns/web-1": EndpointSliceSpec(
            (EndpointPort("http", 8080), EndpointPort("", 9000)), ("10.0.0.2",)
        ),
        "endpointslice/ns/web-2": EndpointSliceSpec((EndpointPort("http", 8080),), ("10.0.0.1",)),
    }
    config = merge_service("s:ns/web", contributions)
    assert config is not None
    assert config.clusters == (
        ClusterConfig("ns/web:80", (("10.0.0.1", 8080), ("10.0.0.2", 8080))),
        ClusterConfig("ns/web:http", (("10.0.0.1", 8080), ("10.0.0.2", 8080))),
        ClusterConfig("ns/web:9000", (("10.0.0.2", 9000),)),
    )


def test_service_without_endpoints_has_empty_clusters_and_slices_alone_are_nothing() -> None:
    config = merge_service("s:ns/web", {"service/ns/web": ServiceSpec((ServicePort("http", 80, 8080),))})
    assert config is not None and all(c.endpoints == () for c in config.clusters)
    slices_only = {"endpointslice/ns/web-1": EndpointSliceSpec((EndpointPort("http", 8080),), ("10.0.0.1",))}
    assert merge_service("s:ns/web", slices_only) is None


def test_secret() -> None:
    config = merge_secret("t:ns/tls", {"secret/ns/tls": TlsCertificate(b"crt", b"key")})
    assert config is not None and (config.namespace, config.name, config.cert_pem) == ("ns", "tls", b"crt")
    assert merge_secret("t:ns/tls", {}) is None
