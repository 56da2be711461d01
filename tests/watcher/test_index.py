"""Table tests for the published index: exact deltas for every kind of change."""

from __future__ import annotations

from shardgate.keys import SourceKind, host_unit, service_unit
from shardgate.model import Backend, Contribution, HostRoutes, PathRule, PathType, ServicePort, ServiceSpec
from shardgate.records import Delta
from shardgate.watcher.index import Change, Index, SourceEntry

ING = "ingress/ns/web"
A, B, C = host_unit("a.example.com"), host_unit("b.example.com"), host_unit("c.example.com")


def hr(svc: str = "app", path: str = "/") -> HostRoutes:
    return HostRoutes(
        "ns", "web", "2024-01-01T00:00:00Z", (PathRule(path, PathType.PREFIX, Backend(svc, 80)),)
    )


def published(index: Index, source: str, rv: str, contribs: dict[str, Contribution] | None) -> Change:
    change = index.diff(source, rv, contribs, observed_ns=42)
    index.commit(change)
    return change


def summary(deltas: tuple[Delta, ...] | list[Delta]) -> list[tuple[str, str, bool]]:
    """(unit, resourceVersion, is a body): the version without the change count and content hash."""
    return [(d.unit, d.source_rv.partition(".")[0], d.body is not None) for d in deltas]


def test_new_source_gets_one_delta_per_unit() -> None:
    index = Index()
    change = published(index, ING, "1", {A: hr(), B: hr()})
    assert summary(change.deltas) == [(A, "1", True), (B, "1", True)]
    assert change.deltas[0].body == hr().to_wire()
    assert change.deltas[0].observed_ns == 42
    assert change.entry is not None and set(change.entry.units) == {A, B}


def test_change_table() -> None:
    # (new contributions, expected deltas) applied in order to one Ingress.
    steps: list[tuple[str, dict[str, Contribution] | None, list[tuple[str, str, bool]]]] = [
        ("1", {A: hr(), B: hr()}, [(A, "1", True), (B, "1", True)]),
        ("2", {A: hr(), B: hr()}, []),  # status write: new rv, same contributions
        ("3", {A: hr(), B: hr("other")}, [(B, "3", True)]),  # one host's backend changed
        ("4", {A: hr()}, [(B, "4", False)]),  # host removed: tombstone for that host only
        ("5", {A: hr(), C: hr()}, [(C, "5", True)]),  # host added
        # Deleted: tombstones carry the rv last recorded (5), the same in every watcher that notices.
        ("6", None, [(A, "5", False), (C, "5", False)]),
    ]
    index = Index()
    for rv, contribs, expected in steps:
        change = published(index, ING, rv, contribs)
        assert summary(change.deltas) == expected, rv
    assert index.get(ING) is None and len(index) == 0


def test_unchanged_source_keeps_its_recorded_entry() -> None:
    index = Index()
    published(index, ING, "1", {A: hr()})
    change = index.diff(ING, "9", {A: hr()})
    assert change.deltas == () and change.entry == index.get(ING)
    assert change.entry is not None and change.entry.rv == "1"


def test_nothing_for_a_source_that_never_contributed() -> None:
    change = Index().diff(ING, "1", {})
    assert change.deltas == () and change.entry is None


def test_relist_diffs_the_whole_kind() -> None:
    index = Index()
    svc = service_unit("ns", "svc")
    published(index, ING, "1", {A: hr(), B: hr()})
    published(index, "ingress/ns/gone", "2", {C: hr()})
    published(index, "ingress/ns/same", "3", {host_unit("same.example.com"): hr()})
    published(index, "service/ns/svc", "4", {svc: ServiceSpec((ServicePort("", 80, 80),))})
    listed: dict[str, tuple[str, dict[str, Contribution]]] = {
        ING: ("10", {A: hr("changed")}),  # B dropped, A changed
        "ingress/ns/same": ("11", {host_unit("same.example.com"): hr()}),  # unchanged: nothing
        "ingress/ns/new": ("12", {host_unit("new.example.com"): hr()}),
    }
    changes = index.relist(SourceKind.INGRESS, listed, observed_ns=7)
    got = {c.source: summary(c.deltas) for c in changes}
    assert got == {
        ING: [(A, "10", True), (B, "10", False)],
        "ingress/ns/new": [(host_unit("new.example.com"), "12", True)],
        "ingress/ns/gone": [(C, "2", False)],
    }
    for c in changes:
        index.commit(c)
    # The Service was not part of the Ingress listing and is untouched.
    assert index.sources() == {ING, "ingress/ns/same", "ingress/ns/new", "service/ns/svc"}
    assert index.relist(SourceKind.INGRESS, listed) == []


def test_entry_codec_round_trip() -> None:
    entry = SourceEntry("5", {A: "abc", B: "def"})
    assert SourceEntry.decode(entry.encode()) == entry


def test_msg_ids_are_stable_across_processes() -> None:
    one, two = Index(), Index()
    a = one.diff(ING, "1", {A: hr()})
    b = two.diff(ING, "1", {A: hr()})
    assert [d.msg_id for d in a.deltas] == [d.msg_id for d in b.deltas]


def test_admission_toggling_at_one_resource_version_gets_new_message_ids() -> None:
    """Ownership can move away and back while the Ingress stays at one resourceVersion: every
    re-publication must be a new message, or JetStream's duplicate window would drop it."""
    index = Index()
    ids: list[str] = []
    for contribs in ({A: hr(), B: hr()}, {A: hr()}, {}, {A: hr(), B: hr()}, {A: hr()}):
        change = published(index, ING, "7", contribs)
        ids += [d.msg_id for d in change.deltas]
    assert len(ids) == len(set(ids)) == 7
    entry = index.get(ING)
    assert entry is not None and entry.seq == 5 and SourceEntry.decode(entry.encode()) == entry


def test_the_same_diff_in_two_watchers_has_the_same_message_ids() -> None:
    first, second = Index(), Index()
    for index in (first, second):
        published(index, ING, "1", {A: hr()})
    a = first.diff(ING, "2", {A: hr("x")}).deltas + first.diff(ING, "", None).deltas
    b = second.diff(ING, "2", {A: hr("x")}).deltas + second.diff(ING, "", None).deltas
    assert [d.msg_id for d in a] == [d.msg_id for d in b]
    assert SourceEntry.decode(SourceEntry("1", {A: "h"}).encode()).seq == 0
