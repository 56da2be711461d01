"""A host's routes as one scoped route configuration, selected by the request's host.

This is the layout that keeps a domain change flat (notes/facts.md): the HTTP listener's connection
manager picks a *scope* by the `:authority` (port stripped), and each host is one
`ScopedRouteConfiguration` with its route configuration inline. Adding, editing or deleting a host is
one small resource; no other host's routes are rebuilt. The virtual host inside matches `*` because the
scope already chose the host.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2, route_pb2, scoped_route_pb2
from google.protobuf import wrappers_pb2

from shardgate.merge import HostConfig, Route
from shardgate.model import PathType
from shardgate.xds import filters, wildcard


def scope_name(host: str) -> str:
    """The SRDS resource name of a host's scope."""
    return f"host:{host}"


def route_match(route: Route) -> route_components_pb2.RouteMatch:
    """Exact is `path`; Prefix matches whole path elements (`/foo` matches `/foo/x`, not `/foobar`)."""
    if route.path_type is PathType.EXACT:
        return route_components_pb2.RouteMatch(path=route.path)
    if route.path == "/":
        return route_components_pb2.RouteMatch(prefix="/")
    return route_components_pb2.RouteMatch(path_separated_prefix=route.path)


def host_scope(config: HostConfig) -> scoped_route_pb2.ScopedRouteConfiguration:
    name = scope_name(config.host)
    routes = [
        route_components_pb2.Route(
            match=route_match(r),
            route=route_components_pb2.RouteAction(cluster=r.cluster),
        )
        for r in config.routes
    ]
    if not wildcard.is_catch_all(config.host) and not any(
        r.path == "/" and r.path_type is PathType.PREFIX for r in config.routes
    ):
        routes.append(
            route_components_pb2.Route(
                match=route_components_pb2.RouteMatch(prefix="/"),
                direct_response=route_components_pb2.DirectResponseAction(status=404),
                typed_per_filter_config=filters.catch_all_config(),
            )
        )
    vhost = route_components_pb2.VirtualHost(
        name=config.host, domains=["*"], routes=routes, typed_per_filter_config=filters.scope_filter_configs()
    )
    key = scoped_route_pb2.ScopedRouteConfiguration.Key(
        fragments=[
            scoped_route_pb2.ScopedRouteConfiguration.Key.Fragment(string_key=wildcard.scope_key(config.host))
        ]
    )
    return scoped_route_pb2.ScopedRouteConfiguration(
        name=name,
        key=key,
        # Inline route configurations are cluster-validated by default (RDS ones are not): a host whose
        # Service has not been compiled yet would be NACKed. Unknown clusters answer 503 instead.
        route_configuration=route_pb2.RouteConfiguration(
            name=name,
            virtual_hosts=[vhost],
            validate_clusters=wrappers_pb2.BoolValue(value=False),
            request_headers_to_remove=[wildcard.SCOPE_HEADER],
        ),
    )
