"""Codecs of the records that cross process boundaries: round trips, schema version, bad bytes."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardgate.keys import host_unit
from shardgate.model import (
    Backend,
    EndpointPort,
    EndpointSliceSpec,
    HostRoutes,
    PathRule,
    PathType,
    ServicePort,
    ServiceSpec,
    TlsCertificate,
)
from shardgate.records import Delta, Fragment, Notice, RecordError, Resource, decode_contribution

names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
wire = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | names | st.binary(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4),
    max_leaves=10,
)


@given(names, names, names, st.none() | st.dictionaries(names, wire, max_size=4), st.integers(0, 2**62))
def test_delta_round_trip(unit: str, source: str, rv: str, body: dict[str, object] | None, t: int) -> None:
    d = Delta(unit, source, rv, body, t)
    assert Delta.decode(d.encode()) == d


@given(
    st.integers(0, 4095),
    st.integers(0, 2**62),
    st.lists(names, max_size=5),
    st.dictionaries(names, names),
    st.none() | st.dictionaries(names, st.none() | st.binary(max_size=64), max_size=4),
)
def test_notice_round_trip(
    shard: int, rev: int, units: list[str], traces: dict[str, str], fragments: dict[str, bytes | None] | None
) -> None:
    n = Notice(shard, rev, tuple(units), traces, fragments)
    assert Notice.decode(n.encode()) == n


def test_a_notice_without_fragments_says_read_them() -> None:
    """A notice from a compiler that sends none (or that were too big) decodes with `fragments` None, and
    an empty mapping (a commit that deleted nothing and set nothing) stays empty, not None."""
    assert Notice.decode(Notice(1, 2, ("h:a",)).encode()).fragments is None
    assert Notice.decode(Notice(1, 2, (), {}, {}).encode()).fragments == {}


@given(st.lists(st.tuples(names, names, names, st.binary(max_size=64)), max_size=5))
def test_fragment_round_trip_and_hash(resources: list[tuple[str, str, str, bytes]]) -> None:
    f = Fragment("h:a", tuple(Resource(*r) for r in resources), {"host": "a"})
    g = Fragment.decode(f.encode())
    assert g == f and g.hash == f.hash


def test_fragment_hash_changes_with_any_resource_version() -> None:
    a = Fragment("h:a", (Resource("t", "n", "v1", b"x"),))
    assert a.hash != Fragment("h:a", (Resource("t", "n", "v2", b"x"),)).hash
    assert a.hash != Fragment("h:a", (Resource("t", "n2", "v1", b"x"),)).hash
    assert a.hash != Fragment("h:a", (Resource("t", "n", "v1", b"x"),), {"m": 1}).hash


def test_msg_id_separates_versions_and_tombstones() -> None:
    unit = host_unit("a.example.com")
    ids = {
        Delta(unit, "ingress/ns/x", "5", {"a": 1}).msg_id,
        Delta(unit, "ingress/ns/x", "6", {"a": 1}).msg_id,
        Delta(unit, "ingress/ns/x", "5", None).msg_id,
        Delta(unit, "ingress/ns/y", "5", {"a": 1}).msg_id,
    }
    assert len(ids) == 4
    same_version = Delta(unit, "ingress/ns/x", "5", {"b": 2}).msg_id
    assert Delta(unit, "ingress/ns/x", "5", {"a": 1}).msg_id == same_version


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",  # not msgpack
        msgpack.packb([1, 2]),  # not a map
        msgpack.packb({"v": 99, "u": "h:a"}),  # unknown schema version
        msgpack.packb({"v": 1}),  # fields missing
    ],
)
def test_bad_delta_bytes_raise_record_error(data: bytes) -> None:
    with pytest.raises(RecordError):
        Delta.decode(data)


def test_contributions_round_trip_through_their_wire_form() -> None:
    cases = [
        (
            "ingress/ns/web",
            HostRoutes(
                "ns",
                "web",
                "2026-01-01T00:00:00Z",
                (
                    PathRule("/a", PathType.EXACT, Backend("svc", 80)),
                    PathRule("/", PathType.PREFIX, Backend("svc", "http")),
                ),
                "tls",
            ),
        ),
        ("service/ns/svc", ServiceSpec((ServicePort("http", 80, 8080), ServicePort("", 81, "web")))),
        (
            "endpointslice/ns/svc-1",
            EndpointSliceSpec((EndpointPort("http", 8080),), ("10.0.0.1", "10.0.0.2")),
        ),
        ("secret/ns/tls", TlsCertificate(b"-----BEGIN CERT", b"-----BEGIN KEY")),
    ]
    for source, contribution in cases:
        packed = msgpack.unpackb(msgpack.packb(contribution.to_wire(), use_bin_type=True), raw=False)
        assert decode_contribution(source, packed) == contribution
