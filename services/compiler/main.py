"""`python -m shardgate.compiler`: join the compilers, own some shards, compile their deltas."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from shardgate.adapters.jetstream import DeltaBus
from shardgate.adapters.store import ShardStore
from shardgate.telemetry import setup_tracing, shutdown_tracing
from shardgate.xds import compile_unit

from .ownership import Ownership
from .settings import Settings


async def run(settings: Settings) -> None:
    bus = await DeltaBus.connect(settings.nats_url, settings.shards, name=f"compiler-{settings.worker_id}")
    store = ShardStore.from_url(settings.redis_url, settings.log_cap)
    ownership = Ownership(settings, bus, store, compile_unit)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ownership.stop)
    try:
        await ownership.run()
    finally:
        with contextlib.suppress(Exception):
            await bus.close()
        await store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="shardgate-compiler", description=__doc__)
    parser.add_argument("--worker-id", help="overrides SHARDGATE_WORKER_ID")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.worker_id:
        settings = Settings(**{**settings.__dict__, "worker_id": args.worker_id})
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    setup_tracing("shardgate-compiler")
    try:
        asyncio.run(run(settings))
    finally:
        shutdown_tracing()
