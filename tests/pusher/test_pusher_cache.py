"""The resource cache: fragments in, exactly the changed names out, owners kept apart."""

from __future__ import annotations

import logging

import pytest

from shardgate.pusher.cache import STATIC_OWNER, Changes, Origin, ResourceCache
from shardgate.records import Fragment, Resource, make_resource
from shardgate.xds import types

SCOPE, CLUSTER, CLA, LISTENER = types.SCOPED_ROUTE, types.CLUSTER, types.ENDPOINT, types.LISTENER


def res(type_url: str, name: str, body: bytes = b"x") -> Resource:
    return make_resource(type_url, name, body)


def frag(unit: str, *resources: Resource) -> Fragment:
    return Fragment(unit, resources)


class Recorder:
    def __init__(self, cache: ResourceCache) -> None:
        self.calls: list[Changes] = []
        self.cancel = cache.watch(self.calls.append)

    def names(self) -> list[dict[str, dict[str, Origin]]]:
        return [{t: dict(n) for t, n in c.items()} for c in self.calls]


@pytest.fixture
def cache() -> ResourceCache:
    return ResourceCache([res(LISTENER, "http")])


def test_new_unit_reports_its_names_with_the_trace(cache: ResourceCache) -> None:
    rec = Recorder(cache)
    changed = cache.apply({"h:a": frag("h:a", res(SCOPE, "host:a"))}, {"h:a": "00-tp-01"})
    assert rec.names() == [{SCOPE: {"host:a": Origin("h:a", "00-tp-01")}}]
    assert changed == rec.calls[0]
    assert cache.get(SCOPE, "host:a") is not None
    assert cache.revision(SCOPE) == 1 and cache.revision(CLUSTER) == 0


def test_identical_fragment_changes_nothing(cache: ResourceCache) -> None:
    cache.apply({"h:a": frag("h:a", res(SCOPE, "host:a"))})
    rec = Recorder(cache)
    assert cache.apply({"h:a": frag("h:a", res(SCOPE, "host:a"))}) == {}
    assert rec.calls == []
    assert cache.revision(SCOPE) == 1


def test_only_the_changed_resource_of_a_unit_is_reported(cache: ResourceCache) -> None:
    cache.apply({"s:ns/web": frag("s:ns/web", res(CLUSTER, "ns/web:80"), res(CLA, "ns/web:80", b"a"))})
    rec = Recorder(cache)
    cache.apply({"s:ns/web": frag("s:ns/web", res(CLUSTER, "ns/web:80"), res(CLA, "ns/web:80", b"b"))})
    assert rec.names() == [{CLA: {"ns/web:80": Origin("s:ns/web", "")}}]


@pytest.mark.parametrize("deletion", [None, Fragment("s:ns/web", ())], ids=["none", "empty-fragment"])
def test_deleted_unit_reports_removals(cache: ResourceCache, deletion: Fragment | None) -> None:
    cache.apply({"s:ns/web": frag("s:ns/web", res(CLUSTER, "ns/web:80"), res(CLA, "ns/web:80"))})
    rec = Recorder(cache)
    cache.apply({"s:ns/web": deletion})
    assert rec.names() == [
        {CLUSTER: {"ns/web:80": Origin("s:ns/web", "")}, CLA: {"ns/web:80": Origin("s:ns/web", "")}}
    ]
    assert cache.get(CLUSTER, "ns/web:80") is None
    assert cache.fragment("s:ns/web") is None
    assert cache.unit_count() == 0


def test_a_unit_cannot_clobber_another_units_name(
    cache: ResourceCache, caplog: pytest.LogCaptureFixture
) -> None:
    cache.apply({"h:a": frag("h:a", res(SCOPE, "host:a", b"a"))})
    with caplog.at_level(logging.WARNING):
        changed = cache.apply({"h:b": frag("h:b", res(SCOPE, "host:a", b"b"), res(SCOPE, "host:b"))})
    assert {t: set(n) for t, n in changed.items()} == {SCOPE: {"host:b"}}
    assert cache.get(SCOPE, "host:a") == res(SCOPE, "host:a", b"a")
    assert cache.owner(SCOPE, "host:a") == "h:a"
    assert any("clash" in r.getMessage() and "'h:b'" in r.getMessage() for r in caplog.records)

    # The owner lets go: the contender takes the name over, and that is a change.
    changed = cache.apply({"h:a": None})
    assert dict(changed[SCOPE]) == {"host:a": Origin("h:a", "")}
    assert cache.get(SCOPE, "host:a") == res(SCOPE, "host:a", b"b")
    assert cache.owner(SCOPE, "host:a") == "h:b"


def test_a_contender_that_drops_the_name_is_forgotten(cache: ResourceCache) -> None:
    cache.apply({"h:a": frag("h:a", res(SCOPE, "host:a", b"a"))})
    cache.apply({"h:b": frag("h:b", res(SCOPE, "host:a", b"b"))})
    cache.apply({"h:b": frag("h:b", res(SCOPE, "host:b"))})
    changed = cache.apply({"h:a": None})
    assert dict(changed[SCOPE]) == {"host:a": Origin("h:a", "")}
    assert cache.get(SCOPE, "host:a") is None


def test_static_resources_cannot_be_taken(cache: ResourceCache) -> None:
    assert cache.owner(LISTENER, "http") == STATIC_OWNER
    assert cache.apply({"h:evil": frag("h:evil", res(LISTENER, "http", b"evil"))}) == {}
    assert cache.get(LISTENER, "http") == res(LISTENER, "http")
    assert cache.revision(LISTENER) == 1


def test_apply_touches_only_the_change_at_scale() -> None:
    """10k units held; one change reports one name and leaves every other unit's entry alone."""
    cache = ResourceCache()
    cache.apply({f"h:{i}": frag(f"h:{i}", res(SCOPE, f"host:{i}", b"%d" % i)) for i in range(10_000)})
    rec = Recorder(cache)
    cache.apply({"h:5": frag("h:5", res(SCOPE, "host:5", b"new"))})
    assert rec.names() == [{SCOPE: {"host:5": Origin("h:5", "")}}]
    assert len(cache.resources(SCOPE)) == 10_000


def test_cancelled_watch_is_not_called(cache: ResourceCache) -> None:
    rec = Recorder(cache)
    rec.cancel()
    cache.apply({"h:a": frag("h:a", res(SCOPE, "host:a"))})
    assert rec.calls == []
