"""Host configurations in, decoded scopes and clusters out: host keys, the catch-all and every annotation.

Envoy's own judgement of these resources is in tests/pusher/test_routing_envoy.py; here each option's
translation is pinned, table by table, as a compact summary of every route in match order.
"""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import scoped_route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf.json_format import MessageToDict
from hypothesis import given
from hypothesis import strategies as st

from shardgate.keys import host_unit
from shardgate.merge import CanaryRoute, HostConfig, Route
from shardgate.model import (
    CATCH_ALL_HOST,
    Backend,
    Canary,
    Contribution,
    Cors,
    HostRoutes,
    IngressOptions,
    PathRule,
    PathType,
)
from shardgate.records import Fragment
from shardgate.xds import compile_unit, filters, options, regex, types, wildcard
from shardgate.xds.compile import compile_host
from shardgate.xds.filters import CORS_FILTER, RBAC_FILTER
from shardgate.xds.routes import scope_name

PREFIX, EXACT, IMPL = PathType.PREFIX, PathType.EXACT, PathType.IMPLEMENTATION_SPECIFIC
SRC = "ingress/shop/web"
WEB = "shop/web:80"


def scope_of(fragment: Fragment) -> scoped_route_pb2.ScopedRouteConfiguration:
    (res,) = [r for r in fragment.resources if r.type_url == types.SCOPED_ROUTE]
    return scoped_route_pb2.ScopedRouteConfiguration.FromString(res.body)


def clusters_of(fragment: Fragment) -> dict[str, cluster_pb2.Cluster]:
    return {
        r.name: cluster_pb2.Cluster.FromString(r.body)
        for r in fragment.resources
        if r.type_url == types.CLUSTER
    }


def summary(route: rc.Route) -> dict[str, Any]:
    """What a route matches and does, in few words: enough to read a table of them."""
    kind = route.match.WhichOneof("path_specifier")
    value = route.match.safe_regex.regex if kind == "safe_regex" else getattr(route.match, kind or "prefix")
    out: dict[str, Any] = {"match": f"{kind} {value}"}
    if route.match.headers:
        out["headers"] = {h.name: h.string_match.exact for h in route.match.headers}
    if route.HasField("redirect"):
        out["redirect"] = MessageToDict(route.redirect)
    if route.HasField("direct_response"):
        out["status"] = route.direct_response.status
    if route.HasField("route"):
        action = route.route
        if action.HasField("weighted_clusters"):
            out["to"] = {c.name: c.weight.value for c in action.weighted_clusters.clusters}
        else:
            out["to"] = action.cluster
        if action.prefix_rewrite:
            out["rewrite"] = action.prefix_rewrite
        if action.HasField("regex_rewrite"):
            out["rewrite"] = (action.regex_rewrite.pattern.regex, action.regex_rewrite.substitution)
    if route.typed_per_filter_config:
        out["filters"] = sorted(route.typed_per_filter_config)
    return out


def routes_of(fragment: Fragment) -> list[dict[str, Any]]:
    (vhost,) = scope_of(fragment).route_configuration.virtual_hosts
    return [summary(r) for r in vhost.routes]


def ingress(
    *paths: tuple[str, PathType, str],
    options: IngressOptions | None = None,
    tls: str | None = None,
    default: str | None = None,
    name: str = "web",
    created: str = "2024-01-01T00:00:00Z",
) -> HostRoutes:
    return HostRoutes(
        "shop",
        name,
        created,
        tuple(PathRule(p, t, Backend(svc, 80)) for p, t, svc in paths),
        tls_secret=tls,
        options=options or IngressOptions(),
        default_backend=Backend(default, 80) if default else None,
    )


def compiled(host: str, *contributions: HostRoutes) -> Fragment:
    return compile_unit(host_unit(host), {f"ingress/shop/{c.ingress}": c for c in contributions})


TO_CATCH_ALL = {"match": "prefix /", "status": 404, "filters": [wildcard.FALLBACK_FILTER]}


# ---- scopes: keys, fallback, catch-all ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "key"),
    [
        pytest.param("Shop.Example.com", "shop.example.com", id="exact-lower-case"),
        pytest.param("*.Example.com", "*.example.com", id="wildcard"),
        pytest.param(CATCH_ALL_HOST, "*", id="catch-all"),
    ],
)
def test_scope_name_and_key(host: str, key: str) -> None:
    scope = scope_of(compiled(host, ingress(("/", PREFIX, "web"))))
    assert scope.name == scope_name(key)
    assert scope.route_configuration.name == key
    assert [f.string_key for f in scope.key.fragments] == [key]


