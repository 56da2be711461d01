"""A service's clusters and their endpoints, and the per-host variants a route's annotations ask for.

Each Service port is one EDS cluster (named by `merge.cluster_name`, by number and by name) whose
endpoints come over the same ADS stream. The cluster rarely changes; endpoints change often and are
their own resource, so an endpoint change never rebuilds a cluster. A cluster with no ready endpoint
still gets an (empty) assignment: Envoy then answers 503 at once instead of waiting for one.

The service unit stays protocol-agnostic: how to *talk* to a backend (`backend-protocol`,
`proxy-connect-timeout`) is an Ingress's choice, so a host that needs something other than plain HTTP/1.1
gets its own cluster in its own fragment, `<host>|<ns/svc:port>|<variant>`, reading the same endpoints
(`eds_cluster_config.service_name` = the service's assignment). Two hosts never share such a cluster, so
one host's change never rebuilds another's.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as http_options
from google.protobuf import any_pb2, duration_pb2

from shardgate.merge import ClusterConfig
from shardgate.model import IngressOptions
from shardgate.xds.types import ads_source

# Pods sit on the cluster network next to the gateway; a connect that takes longer than this is a dead
# pod, and failing fast lets the retry (or the client) go elsewhere.
CONNECT_TIMEOUT = duration_pb2.Duration(seconds=2)

# What Envoy accepts for a connect timeout is > 0; anything above an hour is a mistake, not a wish.
_MIN_TIMEOUT_S, _MAX_TIMEOUT_S = 0.001, 3600.0

_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
PROTOCOLS = ("HTTP", "HTTPS", "GRPC", "GRPCS")


def cluster(config: ClusterConfig) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=config.name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=ads_source(), service_name=config.name
        ),
        connect_timeout=CONNECT_TIMEOUT,
    )


def load_assignment(config: ClusterConfig) -> endpoint_pb2.ClusterLoadAssignment:
    lb_endpoints = [
        endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(
                address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address=addr, port_value=port)
                )
            )
        )
        for addr, port in config.endpoints
    ]
    localities = (
        [endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb_endpoints)] if lb_endpoints else []
    )
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=config.name, endpoints=localities)


def duration(seconds: float) -> duration_pb2.Duration:
    """A Duration Envoy accepts: clamped to [1 ms, 1 h], whole nanoseconds."""
    bounded = min(max(seconds, _MIN_TIMEOUT_S), _MAX_TIMEOUT_S)
    nanos_total = round(bounded * 1e9)
    return duration_pb2.Duration(seconds=nanos_total // 10**9, nanos=nanos_total % 10**9)


def _format_seconds(seconds: float) -> str:
    d = duration(seconds)
    return f"{d.seconds}s" if d.nanos == 0 else f"{d.seconds}.{d.nanos:09d}".rstrip("0") + "s"


def variant(options: IngressOptions) -> str | None:
    """How this Ingress talks to its backends, when that is not the service cluster's plain HTTP/1.1."""
    protocol = options.backend_protocol.upper()
    parts = [protocol.lower()] if protocol in PROTOCOLS and protocol != "HTTP" else []
    if options.connect_timeout_s is not None and options.connect_timeout_s > 0:
        parts.append(f"connect={_format_seconds(options.connect_timeout_s)}")
    return ",".join(parts) or None


def host_cluster_name(host: str, service_cluster: str, variant: str) -> str:
    return f"{host}|{service_cluster}|{variant}"


def upstream(
    host: str, service_cluster: str, options: IngressOptions
) -> tuple[str, cluster_pb2.Cluster | None]:
    """The cluster a route of `host` forwards to: the service's own, or a per-host variant (returned)."""
    kind = variant(options)
    if kind is None:
        return service_cluster, None
    name = host_cluster_name(host, service_cluster, kind)
    return name, host_cluster(name, service_cluster, options)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


# A per-host cluster reads an assignment Envoy usually holds already (the service cluster's). Over Delta
# ADS Envoy then sends no new subscription, so nothing is pushed to the new cluster, and it waits out its
# initial fetch timeout before taking the assignment from its EDS cache (15 s by default, measured). A
# short timeout makes that wait short; when the assignment is not held yet, the cluster starts empty
# (503) and fills when it arrives, which is what a new service does anyway.
SHARED_EDS_INITIAL_FETCH = duration_pb2.Duration(nanos=5_000_000)


def _shared_eds_source() -> config_source_pb2.ConfigSource:
    source = ads_source()
    source.initial_fetch_timeout.CopyFrom(SHARED_EDS_INITIAL_FETCH)
    return source


def host_cluster(name: str, service_cluster: str, options: IngressOptions) -> cluster_pb2.Cluster:
    protocol = options.backend_protocol.upper()
    out = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=_shared_eds_source(), service_name=service_cluster
        ),
        connect_timeout=(
            duration(options.connect_timeout_s)
            if options.connect_timeout_s is not None and options.connect_timeout_s > 0
            else CONNECT_TIMEOUT
        ),
    )
    if protocol in ("GRPC", "GRPCS"):
        # gRPC is HTTP/2 only; GRPC is cleartext HTTP/2 (h2c), GRPCS negotiates h2 over TLS.
        out.typed_extension_protocol_options[_HTTP_OPTIONS].CopyFrom(
            _pack(
                http_options.HttpProtocolOptions(
                    explicit_http_config=http_options.HttpProtocolOptions.ExplicitHttpConfig(
                        http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
                    )
                )
            )
        )
    if protocol in ("HTTPS", "GRPCS"):
        # Like nginx's default (`proxy_ssl_verify off`): encrypted, the backend's certificate not
        # verified — a pod's certificate is rarely issued for anything the gateway could check.
        tls = tls_pb2.UpstreamTlsContext(
            common_tls_context=tls_pb2.CommonTlsContext(
                alpn_protocols=["h2"] if protocol == "GRPCS" else ["http/1.1"]
            )
        )
        out.transport_socket.CopyFrom(
            base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=_pack(tls))
        )
    return out
