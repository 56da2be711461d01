"""Unit keys and the shard function.

Everything shardgate moves is addressed by a *unit*: a host (one domain and every route that names it),
a service (its clusters and endpoints) or a secret (one TLS certificate). A unit lives on exactly one
shard, chosen by a stable 64-bit hash of its key, so every process — watcher, compiler, pusher — agrees
on where a unit lives without asking anyone. The hash must never change between releases: it decides
which durable consumer and which Redis keys hold a unit.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

DEFAULT_SHARDS = 64


class UnitKind(StrEnum):
    HOST = "h"
    SERVICE = "s"
    SECRET = "t"


class SourceKind(StrEnum):
    INGRESS = "ingress"
    SERVICE = "service"
    ENDPOINTSLICE = "endpointslice"
    SECRET = "secret"


def host_unit(host: str) -> str:
    """The unit of a domain; hosts are case-insensitive, so the key is lower-case."""
    return f"{UnitKind.HOST}:{host.lower()}"


def service_unit(namespace: str, name: str) -> str:
    return f"{UnitKind.SERVICE}:{namespace}/{name}"


def secret_unit(namespace: str, name: str) -> str:
    return f"{UnitKind.SECRET}:{namespace}/{name}"


def unit_kind(unit: str) -> UnitKind:
    return UnitKind(unit.partition(":")[0])


def unit_name(unit: str) -> str:
    """The part after the kind: a host name, or `namespace/name`."""
    return unit.partition(":")[2]


def source_key(kind: SourceKind, namespace: str, name: str) -> str:
    return f"{kind}/{namespace}/{name}"


def split_source(source: str) -> tuple[SourceKind, str, str]:
    kind, namespace, name = source.split("/", 2)
    return SourceKind(kind), namespace, name


def stable_hash64(key: str) -> int:
    """A 64-bit hash that is the same in every process and release (unlike `hash()`)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def shard_of(unit: str, shards: int = DEFAULT_SHARDS) -> int:
    return stable_hash64(unit) % shards
