"""`python -m shardgate.pusher`: load every shard's fragments, follow changes, serve Envoy over ADS."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from prometheus_client import start_http_server

from shardgate.adapters.jetstream import DeltaBus
from shardgate.adapters.store import ShardStore
from shardgate.records import Resource
from shardgate.telemetry import setup_tracing, shutdown_tracing
from shardgate.xds.listeners import http_connection_manager, static_resources
from shardgate.xds.tls import HTTPS_LISTENER, https_listener_resource

from .cache import ResourceCache
from .follower import Follower
from .server import serve_ads
from .settings import Settings

log = logging.getLogger(__name__)


def gateway_listeners(settings: Settings) -> tuple[Resource, ...]:
    """The listeners every gateway gets: HTTP, and HTTPS with certificates chosen by SNI."""
    https = https_listener_resource(
        http_connection_manager(HTTPS_LISTENER, https=True),
        settings.gateway_http_address,
        settings.gateway_https_port,
        settings.tls_prefetch,
    )
    return (*static_resources(settings.gateway_http_address, settings.gateway_http_port), https)


async def run(settings: Settings) -> None:
    cache = ResourceCache(gateway_listeners(settings), shards=settings.shards)
    bus = await DeltaBus.connect(settings.nats_url, settings.shards, name="pusher")
    store = ShardStore.from_url(settings.redis_url)
    follower = Follower(store, bus, cache, settings.shards, settings.resync_s)
    await follower.start()
    host, _, port = settings.xds_addr.rpartition(":")
    server = await serve_ads(cache, host, int(port), max_wildcard_sni=settings.max_wildcard_sni)
    log.info("serving ADS on %s with %d units", settings.xds_addr, cache.unit_count())
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr="127.0.0.1")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop(grace=1)
        await follower.stop()
        await bus.close()
        await store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="shardgate-pusher", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    setup_tracing("shardgate-pusher")
    try:
        asyncio.run(run(Settings.from_env()))
    finally:
        shutdown_tracing()
