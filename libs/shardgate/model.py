"""The normalized model: what shardgate keeps of the Kubernetes objects it reads.

The watcher turns each Kubernetes object into *contributions*: the part of the object that matters to
one unit. An Ingress with three hosts contributes to three host units; a Service and each of its
EndpointSlices contribute to one service unit; a TLS Secret is the whole of its secret unit. The
compiler merges every contribution to a unit into that unit's fragment.

Contributions are plain frozen dataclasses with a stable wire form (`to_wire` / `*_from_wire`), so
that the watcher can compare what it sent before with what it would send now (exact deltas), and the
compiler can store them per unit without importing anything from Kubernetes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

Wire = dict[str, Any]


class PathType(StrEnum):
    EXACT = "Exact"
    PREFIX = "Prefix"
    IMPLEMENTATION_SPECIFIC = "ImplementationSpecific"


@dataclass(frozen=True, slots=True)
class Backend:
    """A Service backend in the Ingress's own namespace; `port` is a number or a port name."""

    service: str
    port: int | str


@dataclass(frozen=True, slots=True)
class PathRule:
    path: str
    path_type: PathType
    backend: Backend


@dataclass(frozen=True, slots=True)
class HostRoutes:
    """One Ingress's contribution to one host."""

    namespace: str
    ingress: str
    created: str  # creationTimestamp, RFC 3339: decides conflicts (oldest wins)
    paths: tuple[PathRule, ...]
    tls_secret: str | None = None

    def to_wire(self) -> Wire:
        return {
            "ns": self.namespace,
            "ing": self.ingress,
            "created": self.created,
            "paths": [[p.path, str(p.path_type), p.backend.service, p.backend.port] for p in self.paths],
            "tls": self.tls_secret,
        }


def host_routes_from_wire(w: Wire) -> HostRoutes:
    return HostRoutes(
        namespace=w["ns"],
        ingress=w["ing"],
        created=w["created"],
        paths=tuple(
            PathRule(path, PathType(ptype), Backend(svc, port)) for path, ptype, svc, port in w["paths"]
        ),
        tls_secret=w.get("tls"),
    )


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str  # "" when the Service has a single unnamed port
    port: int
    target_port: int | str
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A Service's contribution to its service unit."""

    ports: tuple[ServicePort, ...]

    def to_wire(self) -> Wire:
        return {"ports": [[p.name, p.port, p.target_port, p.protocol] for p in self.ports]}


def service_spec_from_wire(w: Wire) -> ServiceSpec:
    return ServiceSpec(ports=tuple(ServicePort(*p) for p in w["ports"]))


@dataclass(frozen=True, slots=True)
class EndpointPort:
    name: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class EndpointSliceSpec:
    """An EndpointSlice's contribution to its service unit; only ready addresses are kept."""

    ports: tuple[EndpointPort, ...]
    addresses: tuple[str, ...]

    def to_wire(self) -> Wire:
        return {
            "ports": [[p.name, p.port, p.protocol] for p in self.ports],
            "addrs": list(self.addresses),
        }


def endpoint_slice_from_wire(w: Wire) -> EndpointSliceSpec:
    return EndpointSliceSpec(ports=tuple(EndpointPort(*p) for p in w["ports"]), addresses=tuple(w["addrs"]))


@dataclass(frozen=True, slots=True)
class TlsCertificate:
    """A `kubernetes.io/tls` Secret's contribution to its secret unit."""

    cert_pem: bytes
    key_pem: bytes

    def to_wire(self) -> Wire:
        return {"crt": self.cert_pem, "key": self.key_pem}


def tls_certificate_from_wire(w: Wire) -> TlsCertificate:
    return TlsCertificate(cert_pem=w["crt"], key_pem=w["key"])


Contribution = HostRoutes | ServiceSpec | EndpointSliceSpec | TlsCertificate
