"""A host's routes as one scoped route configuration, selected by the request's host.

This is the layout that keeps a domain change flat (notes/facts.md): the listener's connection manager
picks a *scope* by host (`wildcard.py` says how, including `*.foo.com` and the catch-all `*`), and each
host is one `ScopedRouteConfiguration` with its route configuration inline. Adding, editing or deleting a
host is one small resource, plus the host's own upstream variants (`clusters.upstream`); no other host's
routes are rebuilt. The virtual host inside matches `*` because the scope already chose the host.

Each merged rule becomes, in this order (first match wins in Envoy):

1. `app-root`: exactly `/` redirected (302), once per host, before every rule;
2. per rule: an HTTP→HTTPS redirect for `:scheme: http` (`ssl-redirect` / `force-ssl-redirect`);
   a `permanent-redirect` instead of forwarding; the canary-by-header routes; the rule itself (with the
   canary weights, if any);
3. the catch-all's default backend is the merge's last rule (a Prefix `/`);
4. in a host scope that has no `/` rule: a 404 route that sends the request on to the catch-all scope.
"""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass, replace

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2, scoped_route_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import wrappers_pb2

from shardgate.merge import CanaryRoute, HostConfig, Route
from shardgate.model import PathType
from shardgate.xds import filters, options, wildcard
from shardgate.xds.clusters import upstream
from shardgate.xds.options import RouteRejected, route_match

__all__ = ["CompiledHost", "RouteRejected", "compile_host_routes", "host_scope", "route_match", "scope_name"]

# Canary weights of different totals are put on one scale; nginx's total is 100, so this is exact there.
_MAX_WEIGHT_SCALE = 10_000


# Envoy copies its table of every scope's name on each SRDS update (`detectUpdateConflictAndCleanupRemoved`
# in scoped_rds.cc), so a name's length is paid 100,000 times per change at 100k domains: names longer
# than libc++'s 22-character inline string buffer each cost an allocation. Measured with bench.layout at
# 100k: push to ACK p50 46 ms with `host:<host>`, 13 ms with these 16-character names.
_SCOPE_NAME_BYTES = 10  # 80 bits: no collision to fear among millions of hosts


def scope_name(host: str) -> str:
    """The SRDS resource name of a host's scope: 16 characters, derived from the host alone.

    Short on purpose (see above); the host itself stays readable in the scope's key and in the name of
    its route configuration.
    """
    digest = hashlib.blake2b(host.encode(), digest_size=_SCOPE_NAME_BYTES).digest()
    return base64.b32encode(digest).decode().lower()


@dataclass(frozen=True, slots=True)
class Rejection:
    source: str
    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class CompiledHost:
    scope: scoped_route_pb2.ScopedRouteConfiguration
    clusters: tuple[cluster_pb2.Cluster, ...]  # the host's own upstream variants, by name
    rejected: tuple[Rejection, ...]


class _Builder:
    def __init__(self, config: HostConfig) -> None:
        self.config = config
        self.clusters: dict[str, cluster_pb2.Cluster] = {}

    def cluster(self, service_cluster: str, route: Route) -> str:
        name, variant = upstream(self.config.host, service_cluster, route.options)
        if variant is not None:
            self.clusters[name] = variant
        return name

    def action(self, route: Route, canaries: tuple[CanaryRoute, ...]) -> rc.RouteAction:
        """Forward to the rule's backend, or split it with weighted canaries."""
        action = rc.RouteAction()
        split = _weights(canaries)
        if split:
            primary_weight = split.pop()
            entries = [(self.cluster(route.cluster, route), primary_weight)]
            entries += [(self.cluster(c.cluster, route), w) for c, w in zip(canaries, split, strict=True)]
            entries = [(name, w) for name, w in entries if w > 0]
            if len(entries) == 1:
                action.cluster = entries[0][0]
            else:
                action.weighted_clusters.CopyFrom(
                    rc.WeightedCluster(
                        clusters=[
                            rc.WeightedCluster.ClusterWeight(name=n, weight=wrappers_pb2.UInt32Value(value=w))
                            for n, w in entries
                        ]
                    )
                )
        else:
            action.cluster = self.cluster(route.cluster, route)
        options.rewrite(route, action)
        options.timeouts(route.options, action)
        return action

    def rule(self, route: Route) -> list[rc.Route]:
        match = route_match(route)
        per_filter = options.filter_configs(route.options)

        def make(
            target: rc.RouteAction | rc.RedirectAction, extra: rc.HeaderMatcher | None = None
        ) -> rc.Route:
            out = rc.Route(typed_per_filter_config=per_filter)
            out.match.CopyFrom(match)
            if extra is not None:
                out.match.headers.append(extra)
            if isinstance(target, rc.RedirectAction):
                out.redirect.CopyFrom(target)
            else:
                out.route.CopyFrom(target)
            return out

        out: list[rc.Route] = []
        if options.wants_ssl_redirect(route, self.config.tls_secret is not None):
            out.append(make(options.ssl_redirect(), options.scheme_is_http()))
        if route.options.permanent_redirect is not None:
            redirect = options.permanent_redirect(
                route.options.permanent_redirect, route.options.permanent_redirect_code
            )
            return [*out, make(redirect)]
        weighted: list[CanaryRoute] = []
        for canary in route.canaries:
            header = canary.canary.header
            if header:
                name = header.lower()
                value = canary.canary.header_value or "always"
                out.append(
                    make(self.action(replace(route, cluster=canary.cluster), ()), _header(name, value))
                )
                if canary.canary.header_value is None:
                    # nginx: "never" keeps the request on the primary, whatever the weight says.
                    out.append(make(self.action(route, ()), _header(name, "never")))
            if canary.canary.weight is not None:
                weighted.append(canary)
        out.append(make(self.action(route, tuple(weighted))))
        return out


