"""One unit's merged configuration compiled into its fragment: serialized Envoy resources.

This is the only place protos are built for dynamic resources. Each message is built once and serialized
once; its version is the content hash of those bytes, so everything downstream (Redis, pushers, Envoy's
`initial_resource_versions`) compares versions without parsing or re-serializing. Deterministic
serialization makes the hash stable across runs and processes.
"""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.message import Message

from shardgate.keys import UnitKind, unit_kind, unit_name
from shardgate.merge import (
    HostConfig,
    Route,
    SecretConfig,
    ServiceConfig,
    cluster_name,
    merge_host,
    merge_secret,
    merge_service,
)
from shardgate.model import CATCH_ALL_HOST, Contribution, HostRoutes, PathType, Wire
from shardgate.records import Fragment, Resource, make_resource
from shardgate.xds import types
from shardgate.xds.clusters import cluster, load_assignment
from shardgate.xds.routes import compile_host_routes
from shardgate.xds.secrets import tls_secret


def serialize(message: Message) -> bytes:
    """Deterministic bytes: map fields in a stable order, so equal configs hash equal."""
    data: bytes = message.SerializeToString(deterministic=True)
    return data


def resource(type_url: str, name: str, message: Message) -> Resource:
    return make_resource(type_url, name, serialize(message))


def default_backends(contributions: Mapping[str, Contribution]) -> list[Route]:
    """Every `spec.defaultBackend` contributed to the catch-all, oldest Ingress (then name) first.

    The first is the catch-all's default backend; the others are reported as conflicts. Kept here, not
    in the merge, because only the catch-all unit carries them and only its compilation needs them.
    """
    parts = sorted(
        (
            (c.created, src, c)
            for src, c in contributions.items()
            if isinstance(c, HostRoutes) and c.default_backend is not None
        ),
        key=lambda t: (t[0], t[1]),
    )
    return [
        Route(
            "/",
            PathType.PREFIX,
            cluster_name(c.namespace, c.default_backend.service, c.default_backend.port),
            src,
            c.options,
        )
        for _, src, c in parts
        if c.default_backend is not None
    ]


def compile_host(
    config: HostConfig, defaults: list[Route] | None = None
) -> tuple[tuple[Resource, ...], Wire]:
    """The host's scope and its own upstream clusters (clusters first: the push order sends them first)."""
    defaults = defaults or []
    compiled = compile_host_routes(config, defaults[0] if defaults else None)
    meta: Wire = {"host": config.host}
    if config.tls_secret:
        meta["tls_secret"] = config.tls_secret
    conflicts = [
        {"source": c.source, "winner": c.winner, "path": c.path, "path_type": str(c.path_type)}
        for c in config.conflicts
    ]
    conflicts += [
        {"source": d.source, "winner": defaults[0].source, "path": "defaultBackend", "path_type": ""}
        for d in defaults[1:]
    ]
    if conflicts:
        meta["conflicts"] = conflicts
    if defaults:
        meta["default_backend"] = {"source": defaults[0].source, "cluster": defaults[0].cluster}
    if compiled.rejected:
        meta["rejected"] = [
            {"source": r.source, "path": r.path, "reason": r.reason} for r in compiled.rejected
        ]
    out = [resource(types.CLUSTER, c.name, c) for c in compiled.clusters]
    out.append(resource(types.SCOPED_ROUTE, compiled.scope.name, compiled.scope))
    return tuple(out), meta


def compile_service(config: ServiceConfig) -> tuple[tuple[Resource, ...], Wire]:
    out: list[Resource] = []
    for c in config.clusters:
        out.append(resource(types.CLUSTER, c.name, cluster(c)))
        out.append(resource(types.ENDPOINT, c.name, load_assignment(c)))
    return tuple(out), {"clusters": [c.name for c in config.clusters]}


def compile_secret(config: SecretConfig) -> tuple[tuple[Resource, ...], Wire]:
    secret = tls_secret(config)
    return (resource(types.SECRET, secret.name, secret),), {"secret": secret.name}


def compile_unit(unit: str, contributions: Mapping[str, Contribution]) -> Fragment:
    """Merge a unit's contributions and compile them; no resources means the unit is gone."""
    kind = unit_kind(unit)
    compiled: tuple[tuple[Resource, ...], Wire] | None = None
    if kind is UnitKind.HOST:
        host = merge_host(unit, contributions)
        defaults = default_backends(contributions) if unit_name(unit) == CATCH_ALL_HOST else []
        compiled = None if host is None else compile_host(host, defaults)
    elif kind is UnitKind.SERVICE:
        service = merge_service(unit, contributions)
        compiled = None if service is None else compile_service(service)
    elif kind is UnitKind.SECRET:
        secret = merge_secret(unit, contributions)
        compiled = None if secret is None else compile_secret(secret)
    if compiled is None:
        return Fragment(unit, ())
    resources, meta = compiled
    return Fragment(unit, resources, meta)
