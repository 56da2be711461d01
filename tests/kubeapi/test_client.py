"""kubernetes-asyncio against the stand-in: the calls the watcher service makes."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from shardgate.kubeapi.server import ApiServer


def ingress(name: str, host: str, namespace: str = "shop", **labels: str) -> Any:
    """A manifest as a dict (the client accepts dicts where its stubs say models)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "rules": [
                {
                    "host": host,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "web", "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ]
        },
    }


async def test_list_pages_with_limit_and_continue(k8s: client.ApiClient) -> None:
    net = client.NetworkingV1Api(k8s)
    for i in range(25):
        await net.create_namespaced_ingress("shop", ingress(f"ing-{i:02d}", f"h{i}.example.com"))
    first = await net.list_namespaced_ingress("shop", limit=10)
    names = [i.metadata.name for i in first.items]
    token = first.metadata._continue
    assert token and first.metadata.remaining_item_count == 15
    list_rv = first.metadata.resource_version

    # Writes between pages do not show up: pages are consistent at the first page's version.
    await net.create_namespaced_ingress("shop", ingress("ing-00a", "late.example.com"))
    await net.delete_namespaced_ingress("ing-24", "shop")
    while token:
        page = await net.list_namespaced_ingress("shop", limit=10, _continue=token)
        assert page.metadata.resource_version == list_rv
        names += [i.metadata.name for i in page.items]
        token = page.metadata._continue
    assert names == [f"ing-{i:02d}" for i in range(25)]

    everything = await net.list_ingress_for_all_namespaces()
    assert len(everything.items) == 25 and int(everything.metadata.resource_version) > int(list_rv)


async def test_watch_from_resource_version_gets_exactly_later_events(
    k8s: client.ApiClient,
) -> None:
    net = client.NetworkingV1Api(k8s)
    await net.create_namespaced_ingress("shop", ingress("before", "a.example.com"))
    rv = (await net.list_namespaced_ingress("shop")).metadata.resource_version
    await net.create_namespaced_ingress("shop", ingress("after", "b.example.com"))
    await net.patch_namespaced_ingress("before", "shop", {"metadata": {"labels": {"x": "1"}}})
    await net.delete_namespaced_ingress("after", "shop")

    seen = []
    w = watch.Watch()
    async for event in w.stream(net.list_namespaced_ingress, "shop", resource_version=rv, timeout_seconds=1):
        seen.append((event["type"], event["object"].metadata.name))
    assert seen == [("ADDED", "after"), ("MODIFIED", "before"), ("DELETED", "after")]


async def test_watch_without_resource_version_starts_with_current_objects(
    k8s: client.ApiClient,
) -> None:
    net = client.NetworkingV1Api(k8s)
    await net.create_namespaced_ingress("shop", ingress("one", "a.example.com"))
    seen: list[tuple[str, str]] = []
    w = watch.Watch()

    async def later() -> None:
        await asyncio.sleep(0.2)
        await net.create_namespaced_ingress("shop", ingress("two", "b.example.com"))

    task = asyncio.create_task(later())
    async for event in w.stream(net.list_namespaced_ingress, "shop", timeout_seconds=1):
        seen.append((event["type"], event["object"].metadata.name))
    await task
    assert seen == [("ADDED", "one"), ("ADDED", "two")]


async def test_bookmarks_arrive_and_carry_the_latest_version(k8s: client.ApiClient) -> None:
    net = client.NetworkingV1Api(k8s)
    created = await net.create_namespaced_ingress("shop", ingress("one", "a.example.com"))
    w = watch.Watch()
    bookmarks = []
    async for event in w.stream(
        net.list_namespaced_ingress,
        "shop",
        resource_version=created.metadata.resource_version,
        allow_watch_bookmarks=True,
        timeout_seconds=1,
    ):
        if event["type"] == "BOOKMARK":
            bookmarks.append(event["raw_object"])
    assert len(bookmarks) >= 3  # every 0.2 s in the tests' config
    assert bookmarks[-1]["kind"] == "Ingress"
    assert bookmarks[-1]["metadata"]["resourceVersion"] == created.metadata.resource_version
    assert w.resource_version == created.metadata.resource_version


