"""The OTLP receiver takes spans from the real OpenTelemetry SDK exporter and answers for a host."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from shardgate.local.otlp import SPANS_FILE, Receiver
from shardgate.local.spans import SpanStore


def export_change(endpoint: str, host: str) -> str:
    """One change seen by two services, exported by the SDK as the pipeline does; the trace id (hex)."""
    providers = []
    for service in ("shardgate-watcher", "shardgate-compiler"):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
        providers.append(provider)
    watcher, compiler = (p.get_tracer("test") for p in providers)
    with watcher.start_as_current_span("watcher.event", attributes={"sg.host": host}) as event:
        parent = trace.set_span_in_context(trace.NonRecordingSpan(event.get_span_context()))
        with compiler.start_as_current_span("compiler.apply", context=parent, attributes={"sg.shard": 7}):
            pass
    for provider in providers:
        provider.shutdown()
    return f"{event.get_span_context().trace_id:032x}"


async def test_sdk_spans_reach_the_http_api(receiver: Receiver, tmp_path: Path) -> None:
    # The SDK exporter blocks on gRPC: run it off the loop that serves the receiver.
    trace_id = await asyncio.to_thread(export_change, receiver.grpc_endpoint, "shop.example.com")
    await asyncio.to_thread(export_change, receiver.grpc_endpoint, "other.example.com")

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{receiver.http_url}/traces", params={"host": "Shop.Example.com."}) as response:
            assert response.status == 200
            body = await response.json()
        async with http.get(
            f"{receiver.http_url}/traces", params={"host": "nowhere.example.com"}
        ) as response:
            assert response.status == 404
        async with http.get(f"{receiver.http_url}/healthz") as response:
            health = await response.json()
            assert health["spans"] == 4 and health["batches"] == 4 and health["bytes"] > 0

    assert body["trace_id"] == trace_id
    spans = sorted(body["spans"], key=lambda s: s["start_ns"])
    assert [(s["service"], s["name"]) for s in spans] == [
        ("shardgate-watcher", "watcher.event"),
        ("shardgate-compiler", "compiler.apply"),
    ]
    assert spans[0]["attributes"] == {"sg.host": "shop.example.com"}
    assert spans[1]["attributes"] == {"sg.shard": 7}
    assert spans[1]["parent_span_id"] == spans[0]["span_id"]

    # Everything was appended to the span file, so the spans outlive the receiver.
    reread = SpanStore.from_file(tmp_path / "otlp" / SPANS_FILE)
    assert len(reread) == 4
    view = reread.newest_for_host("shop.example.com")
    assert view is not None and view.trace_id == trace_id


async def test_store_is_bounded_oldest_batch_first(tmp_path: Path) -> None:
    # The SDK's simple processor sends one request per span: six batches, two per change. Room for the
    # newest four (whatever their size) drops the first change.
    store = SpanStore(max_bytes=1 << 20)
    receiver = Receiver(store)
    await receiver.start()
    try:
        for host in ("a.test", "b.test", "c.test"):
            await asyncio.to_thread(export_change, receiver.grpc_endpoint, host)
    finally:
        await receiver.stop()
    sizes = [len(data) for data in store.exports()]
    assert len(sizes) == 6

    bounded = SpanStore(max_bytes=sum(sizes[-4:]))
    for data in store.exports():
        bounded.add_export(data)
    assert bounded.raw_bytes <= bounded.max_bytes and len(bounded) == 4
    assert bounded.newest_for_host("a.test") is None
    assert bounded.newest_for_host("c.test") is not None
