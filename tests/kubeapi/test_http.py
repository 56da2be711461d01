"""The REST protocol at the HTTP level: the odd corners clients rely on."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from shardgate.kubeapi.server import ApiServer

ING = "/apis/networking.k8s.io/v1/namespaces/shop/ingresses"
SVC = "/api/v1/namespaces/shop/services"


def ingress(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "labels": labels},
        "spec": {"rules": [{"host": f"{name}.example.com"}]},
    }


async def call(
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
    **headers: str,
) -> tuple[int, Any]:
    data = None
    if body is not None:
        data = body if isinstance(body, str) else json.dumps(body)
        headers["Content-Type"] = content_type
    async with http.request(method, path, data=data, headers=headers) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else None


async def ok(http: aiohttp.ClientSession, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    status, doc = await call(http, method, path, body, **kw)
    assert status in (200, 201), doc
    return doc


async def watch_lines(http: aiohttp.ClientSession, path: str) -> list[dict[str, Any]]:
    async with http.get(path) as response:
        assert response.status == 200
        assert response.headers.get("Transfer-Encoding") == "chunked"
        return [json.loads(line) async for line in response.content if line.strip()]


@pytest.mark.parametrize("flag", ["true", "True", "1"])
async def test_watch_flag_spellings(http: aiohttp.ClientSession, flag: str) -> None:
    created = await ok(http, "POST", ING, ingress("a"))
    rv = int(created["metadata"]["resourceVersion"])
    await ok(http, "DELETE", f"{ING}/a")
    events = await watch_lines(http, f"{ING}?watch={flag}&resourceVersion={rv - 1}&timeoutSeconds=1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("DELETED", "a"),
    ]
    assert int(events[1]["object"]["metadata"]["resourceVersion"]) == rv + 1


async def test_label_and_field_selectors(http: aiohttp.ClientSession) -> None:
    await ok(http, "POST", ING, ingress("a", tier="web", env="prod"))
    await ok(http, "POST", ING, ingress("b", tier="web", env="dev"))
    await ok(http, "POST", ING, ingress("c", tier="db"))
    other = ingress("a", tier="web")
    await ok(http, "POST", "/apis/networking.k8s.io/v1/namespaces/other/ingresses", other)

    async def names(query: str, path: str = ING) -> list[str]:
        doc = await ok(http, "GET", f"{path}?{query}")
        return [f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in doc["items"]]

    assert await names("labelSelector=tier%3Dweb") == ["shop/a", "shop/b"]
    assert await names("labelSelector=tier%3D%3Dweb,env!%3Ddev") == ["shop/a"]
    assert await names("labelSelector=env") == ["shop/a", "shop/b"]
    assert await names("labelSelector=!env") == ["shop/c"]
    assert await names("labelSelector=env+in+(prod,qa)") == ["shop/a"]
    assert await names("labelSelector=tier+notin+(web)") == ["shop/c"]
    all_ns = "/apis/networking.k8s.io/v1/ingresses"
    assert await names("fieldSelector=metadata.name%3Da", all_ns) == ["other/a", "shop/a"]
    assert await names("fieldSelector=metadata.namespace%3Dother", all_ns) == ["other/a"]
    assert await names("fieldSelector=metadata.name!%3Da", all_ns) == ["shop/b", "shop/c"]
    status, doc = await call(http, "GET", f"{ING}?labelSelector=a+in+b")
    assert status == 400 and doc["reason"] == "BadRequest"


async def test_watch_with_selector_sends_added_and_deleted_on_transitions(
    http: aiohttp.ClientSession,
) -> None:
    created = await ok(http, "POST", ING, ingress("a", tier="db"))
    rv = created["metadata"]["resourceVersion"]
    merge = "application/merge-patch+json"
    await ok(http, "PATCH", f"{ING}/a", {"metadata": {"labels": {"tier": "web"}}}, content_type=merge)
    await ok(http, "PATCH", f"{ING}/a", {"metadata": {"labels": {"x": "y"}}}, content_type=merge)
    await ok(http, "PATCH", f"{ING}/a", {"metadata": {"labels": {"tier": None}}}, content_type=merge)
    events = await watch_lines(
        http, f"{ING}?watch=1&resourceVersion={rv}&labelSelector=tier%3Dweb&timeoutSeconds=1"
    )
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]


async def test_bookmarks_and_initial_events_end(http: aiohttp.ClientSession) -> None:
    await ok(http, "POST", ING, ingress("a"))
    events = await watch_lines(
        http,
        f"{ING}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
        "&allowWatchBookmarks=true&timeoutSeconds=1",
    )
    assert events[0]["type"] == "ADDED"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    periodic = [e for e in events[2:] if e["type"] == "BOOKMARK"]
    assert periodic and set(periodic[0]["object"]) == {"kind", "apiVersion", "metadata"}


async def test_compacted_watch_gets_error_event(api: ApiServer, http: aiohttp.ClientSession) -> None:
    await ok(http, "POST", ING, ingress("a"))
    await ok(http, "POST", ING, ingress("b"))
    compacted = await ok(http, "POST", "/_stand-in/compact")
    assert compacted["compactedResourceVersion"] == str(api.store.resource_version)
    events = await watch_lines(http, f"{ING}?watch=true&resourceVersion=1&timeoutSeconds=5")
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired"
    assert status["message"].startswith("too old resource version: 1")
    # From the compaction point on, watching works again.
    ok_events = await watch_lines(
        http, f"{ING}?watch=true&resourceVersion={api.store.resource_version}&timeoutSeconds=1"
    )
    assert ok_events == []


async def test_history_window_expires_old_versions(http: aiohttp.ClientSession) -> None:
    from shardgate.kubeapi.server import ServerConfig

    small = ApiServer(ServerConfig(history_size=3))
    await small.start()
    try:
        async with aiohttp.ClientSession(base_url=small.url) as session:
            for name in "abcde":
                await ok(session, "POST", ING, ingress(name))
            rv = small.store.resource_version
            late = await watch_lines(session, f"{ING}?watch=1&resourceVersion={rv - 3}&timeoutSeconds=1")
            assert [e["object"]["metadata"]["name"] for e in late] == ["c", "d", "e"]
            early = await watch_lines(session, f"{ING}?watch=1&resourceVersion={rv - 4}&timeoutSeconds=1")
            assert [e["type"] for e in early] == ["ERROR"]
    finally:
        await small.stop()


async def test_patch_types(http: aiohttp.ClientSession) -> None:
    svc = {
        "metadata": {"name": "web", "labels": {"a": "1", "b": "2"}},
        "spec": {
            "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}],
            "selector": {"app": "web"},
        },
    }
    await ok(http, "POST", SVC, svc)

    doc = await ok(
        http,
        "PATCH",
        f"{SVC}/web",
        {"metadata": {"labels": {"a": None, "c": "3"}}},
        content_type="application/merge-patch+json",
    )
    assert doc["metadata"]["labels"] == {"b": "2", "c": "3"}

    # What kubectl's client-side apply sends for a merge-keyed list.
    strategic = {
        "spec": {
            "$setElementOrder/ports": [{"port": 443}, {"port": 8080}],
            "ports": [
                {"port": 443, "targetPort": 8443},
                {"port": 8080, "name": "alt"},
                {"$patch": "delete", "port": 80},
            ],
        }
    }
    doc = await ok(
        http, "PATCH", f"{SVC}/web", strategic, content_type="application/strategic-merge-patch+json"
    )
    assert doc["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": 8443},
        {"port": 8080, "name": "alt"},
    ]
    assert doc["metadata"]["generation"] == 2

    ops = [
        {"op": "test", "path": "/spec/selector/app", "value": "web"},
        {"op": "replace", "path": "/spec/selector/app", "value": "web2"},
        {"op": "add", "path": "/metadata/annotations", "value": {"x/y": "z"}},
        {"op": "remove", "path": "/spec/ports/1"},
    ]
    doc = await ok(http, "PATCH", f"{SVC}/web", ops, content_type="application/json-patch+json")
    assert doc["spec"]["selector"] == {"app": "web2"}
    assert doc["metadata"]["annotations"] == {"x/y": "z"}
    assert len(doc["spec"]["ports"]) == 1
    failing = [{"op": "test", "path": "/spec/selector/app", "value": "nope"}]
    status, err = await call(http, "PATCH", f"{SVC}/web", failing, "application/json-patch+json")
    assert status == 422 and err["kind"] == "Status"

    applied = "apiVersion: v1\nkind: Service\nmetadata:\n  name: api\nspec:\n  selector: {app: api}\n"
    status, doc = await call(
        http, "PATCH", f"{SVC}/api?fieldManager=t", applied, "application/apply-patch+yaml"
    )
    assert status == 201 and doc["spec"]["selector"] == {"app": "api"}
    applied2 = applied.replace("app: api", "app: api2")
    status, doc = await call(
        http, "PATCH", f"{SVC}/api?fieldManager=t", applied2, "application/apply-patch+yaml"
    )
    assert status == 200 and doc["spec"]["selector"] == {"app": "api2"}

    status, err = await call(http, "PATCH", f"{SVC}/web", {}, "text/plain")
    assert status == 415


async def test_errors_are_status_objects(http: aiohttp.ClientSession) -> None:
    status, err = await call(http, "GET", f"{ING}/missing")
    assert status == 404
    assert err == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'ingresses.networking.k8s.io "missing" not found',
        "reason": "NotFound",
        "code": 404,
        "details": {"name": "missing", "group": "networking.k8s.io", "kind": "ingresses"},
    }
    cases: list[tuple[str, str, Any, int, str]] = [
        ("POST", ING, {"metadata": {}}, 422, "Invalid"),
        ("POST", ING, {"metadata": {"name": "Bad_Name"}}, 422, "Invalid"),
        ("POST", ING, {"kind": "Service", "metadata": {"name": "a"}}, 400, "BadRequest"),
        ("POST", ING, {"apiVersion": "v1", "metadata": {"name": "a"}}, 400, "BadRequest"),
        ("POST", ING, [1, 2], 400, "BadRequest"),
        ("POST", ING, "{not json", 400, "BadRequest"),
        ("POST", ING, {"metadata": {"name": "a", "labels": {"x": 1}}}, 422, "Invalid"),
        ("POST", ING, {"metadata": {"name": "a", "namespace": "elsewhere"}}, 400, "BadRequest"),
        ("POST", f"{ING}/a", ingress("a"), 405, "MethodNotAllowed"),
        ("GET", "/apis/networking.k8s.io/v1/namespaces/shop/widgets", None, 404, "NotFound"),
    ]
    for method, path, body, code, reason in cases:
        status, err = await call(http, method, path, body)
        assert (status, err["reason"]) == (code, reason), (method, path, body, err)
    await ok(http, "POST", ING, ingress("a"))
    status, err = await call(http, "PUT", f"{ING}/a", ingress("b"))
    assert (status, err["reason"]) == (400, "BadRequest")


async def test_create_generate_name_delete_and_collection(http: aiohttp.ClientSession) -> None:
    doc = await ok(http, "POST", ING, {"metadata": {"generateName": "gen-", "labels": {"g": "1"}}})
    assert doc["metadata"]["name"].startswith("gen-") and len(doc["metadata"]["name"]) == 9
    await ok(http, "POST", ING, ingress("keep"))
    await ok(http, "POST", ING, ingress("drop", g="1"))

    status, err = await call(http, "DELETE", f"{ING}/keep", {"preconditions": {"resourceVersion": "1"}})
    assert status == 409 and err["reason"] == "Conflict"
    deleted = await ok(http, "DELETE", f"{ING}/keep", {"propagationPolicy": "Background"})
    assert deleted["metadata"]["name"] == "keep"

    gone = await ok(http, "DELETE", f"{ING}?labelSelector=g%3D1")
    assert gone["kind"] == "IngressList" and len(gone["items"]) == 2
    assert (await ok(http, "GET", ING))["items"] == []


async def test_namespace_delete_terminates_then_removes_contents(
    api: ApiServer, http: aiohttp.ClientSession
) -> None:
    await ok(http, "POST", ING, ingress("a"))  # auto-creates the namespace
    ns = await ok(http, "GET", "/api/v1/namespaces/shop")
    assert ns["status"] == {"phase": "Active"}
    terminating = await ok(http, "DELETE", "/api/v1/namespaces/shop")
    assert terminating["status"]["phase"] == "Terminating"
    assert terminating["metadata"]["deletionTimestamp"]
    status, err = await call(http, "POST", ING, ingress("b"))
    assert status == 403 and err["reason"] == "Forbidden"
    await asyncio.sleep(api.config.namespace_grace + 0.2)
    assert (await call(http, "GET", f"{ING}/a"))[0] == 404
    assert (await call(http, "GET", "/api/v1/namespaces/shop"))[0] == 404


async def test_discovery_and_table(http: aiohttp.ClientSession) -> None:
    core = await ok(http, "GET", "/api/v1")
    svc = next(r for r in core["resources"] if r["name"] == "services")
    assert svc["shortNames"] == ["svc"] and svc["namespaced"] and "watch" in svc["verbs"]
    assert any(r["name"] == "services/status" for r in core["resources"])
    net = await ok(http, "GET", "/apis/networking.k8s.io/v1")
    ing = next(r for r in net["resources"] if r["name"] == "ingresses")
    assert ing["shortNames"] == ["ing"] and ing["kind"] == "Ingress"
    classes = next(r for r in net["resources"] if r["name"] == "ingressclasses")
    assert classes["namespaced"] is False
    groups = {g["name"] for g in (await ok(http, "GET", "/apis"))["groups"]}
    assert groups == {"networking.k8s.io", "discovery.k8s.io", "coordination.k8s.io"}
    assert (await ok(http, "GET", "/version"))["major"] == "1"
    v3 = await ok(http, "GET", "/openapi/v3")
    assert "apis/networking.k8s.io/v1" in v3["paths"]

    await ok(http, "POST", ING, ingress("a"))
    table = await ok(http, "GET", ING, Accept="application/json;as=Table;v=v1;g=meta.k8s.io")
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]][:3] == ["Name", "Class", "Hosts"]
    assert table["rows"][0]["cells"][:3] == ["a", "<none>", "a.example.com"]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
