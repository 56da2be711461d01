"""The stock kubectl against the stand-in: the commands people and scripts actually run."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shardgate.kubeapi.server import ApiServer, ServerConfig

from .conftest import KUBECTL, Kubectl

MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: shardgate
spec:
  controller: shardgate.io/controller
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: shop
  labels: {team: storefront}
spec:
  ingressClassName: shardgate
  rules:
  - host: a.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
  - host: b.example.com
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, port: 8080, protocol: TCP}
endpoints:
- addresses: ["10.0.0.1"]
"""

EVENT = """\
apiVersion: v1
kind: Event
metadata: {name: web.17f1, namespace: shop}
involvedObject: {kind: Ingress, name: web, namespace: shop, apiVersion: networking.k8s.io/v1}
reason: HostConflict
message: host b.example.com is claimed by another Ingress
type: Warning
source: {component: shardgate}
count: 1
"""


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


async def test_apply_get_reapply_delete(kubectl: Kubectl, tmp_path: Path) -> None:
    first = _write(tmp_path, "shop.yaml", MANIFEST)
    out = (await kubectl("apply", "-f", first)).out
    for line in (
        "namespace/shop created",
        "service/web created",
        "ingressclass.networking.k8s.io/shardgate created",
        "ingress.networking.k8s.io/web created",
        "endpointslice.discovery.k8s.io/web-1 created",
    ):
        assert line in out

    table = (await kubectl("get", "ingress", "-A")).out.splitlines()
    assert table[0].split() == ["NAMESPACE", "NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    assert table[1].split()[:4] == ["shop", "web", "shardgate", "a.example.com,b.example.com"]

    ing = (await kubectl("get", "ing", "web", "-n", "shop", "-o", "json")).json()
    assert ing["kind"] == "Ingress" and ing["apiVersion"] == "networking.k8s.io/v1"
    assert [r["host"] for r in ing["spec"]["rules"]] == ["a.example.com", "b.example.com"]
    assert ing["metadata"]["generation"] == 1
    assert ing["metadata"]["uid"] and int(ing["metadata"]["resourceVersion"]) > 0
    assert ing["metadata"]["labels"] == {"team": "storefront"}
    assert "kubectl.kubernetes.io/last-applied-configuration" in ing["metadata"]["annotations"]

    changed = MANIFEST.replace("b.example.com", "c.example.com").replace("port: 80\n", "port: 81\n")
    out = (await kubectl("apply", "-f", _write(tmp_path, "shop2.yaml", changed))).out
    assert "ingress.networking.k8s.io/web configured" in out
    assert "service/web configured" in out
    assert "namespace/shop unchanged" in out
    ing2 = (await kubectl("get", "ing", "web", "-n", "shop", "-o", "json")).json()
    assert [r["host"] for r in ing2["spec"]["rules"]] == ["a.example.com", "c.example.com"]
    assert ing2["metadata"]["generation"] == 2
    assert ing2["metadata"]["uid"] == ing["metadata"]["uid"]
    svc = (await kubectl("get", "svc", "web", "-n", "shop", "-o", "json")).json()
    assert svc["spec"]["ports"] == [{"name": "http", "port": 81, "targetPort": 8080}]

    # Deleting the file deletes the Namespace first; like the real server it stays Terminating
    # for a moment, so the deletes of its contents still succeed.
    out = (await kubectl("delete", "-f", first)).out
    assert 'ingress.networking.k8s.io "web" deleted' in out
    missing = await kubectl("get", "ingress", "web", "-n", "shop", check=False)
    # kubectl 1.37 reports the missing namespace rather than the missing object.
    assert missing.rc == 1 and "(NotFound)" in missing.err
    gone = await kubectl("get", "namespace", "shop", check=False)
    assert gone.rc == 1 and "not found" in gone.err


async def test_server_side_apply(kubectl: Kubectl, tmp_path: Path) -> None:
    path = _write(tmp_path, "shop.yaml", MANIFEST)
    out = (await kubectl("apply", "--server-side", "-f", path)).out
    assert "ingress.networking.k8s.io/web serverside-applied" in out
    changed = MANIFEST.replace("a.example.com", "z.example.com")
    await kubectl("apply", "--server-side", "-f", _write(tmp_path, "shop2.yaml", changed))
    ing = (await kubectl("get", "ing", "web", "-n", "shop", "-o", "json")).json()
    assert ing["spec"]["rules"][0]["host"] == "z.example.com"
    assert ing["metadata"]["generation"] == 2


async def test_describe_and_events(kubectl: Kubectl, tmp_path: Path) -> None:
    await kubectl("apply", "-f", _write(tmp_path, "shop.yaml", MANIFEST))
    uid = (await kubectl("get", "ing", "web", "-n", "shop", "-o", "jsonpath={.metadata.uid}")).out
    event = EVENT.replace(
        "apiVersion: networking.k8s.io/v1}", f"apiVersion: networking.k8s.io/v1, uid: {uid}}}"
    )
    await kubectl("create", "-f", _write(tmp_path, "event.yaml", event))

    described = (await kubectl("describe", "ingress", "web", "-n", "shop")).out
    assert "a.example.com" in described and "Ingress Class:    shardgate" in described
    assert "HostConflict" in described and "claimed by another Ingress" in described

    events = (await kubectl("get", "events", "-n", "shop")).out
    assert "HostConflict" in events and "ingress/web" in events
    assert "HostConflict" in (await kubectl("get", "events", "-A")).out


async def test_get_plain_kinds_and_short_names(kubectl: Kubectl, tmp_path: Path) -> None:
    await kubectl("apply", "-f", _write(tmp_path, "shop.yaml", MANIFEST))
    out = (await kubectl("get", "svc,endpointslices,ingressclass", "-A")).out
    assert "service/web" in out and "endpointslice.discovery.k8s.io/web-1" in out
    assert "ingressclass.networking.k8s.io/shardgate" in out
    names = (await kubectl("get", "ns", "-o", "name")).out.split()
    assert names == ["namespace/default", "namespace/shop"]
    labelled = (await kubectl("get", "ing", "-A", "-l", "team=storefront", "-o", "name")).out
    assert labelled.split() == ["ingress.networking.k8s.io/web"]


async def test_watch_output(api: ApiServer, kubectl: Kubectl, tmp_path: Path) -> None:
    """``kubectl get -w`` keeps printing as objects change."""
    await kubectl("apply", "-f", _write(tmp_path, "shop.yaml", MANIFEST))
    watch = asyncio.create_task(
        kubectl("get", "ing", "-n", "shop", "-w", "--request-timeout=2s", check=False)
    )
    await asyncio.sleep(0.5)
    await kubectl("label", "ing", "web", "-n", "shop", "stage=two")
    result = await watch
    assert result.out.count("web") >= 2, result


async def test_without_openapi_kubectl_needs_validate_false(tmp_path: Path) -> None:
    """Why openapi.py exists: with /openapi/* answering 404, default apply refuses to run."""
    server = ApiServer(ServerConfig(serve_openapi=False))
    await server.start()
    try:
        path = _write(tmp_path, "shop.yaml", MANIFEST)
        config = server.write_kubeconfig(tmp_path / "kubeconfig")
        base = [str(KUBECTL), "--kubeconfig", str(config), "--cache-dir", str(tmp_path / "c")]

        async def run(*args: str) -> tuple[int, str]:
            proc = await asyncio.create_subprocess_exec(
                *base, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            return proc.returncode or 0, out.decode()

        rc, out = await run("apply", "-f", path)
        assert rc != 0 and "failed to download openapi" in out
        rc, out = await run("apply", "--validate=false", "-f", path)
        assert rc == 0 and "ingress.networking.k8s.io/web created" in out
    finally:
        await server.stop()
