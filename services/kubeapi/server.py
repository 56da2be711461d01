"""Starting and stopping the stand-in, in-process (tests) or as a program (``__main__``).

In a test::

    async with ApiServer(ServerConfig(bookmark_interval=0.2)) as api:   # port 0: a free port
        api.url                    # "http://127.0.0.1:<port>"
        api.store.compact()        # direct access to the in-memory store
        api.write_kubeconfig(tmp_path / "kubeconfig")

kubectl talks plain HTTP with no credentials to the URL written in the kubeconfig.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from aiohttp import web

from shardgate.kubeapi.kinds import KindTable
from shardgate.kubeapi.routes import Routes
from shardgate.kubeapi.store import Store


@dataclass
class ServerConfig:
    history_size: int = 10_000
    """Events kept for watches to resume from; older resourceVersions get 410 Expired. Large
    enough that a watcher that reconnects promptly never sees it; tests force it with compact()."""
    bookmark_interval: float = 1.0
    """Seconds between BOOKMARK events on watches that allow them. The real server sends one about
    every minute; a second keeps tests quick and costs one small line per watch per second."""
    watch_queue_size: int = 100_000
    """Events a watcher may have unread before its stream is closed (a stuck consumer)."""
    list_snapshots: int = 64
    """Paged lists whose continue tokens stay valid; older tokens get 410 Expired."""
    auto_create_namespaces: bool = True
    """Create a missing Namespace on first use instead of answering 404 as the real server does:
    tests and the local stack then need not create namespaces first."""
    serve_openapi: bool = True
    """Serve /openapi/v2 and /v3 (see openapi.py). Off, kubectl needs ``--validate=false``."""
    namespace_grace: float = 0.5
    """Seconds a deleted, non-empty Namespace stays Terminating before it and its objects go."""
    namespaces: tuple[str, ...] = field(default=("default",))
    """Namespaces that exist from the start, as in a fresh cluster."""

    def make_store(self) -> Store:
        store = Store(
            KindTable(),
            history_size=self.history_size,
            watch_queue_size=self.watch_queue_size,
            snapshots=self.list_snapshots,
            auto_create_namespaces=self.auto_create_namespaces,
            defer=_call_later,
            namespace_grace=self.namespace_grace,
        )
        ns_kind = store.kinds.namespace_kind
        for name in self.namespaces:
            store.create(ns_kind, None, {"metadata": {"name": name}})
        return store


def _call_later(delay: float, callback: Callable[[], None]) -> object:
    return asyncio.get_running_loop().call_later(delay, callback)


def write_kubeconfig(path: str | Path, server_url: str, *, context: str = "shardgate-kubeapi") -> Path:
    """Write a kubeconfig with one cluster at ``server_url``, a credential-less user, and a
    current context joining them."""
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server_url}}],
        "users": [{"name": context, "user": {}}],
        "contexts": [
            {
                "name": context,
                "context": {"cluster": context, "user": context, "namespace": "default"},
            }
        ],
        "current-context": context,
        "preferences": {},
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


class ApiServer:
    """The stand-in API server on one aiohttp site."""

    def __init__(self, config: ServerConfig | None = None, *, store: Store | None = None) -> None:
        self.config = config or ServerConfig()
        self.store = store or self.config.make_store()
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        Routes(
            self.store,
            bookmark_interval=self.config.bookmark_interval,
            serve_openapi=self.config.serve_openapi,
        ).install(self.app)
        self._runner: web.AppRunner | None = None
        self.host = ""
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 picks a free port); returns the URL."""
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.host, self.port = host, int(sockets[0].getsockname()[1])
        return self.url

    async def stop(self) -> None:
        self.store.close_watchers()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def write_kubeconfig(self, path: str | Path) -> Path:
        return write_kubeconfig(path, self.url)

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    config: ServerConfig | None = None,
    *,
    kubeconfig: str | Path | None = None,
) -> None:
    """Run until cancelled. Prints the URL on one line once listening, for a parent process."""
    server = ApiServer(config)
    url = await server.start(host, port)
    if kubeconfig is not None:
        server.write_kubeconfig(kubeconfig)
    print(f"shardgate kubeapi listening on {url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
