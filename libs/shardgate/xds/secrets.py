"""A TLS certificate as an SDS secret, named `namespace/name` like the Ingress's `tls.secretName`."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from shardgate.merge import SecretConfig


def secret_name(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def tls_secret(config: SecretConfig) -> secret_pb2.Secret:
    return secret_pb2.Secret(
        name=secret_name(config.namespace, config.name),
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=config.cert_pem),
            private_key=base_pb2.DataSource(inline_bytes=config.key_pem),
        ),
    )