@given(
    st.lists(
        st.from_regex(r"[a-z0-9*][a-z0-9.-]{0,80}", fullmatch=True), min_size=2, max_size=50, unique=True
    )
)
def test_scope_names_are_short_distinct_and_stable(hosts: list[str]) -> None:
    # Envoy copies every scope name on each update: they must fit libc++'s 22-character inline buffer.
    names = [scope_name(h) for h in hosts]
    assert all(len(n) <= 22 for n in names)
    assert len(set(names)) == len(hosts)
    assert names == [scope_name(h) for h in hosts]


def test_every_scope_disables_the_fallback_and_strips_the_scope_header() -> None:
    route_config = scope_of(compiled("a.example.com", ingress(("/api", PREFIX, "api")))).route_configuration
    assert list(route_config.request_headers_to_remove) == [wildcard.SCOPE_HEADER]
    assert route_config.validate_clusters.value is False
    (vhost,) = route_config.virtual_hosts
    assert list(vhost.domains) == ["*"]
    assert list(vhost.typed_per_filter_config) == [wildcard.FALLBACK_FILTER]
    for packed in vhost.typed_per_filter_config.values():
        per_route = lua_pb2.LuaPerRoute()
        assert packed.Unpack(per_route) and per_route.disabled
    last = vhost.routes[-1]
    enable = lua_pb2.LuaPerRoute()
    assert last.typed_per_filter_config[wildcard.FALLBACK_FILTER].Unpack(enable)
    assert enable.name == wildcard.CATCH_ALL_SCRIPT


@pytest.mark.parametrize(
    ("host", "contributions", "expected"),
    [
        pytest.param(
            "a.example.com",
            [ingress(("/api", PREFIX, "api"))],
            [{"match": "path_separated_prefix /api", "to": "shop/api:80"}, TO_CATCH_ALL],
            id="host-without-root-hands-misses-to-catch-all",
        ),
        pytest.param(
            "*.example.com",
            [ingress(("/", PREFIX, "web"), ("/api", EXACT, "api"))],
            [{"match": "path /api", "to": "shop/api:80"}, {"match": "prefix /", "to": WEB}],
            id="host-with-root-needs-no-hand-off",
        ),
        pytest.param(
            CATCH_ALL_HOST,
            [ingress(("/hostless", PREFIX, "api"), default="web")],
            [
                {"match": "path_separated_prefix /hostless", "to": "shop/api:80"},
                {"match": "prefix /", "to": WEB},
            ],
            id="catch-all-default-backend-last",
        ),
        pytest.param(
            CATCH_ALL_HOST,
            [ingress(("/x", PREFIX, "api"))],
            [{"match": "path_separated_prefix /x", "to": "shop/api:80"}],
            id="catch-all-without-default-ends-in-404",
        ),
        pytest.param(
            CATCH_ALL_HOST,
            [
                ingress(default="web2", name="newer", created="2025-01-01T00:00:00Z"),
                ingress(default="web", name="older"),
            ],
            [{"match": "prefix /", "to": WEB}],
            id="oldest-default-backend-wins",
        ),
        pytest.param(
            CATCH_ALL_HOST,
            [ingress(("/", PREFIX, "api"), default="web")],
            [{"match": "prefix /", "to": "shop/api:80"}],
            id="a-root-rule-beats-the-default-backend",
        ),
    ],
)
def test_scope_routes(host: str, contributions: list[HostRoutes], expected: list[dict[str, Any]]) -> None:
    assert routes_of(compiled(host, *contributions)) == expected


def test_default_backend_conflict_is_reported() -> None:
    fragment = compiled(
        CATCH_ALL_HOST,
        ingress(default="web2", name="newer", created="2025-01-01T00:00:00Z"),
        ingress(default="web", name="older"),
    )
    assert fragment.meta["conflicts"] == [
        {"source": "ingress/shop/newer", "winner": "ingress/shop/older", "path": "/", "path_type": "Prefix"}
    ]


# ---- annotations -------------------------------------------------------------------------------------

O = IngressOptions  # noqa: E741 - a table reads better with a short name
ROOT = ("/", PREFIX, "web")
TIMEOUTS_DEFAULT = {"timeout": "0s"}


