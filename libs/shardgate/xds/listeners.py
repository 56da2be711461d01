"""The listener every gateway gets, served by the pusher itself rather than compiled per unit.

One HTTP listener whose connection manager selects routes by *scope*: the scope key is the request's
`:authority` split on `:` taking element 0 (so `host:8080` selects `host`), and the scopes arrive one
per host over SRDS on the ADS stream. Nothing in the listener names a domain, so adding or removing a
domain never touches it — Envoy compares and rebuilds filter chains on every listener change, which is
the cost this layout exists to avoid (notes/facts.md).
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import any_pb2

from shardgate.records import Resource
from shardgate.xds import types
from shardgate.xds.compile import resource

HTTP_LISTENER = "http"
SCOPED_ROUTES_NAME = "hosts"

_KeyBuilder = hcm.ScopedRoutes.ScopeKeyBuilder


def _any(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def host_scoped_routes() -> hcm.ScopedRoutes:
    authority_host = _KeyBuilder.FragmentBuilder(
        header_value_extractor=_KeyBuilder.FragmentBuilder.HeaderValueExtractor(
            name=":authority", element_separator=":", index=0
        )
    )
    return hcm.ScopedRoutes(
        name=SCOPED_ROUTES_NAME,
        scope_key_builder=_KeyBuilder(fragments=[authority_host]),
        # Required by Envoy even though every scope carries its route configuration inline.
        rds_config_source=types.ads_source(),
        scoped_rds=hcm.ScopedRds(scoped_rds_config_source=types.ads_source()),
    )


def http_listener(
    address: str = "0.0.0.0", port: int = 8080, name: str = HTTP_LISTENER
) -> listener_pb2.Listener:
    manager = hcm.HttpConnectionManager(
        stat_prefix=name,
        codec_type=hcm.HttpConnectionManager.AUTO,
        scoped_routes=host_scoped_routes(),
        http_filters=[
            hcm.HttpFilter(name="envoy.filters.http.router", typed_config=_any(router_pb2.Router()))
        ],
    )
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=address, port_value=port)
        ),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager", typed_config=_any(manager)
                    )
                ]
            )
        ],
    )


def static_resources(http_address: str = "0.0.0.0", http_port: int = 8080) -> tuple[Resource, ...]:
    """What the pusher serves besides the fragments: today the one HTTP listener."""
    listener = http_listener(http_address, http_port)
    return (resource(types.LISTENER, listener.name, listener),)
