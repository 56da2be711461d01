"""One local stack per e2e module: real nats-server, redis-server, Envoy, API stand-in, our services."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shardgate.local.procs import PythonService
from shardgate.local.servers import free_port
from shardgate.local.stack import Stack, StackOptions

pytestmark = pytest.mark.e2e


def kubectl_binary() -> str:
    local = Path(sys.executable).parent / "kubectl"
    return str(local) if local.exists() else (shutil.which("kubectl") or "kubectl")


class E2E:
    def __init__(self, stack: Stack, echoes: dict[str, int]) -> None:
        self.stack = stack
        self.echoes = echoes
        self.gateway = f"http://127.0.0.1:{stack.port['gateway']}"
        self.kubeapi = f"http://127.0.0.1:{stack.port['kubeapi']}"
        self.otlp_http = f"http://127.0.0.1:{stack.port['otlp_http']}"

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        cmd = [kubectl_binary(), "--kubeconfig", str(self.stack.kubeconfig), *args]
        done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def apply(self, yaml_text: str) -> str:
        return self.kubectl("apply", "-f", "-", stdin=yaml_text)

    async def get(self, session: aiohttp.ClientSession, host: str, path: str) -> tuple[int, Any]:
        async with session.get(self.gateway + path, headers={"Host": host}) as resp:
            body = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, body


def backend_yaml(name: str, port: int) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: shop
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
"""


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    workdir = tmp_path_factory.mktemp("stack")
    stack = Stack(StackOptions(directory=workdir, shards=16), log=lambda m: None)
    echoes: dict[str, int] = {}
    services: list[PythonService] = []
    try:
        stack.start()
        for name in ("echo-a", "echo-b"):
            port = free_port()
            svc = PythonService(
                name, workdir / name, "shardgate.cli",
                args=["echo", "--name", name, "--port", str(port)], ready_ports=[port],
            )  # fmt: skip
            svc.start()
            services.append(svc)
            echoes[name] = port
        env = E2E(stack, echoes)
        env.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
        env.apply("\n---\n".join(backend_yaml(n, p) for n, p in echoes.items()))
        yield env
    finally:
        for svc in services:
            svc.stop(kill=True)
        stack.stop()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0, what: str = "") -> None:
    """Poll until `check` holds; the bound only stops a broken pipeline from hanging the suite."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            if await check():
                return
        except (TimeoutError, aiohttp.ClientError):
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what}")
        await asyncio.sleep(0.05)
