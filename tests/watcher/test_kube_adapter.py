"""The raw-JSON Kubernetes adapter against the in-process API stand-in."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from shardgate.adapters.kube import (
    INGRESS,
    LEASE,
    SERVICE,
    Conflict,
    Expired,
    KubeClient,
    NotFound,
    Rejected,
    Transient,
    error_for_status,
)
from shardgate.kubeapi.server import ApiServer, ServerConfig

from .conftest import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
async def api_kube(tmp_path: Any) -> Any:
    api = ApiServer(ServerConfig(bookmark_interval=0.1))
    await api.start()
    kube = await KubeClient.connect(str(api.write_kubeconfig(tmp_path / "kubeconfig")))
    yield api, kube
    await kube.close()
    await api.stop()


def service(name: str, ns: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"port": 80}]},
    }


def test_error_mapping() -> None:
    assert isinstance(error_for_status(410, ""), Expired)
    assert isinstance(error_for_status(404, ""), NotFound)
    assert isinstance(error_for_status(409, ""), Conflict)
    for status in (429, 500, 503):
        assert isinstance(error_for_status(status, ""), Transient)
    for status in (400, 401, 403, 422):
        assert isinstance(error_for_status(status, ""), Rejected)


async def test_list_pages_and_watch_from_its_version(api_kube: Any) -> None:
    _api, kube = api_kube
    for i in range(7):
        await kube.create(SERVICE, "default", service(f"s{i}"))
    items, rv = await kube.list_raw(SERVICE, limit=3)
    assert sorted(o["metadata"]["name"] for o in items) == [f"s{i}" for i in range(7)]

    events: list[tuple[str, str]] = []

    async def follow() -> None:
        async for etype, obj in kube.watch_raw(SERVICE, rv, timeout_seconds=30):
            events.append((etype, obj["metadata"].get("name", "")))
            if etype == "DELETED":
                return

    task = asyncio.create_task(follow())
    await kube.create(SERVICE, "other", service("late", "other"))
    await kube.delete(SERVICE, "default", "s0")
    await asyncio.wait_for(task, 10)
    assert [e for e in events if e[0] != "BOOKMARK"] == [("ADDED", "late"), ("DELETED", "s0")]


async def test_watch_sends_bookmarks(api_kube: Any) -> None:
    _api, kube = api_kube
    _, rv = await kube.list_raw(SERVICE)
    async for etype, obj in kube.watch_raw(SERVICE, rv, timeout_seconds=5):
        assert etype == "BOOKMARK" and obj["metadata"]["resourceVersion"]
        break


async def test_expired_as_status_and_as_error_event(api_kube: Any) -> None:
    api, kube = api_kube
    await kube.create(SERVICE, "default", service("a"))
    _, rv = await kube.list_raw(SERVICE)
    await kube.create(SERVICE, "default", service("b"))
    api.store.compact()
    with pytest.raises(Expired):  # the watch request itself is refused with 410
        async for _ in kube.watch_raw(SERVICE, "1", timeout_seconds=5):
            pass
    _, rv = await kube.list_raw(SERVICE)
    seen: list[str] = []

    async def follow() -> None:
        async for etype, _obj in kube.watch_raw(SERVICE, rv, timeout_seconds=30):
            seen.append(etype)

    task = asyncio.create_task(follow())
    await wait_until(lambda: api.store.watcher_count() > 0, what="the watch to open")
    api.store.compact(expire_watchers=True)  # the open watch gets the 410 ERROR event
    with pytest.raises(Expired):
        await asyncio.wait_for(task, 10)


async def test_lease_optimistic_concurrency(api_kube: Any) -> None:
    _api, kube = api_kube
    assert await kube.get_lease("default", "l") is None
    lease = await kube.create_lease("default", "l", {"holderIdentity": "a"})
    with pytest.raises(Conflict):
        await kube.create_lease("default", "l", {"holderIdentity": "b"})
    updated = await kube.update_lease(lease, {"holderIdentity": "b"})
    assert updated["spec"]["holderIdentity"] == "b"
    with pytest.raises(Conflict):  # still at the first resourceVersion
        await kube.update_lease(lease, {"holderIdentity": "c"})
    assert (await kube.get(LEASE, "default", "l"))["spec"]["holderIdentity"] == "b"


async def test_status_patch_and_event(api_kube: Any) -> None:
    _api, kube = api_kube
    ing = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ingressClassName": "shardgate", "rules": []},
    }
    created = await kube.create(INGRESS, "default", ing)
    await kube.patch_ingress_status("default", "web", {"ingress": [{"ip": "10.0.0.1"}]})
    got = await kube.get(INGRESS, "default", "web")
    assert got["status"]["loadBalancer"]["ingress"] == [{"ip": "10.0.0.1"}]
    await kube.patch_ingress_status("default", "web", {"ingress": None})
    got = await kube.get(INGRESS, "default", "web")
    assert not (got.get("status") or {}).get("loadBalancer", {}).get("ingress")
    event = await kube.create_event(created, "Rejected", "rule[0]: no host", "test", "2024-01-01T00:00:00Z")
    assert event["involvedObject"]["name"] == "web" and event["reason"] == "Rejected"
    with pytest.raises(NotFound):
        await kube.patch_ingress_status("default", "missing", {"ingress": None})


async def test_unreachable_server_is_transient(tmp_path: Any) -> None:
    api = ApiServer()
    await api.start()
    path = api.write_kubeconfig(tmp_path / "kubeconfig")
    await api.stop()
    kube = await KubeClient.connect(str(path), retries=2)
    try:
        with pytest.raises(Transient):
            await kube.list_raw(SERVICE)
    finally:
        await kube.close()


async def test_a_transient_failure_is_retried_and_the_attempts_are_bounded() -> None:
    calls: list[int] = []

    async def flaky(fail_first: int) -> str:
        calls.append(1)
        if len(calls) <= fail_first:
            raise Transient("connection reset")
        return "ok"

    kube = KubeClient(cast(Any, None), retries=3)
    assert await kube._retrying(lambda: flaky(2)) == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(Transient):
        await kube._retrying(lambda: flaky(5))
    assert len(calls) == 3  # `retries` attempts in all, the first one included
    calls.clear()
    with pytest.raises(Transient):
        await KubeClient(cast(Any, None), retries=1)._retrying(lambda: flaky(5))
    assert len(calls) == 1


@pytest.mark.parametrize("proxy", [None, "HTTPS_PROXY", "http_proxy"])
async def test_the_environment_is_consulted_per_request_only_for_a_proxy(
    monkeypatch: pytest.MonkeyPatch, proxy: str | None
) -> None:
    from kubernetes_asyncio.client import ApiClient, Configuration

    from shardgate.adapters.kube import _PROXY_VARIABLES, _without_env_lookups

    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    if proxy:
        monkeypatch.setenv(proxy, "http://proxy.example:3128")
    api = ApiClient(Configuration())
    try:
        _without_env_lookups(api)
        assert api.rest_client.pool_manager._trust_env is (proxy is not None)
    finally:
        await api.close()