@pytest.mark.parametrize(
    ("paths", "options", "tls", "expected"),
    [
        pytest.param(
            [("/foo/", PREFIX, "web")],
            O(rewrite_target="/"),
            None,
            [{"match": "path_separated_prefix /foo", "to": WEB, "rewrite": ("^/foo/?", "/")}, TO_CATCH_ALL],
            id="rewrite-prefix-to-root",
        ),
        pytest.param(
            [("/foo", PREFIX, "web")],
            O(rewrite_target="/new/"),
            None,
            [{"match": "path_separated_prefix /foo", "to": WEB, "rewrite": "/new"}, TO_CATCH_ALL],
            id="rewrite-prefix",
        ),
        pytest.param(
            [ROOT],
            O(rewrite_target="/app"),
            None,
            [{"match": "prefix /", "to": WEB, "rewrite": "/app/"}],
            id="rewrite-root-prefix",
        ),
        pytest.param(
            [("/a.b", PREFIX, "web")],
            O(rewrite_target="/"),
            None,
            [{"match": "path_separated_prefix /a.b", "to": WEB, "rewrite": ("^/a\\.b/?", "/")}, TO_CATCH_ALL],
            id="rewrite-escapes-the-path",
        ),
        pytest.param(
            [("/exact", EXACT, "web")],
            O(rewrite_target="/there"),
            None,
            [{"match": "path /exact", "to": WEB, "rewrite": "/there"}, TO_CATCH_ALL],
            id="rewrite-exact",
        ),
        pytest.param(
            [("/api(/|$)(.*)", IMPL, "web")],
            O(rewrite_target="/$2", use_regex=True),
            None,
            [
                {
                    "match": "safe_regex (?i)/api(/|$)(.*).*",
                    "to": WEB,
                    "rewrite": ("(?i)/api(/|$)(.*).*", "/\\2"),
                },
                TO_CATCH_ALL,
            ],
            id="rewrite-regex-captures",
        ),
        pytest.param(
            [("/api", EXACT, "web")],
            O(use_regex=True),
            None,
            [{"match": "path /api", "to": WEB}, TO_CATCH_ALL],
            id="use-regex-leaves-exact-exact",
        ),
        pytest.param(
            [ROOT],
            O(),
            "tls",
            [
                {
                    "match": "prefix /",
                    "headers": {":scheme": "http"},
                    "redirect": {"httpsRedirect": True, "responseCode": "PERMANENT_REDIRECT"},
                },
                {"match": "prefix /", "to": WEB},
            ],
            id="ssl-redirect-when-host-has-tls",
        ),
        pytest.param(
            [ROOT], O(ssl_redirect=False), "tls", [{"match": "prefix /", "to": WEB}], id="ssl-redirect-off"
        ),
        pytest.param(
            [ROOT],
            O(force_ssl_redirect=True),
            None,
            [
                {
                    "match": "prefix /",
                    "headers": {":scheme": "http"},
                    "redirect": {"httpsRedirect": True, "responseCode": "PERMANENT_REDIRECT"},
                },
                {"match": "prefix /", "to": WEB},
            ],
            id="force-ssl-redirect-without-tls",
        ),
        pytest.param(
            [("/.well-known/acme-challenge", PREFIX, "solver")],
            O(force_ssl_redirect=True),
            "tls",
            [
                {"match": "path_separated_prefix /.well-known/acme-challenge", "to": "shop/solver:80"},
                TO_CATCH_ALL,
            ],
            id="acme-challenge-never-redirected",
        ),
        pytest.param(
            [ROOT],
            O(permanent_redirect="https://new.example.org/a?b=c"),
            None,
            [
                {
                    "match": "prefix /",
                    "redirect": {
                        "schemeRedirect": "https",
                        "hostRedirect": "new.example.org",
                        "pathRedirect": "/a?b=c",
                    },
                }
            ],
            id="permanent-redirect-301",
        ),
        pytest.param(
            [ROOT],
            O(permanent_redirect="http://x.test:8081", permanent_redirect_code=308),
            None,
            [
                {
                    "match": "prefix /",
                    "redirect": {
                        "schemeRedirect": "http",
                        "hostRedirect": "x.test",
                        "portRedirect": 8081,
                        "pathRedirect": "/",
                        "stripQuery": True,
                        "responseCode": "PERMANENT_REDIRECT",
                    },
                }
            ],
            id="permanent-redirect-code-port-no-query",
        ),
        pytest.param(
            [ROOT, ("/api", PREFIX, "api")],
            O(app_root="/app1"),
            None,
            [
                {"match": "path /", "redirect": {"pathRedirect": "/app1", "responseCode": "FOUND"}},
                {"match": "path_separated_prefix /api", "to": "shop/api:80"},
                {"match": "prefix /", "to": WEB},
            ],
            id="app-root-first",
        ),
        pytest.param(
            [ROOT],
            O(whitelist_source_range=("10.0.0.0/8",), cors=Cors()),
            "tls",
            [
                {
                    "match": "prefix /",
                    "headers": {":scheme": "http"},
                    "redirect": {"httpsRedirect": True, "responseCode": "PERMANENT_REDIRECT"},
                    "filters": [CORS_FILTER, RBAC_FILTER],
                },
                {"match": "prefix /", "to": WEB, "filters": [CORS_FILTER, RBAC_FILTER]},
            ],
            id="allow-list-and-cors-on-every-route-of-the-rule",
        ),
        pytest.param(
            [ROOT],
            O(backend_protocol="GRPC"),
            None,
            [{"match": "prefix /", "to": "a.example.com|shop/web:80|grpc"}],
            id="backend-protocol-per-host-cluster",
        ),
        pytest.param(
            [ROOT],
            O(backend_protocol="GRPCS", connect_timeout_s=2.5),
            None,
            [{"match": "prefix /", "to": "a.example.com|shop/web:80|grpcs,connect=2.5s"}],
            id="protocol-and-connect-timeout",
        ),
    ],
)
def test_options(
    paths: list[tuple[str, PathType, str]],
    options: IngressOptions,
    tls: str | None,
    expected: list[dict[str, Any]],
) -> None:
    fragment = compiled("a.example.com", ingress(*paths, options=options, tls=tls))
    assert "rejected" not in fragment.meta
    assert routes_of(fragment) == expected


