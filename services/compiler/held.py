"""What a shard worker holds per unit between batches, packed: a few hundred bytes a unit, not kilobytes.

A worker keeps every unit it has touched, so a change costs the units it touches and not a Redis read
of their other contributions. Held as decoded wire dicts, a host's one contribution was ~1.8 KB of
Python objects (nested dicts, lists, strings) and a TLS Secret's ~2.1 KB: two thirds of a compiler's
RSS at 100k hosts (`bench/compiler_memory.py`). Every contribution of a touched unit is decoded anyway
when the unit is compiled, so between batches a unit's contributions are one msgpack map
(source → wire), the form JetStream and Redis already carry; and its fragment hash is the 12-byte
digest, not its 24-character hex.

A unit whose kind allows one source only (a TLS Secret's) is not held at all: each delta carries all of
its input.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgpack

from shardgate.keys import SourceKind, UnitKind
from shardgate.model import Wire

Sources = dict[str, Wire]  # one unit's contributions by source key
PackedSources = bytes  # a msgpack map source -> wire
Digest = bytes  # a fragment's content hash (`Fragment.hash`), as bytes


def pack_sources(sources: Mapping[str, Wire]) -> PackedSources:
    return msgpack.packb(sources, use_bin_type=True)  # type: ignore[no-any-return]


def unpack_sources(packed: PackedSources | None) -> Sources:
    """The unit's contributions, as `ShardStore.load_contributions` would decode them from Redis."""
    if not packed:
        return {}
    return msgpack.unpackb(packed, raw=False)  # type: ignore[no-any-return]


def digest(fragment_hash: str) -> Digest:
    return bytes.fromhex(fragment_hash)


def digests(hashes: Mapping[str, str]) -> dict[str, Digest]:
    """`ShardState.hashes` (unit → hex, as Redis keeps them) as the worker holds them."""
    return {unit: digest(h) for unit, h in hashes.items()}


_SECRET_UNIT = f"{UnitKind.SECRET}:"


def sole_source(unit: str) -> str | None:
    """The one source `unit` can have, if its kind allows only one: `t:<ns>/<name>` is contributed to by
    the Secret `<ns>/<name>` alone. A delta from that source is then the unit's whole input, so the
    unit needs neither holding nor reading from Redis. TLS Secrets are the units worth it: their PEM
    chain and key make ~1.5 KB packed, 40% of what a compiler held at 100k hosts with one custom domain
    in five."""
    if unit.startswith(_SECRET_UNIT):
        return f"{SourceKind.SECRET}/{unit[len(_SECRET_UNIT) :]}"
    return None
