"""The HTTPS listener: one filter chain whose certificate is fetched on demand, by SNI, over SDS.

One filter chain per domain is what made the origin cluster slow: every new TLS domain was a listener
update costing ~0.42 ms per existing domain (~8.4 s at 20k, notes/facts.md). Here the listener names no
domain at all. Its `DownstreamTlsContext` carries the certificate selector
`envoy.tls.certificate_selectors.on_demand_secret`: during a handshake Envoy maps the client's SNI to an
SDS resource name (the SNI itself, by the `envoy.tls.certificate_mappers.sni` mapper), subscribes to it
over the ADS stream, pauses the handshake until the answer, and resumes with that certificate — or fails
the handshake when the answer is a removal. Adding a TLS domain is one Secret push; the listener never
changes (measured ~6 ms per new TLS domain at 20k).

The selector's config message is not in the Python protos (xds-protos 1.85), so it is encoded here by
hand from the Envoy 1.40 API (`cert_selectors/on_demand_secret/v3/config.proto`, fields 1-3, and
`cert_mappers/sni/v3/config.proto`). Envoy refuses the selector unless both stateless and stateful
session resumption are off: a resumed session would skip the selection.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.core.v3 import base_pb2, extension_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import any_pb2

from shardgate.records import Resource
from shardgate.xds import types
from shardgate.xds.compile import resource, serialize
from shardgate.xds.filters import pack
from shardgate.xds.listeners import listener
from shardgate.xds.secrets import length_delimited

HTTPS_LISTENER = "https"

ON_DEMAND_SELECTOR = "envoy.tls.certificate_selectors.on_demand_secret"
SNI_MAPPER = "envoy.tls.certificate_mappers.sni"
_ON_DEMAND_CONFIG = "envoy.extensions.transport_sockets.tls.cert_selectors.on_demand_secret.v3.Config"
_SNI_CONFIG = "envoy.extensions.transport_sockets.tls.cert_mappers.sni.v3.SNI"

NO_SNI = "_no_sni"
"""The secret name Envoy asks for when a client sends no SNI. Not a valid host name (underscore), so no
Ingress can own it: the pusher answers it with a removal and such handshakes fail."""

ALPN = ("h2", "http/1.1")


# -- the hand-written encoding ----------------------------------------------------------------------


def _typed(name: str, type_name: str, value: bytes) -> extension_pb2.TypedExtensionConfig:
    return extension_pb2.TypedExtensionConfig(
        name=name, typed_config=any_pb2.Any(type_url="type.googleapis.com/" + type_name, value=value)
    )


def sni_mapper(default_value: str = NO_SNI) -> extension_pb2.TypedExtensionConfig:
    """`cert_mappers.sni.v3.SNI{default_value = 1}`: the secret name is the client's SNI."""
    return _typed(SNI_MAPPER, _SNI_CONFIG, length_delimited(1, default_value.encode()))


def on_demand_selector(prefetch_secret_names: Sequence[str] = ()) -> extension_pb2.TypedExtensionConfig:
    """`on_demand_secret.v3.Config{config_source = 1, certificate_mapper = 2, prefetch_secret_names = 3}`.

    Secrets come over the ADS stream like every other resource. `prefetch_secret_names` are fetched
    when the listener loads, so hot names do not wait one SDS round trip after an Envoy restart.
    """
    body = length_delimited(1, serialize(types.ads_source()))
    body += length_delimited(2, serialize(sni_mapper()))
    for name in prefetch_secret_names:
        body += length_delimited(3, name.encode())
    return _typed(ON_DEMAND_SELECTOR, _ON_DEMAND_CONFIG, body)


# -- the listener ----------------------------------------------------------------------------------


def downstream_tls_context(prefetch_secret_names: Sequence[str] = ()) -> tls_pb2.DownstreamTlsContext:
    return tls_pb2.DownstreamTlsContext(
        common_tls_context=tls_pb2.CommonTlsContext(
            alpn_protocols=list(ALPN),
            custom_tls_certificate_selector=on_demand_selector(prefetch_secret_names),
        ),
        # Required by the on-demand selector: a resumed session would bypass certificate selection.
        disable_stateless_session_resumption=True,
        disable_stateful_session_resumption=True,
    )


def https_listener(
    manager: hcm.HttpConnectionManager,
    address: str = "0.0.0.0",
    port: int = 8443,
    prefetch_secret_names: Sequence[str] = (),
    name: str = HTTPS_LISTENER,
) -> listener_pb2.Listener:
    """The HTTPS listener around `manager` (the routing's connection manager built for HTTPS)."""
    socket = base_pb2.TransportSocket(
        name="envoy.transport_sockets.tls", typed_config=pack(downstream_tls_context(prefetch_secret_names))
    )
    return listener(name, address, port, manager, socket)


def https_listener_resource(
    manager: hcm.HttpConnectionManager,
    address: str = "0.0.0.0",
    port: int = 8443,
    prefetch_secret_names: Sequence[str] = (),
) -> Resource:
    listener = https_listener(manager, address, port, prefetch_secret_names)
    return resource(types.LISTENER, listener.name, listener)