def _action(fragment: Fragment, index: int = 0) -> dict[str, Any]:
    (vhost,) = scope_of(fragment).route_configuration.virtual_hosts
    action: dict[str, Any] = MessageToDict(vhost.routes[index].route)
    return action


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param(O(), TIMEOUTS_DEFAULT, id="no-total-idle-from-the-listener"),
        pytest.param(O(send_timeout_s=120), {"timeout": "0s", "idleTimeout": "120s"}, id="send-only"),
        pytest.param(
            O(read_timeout_s=5),
            {
                "timeout": "0s",
                "retryPolicy": {"numRetries": 0, "perTryIdleTimeout": "5s"},
                "idleTimeout": "60s",
            },
            id="read",
        ),
        pytest.param(
            O(read_timeout_s=0.25, send_timeout_s=120),
            {
                "timeout": "0s",
                "retryPolicy": {"numRetries": 0, "perTryIdleTimeout": "0.250s"},
                "idleTimeout": "120s",
            },
            id="read-and-send",
        ),
        pytest.param(
            O(read_timeout_s=1e9),
            {
                "timeout": "0s",
                "retryPolicy": {"numRetries": 0, "perTryIdleTimeout": "3600s"},
                "idleTimeout": "3600s",
            },
            id="clamped-to-an-hour",
        ),
    ],
)
def test_timeouts(options: IngressOptions, expected: dict[str, Any]) -> None:
    action = _action(compiled("a.example.com", ingress(ROOT, options=options)))
    assert {k: v for k, v in action.items() if k != "cluster"} == expected


# ---- canary ------------------------------------------------------------------------------------------


def canary_fragment(*canaries: Canary, options: IngressOptions | None = None) -> Fragment:
    route = Route(
        "/",
        PREFIX,
        WEB,
        SRC,
        options or O(),
        tuple(CanaryRoute(f"shop/canary{i}:80", c, f"ingress/shop/c{i}") for i, c in enumerate(canaries)),
    )
    resources, meta = compile_host(HostConfig("a.example.com", (route,), None))
    return Fragment(host_unit("a.example.com"), resources, meta)


