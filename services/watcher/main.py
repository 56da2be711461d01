"""`python -m shardgate.watcher`: follow the cluster, publish exact per-unit deltas while leading."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence

from shardgate.adapters.jetstream import DeltaBus
from shardgate.adapters.kube import KubeClient
from shardgate.telemetry import setup_tracing, shutdown_tracing

from .service import Watcher
from .settings import Settings
from .store import RedisIndexStore


async def run(settings: Settings) -> None:
    kube = await KubeClient.connect(settings.kubeconfig)
    bus = await DeltaBus.connect(settings.nats_url, settings.shards, settings.stream, name=settings.identity)
    store = RedisIndexStore.from_url(settings.redis_url, settings.index_key, settings.hosts_key)
    task = asyncio.create_task(Watcher(settings, kube, bus, store).run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        with contextlib.suppress(Exception):
            await bus.close()
        await store.close()
        await kube.close()


def main(argv: Sequence[str] | None = None) -> None:
    settings = Settings.load(argv)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    setup_tracing("shardgate-watcher")
    try:
        asyncio.run(run(settings))
    finally:
        shutdown_tracing()
