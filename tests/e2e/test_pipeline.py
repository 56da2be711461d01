"""End to end through real Envoy with real HTTP: kubectl → watcher → NATS → compilers → Redis → pusher."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from .conftest import E2E, eventually

pytestmark = pytest.mark.e2e


def shop_ingress(api_backend: str) -> str:
    return f"""
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: shop, namespace: shop}}
spec:
  ingressClassName: shardgate
  rules:
  - host: shop.example.com
    http:
      paths:
      - {{path: /cart, pathType: Exact, backend: {{service: {{name: echo-a, port: {{number: 80}}}}}}}}
      - {{path: /api, pathType: Prefix, backend: {{service: {{name: {api_backend}, port: {{name: http}}}}}}}}
  - host: admin.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: echo-b, port: {{number: 80}}}}}}}}
"""


async def test_apply_change_delete(e2e: E2E) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

        async def answered_by(host: str, path: str, name: str) -> bool:
            status, body = await e2e.get(http, host, path)
            return status == 200 and body["name"] == name and body["path"] == path

        e2e.apply(shop_ingress(api_backend="echo-b"))
        # Each host is its own unit (possibly on another shard): each activates on its own.
        await eventually(lambda: answered_by("shop.example.com", "/cart", "echo-a"), what="Exact /cart")
        await eventually(lambda: answered_by("admin.example.com", "/anything", "echo-b"), what="admin /")
        assert await answered_by("shop.example.com", "/api", "echo-b")
        assert await answered_by("shop.example.com", "/api/items/7", "echo-b")
        # Host matching ignores the port in the Host header.
        assert await answered_by("shop.example.com:8080", "/cart", "echo-a")
        # Exact means exact; Prefix is element-wise.
        assert (await e2e.get(http, "shop.example.com", "/cart/"))[0] == 404
        assert (await e2e.get(http, "shop.example.com", "/apix"))[0] == 404
        assert (await e2e.get(http, "unknown.example.com", "/cart"))[0] == 404

        # The admitted Ingress gets its status written back.
        async def status_written() -> bool:
            ingress = json.loads(e2e.kubectl("get", "ingress", "shop", "-n", "shop", "-o", "json"))
            return ingress.get("status", {}).get("loadBalancer", {}).get("ingress") == [{"ip": "127.0.0.1"}]

        await eventually(status_written, what="status.loadBalancer written")

        # Changing one path's backend moves that path's traffic, and only that path's.
        e2e.apply(shop_ingress(api_backend="echo-a"))
        await eventually(
            lambda: answered_by("shop.example.com", "/api/items", "echo-a"), what="backend change"
        )
        assert await answered_by("admin.example.com", "/", "echo-b")

        e2e.kubectl("delete", "ingress", "shop", "-n", "shop")

        async def gone(host: str) -> bool:
            return (await e2e.get(http, host, "/cart"))[0] == 404

        await eventually(lambda: gone("shop.example.com"), what="shop 404 after delete")
        await eventually(lambda: gone("admin.example.com"), what="admin 404 after delete")


async def test_one_change_is_one_trace_through_every_service(e2e: E2E) -> None:
    host = "traced.example.com"
    e2e.apply(
        f"""
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: traced, namespace: shop}}
spec:
  ingressClassName: shardgate
  rules:
  - host: {host}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: echo-a, port: {{number: 80}}}}}}}}
"""
    )
    trace: dict[str, object] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

        async def complete() -> bool:
            async with http.get(f"{e2e.otlp_http}/traces", params={"host": host}) as resp:
                if resp.status != 200:
                    return False
                trace.update(await resp.json())
            names = {s["name"] for s in trace["spans"]}  # type: ignore[attr-defined]
            return {"watcher.event", "compiler.apply", "pusher.relay", "envoy.ack"} <= names

        await eventually(complete, timeout=30, what="a trace with every stage")
    spans = trace["spans"]
    assert isinstance(spans, list)
    assert len({s["trace_id"] for s in spans}) == 1
    services = {s["service"] for s in spans}
    assert {"shardgate-watcher", "shardgate-compiler", "shardgate-pusher"} <= services
    ack = next(s for s in spans if s["name"] == "envoy.ack")
    first = min(s["start_ns"] for s in spans)
    assert ack["end_ns"] >= max(s["start_ns"] for s in spans) >= first


async def test_killing_a_compiler_mid_burst_loses_nothing(e2e: E2E) -> None:
    count = 500
    hosts = [f"burst-{i}.example.com" for i in range(count)]

    def ingress(i: int) -> dict[str, object]:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": f"burst-{i}", "namespace": "shop"},
            "spec": {
                "ingressClassName": "shardgate",
                "rules": [
                    {
                        "host": hosts[i],
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "echo-b", "port": {"number": 80}}},
                                }
                            ]
                        },
                    }
                ],
            },
        }

    url = f"{e2e.kubeapi}/apis/networking.k8s.io/v1/namespaces/shop/ingresses"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        a_fifth_done = asyncio.Event()

        async def create_all() -> None:
            for i in range(count):
                async with http.post(url, json=ingress(i)) as resp:
                    assert resp.status == 201, await resp.text()
                if i == count // 5:
                    a_fifth_done.set()

        burst = asyncio.create_task(create_all())
        await a_fifth_done.wait()
        e2e.stack.members["compiler-1"].server.stop(kill=True)
        await burst

        pending = set(hosts)

        async def all_served() -> bool:
            for host in sorted(pending)[:100]:
                status, body = await e2e.get(http, host, "/")
                if status == 200 and body["name"] == "echo-b" and body["host"] == host:
                    pending.discard(host)
            return not pending

        await eventually(all_served, timeout=120, what=f"all {count} burst hosts served")
