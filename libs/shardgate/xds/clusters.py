"""A service's clusters and their endpoints.

Each Service port is one EDS cluster (named by `merge.cluster_name`, by number and by name) whose
endpoints come over the same ADS stream. The cluster rarely changes; endpoints change often and are
their own resource, so an endpoint change never rebuilds a cluster. A cluster with no ready endpoint
still gets an (empty) assignment: Envoy then answers 503 at once instead of waiting for one.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import duration_pb2

from shardgate.merge import ClusterConfig
from shardgate.xds.types import ads_source

# Pods sit on the cluster network next to the gateway; a connect that takes longer than this is a dead
# pod, and failing fast lets the retry (or the client) go elsewhere.
CONNECT_TIMEOUT = duration_pb2.Duration(seconds=2)


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
