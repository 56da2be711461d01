"""The gRPC edge: Envoy's Aggregated Discovery Service over both Delta and State-of-the-World.

Each RPC is one stream object (`DeltaStream` or `SotwStream`) driven by the handler's task; the streams
share the one `ResourceCache`. gRPC and the protos stop here: the cache knows nothing of either.

`serve_ads` returns the started `grpc.aio.Server`; with port 0 the kernel picks the port and
`bound_port(server)` says which.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from .cache import ResourceCache
from .delta import DeltaStream
from .sni import DEFAULT_MAX_WILDCARD
from .sotw import SotwStream
from .stream import DEFAULT_HOLD_OFF

# Envoy's first responses after a (re)connect carry every scope; at 100k hosts that is tens of MB.
MAX_MESSAGE_BYTES = 512 * 1024 * 1024

_ports: weakref.WeakKeyDictionary[grpc.aio.Server, int] = weakref.WeakKeyDictionary()


class AggregatedDiscovery(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        cache: ResourceCache,
        hold_off: float = DEFAULT_HOLD_OFF,
        max_wildcard_sni: int = DEFAULT_MAX_WILDCARD,
    ) -> None:
        self.cache = cache
        self.hold_off = hold_off
        self.max_wildcard_sni = max_wildcard_sni

    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext[discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse],
    ) -> None:
        await SotwStream(self.cache, self.hold_off).run(request_iterator, context.write)

    async def DeltaAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext[
            discovery_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryResponse
        ],
    ) -> None:
        stream = DeltaStream(self.cache, self.hold_off, self.max_wildcard_sni)
        await stream.run(request_iterator, context.write)


async def serve_ads(
    cache: ResourceCache,
    host: str,
    port: int,
    *,
    hold_off: float = DEFAULT_HOLD_OFF,
    max_wildcard_sni: int = DEFAULT_MAX_WILDCARD,
) -> grpc.aio.Server:
    """Start an ADS server on host:port (0: any free port, see `bound_port`) and return it, started."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            # Envoy keeps the stream open for its whole life; keepalives find dead gateways.
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
    )
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(
        AggregatedDiscovery(cache, hold_off, max_wildcard_sni), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind the ADS server to {host}:{port}")
    await server.start()
    _ports[server] = bound
    return server


def bound_port(server: grpc.aio.Server) -> int:
    """The port a server from `serve_ads` listens on (the kernel's choice when asked for port 0)."""
    return _ports[server]
