"""A small OTLP trace receiver for the local stack, with an HTTP API to ask for a host's newest trace.

There is no Jaeger or OpenTelemetry Collector to install on these machines, and the local stack only
needs "the spans of one change": this process accepts OTLP/gRPC `TraceService.Export` from the real SDK
exporter (point OTEL_EXPORTER_OTLP_ENDPOINT at `http://127.0.0.1:<grpc-port>`) and answers on HTTP.

It shares the machine with the pipeline the benchmarks time, so taking spans must cost next to nothing:
`Export` is registered raw (bytes in, no deserializer), and each request's bytes go unread into a bounded
ring and onto `<dir>/spans.pb` (format: `spans.py`). Spans are decoded only when a question comes, and
only from the batches that can answer it (`SpanStore`).

    GET /healthz                 -> {"spans": N, "batches": B, "bytes": M} (kept in memory)
    GET /traces?host=H           -> the newest trace naming host H: {"trace_id", "spans", "linked"} or 404
    GET /traces?limit=N          -> summaries of the newest N traces
    GET /traces/{trace_id}       -> one trace, or 404

Run: python -m shardgate.local.otlp --grpc-port N --http-port M --dir D
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import grpc
from aiohttp import web

from shardgate.local.spans import SPANS_FILE, SpanStore

log = logging.getLogger("shardgate.local.otlp")

STORE_KEY = web.AppKey("store", SpanStore)
SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
EMPTY_RESPONSE = b""
"""An `ExportTraceServiceResponse` with no partial-success report serializes to nothing."""

__all__ = ["SPANS_FILE", "Receiver", "export_handler", "main", "make_http_app"]


def export_handler(store: SpanStore) -> grpc.GenericRpcHandler:
    """`TraceService/Export` taking the request as bytes: no protobuf is decoded on the way in."""

    async def export(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        try:
            store.add_export(request)
        except OSError as exc:  # a full disk loses the file copy, never the export
            log.warning("could not append spans: %s", exc)
        return EMPTY_RESPONSE

    method = grpc.unary_unary_rpc_method_handler(export, request_deserializer=None, response_serializer=None)
    return grpc.method_handlers_generic_handler(SERVICE, {"Export": method})


async def _healthz(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    return web.json_response({"spans": len(store), "batches": store.batches, "bytes": store.raw_bytes})


async def _traces(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    host = request.query.get("host")
    if host:
        view = store.newest_for_host(host)
        if view is None:
            return web.json_response({"error": f"no trace names host {host!r}"}, status=404)
        return web.json_response(view.to_json())
    try:
        limit = int(request.query.get("limit", "20"))
    except ValueError:
        return web.json_response({"error": "limit must be an integer"}, status=400)
    return web.json_response({"traces": store.recent(limit)})


async def _trace(request: web.Request) -> web.Response:
    view = request.app[STORE_KEY].trace(request.match_info["trace_id"].lower())
    if view is None:
        return web.json_response({"error": "no such trace"}, status=404)
    return web.json_response(view.to_json())


def make_http_app(store: SpanStore) -> web.Application:
    app = web.Application()
    app[STORE_KEY] = store
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/traces", _traces)
    app.router.add_get("/traces/{trace_id}", _trace)
    return app


class Receiver:
    """The gRPC receiver and the HTTP API on one event loop, sharing one store."""

    def __init__(self, store: SpanStore, host: str = "127.0.0.1", grpc_port: int = 0, http_port: int = 0):
        self.store = store
        self.host = host
        self.grpc_port = grpc_port
        self.http_port = http_port
        self._grpc: grpc.aio.Server | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._grpc = grpc.aio.server()
        self._grpc.add_generic_rpc_handlers((export_handler(self.store),))
        self.grpc_port = self._grpc.add_insecure_port(f"{self.host}:{self.grpc_port}")
        await self._grpc.start()
        self._runner = web.AppRunner(make_http_app(self.store), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.http_port)
        await site.start()
        if self.http_port == 0:
            self.http_port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def grpc_endpoint(self) -> str:
        return f"http://{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"


async def serve(args: argparse.Namespace) -> None:
    store = SpanStore(max_bytes=int(args.max_mb * (1 << 20)), path=Path(args.dir) / SPANS_FILE)
    loaded = store.load()
    receiver = Receiver(store, args.host, args.grpc_port, args.http_port)
    await receiver.start()
    log.info(
        "OTLP gRPC on %s, HTTP API on %s, %d batches (%.1f MB) loaded",
        receiver.grpc_endpoint,
        receiver.http_url,
        loaded,
        store.raw_bytes / (1 << 20),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await receiver.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m shardgate.local.otlp", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--dir", required=True, help=f"where {SPANS_FILE} is kept")
    parser.add_argument(
        "--max-mb", type=float, default=64.0, help="MB of raw span batches kept in memory (~200k spans)"
    )
    args = parser.parse_args(argv)
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
