"""merge: every contribution to a unit in, one deterministic configuration out (table-driven)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from shardgate.keys import host_unit
from shardgate.merge import (
    ClusterConfig,
    Conflict,
    Ignored,
    merge_host,
    merge_secret,
    merge_service,
    normalize_path,
)
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


# -- canaries and the catch-all default backend -----------------------------------------------------

W10 = Canary(weight=10)
HDR = Canary(header="x-canary")


def canary_ing(name: str, created: str, canary: Canary, *paths: tuple[str, PathType, str]) -> HostRoutes:
    return replace(ing(name, created, *paths), options=IngressOptions(canary=canary))


def with_default(routes: HostRoutes, svc: str) -> HostRoutes:
    return replace(routes, default_backend=Backend(svc, 80))


CANARY_CASES = [
    pytest.param(
        {
            "ingress/ns/main": ing("main", "t1", ("/", P, "main"), ("/api", E, "api")),
            "ingress/ns/cny": canary_ing("cny", "t2", W10, ("/", P, "cny")),
        },
        {("/", P): [("ns/cny:80", W10, "ingress/ns/cny")], ("/api", E): []},
        [],
        [],
        id="canary-attaches-to-primary-no-conflict",
    ),
    pytest.param(
        {
            "ingress/ns/main": ing("main", "t2", ("/app/", IS, "main")),
            "ingress/ns/cny": canary_ing("cny", "t1", HDR, ("/app", P, "cny")),
        },
        {("/app", P): [("ns/cny:80", HDR, "ingress/ns/cny")]},
        [],
        [],
        id="older-canary-same-normalized-key",
    ),
    pytest.param(
        {
            "ingress/ns/main": ing("main", "t1", ("/", P, "main")),
            "ingress/ns/c1": canary_ing("c1", "t2", W10, ("/", P, "c1")),
            "ingress/ns/c2": canary_ing("c2", "t3", HDR, ("/", P, "c2")),
        },
        {("/", P): [("ns/c1:80", W10, "ingress/ns/c1")]},
        [Conflict("ingress/ns/c2", "ingress/ns/c1", "/", P)],
        [],
        id="oldest-canary-wins-the-other-is-told",
    ),
    pytest.param(
        {
            "ingress/ns/main": ing("main", "t1", ("/", P, "main")),
            "ingress/ns/cny": canary_ing("cny", "t2", W10, ("/", E, "cny"), ("/other", P, "cny")),
        },
        {("/", P): []},
        [],
        [Ignored("ingress/ns/cny", "/", E, ""), Ignored("ingress/ns/cny", "/other", P, "")],
        id="canary-without-primary-ignored",
    ),
]


@pytest.mark.parametrize(("contributions", "expected", "conflicts", "ignored"), CANARY_CASES)
def test_canaries(
    contributions: dict[str, HostRoutes],
    expected: dict[tuple[str, PathType], list[tuple[str, Canary, str]]],
    conflicts: list[Conflict],
    ignored: list[Ignored],
) -> None:
    config = merge_host(HOST, contributions)
    assert config is not None
    assert {
        (r.path, r.path_type): [(c.cluster, c.canary, c.source) for c in r.canaries] for r in config.routes
    } == (expected)
    assert all(not r.source.endswith(("cny", "c1", "c2")) for r in config.routes), "a canary is never primary"
    assert list(config.conflicts) == conflicts
    assert [(i.source, i.path, i.path_type) for i in config.ignored] == [
        (i.source, i.path, i.path_type) for i in ignored
    ]
    assert all(i.reason for i in config.ignored)


def test_canary_keeps_its_own_options_and_tls_is_not_taken_from_it() -> None:
    cny = replace(canary_ing("cny", "t0", W10, ("/", P, "cny")), tls_secret="cny-cert")
    config = merge_host(HOST, {"ingress/ns/main": ing("main", "t1", ("/", P, "main")), "ingress/ns/cny": cny})
    assert config is not None and config.tls_secret is None
    assert config.routes[0].canaries[0].options.canary == W10
    assert config.routes[0].options.canary is None


CATCH_ALL = host_unit(CATCH_ALL_HOST)
DEFAULT_CASES = [
    pytest.param(
        {"ingress/ns/d": with_default(ing("d", "t1"), "dflt")},
        [("/", P, "ns/dflt:80", "ingress/ns/d")],
        [],
        id="only-a-default-backend",
    ),
    pytest.param(
        {
            "ingress/ns/rules": ing("rules", "t3", ("/api", P, "api")),
            "ingress/ns/new": with_default(ing("new", "t2"), "new"),
            "ingress/ns/old": with_default(ing("old", "t1"), "old"),
        },
        [("/api", P, "ns/api:80", "ingress/ns/rules"), ("/", P, "ns/old:80", "ingress/ns/old")],
        [Conflict("ingress/ns/new", "ingress/ns/old", "/", P)],
        id="oldest-default-wins-and-comes-last",
    ),
    pytest.param(
        {
            "ingress/ns/a": with_default(ing("a", "t1"), "a"),
            "ingress/ns/b": with_default(ing("b", "t1"), "b"),
        },
        [("/", P, "ns/a:80", "ingress/ns/a")],
        [Conflict("ingress/ns/b", "ingress/ns/a", "/", P)],
        id="same-age-then-name",
    ),
    pytest.param(
        {
            "ingress/ns/root": ing("root", "t2", ("/", P, "root")),
            "ingress/ns/d": with_default(ing("d", "t1", ("/", E, "exact")), "dflt"),
        },
        [("/", E, "ns/exact:80", "ingress/ns/d"), ("/", P, "ns/root:80", "ingress/ns/root")],
        [],
        id="a-prefix-root-rule-shadows-the-default",
    ),
]


@pytest.mark.parametrize(("contributions", "routes", "conflicts"), DEFAULT_CASES)
def test_catch_all_default_backend(
    contributions: dict[str, HostRoutes],
    routes: list[tuple[str, PathType, str, str]],
    conflicts: list[Conflict],
) -> None:
    config = merge_host(CATCH_ALL, contributions)
    assert config is not None and config.host == CATCH_ALL_HOST
    assert [(r.path, r.path_type, r.cluster, r.source) for r in config.routes] == routes
    assert list(config.conflicts) == conflicts


def test_a_broken_secret_carries_its_reason_to_the_fragment() -> None:
    from shardgate.xds import compile_unit

    broken = TlsCertificate(b"", b"", error="certificate expired at 2026-01-01T00:00:00Z")
    config = merge_secret("t:ns/tls", {"secret/ns/tls": broken})
    assert config is not None and config.error == broken.error
    fragment = compile_unit("t:ns/tls", {"secret/ns/tls": broken})
    assert fragment.meta["error"] == broken.error
