"""held: the packed form a worker keeps units in between batches decodes to what Redis would give."""

from __future__ import annotations

import msgpack

from shardgate.compiler.held import digest, digests, pack_sources, sole_source, unpack_sources
from shardgate.keys import SourceKind, host_unit, secret_unit, service_unit, source_key
from shardgate.model import Backend, HostRoutes, PathRule, PathType, TlsCertificate
from shardgate.records import Fragment, make_resource


def test_sources_round_trip_as_through_redis() -> None:
    routes = HostRoutes(
        "ns", "web", "2026-01-01T00:00:00Z", (PathRule("/", PathType.PREFIX, Backend("s", 80)),)
    )
    cert = TlsCertificate(b"-----BEGIN CERTIFICATE-----\n", b"-----BEGIN PRIVATE KEY-----\n")
    sources = {"ingress/ns/web": routes.to_wire(), "secret/ns/tls": cert.to_wire()}
    packed = pack_sources(sources)
    assert isinstance(packed, bytes)
    # What ShardStore.load_contributions decodes from Redis: each body packed, then unpacked.
    through_redis = {
        s: msgpack.unpackb(msgpack.packb(w, use_bin_type=True), raw=False) for s, w in sources.items()
    }
    assert unpack_sources(packed) == through_redis
    assert list(unpack_sources(packed)) == list(sources)  # the order of sources is kept


def test_nothing_held_is_no_sources() -> None:
    assert unpack_sources(None) == {}
    assert unpack_sources(pack_sources({})) == {}


def test_digests_are_the_fragment_hash_in_bytes() -> None:
    fragment = Fragment(host_unit("a.example.com"), (make_resource("t", "a", b"body"),))
    d = digest(fragment.hash)
    assert d.hex() == fragment.hash and len(d) == 12
    assert digests({"h:a": fragment.hash}) == {"h:a": d}


def test_only_a_secret_unit_has_a_sole_source() -> None:
    assert sole_source(secret_unit("ns", "tls")) == source_key(SourceKind.SECRET, "ns", "tls")
    assert sole_source(host_unit("a.example.com")) is None
    assert sole_source(service_unit("ns", "svc")) is None  # the Service and its EndpointSlices
