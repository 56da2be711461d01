"""The pure parts, table-driven: patches, selectors, and the store's versioning and scale."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shardgate.kubeapi.errors import ApiError
from shardgate.kubeapi.kinds import KindTable
from shardgate.kubeapi.patch import json_patch, merge_patch, strategic_merge
from shardgate.kubeapi.selectors import FieldSelector, Filter, LabelSelector
from shardgate.kubeapi.store import Store

KINDS = KindTable()
INGRESS = KINDS.by_path("networking.k8s.io", "v1", "ingresses")
NAMESPACE = KINDS.namespace_kind
assert INGRESS is not None


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": 1, "b": {"c": 2}}, {"b": {"c": None, "d": 3}}, {"a": 1, "b": {"d": 3}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
        ({"a": 1}, {"a": None}, {}),
    ],
)
def test_merge_patch(target: Any, patch: Any, expected: Any) -> None:
    before = repr(target)
    assert merge_patch(target, patch) == expected
    assert repr(target) == before  # inputs are never modified


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        # lists of named maps merge by name
        (
            {"c": [{"name": "a", "x": 1}, {"name": "b", "x": 2}]},
            {"c": [{"name": "b", "x": 3}]},
            {"c": [{"name": "a", "x": 1}, {"name": "b", "x": 3}]},
        ),
        # other lists are replaced
        ({"c": [{"host": "a"}, {"host": "b"}]}, {"c": [{"host": "z"}]}, {"c": [{"host": "z"}]}),
        # $patch: delete in a list, $patch: replace on a map
        (
            {"c": [{"name": "a"}, {"name": "b"}], "m": {"x": 1, "y": 2}},
            {"c": [{"name": "a", "$patch": "delete"}], "m": {"$patch": "replace", "z": 3}},
            {"c": [{"name": "b"}], "m": {"z": 3}},
        ),
        # $retainKeys drops what is not listed
        ({"s": {"a": 1, "b": 2}}, {"s": {"$retainKeys": ["b"], "b": 5}}, {"s": {"b": 5}}),
        # primitive merge list with $setElementOrder and $deleteFromPrimitiveList
        (
            {"f": ["x", "y"]},
            {"$setElementOrder/f": ["z", "x"], "f": ["z"], "$deleteFromPrimitiveList/f": ["y"]},
            {"f": ["z", "x"]},
        ),
    ],
)
def test_strategic_merge(target: Any, patch: Any, expected: Any) -> None:
    assert strategic_merge(target, patch) == expected


def test_json_patch_moves_copies_and_rejects() -> None:
    doc = {"a": {"b": [1, 2]}, "c": 1}
    ops = [
        {"op": "copy", "from": "/a/b", "path": "/d"},
        {"op": "move", "from": "/c", "path": "/a/e"},
        {"op": "add", "path": "/d/-", "value": 3},
        {"op": "add", "path": "/a/b/0", "value": 0},
        {"op": "add", "path": "/k~1e~0y", "value": True},
    ]
    assert json_patch(doc, ops) == {"a": {"b": [0, 1, 2], "e": 1}, "d": [1, 2, 3], "k/e~y": True}
    assert doc == {"a": {"b": [1, 2]}, "c": 1}
    with pytest.raises(ApiError) as info:
        json_patch(doc, [{"op": "remove", "path": "/nope"}])
    assert info.value.code == 422


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("a=1", {"a": "1"}, True),
        ("a==1,b!=2", {"a": "1", "b": "3"}, True),
        ("a!=1", {}, True),
        ("a", {"a": ""}, True),
        ("!a", {"a": "x"}, False),
        ("a in (1, 2),b notin (x)", {"a": "2"}, True),
        ("a in (1,2)", {"a": "3"}, False),
        ("", {}, True),
    ],
)
def test_label_selector(selector: str, labels: dict[str, str], matches: bool) -> None:
    obj = {"metadata": {"labels": labels}}
    assert LabelSelector.parse(selector).matches(obj) is matches


def test_field_selector_paths() -> None:
    event = {"metadata": {"name": "e"}, "involvedObject": {"kind": "Ingress", "uid": "u"}}
    sel = FieldSelector.parse("involvedObject.kind=Ingress,involvedObject.uid=u,metadata.name!=x")
    assert sel.matches(event)
    assert not FieldSelector.parse("involvedObject.name=web").matches(event)
    assert sel.exact("involvedObject.uid") == "u"


def ing(name: str, host: str = "a.example.com") -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"rules": [{"host": host}]}}


def test_versions_generation_and_noop_updates() -> None:
    assert INGRESS is not None
    store = Store(KINDS)
    first = store.create(INGRESS, "shop", ing("a"))
    assert store.get(NAMESPACE, None, "shop").rv == 1  # auto-created namespace
    assert (first.rv, first.obj["metadata"]["generation"]) == (2, 1)
    same = store.update(INGRESS, "shop", "a", {**ing("a"), "metadata": {"name": "a"}})
    assert same is first  # nothing changed: no new version
    labelled = store.update(
        INGRESS, "shop", "a", {**ing("a"), "metadata": {"name": "a", "labels": {"x": "y"}}}
    )
    assert (labelled.rv, labelled.obj["metadata"]["generation"]) == (3, 1)
    status = store.update(INGRESS, "shop", "a", {"status": {"loadBalancer": {}}}, status=True)
    assert status.obj["spec"] == first.obj["spec"] and status.obj["metadata"]["generation"] == 1
    spec = store.update(INGRESS, "shop", "a", ing("a", "b.example.com"))
    assert spec.obj["metadata"]["generation"] == 2
    assert spec.obj["status"] == {"loadBalancer": {}}  # kept: main writes cannot touch status
    assert spec.obj["metadata"]["uid"] == first.obj["metadata"]["uid"]
    with pytest.raises(ApiError) as info:
        store.update(INGRESS, "shop", "a", {**ing("a"), "metadata": {"name": "a", "resourceVersion": "2"}})
    assert info.value.reason == "Conflict"


def test_without_auto_create_a_missing_namespace_is_not_found() -> None:
    assert INGRESS is not None
    store = Store(KINDS, auto_create_namespaces=False)
    with pytest.raises(ApiError) as info:
        store.create(INGRESS, "shop", ing("a"))
    assert info.value.code == 404 and "namespaces" in info.value.message


def test_paged_list_survives_writes_and_expires_on_compaction() -> None:
    assert INGRESS is not None
    store = Store(KINDS)
    for i in range(10):
        store.create(INGRESS, "shop", ing(f"i{i}"))
    page = store.list(INGRESS, "shop", Filter(), limit=4)
    assert page.continue_token and page.remaining == 6
    store.compact()
    with pytest.raises(ApiError) as info:
        store.list(INGRESS, "shop", limit=4, continue_token=page.continue_token)
    assert info.value.code == 410


def test_bulk_creation_is_linear() -> None:
    """100k objects in a few seconds; a second batch costs about what the first did."""
    assert INGRESS is not None
    store = Store(KINDS, history_size=1000)
    watcher = store.watch(INGRESS, None)
    timings = []
    for batch in range(2):
        start = time.perf_counter()
        for i in range(50_000):
            store.create(INGRESS, f"ns{i % 50}", ing(f"b{batch}-{i}"))
        timings.append(time.perf_counter() - start)
    assert store.count(INGRESS) == 100_000
    assert watcher.queue.qsize() == 100_000
    assert timings[1] < timings[0] * 2 + 0.5, timings
    assert sum(timings) < 20, timings
    start = time.perf_counter()
    page = store.list(INGRESS, None, limit=500)
    while page.continue_token:
        page = store.list(INGRESS, None, limit=500, continue_token=page.continue_token)
    assert time.perf_counter() - start < 2
