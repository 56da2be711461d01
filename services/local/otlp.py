"""A small OTLP trace receiver for the local stack, with an HTTP API to ask for a host's newest trace.

There is no Jaeger or OpenTelemetry Collector to install on these machines, and the local stack only
needs "the spans of one change": this process accepts OTLP/gRPC `TraceService.Export` from the real SDK
exporter (point OTEL_EXPORTER_OTLP_ENDPOINT at `http://127.0.0.1:<grpc-port>`), keeps the spans in a
bounded `SpanStore`, appends them to `<dir>/spans.jsonl`, and answers on HTTP:

    GET /healthz                 -> {"spans": N}
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
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from shardgate.local.spans import SpanStore, spans_from_request

log = logging.getLogger("shardgate.local.otlp")

STORE_KEY = web.AppKey("store", SpanStore)
SPANS_FILE = "spans.jsonl"


class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, store: SpanStore) -> None:
        self.store = store

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        try:
            self.store.add(spans_from_request(request))
        except OSError as exc:  # a full disk loses the file copy, never the export
            log.warning("could not append spans: %s", exc)
        return trace_service_pb2.ExportTraceServiceResponse()


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"spans": len(request.app[STORE_KEY])})


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
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            TraceReceiver(self.store), self._grpc
        )
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
    store = SpanStore(max_spans=args.max_spans, path=Path(args.dir) / SPANS_FILE)
    loaded = store.load()
    receiver = Receiver(store, args.host, args.grpc_port, args.http_port)
    await receiver.start()
    log.info(
        "OTLP gRPC on %s, HTTP API on %s, %d spans loaded", receiver.grpc_endpoint, receiver.http_url, loaded
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
    parser.add_argument("--max-spans", type=int, default=200_000, help="spans kept in memory")
    args = parser.parse_args(argv)
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
