"""plan_batch: deltas in stream order → one commit; table-driven over the interesting cases."""

from __future__ import annotations

from collections.abc import Mapping

from shardgate.adapters.jetstream import DeltaMessage
from shardgate.compiler.batch import plan_batch
from shardgate.compiler.held import digest, pack_sources, unpack_sources
from shardgate.keys import host_unit, secret_unit
from shardgate.model import Backend, Contribution, HostRoutes, PathRule, PathType, TlsCertificate, Wire
from shardgate.records import Delta, Fragment, make_resource

A = host_unit("a.example.com")
B = host_unit("b.example.com")


def routes(service: str, ingress: str = "web") -> Wire:
    rule = PathRule("/", PathType.PREFIX, Backend(service, 80))
    return HostRoutes("ns", ingress, "2026-01-01T00:00:00Z", (rule,)).to_wire()


def fake_compile(unit: str, contributions: Mapping[str, Contribution]) -> Fragment:
    """A stand-in for shardgate.xds: one resource naming the services, so changes are visible."""
    services = sorted(
        p.backend.service for c in contributions.values() if isinstance(c, HostRoutes) for p in c.paths
    )
    if not services:
        return Fragment(unit, ())
    return Fragment(unit, (make_resource("t", unit, ",".join(services).encode()),))


def msg(seq: int, unit: str, body: Wire | None, source: str = "ingress/ns/web", tp: str = "") -> DeltaMessage:
    return DeltaMessage(seq, Delta(unit, source, str(seq), body), tp)


def test_new_unit_is_compiled_committed_and_bumps_revision() -> None:
    plan = plan_batch([msg(1, A, routes("svc1"), tp="tp1")], 0, 7, {}, {}, fake_compile)
    assert plan.commit.revision == 8
    assert plan.commit.seq == 1
    assert set(plan.commit.fragments) == {A}
    assert plan.changed_units == [A]
    assert plan.units[A].traceparents == ["tp1"]
    assert unpack_sources(plan.new_contributions[A]) == {"ingress/ns/web": routes("svc1")}
    assert plan.new_hashes[A] == digest(plan.commit.fragments[A][1])  # type: ignore[index]


def test_several_changes_to_one_unit_cost_one_compilation_last_wins() -> None:
    calls: list[str] = []

    def counting(unit: str, c: Mapping[str, Contribution]) -> Fragment:
        calls.append(unit)
        return fake_compile(unit, c)

    batch = [msg(1, A, routes("v1")), msg(2, A, routes("v2")), msg(3, A, routes("v3"))]
    plan = plan_batch(batch, 0, 0, {}, {}, counting)
    assert calls == [A]
    frag = Fragment.decode(plan.commit.fragments[A][0])  # type: ignore[index]
    assert frag.resources[0].body == b"v3"
    assert plan.commit.seq == 3


def test_redelivered_deltas_change_nothing() -> None:
    first = plan_batch([msg(5, A, routes("v1"))], 0, 0, {}, {}, fake_compile)
    hashes = {u: h for u, h in first.new_hashes.items() if h}
    again = plan_batch([msg(5, A, routes("v2"))], 5, 1, hashes, first.new_contributions, fake_compile)
    assert again.skipped == 1
    assert again.commit.revision is None
    assert again.commit.fragments == {} and again.commit.contributions == {}


def test_unchanged_fragment_is_not_rewritten_nor_announced() -> None:
    first = plan_batch([msg(1, A, routes("v1"))], 0, 0, {}, {}, fake_compile)
    hashes = {u: h for u, h in first.new_hashes.items() if h}
    # Another Ingress version with the same routes: contributions are stored, the fragment is not.
    same = plan_batch([msg(2, A, routes("v1"))], 1, 1, hashes, first.new_contributions, fake_compile)
    assert same.commit.revision is None
    assert same.commit.fragments == {}
    assert same.commit.seq == 2
    assert same.changed_units == []