async def test_watch_from_compacted_version_raises_410(api: ApiServer, k8s: client.ApiClient) -> None:
    net = client.NetworkingV1Api(k8s)
    old = (await net.create_namespaced_ingress("shop", ingress("one", "a.example.com"))).metadata
    await net.create_namespaced_ingress("shop", ingress("two", "b.example.com"))
    api.store.compact()

    with pytest.raises(ApiException) as info:
        async for _ in watch.Watch().stream(
            net.list_namespaced_ingress,
            "shop",
            resource_version=old.resource_version,
            timeout_seconds=5,
        ):
            pass
    assert info.value.status == 410
    # Without timeout_seconds the client retries once with the same version, then raises too.
    with pytest.raises(ApiException) as info:
        async for _ in watch.Watch().stream(
            net.list_namespaced_ingress, "shop", resource_version=old.resource_version
        ):
            pass
    assert info.value.status == 410


async def test_open_watch_expired_by_compaction(
    api: ApiServer, k8s: client.ApiClient, http: aiohttp.ClientSession
) -> None:
    net = client.NetworkingV1Api(k8s)
    created = await net.create_namespaced_ingress("shop", ingress("one", "a.example.com"))
    stream = watch.Watch().stream(
        net.list_namespaced_ingress,
        "shop",
        resource_version=created.metadata.resource_version,
        timeout_seconds=5,
    )

    async def compact_soon() -> None:
        await asyncio.sleep(0.2)
        async with http.post("/_stand-in/compact?expireWatchers=true") as response:
            assert response.status == 200

    task = asyncio.create_task(compact_soon())
    with pytest.raises(ApiException) as info:
        async for _ in stream:
            pass
    await task
    assert info.value.status == 410


async def test_status_patch_changes_only_status(k8s: client.ApiClient) -> None:
    net = client.NetworkingV1Api(k8s)
    created = await net.create_namespaced_ingress("shop", ingress("one", "a.example.com"))
    assert created.metadata.generation == 1
    lb = {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}
    patched = await net.patch_namespaced_ingress_status(
        "one",
        "shop",
        {"status": lb, "spec": {"ingressClassName": "sneaky"}, "metadata": {"labels": {"a": "b"}}},
    )
    assert patched.status.load_balancer.ingress[0].ip == "192.0.2.10"
    assert patched.spec.ingress_class_name is None
    assert patched.metadata.labels in (None, {})
    assert patched.metadata.generation == 1
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)

    # And a main-resource write cannot change status, but does bump generation on spec.
    spec_patch = {"spec": {"ingressClassName": "shardgate"}, "status": {"loadBalancer": {}}}
    main = await net.patch_namespaced_ingress("one", "shop", spec_patch)
    assert main.status.load_balancer.ingress[0].ip == "192.0.2.10"
    assert main.spec.ingress_class_name == "shardgate"
    assert main.metadata.generation == 2

    read = await net.read_namespaced_ingress_status("one", "shop")
    assert read.status.load_balancer.ingress[0].ip == "192.0.2.10"


async def test_update_with_stale_resource_version_conflicts(k8s: client.ApiClient) -> None:
    net = client.NetworkingV1Api(k8s)
    created = await net.create_namespaced_ingress("shop", ingress("one", "a.example.com"))
    fresh = await net.read_namespaced_ingress("one", "shop")
    fresh.spec.rules[0].host = "b.example.com"
    updated = await net.replace_namespaced_ingress("one", "shop", fresh)
    assert updated.metadata.generation == 2

    created.spec.rules[0].host = "c.example.com"  # still carries the first resourceVersion
    with pytest.raises(ApiException) as info:
        await net.replace_namespaced_ingress("one", "shop", created)
    assert info.value.status == 409
    assert '"reason":"Conflict"' in str(info.value.body)

    with pytest.raises(ApiException) as info:
        await net.create_namespaced_ingress("shop", ingress("one", "a.example.com"))
    assert info.value.status == 409 and '"reason":"AlreadyExists"' in str(info.value.body)


async def test_core_kinds_and_leases(k8s: client.ApiClient) -> None:
    core = client.CoreV1Api(k8s)
    secret: Any = {"metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "data": {"a": "Yg=="}}
    await core.create_namespaced_secret("shop", secret)
    assert (await core.read_namespaced_secret("tls", "shop")).data == {"a": "Yg=="}
    assert {n.metadata.name for n in (await core.list_namespace()).items} == {"default", "shop"}

    leases = client.CoordinationV1Api(k8s)
    manifest: Any = {"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a"}}
    lease = await leases.create_namespaced_lease("shop", manifest)
    lease.spec.holder_identity = "b"
    renewed = await leases.replace_namespaced_lease("leader", "shop", lease)
    assert renewed.spec.holder_identity == "b" and renewed.metadata.generation == 2

    with pytest.raises(ApiException) as info:
        await leases.read_namespaced_lease("missing", "shop")
    assert info.value.status == 404
