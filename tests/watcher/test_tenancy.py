"""Host ownership between namespaces (pure): claims in, owners and admission decisions out."""

from __future__ import annotations

from shardgate.model import CATCH_ALL_HOST
from shardgate.watcher.tenancy import Claim, HostRecord, Tenancy


def claim(ns: str, *hosts: str, created: str = "2026-01-01T00:00:00Z", share: tuple[str, ...] = ()) -> Claim:
    return Claim(ns, created, frozenset(hosts), frozenset(share))


def put(t: Tenancy, source: str, c: Claim | None, now: int) -> set[str]:
    return t.settle(t.set_claim(source, c, now), now)


def test_first_namespace_owns_and_others_are_told_who() -> None:
    t = Tenancy()
    put(t, "ingress/a/web", claim("a", "shop.example.com"), 1)
    put(t, "ingress/b/evil", claim("b", "shop.example.com"), 2)
    assert t.owner("shop.example.com") == "a"
    assert t.admits("a", "shop.example.com") is None
    why = t.admits("b", "shop.example.com")
    assert why and "owned by namespace a" in why and "allow-host-sharing-with" in why


def test_wildcards_conflict_with_the_hosts_they_cover_both_ways() -> None:
    t = Tenancy()
    put(t, "ingress/a/x", claim("a", "x.foo.com"), 1)
    put(t, "ingress/b/w", claim("b", "*.foo.com", "foo.com", "a.b.foo.com"), 2)
    assert "conflicts with x.foo.com" in (t.admits("b", "*.foo.com") or "")
    assert t.owner("*.foo.com") == "", "a blocked claimant does not become the owner"
    assert t.admits("b", "foo.com") is None and t.admits("b", "a.b.foo.com") is None, "one label only"

    u = Tenancy()
    put(u, "ingress/a/w", claim("a", "*.foo.com"), 1)
    put(u, "ingress/b/x", claim("b", "y.foo.com", "*.bar.foo.com"), 2)
    assert "conflicts with *.foo.com" in (u.admits("b", "y.foo.com") or "")
    assert u.admits("b", "*.bar.foo.com") is None


def test_sharing_lets_a_guest_in_without_moving_ownership() -> None:
    t = Tenancy()
    put(t, "ingress/a/w", claim("a", "*.foo.com", "foo.com", share=("b",)), 1)
    put(t, "ingress/b/x", claim("b", "x.foo.com", "foo.com"), 2)
    put(t, "ingress/c/x", claim("c", "z.foo.com"), 3)
    assert t.admits("b", "x.foo.com") is None and t.admits("b", "foo.com") is None
    assert t.owner("foo.com") == "a" and t.owner("x.foo.com") == "b"
    assert t.admits("c", "z.foo.com") is not None


def test_release_goes_to_the_longest_waiting_claimant() -> None:
    t = Tenancy()
    put(t, "ingress/a/one", claim("a", "h.example.com"), 1)
    put(t, "ingress/a/two", claim("a", "h.example.com"), 2)
    put(t, "ingress/c/x", claim("c", "h.example.com", created="2020-01-01T00:00:00Z"), 3)  # old, waits less
    put(t, "ingress/b/x", claim("b", "h.example.com"), 2)
    put(t, "ingress/a/one", None, 4)
    assert t.owner("h.example.com") == "a", "another Ingress of the owner still names it"
    changed = put(t, "ingress/a/two", None, 5)
    assert t.owner("h.example.com") == "b" and "h.example.com" in changed
    assert t.sources(changed) == {"ingress/b/x", "ingress/c/x"}
    assert t.record("h.example.com") == HostRecord("b", {"c": 3})


def test_releasing_a_wildcard_unblocks_the_hosts_it_covered() -> None:
    t = Tenancy()
    put(t, "ingress/a/w", claim("a", "*.foo.com"), 1)
    put(t, "ingress/b/x", claim("b", "x.foo.com"), 2)
    assert t.admits("b", "x.foo.com") is not None
    changed = put(t, "ingress/a/w", None, 3)
    assert t.owner("x.foo.com") == "b" and t.admits("b", "x.foo.com") is None
    assert "x.foo.com" in changed and t.record("*.foo.com") is None


def test_fresh_start_oldest_ingress_wins_whatever_the_list_order() -> None:
    for order in (["a", "b"], ["b", "a"]):
        t = Tenancy()
        created = {"a": "2026-02-01T00:00:00Z", "b": "2026-01-01T00:00:00Z"}
        touched: set[str] = set()
        for ns in order:
            touched |= t.set_claim(f"ingress/{ns}/x", claim(ns, "h.example.com", created=created[ns]), 7)
        t.settle(touched, 7)
        assert t.owner("h.example.com") == "b"


