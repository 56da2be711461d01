"""Unit keys and the shard function: stable across processes and releases, spread evenly."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from shardgate.keys import (
    SourceKind,
    UnitKind,
    host_unit,
    secret_unit,
    service_unit,
    shard_of,
    source_key,
    split_source,
    stable_hash64,
    unit_kind,
    unit_name,
)


def test_unit_keys_table() -> None:
    cases = [
        (host_unit("Shop.Example.COM"), "h:shop.example.com", UnitKind.HOST, "shop.example.com"),
        (host_unit("*.example.com"), "h:*.example.com", UnitKind.HOST, "*.example.com"),
        (service_unit("ns", "web"), "s:ns/web", UnitKind.SERVICE, "ns/web"),
        (secret_unit("ns", "tls"), "t:ns/tls", UnitKind.SECRET, "ns/tls"),
    ]
    for unit, key, kind, name in cases:
        assert unit == key
        assert unit_kind(unit) is kind
        assert unit_name(unit) == name


def test_source_keys_round_trip() -> None:
    key = source_key(SourceKind.ENDPOINTSLICE, "ns", "web-abc12")
    assert key == "endpointslice/ns/web-abc12"
    assert split_source(key) == (SourceKind.ENDPOINTSLICE, "ns", "web-abc12")


def test_shard_function_is_pinned() -> None:
    # These values decide which consumer and Redis keys hold a unit in a live cluster: never change them.
    assert stable_hash64("h:shop.example.com") == stable_hash64("h:shop.example.com")
    assert [shard_of(host_unit(f"h{i}.example.com")) for i in range(5)] == PINNED


PINNED = [57, 28, 36, 59, 31]


def test_shard_function_is_the_same_in_another_process() -> None:
    code = "from shardgate.keys import shard_of; print([shard_of(f'h:h{i}.example.com') for i in range(5)])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(PINNED)


def test_shards_are_evenly_used() -> None:
    counts = Counter(shard_of(host_unit(f"tenant-{i}.apps.example.com"), 64) for i in range(64_000))
    assert len(counts) == 64
    assert max(counts.values()) < 1.15 * 1000 and min(counts.values()) > 0.85 * 1000


@given(st.text(min_size=1, max_size=80), st.integers(min_value=1, max_value=4096))
def test_shard_in_range(key: str, shards: int) -> None:
    assert 0 <= shard_of(key, shards) < shards
