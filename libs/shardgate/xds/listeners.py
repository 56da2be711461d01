"""The listeners every gateway gets, served by the pusher itself rather than compiled per unit.

One HTTP connection manager, built by `http_connection_manager`, selects routes by *scope*: an early
header mutation copies `:authority` into an internal header (overwriting any client-sent value) and the
scope key is that header up to a `:` (so `host:8080` selects `host`); the host fallback filters
(`wildcard.py`) retry a miss with the normalized host, the one-label wildcard and the catch-all. Scopes
arrive one per host over SRDS on the ADS stream. Nothing here names a domain, so adding or removing a
domain never touches a listener — Envoy compares and rebuilds filter chains on every listener change,
which is the cost this layout exists to avoid (notes/facts.md). The HTTPS listener wraps the same
connection manager (`https=True`) in its TLS filter chain.
"""

from __future__ import annotations

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, extension_pb2, protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import header_mutation_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from shardgate.records import Resource
from shardgate.xds import types, wildcard
from shardgate.xds.compile import resource
from shardgate.xds.filters import http_filters, pack
from shardgate.xds.options import DEFAULT_READ_TIMEOUT_S

HTTP_LISTENER = "http"
SCOPED_ROUTES_NAME = "hosts"

_KeyBuilder = hcm.ScopedRoutes.ScopeKeyBuilder


def copy_authority() -> extension_pb2.TypedExtensionConfig:
    """`:authority` → the scope header, before Envoy selects a scope; a client-sent value is replaced."""
    return extension_pb2.TypedExtensionConfig(
        name="shardgate.scope_header",
        typed_config=pack(
            header_mutation_pb2.HeaderMutation(
                mutations=[
                    mutation_rules_pb2.HeaderMutation(
                        append=base_pb2.HeaderValueOption(
                            header=base_pb2.HeaderValue(key=wildcard.SCOPE_HEADER, value="%REQ(:authority)%"),
                            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                        )
                    )
                ]
            )
        ),
    )


def host_scoped_routes() -> hcm.ScopedRoutes:
    scope_host = _KeyBuilder.FragmentBuilder(
        header_value_extractor=_KeyBuilder.FragmentBuilder.HeaderValueExtractor(
            name=wildcard.SCOPE_HEADER, element_separator=":", index=0
        )
    )
    return hcm.ScopedRoutes(
        name=SCOPED_ROUTES_NAME,
        scope_key_builder=_KeyBuilder(fragments=[scope_host]),
        # Required by Envoy even though every scope carries its route configuration inline.
        rds_config_source=types.ads_source(),
        scoped_rds=hcm.ScopedRds(scoped_rds_config_source=types.ads_source()),
    )


def http_connection_manager(stat_prefix: str, *, https: bool) -> hcm.HttpConnectionManager:
    """The connection manager of a gateway listener; the same scopes serve HTTP and HTTPS.

    `https` says what the listener is: `:scheme` is overwritten with it, so a route can trust `:scheme`
    (the ssl-redirect routes match `:scheme: http`; an HTTP/2 client cannot claim `https` in clear text).
    """
    return hcm.HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=hcm.HttpConnectionManager.AUTO,
        scoped_routes=host_scoped_routes(),
        early_header_mutation_extensions=[copy_authority()],
        scheme_header_transformation=protocol_pb2.SchemeHeaderTransformation(
            scheme_to_overwrite="https" if https else "http"
        ),
        # The gateway is the edge: the client's address is the connection's peer (appended to
        # X-Forwarded-For), and with no internal address configured every request is external, so Envoy
        # drops client-sent control headers (`x-envoy-retry-on`, `x-envoy-upstream-rq-timeout-ms`, ...)
        # instead of obeying them.
        use_remote_address=wrappers_pb2.BoolValue(value=True),
        # nginx's proxy_read_timeout default, for every route that does not say otherwise (options.py).
        stream_idle_timeout=duration_pb2.Duration(seconds=int(DEFAULT_READ_TIMEOUT_S)),
        # Route matching and allow-lists see `/a/../b` as `/b`, the way nginx matches locations.
        normalize_path=wrappers_pb2.BoolValue(value=True),
        # ingress-nginx proxies WebSocket upgrades on every location; so does this.
        upgrade_configs=[hcm.HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")],
        http_filters=http_filters(),
    )


def listener(
    name: str,
    address: str,
    port: int,
    manager: hcm.HttpConnectionManager,
    transport_socket: base_pb2.TransportSocket | None = None,
) -> listener_pb2.Listener:
    """One listener, one filter chain: `manager`, behind TLS when a transport socket is given."""
    chain = listener_components_pb2.FilterChain(
        filters=[
            listener_components_pb2.Filter(
                name="envoy.filters.network.http_connection_manager", typed_config=pack(manager)
            )
        ],
        transport_socket=transport_socket,
    )
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=address, port_value=port)
        ),
        filter_chains=[chain],
    )


def http_listener(
    address: str = "0.0.0.0", port: int = 8080, name: str = HTTP_LISTENER
) -> listener_pb2.Listener:
    return listener(name, address, port, http_connection_manager(name, https=False))


def static_resources(http_address: str = "0.0.0.0", http_port: int = 8080) -> tuple[Resource, ...]:
    """What the pusher serves besides the fragments: today the one HTTP listener."""
    listener = http_listener(http_address, http_port)
    return (resource(types.LISTENER, listener.name, listener),)
