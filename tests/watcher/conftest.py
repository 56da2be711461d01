"""Fixtures for the watcher's integration tests: the in-process API stand-in, real NATS and Redis,
a reader of every delta in the stream, and running watchers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shardgate.adapters.jetstream import DeltaBus
from shardgate.adapters.kube import KubeClient
from shardgate.kubeapi.server import ApiServer, ServerConfig
from shardgate.local.servers import NatsServer, RedisServer
from shardgate.records import Delta
from shardgate.watcher.service import Watcher
from shardgate.watcher.settings import Settings
from shardgate.watcher.store import RedisIndexStore

STATUS_ADDRESS = "10.9.8.7"


async def wait_until(pred: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_for(fn: Callable[[], Awaitable[bool]], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await fn():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Published:
    subject: str
    delta: Delta
    traceparent: str


@dataclass
class DeltaLog:
    """Every message in the delta stream, in stream order, read with nats-py directly."""

    messages: list[Published] = field(default_factory=list)
    seen: int = 0  # how many a test has already looked at

    async def on_msg(self, msg: Msg) -> None:
        headers = msg.headers or {}
        self.messages.append(Published(msg.subject, Delta.decode(msg.data), headers.get("traceparent", "")))

    def new(self) -> list[Published]:
        """The messages since the last call."""
        out = self.messages[self.seen :]
        self.seen = len(self.messages)
        return out


@dataclass
class Env:
    api: ApiServer
    kubeconfig: Path
    kube: KubeClient
    nats: NatsServer
    redis: RedisServer
    log: DeltaLog
    settings: Settings
    js: JetStreamContext


@pytest.fixture
async def env(
    tmp_path: Path, nats_server: NatsServer, redis_server: RedisServer, spans: InMemorySpanExporter
) -> AsyncIterator[Env]:
    api = ApiServer(ServerConfig(bookmark_interval=0.1))
    await api.start()
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    kube = await KubeClient.connect(str(kubeconfig))
    # Create the stream before anyone reads it (the watchers' DeltaBus would too).
    bus = await DeltaBus.connect(nats_server.url)
    await bus.close()
    nc = await nats.connect(nats_server.url)
    log = DeltaLog()
    js = nc.jetstream()
    sub = await js.subscribe("sg.delta.>", cb=log.on_msg, ordered_consumer=True)
    settings = Settings(
        kubeconfig=str(kubeconfig),
        nats_url=nats_server.url,
        redis_url=redis_server.url,
        lease_duration=2.0,
        renew_deadline=1.5,
        retry_period=0.25,
        status_address=STATUS_ADDRESS,
        watch_timeout=60,
        workers=4,
    )
    try:
        yield Env(api, kubeconfig, kube, nats_server, redis_server, log, settings, js)
    finally:
        await sub.unsubscribe()
        await nc.close()
        await kube.close()
        await api.stop()


@dataclass
class Running:
    watcher: Watcher
    task: asyncio.Task[None]
    closers: list[Callable[[], Awaitable[Any]]]

    async def stop(self) -> None:
        if not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        for close in self.closers:
            with contextlib.suppress(Exception):
                await close()
        self.closers.clear()


StartWatcher = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_watcher(env: Env) -> AsyncIterator[StartWatcher]:
    running: list[Running] = []

    async def start(identity: str = "w1", **overrides: Any) -> Running:
        settings = replace(env.settings, identity=identity, **overrides)
        kube = await KubeClient.connect(settings.kubeconfig)
        bus = await DeltaBus.connect(settings.nats_url, settings.shards, settings.stream, name=identity)
        store = RedisIndexStore.from_url(settings.redis_url, settings.index_key, settings.hosts_key)
        watcher = Watcher(settings, kube, bus, store)
        task = asyncio.create_task(watcher.run(), name=f"watcher-{identity}")
        r = Running(watcher, task, [watcher_close(bus), store.close, kube.close])
        running.append(r)
        return r

    yield start
    for r in running:
        await r.stop()


def watcher_close(bus: DeltaBus) -> Callable[[], Awaitable[None]]:
    return bus.close


async def settle(env: Env, *watchers: Watcher, timeout: float = 15.0) -> None:
    """Wait until every watcher has seen everything the API server holds now, has published all of it,
    and the delta log has read every message in the stream."""
    target = env.api.store.resource_version

    def caught_up() -> bool:
        for w in watchers:
            if len(w.seen_rv) < 5 or any(int(seen or 0) < target for seen in w.seen_rv.values()):
                return False
            if not w.idle():
                return False
        return True

    await wait_until(caught_up, timeout, "the watchers to catch up")

    async def all_read() -> bool:
        info = await env.js.stream_info("SHARDGATE")
        return len(env.log.messages) >= info.state.messages

    await wait_for(all_read, timeout, "the delta log to read the stream")