@pytest.mark.parametrize(
    ("canaries", "expected"),
    [
        pytest.param([Canary(weight=30)], [{"to": {WEB: 70, "shop/canary0:80": 30}}], id="weight"),
        pytest.param([Canary(weight=100)], [{"to": "shop/canary0:80"}], id="weight-all"),
        pytest.param([Canary(weight=0)], [{"to": WEB}], id="weight-none"),
        pytest.param(
            [Canary(weight=1, weight_total=3)], [{"to": {WEB: 2, "shop/canary0:80": 1}}], id="weight-total"
        ),
        pytest.param(
            [Canary(header="X-Canary")],
            [
                {"headers": {"x-canary": "always"}, "to": "shop/canary0:80"},
                {"headers": {"x-canary": "never"}, "to": WEB},
                {"to": WEB},
            ],
            id="by-header-always-never",
        ),
        pytest.param(
            [Canary(weight=20, header="x-env", header_value="blue")],
            [
                {"headers": {"x-env": "blue"}, "to": "shop/canary0:80"},
                {"to": {WEB: 80, "shop/canary0:80": 20}},
            ],
            id="by-header-value-then-weight",
        ),
    ],
)
def test_canary(canaries: list[Canary], expected: list[dict[str, Any]]) -> None:
    got = [
        {k: v for k, v in r.items() if k in ("headers", "to")} for r in routes_of(canary_fragment(*canaries))
    ]
    assert got == expected


def test_canary_follows_the_primarys_backend_protocol() -> None:
    fragment = canary_fragment(Canary(weight=50), options=O(backend_protocol="GRPC"))
    assert routes_of(fragment)[0]["to"] == {
        "a.example.com|shop/web:80|grpc": 50,
        "a.example.com|shop/canary0:80|grpc": 50,
    }
    assert sorted(clusters_of(fragment)) == [
        "a.example.com|shop/canary0:80|grpc",
        "a.example.com|shop/web:80|grpc",
    ]


# ---- per-host clusters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "name", "h2", "alpn", "connect"),
    [
        pytest.param(O(backend_protocol="GRPC"), "grpc", True, None, "2s", id="grpc-h2c"),
        pytest.param(O(backend_protocol="GRPCS"), "grpcs", True, ["h2"], "2s", id="grpcs"),
        pytest.param(O(backend_protocol="HTTPS"), "https", False, ["http/1.1"], "2s", id="https"),
        pytest.param(O(connect_timeout_s=7), "connect=7s", False, None, "7s", id="connect-timeout"),
    ],
)
def test_host_clusters(
    options: IngressOptions, name: str, h2: bool, alpn: list[str] | None, connect: str
) -> None:
    fragment = compiled("a.example.com", ingress(ROOT, options=options))
    # Clusters come before the scope that names them.
    assert [r.type_url for r in fragment.resources] == [types.CLUSTER, types.SCOPED_ROUTE]
    (cluster,) = clusters_of(fragment).values()
    assert cluster.name == f"a.example.com|{WEB}|{name}"
    assert cluster.type == cluster_pb2.Cluster.EDS
    assert cluster.eds_cluster_config.service_name == WEB  # the service unit's assignment
    assert cluster.eds_cluster_config.eds_config.HasField("ads")
    assert cluster.eds_cluster_config.eds_config.initial_fetch_timeout.ToMilliseconds() == 5
    assert MessageToDict(cluster.connect_timeout) == connect
    packed = cluster.typed_extension_protocol_options.get(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    )
    if h2:
        opts = http_protocol_options_pb2.HttpProtocolOptions()
        assert packed is not None and packed.Unpack(opts)
        assert opts.explicit_http_config.HasField("http2_protocol_options")
    else:
        assert packed is None
    if alpn is None:
        assert not cluster.HasField("transport_socket")
    else:
        tls = tls_pb2.UpstreamTlsContext()
        assert cluster.transport_socket.typed_config.Unpack(tls)
        assert list(tls.common_tls_context.alpn_protocols) == alpn


def test_plain_http_uses_the_service_cluster() -> None:
    fragment = compiled("a.example.com", ingress(ROOT, options=O(backend_protocol="HTTP")))
    assert clusters_of(fragment) == {}
    assert routes_of(fragment)[0]["to"] == WEB


# ---- filters per route -------------------------------------------------------------------------------


