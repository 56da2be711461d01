"""Merging every contribution to one unit into the unit's configuration.

Pure functions: contributions in, a plain configuration out. Several Ingresses may name one host; a
Service's ports and its EndpointSlices arrive as separate contributions. The merge decides, the same way
in every process and after every restart, which rule wins a conflict (oldest Ingress, then name) and
records who lost so the loser can be told. The xDS compiler (`shardgate.xds`) turns the result into
Envoy resources.

Two kinds of contribution do not compete for a path:

- a *canary* Ingress (nginx `canary: "true"`) attaches its backend to the primary route of the same
  host, path and type (`Route.canaries`) instead of conflicting with it; the oldest canary per route
  wins, a later one is a `Conflict`, and a canary with no primary route is `ignored` with a reason; a
  canary contributes backends only (its TLS secret and default backend are not used);
- a *default backend* (`spec.defaultBackend`, only ever on the catch-all host `model.CATCH_ALL_HOST`):
  the oldest Ingress that declares one wins (creationTimestamp, then name; the others are `Conflict`s on
  "/" Prefix), and it is emitted as the last route, a Prefix "/", unless a rule already routes "/" Prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

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
class Ignored:
    """A contribution the merge left out that is not a conflict (e.g. a canary with no primary route)."""

    source: str
    path: str
    path_type: PathType
    reason: str


@dataclass(frozen=True, slots=True)
class HostConfig:
    host: str
    routes: tuple[Route, ...]  # in match order: longest path first, Exact before Prefix; default last
    tls_secret: str | None  # "namespace/name" of the certificate, if any Ingress asks for TLS
    conflicts: tuple[Conflict, ...] = ()
    ignored: tuple[Ignored, ...] = ()


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
    error: str | None = None  # why the watcher found the Secret unusable; carried to the pushers


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
    ignored: list[Ignored] = []
    tls_secret: str | None = None
    default: Route | None = None
    canaries: list[tuple[str, HostRoutes]] = []
    for source, routes in parts:
        if routes.options.canary is not None:
            canaries.append((source, routes))  # attached once every primary route is known
            continue
        if tls_secret is None and routes.tls_secret:
            tls_secret = f"{routes.namespace}/{routes.tls_secret}"
        for rule in routes.paths:
            path, ptype = _key(rule.path, rule.path_type)
            key = (path, ptype)
            if key in winners:
                if winners[key].source != source:
                    conflicts.append(Conflict(source, winners[key].source, path, ptype))
                continue
            cluster = cluster_name(routes.namespace, rule.backend.service, rule.backend.port)
            winners[key] = Route(path, ptype, cluster, source, routes.options)
        if routes.default_backend is not None:
            if default is None:
                b = routes.default_backend
                default = Route("/", PathType.PREFIX, cluster_name(routes.namespace, b.service, b.port),
                                source, routes.options)  # fmt: skip
            elif default.source != source:
                conflicts.append(Conflict(source, default.source, "/", PathType.PREFIX))
    for source, routes in canaries:
        _attach_canaries(source, routes, winners, conflicts, ignored)
    ordered = sorted(
        winners.values(),
        key=lambda r: (-len(r.path), r.path_type is not PathType.EXACT, r.path),
    )
    if default is not None and ("/", PathType.PREFIX) not in winners:
        ordered.append(default)
    return HostConfig(unit_name(host_unit), tuple(ordered), tls_secret, tuple(conflicts), tuple(ignored))


def _key(path: str, path_type: PathType) -> tuple[str, PathType]:
    ptype = PathType.EXACT if path_type is PathType.EXACT else PathType.PREFIX
    return normalize_path(path, ptype), ptype


def _attach_canaries(
    source: str,
    routes: HostRoutes,
    winners: dict[tuple[str, PathType], Route],
    conflicts: list[Conflict],
    ignored: list[Ignored],
) -> None:
    """A canary Ingress's paths join the primary routes with the same key (oldest canary per route)."""
    canary = routes.options.canary
    assert canary is not None
    for rule in routes.paths:
        key = _key(rule.path, rule.path_type)
        primary = winners.get(key)
        if primary is None:
            ignored.append(Ignored(source, key[0], key[1], "canary without a primary Ingress for this path"))
            continue
        if primary.canaries:
            if primary.canaries[0].source != source:
                conflicts.append(Conflict(source, primary.canaries[0].source, key[0], key[1]))
            continue
        cluster = cluster_name(routes.namespace, rule.backend.service, rule.backend.port)
        winners[key] = replace(primary, canaries=(CanaryRoute(cluster, canary, source, routes.options),))
    if routes.default_backend is not None:
        ignored.append(Ignored(source, "/", PathType.PREFIX, "a canary's default backend is not used"))


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
            return SecretConfig(namespace, name, c.cert_pem, c.key_pem, c.error)
    return None