def test_ownership_survives_a_restart_through_the_records() -> None:
    t = Tenancy()
    put(t, "ingress/b/x", claim("b", "h.example.com", created="2026-06-01T00:00:00Z"), 1)
    put(t, "ingress/a/x", claim("a", "h.example.com", created="2020-01-01T00:00:00Z"), 2)
    persisted = {h: HostRecord.decode(r.encode()) for h, r in t.take_dirty().items() if r is not None}
    assert persisted == {"h.example.com": HostRecord("b", {"a": 2})}

    # A new leader sees the claims in another order, and a newcomer; the records decide, not the ages.
    u = Tenancy()
    u.set_claim("ingress/c/x", claim("c", "h.example.com", created="2000-01-01T00:00:00Z"), 50)
    u.set_claim("ingress/a/x", claim("a", "h.example.com", created="2020-01-01T00:00:00Z"), 50)
    u.set_claim("ingress/b/x", claim("b", "h.example.com"), 50)
    u.load(persisted, now=60)
    u.settle(u.known_hosts(), 60)
    assert u.owner("h.example.com") == "b"
    u.settle(u.set_claim("ingress/b/x", None, 70), 70)
    assert u.owner("h.example.com") == "a", "a waited since 2, c only since the takeover"


def test_catch_all_can_be_reserved() -> None:
    t = Tenancy(catch_all_namespaces=["platform"])
    put(t, "ingress/a/x", claim("a", CATCH_ALL_HOST), 1)
    put(t, "ingress/platform/x", claim("platform", CATCH_ALL_HOST), 2)
    assert t.owner(CATCH_ALL_HOST) == "platform"
    assert "reserved" in (t.admits("a", CATCH_ALL_HOST) or "")
    assert t.conflicting(CATCH_ALL_HOST) == set()


def test_dirty_records_and_deletion() -> None:
    t = Tenancy()
    put(t, "ingress/a/x", claim("a", "h.example.com"), 1)
    assert t.take_dirty() == {"h.example.com": HostRecord("a", {})}
    put(t, "ingress/a/x", None, 2)
    assert t.take_dirty() == {"h.example.com": None} and t.known_hosts() == set()


def test_an_owner_keeps_its_host_when_sharing_lets_a_neighbour_own_a_wildcard_over_it() -> None:
    t = Tenancy()
    put(t, "ingress/a/x", claim("a", "x.foo.com", share=("b",)), 1)
    put(t, "ingress/b/w", claim("b", "*.foo.com", "x.foo.com"), 2)
    assert t.owner("*.foo.com") == "b" and t.owner("x.foo.com") == "a"
    assert t.admits("a", "x.foo.com") is None and t.admits("b", "x.foo.com") is None
    put(t, "ingress/c/y", claim("c", "y.foo.com"), 3)
    assert t.admits("c", "y.foo.com") is not None


def test_a_released_host_stays_with_its_owner_for_the_grace() -> None:
    t = Tenancy(grace_ns=100)
    put(t, "ingress/a/x", claim("a", "h.example.com"), 1)
    put(t, "ingress/b/x", claim("b", "h.example.com"), 2)
    put(t, "ingress/a/x", None, 10)  # deleted ...
    assert t.owner("h.example.com") == "a" and t.next_due() == 110 and t.due(109) == set()
    put(t, "ingress/a/x2", claim("a", "h.example.com"), 50)  # ... and re-created within the grace
    assert t.owner("h.example.com") == "a" and t.next_due() is None
    assert t.record("h.example.com") == HostRecord("a", {"b": 2}, 0)

    put(t, "ingress/a/x2", None, 60)
    assert t.record("h.example.com") == HostRecord("a", {"b": 2}, 60)
    assert HostRecord.decode(HostRecord("a", {"b": 2}, 60).encode()).released == 60
    assert t.admits("b", "h.example.com") is not None
    assert t.due(160) == {"h.example.com"}
    changed = t.settle(t.due(160), 160)
    assert t.owner("h.example.com") == "b" and "h.example.com" in changed and t.next_due() is None


def test_a_sharing_change_re_evaluates_only_what_it_touches() -> None:
    t = Tenancy()
    put(t, "ingress/a/x", claim("a", "h.example.com"), 1)
    put(t, "ingress/b/x", claim("b", "h.example.com"), 2)
    assert put(t, "ingress/a/y", claim("a", "h.example.com", "other.example.com"), 3) == {"other.example.com"}
    changed = put(t, "ingress/a/x", claim("a", "h.example.com", share=("b",)), 4)
    assert changed == {"h.example.com"} and t.admits("b", "h.example.com") is None


def test_settling_many_hosts_at_once_settles_every_one() -> None:
    t = Tenancy()
    touched: set[str] = set()
    for i in range(500):
        touched |= t.set_claim(f"ingress/ns{i % 7}/i{i}", claim(f"ns{i % 7}", f"h{i}.example.com"), i)
    t.settle(touched, 1000)
    assert all(t.owner(f"h{i}.example.com") == f"ns{i % 7}" for i in range(500))
