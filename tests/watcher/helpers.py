"""Builders for the Kubernetes objects the watcher tests create, and delta summaries."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shardgate import keys

from .conftest import Published


def ingress(
    name: str,
    hosts: list[str],
    ns: str = "default",
    cls: str | None = "shardgate",
    svc: str = "app",
    tls: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "rules": [
            {
                "host": h,
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": svc, "port": {"number": 80}}},
                        }
                    ]
                },
            }
            for h in hosts
        ]
    }
    if cls is not None:
        spec["ingressClassName"] = cls
    if tls is not None:
        spec["tls"] = [{"hosts": hosts, "secretName": tls}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def service(name: str, ns: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }


def endpoint_slice(name: str, svc: str, addresses: list[str], ns: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
    }


def tls_secret(name: str, ns: str = "default") -> dict[str, Any]:
    def b64(s: str) -> str:
        return base64.b64encode(s.encode()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(f"CERT {name}"), "tls.key": b64(f"KEY {name}")},
    }


def default_class(controller: str = "shardgate.io/ingress-controller") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {
            "name": "sg-default",
            "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"},
        },
        "spec": {"controller": controller},
    }


def summary(messages: list[Published]) -> set[tuple[str, str, bool]]:
    """(unit, source, is a body) per message; asserts each went to its unit's shard subject."""
    out: set[tuple[str, str, bool]] = set()
    for m in messages:
        assert m.subject == f"sg.delta.{keys.shard_of(m.delta.unit)}", (m.subject, m.delta.unit)
        out.add((m.delta.unit, m.delta.source, m.delta.body is not None))
    assert len(out) == len(messages), (
        f"duplicate deltas: {[(m.delta.unit, m.delta.source) for m in messages]}"
    )
    return out


def host(h: str) -> str:
    return keys.host_unit(h)


def make_cert(
    names: list[str],
    key: Any = None,
    not_after: datetime | None = None,
    signer: Any = None,
) -> tuple[bytes, bytes]:
    """A self-signed certificate for `names` (SANs) and its key, as PEM; EC P-256 unless `key` is given.

    `signer` signs with another key than the certificate's (so that the key does not match)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "x")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=2))
        .not_valid_after(not_after or now + timedelta(days=30))
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
    cert = builder.sign(signer or key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def tls_secret_pem(name: str, cert_pem: bytes, key_pem: bytes, ns: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(cert_pem).decode(),
            "tls.key": base64.b64encode(key_pem).decode(),
        },
    }
