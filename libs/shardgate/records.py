"""The records that travel between the services, with their msgpack codecs.

- `Delta`: watcher → compiler over JetStream. One source object's contribution to one unit, or a
  tombstone (`body is None`) when the source no longer contributes to it.
- `Notice`: compiler → pushers over core NATS after each commit: the shard's new revision and the units
  whose fragments changed in it, with the trace context of the change that caused each.
- `Fragment`: compiler → Redis → pushers. The finished Envoy resources of one unit, serialized once by
  the compiler and relayed byte for byte by the pushers.

Every record carries a schema version `v`; a decoder refuses a version it does not know rather than
guessing, so a mixed-version rollout fails loudly instead of silently mis-routing.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from shardgate.keys import SourceKind, split_source
from shardgate.model import (
    Contribution,
    Wire,
    endpoint_slice_from_wire,
    host_routes_from_wire,
    service_spec_from_wire,
    tls_certificate_from_wire,
)

SCHEMA_VERSION = 1


class RecordError(ValueError):
    """A record could not be decoded: wrong schema version or malformed bytes."""


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise RecordError(f"{what}: not msgpack: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("v") != SCHEMA_VERSION:
        version = obj.get("v") if isinstance(obj, dict) else obj
        raise RecordError(f"{what}: unknown schema version {version!r}")
    return obj


_DECODERS: dict[SourceKind, Callable[[Wire], Contribution]] = {
    SourceKind.INGRESS: host_routes_from_wire,
    SourceKind.SERVICE: service_spec_from_wire,
    SourceKind.ENDPOINTSLICE: endpoint_slice_from_wire,
    SourceKind.SECRET: tls_certificate_from_wire,
}


def decode_contribution(source: str, wire: Wire) -> Contribution:
    return _DECODERS[split_source(source)[0]](wire)


@dataclass(frozen=True, slots=True)
class Delta:
    unit: str
    source: str
    source_rv: str
    body: Wire | None  # None: the source no longer contributes to the unit (tombstone)
    observed_ns: int = 0  # when the watcher received the event (epoch ns), for activation time

    @property
    def msg_id(self) -> str:
        """JetStream dedup id: the same source version's delta to a unit is published once."""
        state = "del" if self.body is None else "set"
        return f"{self.unit}|{self.source}|{self.source_rv}|{state}"

    def contribution(self) -> Contribution | None:
        return None if self.body is None else decode_contribution(self.source, self.body)

    def encode(self) -> bytes:
        return _pack(
            {
                "v": SCHEMA_VERSION,
                "u": self.unit,
                "s": self.source,
                "rv": self.source_rv,
                "b": self.body,
                "t": self.observed_ns,
            }
        )

    @staticmethod
    def decode(data: bytes) -> Delta:
        o = _unpack(data, "delta")
        try:
            return Delta(o["u"], o["s"], o["rv"], o["b"], o.get("t", 0))
        except KeyError as exc:
            raise RecordError(f"delta: missing field {exc}") from exc


@dataclass(frozen=True, slots=True)
class Notice:
    """A shard's revision moved: the units whose fragments changed in it. When they are small, the
    fragments themselves ride along (each `Fragment.encode()` bytes as committed, None: deleted), so a
    pusher that follows on need not read them from Redis; `fragments` None: read them."""

    shard: int
    revision: int
    units: tuple[str, ...]
    traces: dict[str, str] = field(default_factory=dict)  # unit -> W3C traceparent
    fragments: dict[str, bytes | None] | None = None

    def encode(self) -> bytes:
        o: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "sh": self.shard,
            "r": self.revision,
            "u": list(self.units),
            "tr": self.traces,
        }
        if self.fragments is not None:
            o["f"] = self.fragments
        return _pack(o)

    @staticmethod
    def decode(data: bytes) -> Notice:
        o = _unpack(data, "notice")
        try:
            return Notice(o["sh"], o["r"], tuple(o["u"]), o.get("tr") or {}, o.get("f"))
        except KeyError as exc:
            raise RecordError(f"notice: missing field {exc}") from exc


@dataclass(frozen=True, slots=True)
class Resource:
    """One serialized Envoy resource; `version` is the content hash of `body`, computed once."""

    type_url: str
    name: str
    version: str
    body: bytes  # the serialized proto message (not wrapped in Any)


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def make_resource(type_url: str, name: str, body: bytes) -> Resource:
    return Resource(type_url, name, content_hash(body), body)


@dataclass(frozen=True, slots=True)
class Fragment:
    """The compiled state of one unit: its Envoy resources and facts the pushers need."""

    unit: str
    resources: tuple[Resource, ...]
    meta: Wire = field(default_factory=dict)  # e.g. the secret a TLS host uses, rejection reasons

    @property
    def hash(self) -> str:
        h = hashlib.blake2b(digest_size=12)
        for r in self.resources:
            h.update(r.type_url.encode())
            h.update(r.name.encode())
            h.update(r.version.encode())
        h.update(_pack(self.meta))
        return h.hexdigest()

    def encode(self) -> bytes:
        return _pack(
            {
                "v": SCHEMA_VERSION,
                "u": self.unit,
                "r": [[r.type_url, r.name, r.version, r.body] for r in self.resources],
                "m": self.meta,
            }
        )

    @staticmethod
    def decode(data: bytes) -> Fragment:
        o = _unpack(data, "fragment")
        # A handful of type URLs, each ~70 characters: one string each, not one per resource held.
        resources = tuple(Resource(sys.intern(t), n, v, b) for t, n, v, b in o["r"])
        return Fragment(o["u"], resources, o.get("m") or {})