def test_tombstone_of_last_source_deletes_the_fragment() -> None:
    first = plan_batch([msg(1, A, routes("v1"))], 0, 0, {}, {}, fake_compile)
    hashes = {u: h for u, h in first.new_hashes.items() if h}
    gone = plan_batch([msg(2, A, None)], 1, 1, hashes, first.new_contributions, fake_compile)
    assert gone.commit.fragments == {A: None}
    assert gone.commit.revision == 2
    assert gone.new_contributions == {A: None}  # no source left: the worker stops holding the unit
    assert gone.new_hashes == {A: None}


def test_tombstone_of_one_of_two_sources_keeps_the_other() -> None:
    other = "ingress/ns/api"
    batch = [msg(1, A, routes("web")), msg(2, A, routes("api", "api"), source=other)]
    first = plan_batch(batch, 0, 0, {}, {}, fake_compile)
    hashes = {u: h for u, h in first.new_hashes.items() if h}
    plan = plan_batch([msg(3, A, None)], 2, 1, hashes, first.new_contributions, fake_compile)
    frag = Fragment.decode(plan.commit.fragments[A][0])  # type: ignore[index]
    assert frag.resources[0].body == b"api"
    assert unpack_sources(plan.new_contributions[A]) == {other: routes("api", "api")}


def test_a_unit_that_fails_to_compile_does_not_stop_the_others() -> None:
    def flaky(unit: str, c: Mapping[str, Contribution]) -> Fragment:
        if unit == A:
            raise ValueError("boom")
        return fake_compile(unit, c)

    plan = plan_batch([msg(1, A, routes("x")), msg(2, B, routes("y"))], 0, 0, {}, {}, flaky)
    assert plan.units[A].error == "ValueError: boom"
    assert set(plan.commit.fragments) == {B}
    assert plan.commit.contributions[A]  # the input is still recorded; the next change recompiles
    assert plan.commit.seq == 2


def test_undecodable_delta_only_moves_the_sequence() -> None:
    plan = plan_batch([DeltaMessage(4, None, "")], 3, 0, {}, {}, fake_compile)
    assert plan.commit.seq == 4 and plan.commit.revision is None


def test_a_unit_not_held_has_no_contributions_yet_and_the_commit_is_told_so() -> None:
    plan = plan_batch([msg(1, A, routes("v1"), source="ingress/ns/api")], 0, 0, {}, {}, fake_compile)
    assert unpack_sources(plan.new_contributions[A]) == {"ingress/ns/api": routes("v1")}
    assert plan.commit.assumed_empty == [A]


def test_only_units_not_held_are_assumed_empty_and_never_a_secret_from_its_own_source() -> None:
    held = {A: pack_sources({"ingress/ns/api": routes("api")})}
    secret = secret_unit("ns", "tls")
    batch = [msg(1, A, routes("v1")), msg(2, B, routes("v2")), msg(3, secret, None, source="secret/ns/tls")]
    plan = plan_batch(batch, 0, 0, {}, held, fake_compile)
    assert plan.commit.assumed_empty == [B]


def test_a_failed_unit_still_records_its_sources() -> None:
    def failing(unit: str, c: Mapping[str, Contribution]) -> Fragment:
        raise ValueError("boom")

    first = plan_batch([msg(1, A, routes("v1"))], 0, 0, {}, {}, fake_compile)
    hashes = {u: h for u, h in first.new_hashes.items() if h}
    plan = plan_batch([msg(2, A, routes("v2"))], 1, 1, hashes, first.new_contributions, failing)
    assert plan.new_hashes == {} and plan.commit.fragments == {}  # its last good fragment stays
    assert unpack_sources(plan.new_contributions[A]) == {"ingress/ns/web": routes("v2")}


def test_a_secret_is_compiled_from_its_delta_and_not_stored() -> None:
    """A TLS Secret's unit has one source, whose delta is all its input: nothing reads it back, so the
    commit stores none (a deletion, clearing what older versions stored)."""
    unit = secret_unit("ns", "tls")
    wire = TlsCertificate(b"cert", b"key").to_wire()
    plan = plan_batch([msg(1, unit, wire, source="secret/ns/tls")], 0, 0, {}, {}, fake_compile)
    assert plan.commit.contributions == {unit: {"secret/ns/tls": None}}
    assert plan.commit.assumed_empty == [] and plan.new_contributions[unit] is None
