"""The xDS type URLs shardgate serves, and the one config source every dynamic resource uses.

Every dynamic resource travels over the one ADS stream (`ads: {}`), so the pusher can order clusters
before their endpoints and Envoy never needs a second connection. The type URLs are the keys of the
pusher's cache and the names Envoy subscribes by; keeping them in one place keeps the two ends agreeing.
"""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2

_PREFIX = "type.googleapis.com/"

LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
SCOPED_ROUTE = _PREFIX + "envoy.config.route.v3.ScopedRouteConfiguration"
SECRET = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"

# The order a push sends types in, so that nothing waits on what comes after it: a cluster before its
# endpoints (Envoy pauses EDS while it applies CDS), clusters before the routes that name them.
PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, SCOPED_ROUTE, ROUTE, SECRET)

# Types Envoy subscribes to as a whole (wildcard); the others it asks for by name.
WILDCARD_TYPES: frozenset[str] = frozenset({LISTENER, CLUSTER, SCOPED_ROUTE})


def ads_source() -> config_source_pb2.ConfigSource:
    """`ads: {}` with the v3 API: the resource comes over the ADS stream the bootstrap configures."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.ApiVersion.V3,
    )
