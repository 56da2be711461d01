"""One unit's merged configuration compiled into its fragment: serialized Envoy resources.

This is the only place protos are built for dynamic resources. Each message is built once and serialized
once; its version is the content hash of those bytes, so everything downstream (Redis, pushers, Envoy's
`initial_resource_versions`) compares versions without parsing or re-serializing. Deterministic
serialization makes the hash stable across runs and processes.
"""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.message import Message

from shardgate.keys import UnitKind, unit_kind
from shardgate.merge import HostConfig, SecretConfig, ServiceConfig, merge_host, merge_secret, merge_service
from shardgate.model import Contribution, Wire
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


def compile_host(config: HostConfig) -> tuple[tuple[Resource, ...], Wire]:
    """The host's scope and its own upstream clusters (clusters first: the push order sends them first)."""
    compiled = compile_host_routes(config)
    meta: Wire = {"host": config.host}
    if config.tls_secret:
        meta["tls_secret"] = config.tls_secret
    if config.conflicts:
        meta["conflicts"] = [
            {"source": c.source, "winner": c.winner, "path": c.path, "path_type": str(c.path_type)}
            for c in config.conflicts
        ]
    if config.ignored:
        meta["ignored"] = [
            {"source": i.source, "path": i.path, "path_type": str(i.path_type), "reason": i.reason}
            for i in config.ignored
        ]
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
    meta: Wire = {"secret": secret.name}
    if config.error:
        meta["error"] = config.error  # the pushers log it with the Secret's key and refuse its SNIs
    return (resource(types.SECRET, secret.name, secret),), meta


def compile_unit(unit: str, contributions: Mapping[str, Contribution]) -> Fragment:
    """Merge a unit's contributions and compile them; no resources means the unit is gone."""
    kind = unit_kind(unit)
    compiled: tuple[tuple[Resource, ...], Wire] | None = None
    if kind is UnitKind.HOST:
        host = merge_host(unit, contributions)
        compiled = None if host is None else compile_host(host)
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
