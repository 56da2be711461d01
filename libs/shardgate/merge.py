"""Merging every contribution to one unit into the unit's configuration.

Pure functions: contributions in, a plain configuration out. Several Ingresses may name one host; a
Service's ports and its EndpointSlices arrive as separate contributions. The merge decides, the same way
in every process and after every restart, which rule wins a conflict (oldest Ingress, then name) and
records who lost so the loser can be told. The xDS compiler (`shardgate.xds`) turns the result into
Envoy resources.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shardgate.keys import SourceKind, split_source, unit_name
from shardgate.model import (
    Canary,
    Contribution,
    EndpointSliceSpec,
    HostRoutes,
    IngressOptions,
    PathType,
    ServiceSpec,
    TlsCertificate,
)


def cluster_name(namespace: str, service: str, port: int | str) -> str:
    """The Envoy cluster of one Service port, addressed by number or by port name."""
    return f"{namespace}/{service}:{port}"


def normalize_path(path: str, path_type: PathType) -> str:
    """Prefix matching is element-wise and ignores a trailing slash; Exact is taken as written."""
    if path_type is PathType.EXACT or path == "/":
        return path
    return path.rstrip("/") or "/"


NO_OPTIONS = IngressOptions()


@dataclass(frozen=True, slots=True)
class CanaryRoute:
    """A canary Ingress's backend for a primary route (same host, path and type)."""

    cluster: str
    canary: Canary
    source: str
    options: IngressOptions = NO_OPTIONS


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    path_type: PathType  # Exact or Prefix; ImplementationSpecific is compiled as Prefix
    cluster: str
    source: str  # the Ingress that contributed it
    options: IngressOptions = NO_OPTIONS  # the contributing Ingress's annotations
    canaries: tuple[CanaryRoute, ...] = ()


@dataclass(frozen=True, slots=True)
class Conflict:
    source: str  # the Ingress that lost
    winner: str
    path: str
    path_type: PathType


@dataclass(frozen=True, slots=True)
class HostConfig:
    host: str
    routes: tuple[Route, ...]  # in match order: longest path first, Exact before Prefix
    tls_secret: str | None  # "namespace/name" of the certificate, if any Ingress asks for TLS
    conflicts: tuple[Conflict, ...] = ()


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    name: str
    endpoints: tuple[tuple[str, int], ...]  # ready (address, port), sorted


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    namespace: str
    name: str
    clusters: tuple[ClusterConfig, ...]


@dataclass(frozen=True, slots=True)
class SecretConfig:
    namespace: str
    name: str
    cert_pem: bytes
    key_pem: bytes


def merge_host(host_unit: str, contributions: Mapping[str, Contribution]) -> HostConfig | None:
    """Merge every Ingress's routes for one host; None when no Ingress names it any more."""
    parts = sorted(
        ((src, c) for src, c in contributions.items() if isinstance(c, HostRoutes)),
        key=lambda sc: (sc[1].created, sc[0]),
    )
    if not parts:
        return None
    winners: dict[tuple[str, PathType], Route] = {}
    conflicts: list[Conflict] = []
    tls_secret: str | None = None
    for source, routes in parts:
        if tls_secret is None and routes.tls_secret:
            tls_secret = f"{routes.namespace}/{routes.tls_secret}"
        for rule in routes.paths:
            ptype = PathType.EXACT if rule.path_type is PathType.EXACT else PathType.PREFIX
            path = normalize_path(rule.path, ptype)
            key = (path, ptype)
            if key in winners:
                if winners[key].source != source:
                    conflicts.append(Conflict(source, winners[key].source, path, ptype))
                continue
            cluster = cluster_name(routes.namespace, rule.backend.service, rule.backend.port)
            winners[key] = Route(path, ptype, cluster, source, routes.options)
    ordered = sorted(
        winners.values(),
        key=lambda r: (-len(r.path), r.path_type is not PathType.EXACT, r.path),
    )
    return HostConfig(unit_name(host_unit), tuple(ordered), tls_secret, tuple(conflicts))


def merge_service(service_unit: str, contributions: Mapping[str, Contribution]) -> ServiceConfig | None:
    """A Service's ports joined with the ready endpoints of its EndpointSlices.

    Each Service port becomes a cluster addressed by its number and, when named, by its name too, so an
    Ingress backend can use either without the host's fragment knowing the Service. None when the
    Service itself is gone (slices alone do not make a routable service).
    """
    spec: ServiceSpec | None = None
    slices: list[EndpointSliceSpec] = []
    for source, c in sorted(contributions.items()):
        kind = split_source(source)[0]
        if kind is SourceKind.SERVICE and isinstance(c, ServiceSpec):
            spec = c
        elif kind is SourceKind.ENDPOINTSLICE and isinstance(c, EndpointSliceSpec):
            slices.append(c)
    if spec is None:
        return None
    namespace, _, name = unit_name(service_unit).partition("/")
    clusters: list[ClusterConfig] = []
    for port in spec.ports:
        endpoints = sorted(
            {
                (addr, ep.port)
                for s in slices
                for ep in s.ports
                if ep.name == port.name
                for addr in s.addresses
            }
        )
        aliases: list[int | str] = [port.port] + ([port.name] if port.name else [])
        for alias in aliases:
            clusters.append(ClusterConfig(cluster_name(namespace, name, alias), tuple(endpoints)))
    return ServiceConfig(namespace, name, tuple(clusters))


def merge_secret(secret_unit: str, contributions: Mapping[str, Contribution]) -> SecretConfig | None:
    for c in contributions.values():
        if isinstance(c, TlsCertificate):
            namespace, _, name = unit_name(secret_unit).partition("/")
            return SecretConfig(namespace, name, c.cert_pem, c.key_pem)
    return None