def _header(name: str, value: str) -> rc.HeaderMatcher:
    return rc.HeaderMatcher(name=name, string_match=string_pb2.StringMatcher(exact=value))


def _weights(canaries: tuple[CanaryRoute, ...]) -> list[int]:
    """Integer weights on one scale: the canaries' in order, then the primary's last; [] if none."""
    if not canaries:
        return []
    totals = [max(c.canary.weight_total, 1) for c in canaries]
    scale = math.lcm(*totals)
    if scale > _MAX_WEIGHT_SCALE:
        scale = _MAX_WEIGHT_SCALE
    weights = [
        min(max(round((c.canary.weight or 0) * scale / t), 0), scale)
        for c, t in zip(canaries, totals, strict=True)
    ]
    return [*weights, max(scale - sum(weights), 0)]


def compile_host_routes(config: HostConfig) -> CompiledHost:
    """The host's scope and upstream variants; a rule Envoy would refuse is left out and reported."""
    builder = _Builder(config)
    routes: list[rc.Route] = []
    rejected: list[Rejection] = []
    app_root = next((r for r in config.routes if r.options.app_root), None)
    if app_root is not None and app_root.options.app_root:
        try:
            routes.append(options.app_root_redirect(app_root.options.app_root))
        except RouteRejected as exc:
            rejected.append(Rejection(app_root.source, "/", str(exc)))
    has_root = any(r.path == "/" and r.path_type is PathType.PREFIX for r in config.routes)
    for rule in config.routes:
        saved = dict(builder.clusters)
        try:
            routes.extend(builder.rule(rule))
        except RouteRejected as exc:
            builder.clusters = saved
            rejected.append(Rejection(rule.source, rule.path, str(exc)))
            has_root = has_root and not (rule.path == "/" and rule.path_type is PathType.PREFIX)
    if not wildcard.is_catch_all(config.host) and not has_root:
        routes.append(
            rc.Route(
                match=rc.RouteMatch(prefix="/"),
                direct_response=rc.DirectResponseAction(status=404),
                typed_per_filter_config=filters.catch_all_config(),
            )
        )
    vhost = rc.VirtualHost(
        name=config.host, domains=["*"], routes=routes, typed_per_filter_config=filters.scope_filter_configs()
    )
    key = scoped_route_pb2.ScopedRouteConfiguration.Key(
        fragments=[
            scoped_route_pb2.ScopedRouteConfiguration.Key.Fragment(string_key=wildcard.scope_key(config.host))
        ]
    )
    scope = scoped_route_pb2.ScopedRouteConfiguration(
        name=scope_name(config.host),
        key=key,
        # Inline route configurations are cluster-validated by default (RDS ones are not): a host whose
        # Service has not been compiled yet would be NACKed. Unknown clusters answer 503 instead.
        route_configuration=route_pb2.RouteConfiguration(
            name=config.host,
            virtual_hosts=[vhost],
            validate_clusters=wrappers_pb2.BoolValue(value=False),
            request_headers_to_remove=[wildcard.SCOPE_HEADER],
        ),
    )
    clusters = tuple(builder.clusters[n] for n in sorted(builder.clusters))
    return CompiledHost(scope, clusters, tuple(rejected))


def host_scope(config: HostConfig) -> scoped_route_pb2.ScopedRouteConfiguration:
    return compile_host_routes(config).scope
