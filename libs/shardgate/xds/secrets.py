"""A TLS certificate as an SDS secret, and the same secret renamed for the SNI that asked for it.

The compiler builds one `Secret` per Kubernetes TLS Secret, named `namespace/name` like the Ingress's
`tls.secretName`. Gateways never ask for that name: the HTTPS listener's on-demand certificate selector
asks for the client's SNI (`xds/tls.py`), and the pusher answers with the host's certificate *named by
the SNI* (`secret_named`). A wildcard certificate therefore serves many names from one fragment.

A Secret the watcher found unusable (bad PEM, key that does not match, expired) reaches the compiler with
empty PEM; it is compiled to a Secret with no certificate at all, which `has_certificate` recognizes, so
the pusher answers its hosts' SNIs with a removal instead of handing Envoy something it would NACK.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from google.protobuf.message import DecodeError

from shardgate.merge import SecretConfig

_NAME_FIELD = 1  # Secret.name


def secret_name(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def tls_secret(config: SecretConfig) -> secret_pb2.Secret:
    name = secret_name(config.namespace, config.name)
    if not config.cert_pem or not config.key_pem:
        return secret_pb2.Secret(name=name)  # unusable: no certificate to serve
    return secret_pb2.Secret(
        name=name,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=config.cert_pem),
            private_key=base_pb2.DataSource(inline_bytes=config.key_pem),
        ),
    )


def has_certificate(body: bytes) -> bool:
    """Whether a serialized Secret carries a certificate chain and a key (one parse, per secret change)."""
    try:
        secret = secret_pb2.Secret.FromString(body)
    except DecodeError:
        return False
    cert = secret.tls_certificate
    return bool(cert.certificate_chain.inline_bytes and cert.private_key.inline_bytes)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2): a string, bytes or an embedded message."""
    return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


def secret_named(body: bytes, name: str) -> bytes:
    """The serialized Secret `body` with its name replaced by `name`, without parsing or re-encoding.

    Protobuf parsers take the last occurrence of a non-repeated scalar field (the encoding spec requires
    it), so appending a `name` field renames the message. This is what lets the pusher answer any number
    of SNIs with one compiled certificate at the cost of a byte concatenation.
    """
    return body + length_delimited(_NAME_FIELD, name.encode())