def test_allow_list_and_cors_configs() -> None:
    fragment = compiled(
        "a.example.com",
        ingress(
            ROOT,
            options=O(
                whitelist_source_range=("10.0.0.0/8", "2001:db8::/32"),
                cors=Cors(allow_origins=("https://a.test",), allow_credentials=False, max_age_s=60),
            ),
        ),
    )
    (vhost,) = scope_of(fragment).route_configuration.virtual_hosts
    route = vhost.routes[0]
    rbac = rbac_pb2.RBACPerRoute()
    assert route.typed_per_filter_config[RBAC_FILTER].Unpack(rbac)
    (policy,) = rbac.rbac.rules.policies.values()
    assert [MessageToDict(p.direct_remote_ip) for p in policy.principals] == [
        {"addressPrefix": "10.0.0.0", "prefixLen": 8},
        {"addressPrefix": "2001:db8::", "prefixLen": 32},
    ]
    cors = cors_pb2.CorsPolicy()
    assert route.typed_per_filter_config[CORS_FILTER].Unpack(cors)
    assert [m.exact for m in cors.allow_origin_string_match] == ["https://a.test"]
    assert (cors.max_age, cors.allow_credentials.value) == ("60", False)


# ---- what Envoy would refuse is left out and reported ------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "options", "reason"),
    [
        pytest.param(("/a(", IMPL, "bad"), O(use_regex=True), "invalid regex", id="invalid-regex"),
        pytest.param(("/[a-z]{94}", IMPL, "bad"), O(use_regex=True), "too complex", id="regex-too-large"),
        pytest.param(
            ("/api/(.*)", IMPL, "bad"),
            O(use_regex=True, rewrite_target="/$2"),
            "names a group",
            id="missing-group",
        ),
        pytest.param(
            ("/x", PREFIX, "bad"), O(permanent_redirect="/relative"), "not an absolute", id="relative-url"
        ),
        pytest.param(
            ("/x", PREFIX, "bad"),
            O(permanent_redirect="https://a.test/", permanent_redirect_code=300),
            "permanent-redirect-code",
            id="redirect-code",
        ),
    ],
)
def test_rejected_rule_leaves_the_rest(
    rule: tuple[str, PathType, str], options: IngressOptions, reason: str
) -> None:
    good = ingress(ROOT, name="good")
    bad = ingress(rule, options=options, name="bad", created="2025-01-01T00:00:00Z")
    fragment = compiled("a.example.com", good, bad)
    (rejected,) = fragment.meta["rejected"]
    assert rejected["source"] == "ingress/shop/bad" and reason in rejected["reason"]
    assert routes_of(fragment) == [{"match": "prefix /", "to": WEB}]
    assert clusters_of(fragment) == {}


def test_options_change_the_version_and_nothing_else_does() -> None:
    contributions: dict[str, Contribution] = {SRC: ingress(ROOT)}
    base = compile_unit(host_unit("a.example.com"), contributions)
    again = compile_unit(host_unit("a.example.com"), dict(contributions))
    assert base.hash == again.hash
    changed = compile_unit(host_unit("a.example.com"), {SRC: ingress(ROOT, options=O(read_timeout_s=5))})
    assert changed.hash != base.hash


@pytest.mark.parametrize(
    ("path", "size"),
    [
        # Sizes Envoy 1.40 reported in its NACKs (or accepted at the boundary), measured.
        pytest.param("/[a-z]{93}", 100, id="largest-accepted"),
        pytest.param("/[a-z]{94}", 101, id="smallest-refused"),
        pytest.param("/(foo|bar|baz|qux){9}", 115, id="alternation"),
    ],
)
def test_program_size_is_envoys(path: str, size: int) -> None:
    assert regex.program_size(options.envoy_path_regex(path)) == size


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        pytest.param("*", {"exact": "*", "ignoreCase": True}, id="any"),
        pytest.param("https://a.test:8443", {"exact": "https://a.test:8443", "ignoreCase": True}, id="exact"),
        pytest.param(
            "https://*.a-b.test",
            {"safeRegex": {"regex": "(?i)https://[^./:]+\\.a\\-b\\.test"}},
            id="one-label-wildcard",
        ),
        pytest.param(
            "http://*.a.test:81",
            {"safeRegex": {"regex": "(?i)http://[^./:]+\\.a\\.test:81"}},
            id="wildcard-with-port",
        ),
    ],
)
def test_cors_origins(origin: str, expected: dict[str, Any]) -> None:
    assert MessageToDict(filters.origin_matcher(origin)) == expected


def test_cors_origin_too_long_for_envoy_rejects_the_rule() -> None:
    origin = "https://*." + "a" * 120 + ".test"
    fragment = compiled("a.example.com", ingress(ROOT, options=O(cors=Cors(allow_origins=(origin,)))))
    (rejected,) = fragment.meta["rejected"]
    assert "cors-allow-origin" in rejected["reason"]
    assert routes_of(fragment) == [TO_CATCH_ALL]
