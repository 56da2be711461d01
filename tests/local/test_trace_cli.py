"""`shardgate trace HOST` prints the newest change's timeline in order, with the activation total."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from shardgate.local.otlp import Receiver
from shardgate.local.spans import SpanStore, TraceView
from shardgate.local.state import write_state
from shardgate.local.timeline import build_timeline

from .conftest import shardgate, shardgate_async

T0 = 1_800_000_000_000_000_000
MS = 1_000_000
CHANGE = bytes.fromhex("11" * 16)
BATCH = bytes.fromhex("22" * 16)
STATUS_ONLY = bytes.fromhex("33" * 16)
OTHER = bytes.fromhex("44" * 16)


def attrs(**values: str | int) -> list[KeyValue]:
    out = []
    for key, value in values.items():
        any_value = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)
        out.append(KeyValue(key=key.replace("_", "."), value=any_value))
    return out


def span(
    trace_id: bytes,
    n: int,
    name: str,
    start_ms: float,
    end_ms: float,
    links_change: bool = False,
    **kw: str | int,
) -> Span:
    links = [Span.Link(trace_id=CHANGE, span_id=bytes([2] * 8))] if links_change else []
    return Span(
        trace_id=trace_id,
        span_id=bytes([n] * 8),
        name=name,
        start_time_unix_nano=T0 + int(start_ms * MS),
        end_time_unix_nano=T0 + int(end_ms * MS),
        attributes=attrs(**kw),
        links=links,
        status=Status(code=Status.STATUS_CODE_OK),
    )


def request(service: str, *spans: Span) -> trace_service_pb2.ExportTraceServiceRequest:
    resource = Resource(attributes=attrs(service_name=service))
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=list(spans))])]
    )


# One change to shop.test: arrives out of order and across services; the compiler's batch span lives in a
# trace of its own and links to the change; after the ACK the pusher does more work that must not count.
# Then a later lone watcher event for the same host (its status write-back) and a change to another host.
EXPORTS = [
    request(
        "shardgate-pusher",
        span(CHANGE, 5, "envoy.ack", 10.0, 14.0, sg_unit="h:shop.test", sg_shard=3),
        span(CHANGE, 4, "pusher.relay", 9.0, 10.0, sg_host="shop.test", sg_shard=3, sg_revision=8),
        span(CHANGE, 6, "pusher.cleanup", 14.5, 20.0),
    ),
    request(
        "shardgate-watcher",
        span(CHANGE, 1, "watcher.event", 0.0, 5.0, shardgate_unit="h:shop.test"),
        span(CHANGE, 2, "watcher.publish", 1.0, 3.0, sg_unit="h:shop.test", sg_shard=3),
        span(STATUS_ONLY, 9, "watcher.event", 30.0, 30.2, sg_host="shop.test"),
    ),
    request(
        "shardgate-compiler", span(BATCH, 3, "compiler.apply", 4.0, 8.0, True, sg_shard=3, sg_revision=8)
    ),
    request("shardgate-watcher", span(OTHER, 7, "watcher.event", 50.0, 51.0, sg_host="other.test")),
]
ORDER = ["watcher.event", "watcher.publish", "compiler.apply", "pusher.relay", "envoy.ack", "pusher.cleanup"]


async def feed(receiver: Receiver) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        for export in EXPORTS:
            await stub.Export(export)


def test_timeline_ends_at_the_ack() -> None:
    store = SpanStore()
    for export in EXPORTS:
        store.add_export(export.SerializeToString())
    view = store.newest_for_host("shop.test")
    assert view is not None and view.trace_id == CHANGE.hex()
    timeline = build_timeline(view)
    assert [r.name for r in timeline.rows] == ORDER
    assert [r.offset_ms for r in timeline.rows] == [0.0, 1.0, 4.0, 9.0, 10.0, 14.5]
    assert [r.linked for r in timeline.rows] == [False, False, True, False, False, False]
    assert timeline.acked and timeline.total_ms == 14.0
    # A unit key finds the same change; a host with a port or in another case does too.
    for key in ("h:shop.test", "SHOP.test:80"):
        found = store.newest_for_host(key)
        assert found is not None and found.trace_id == CHANGE.hex()
    assert store.newest_for_host("s:demo/echo") is None
    # Without an ACK the total runs to the last span.
    unacked = TraceView(view.trace_id, tuple(s for s in view.spans if s.name != "envoy.ack"), view.linked)
    assert build_timeline(unacked).total_ms == 20.0 and not build_timeline(unacked).acked


async def test_trace_command_prints_the_timeline(receiver: Receiver) -> None:
    await feed(receiver)
    code, out = await shardgate_async("trace", "shop.test", "--otlp-http", receiver.http_url)
    assert code == 0, out
    lines = [line for line in out.splitlines() if line.startswith("│")]
    assert [next(name for name in ORDER if f" {name} " in line) for line in lines] == ORDER
    assert "+4.0 ms" in lines[2] and "linked batch" in lines[2] and "3/8" in lines[2]
    assert "activation 14.0 ms" in out and "end of envoy.ack" in out

    code, out = await shardgate_async("trace", "shop.test", "--otlp-http", receiver.http_url, "--json")
    data = json.loads(out)
    assert code == 0 and data["total_ms"] == 14.0 and data["acked"] is True
    assert data["trace_id"] == CHANGE.hex() and len(data["spans"]) == 5 and len(data["linked"]) == 1

    code, out = await shardgate_async("trace", "nowhere.test", "--otlp-http", receiver.http_url)
    assert code == 1 and "no trace" in out


async def test_trace_reads_the_span_file_when_no_receiver_runs(receiver: Receiver, tmp_path: Path) -> None:
    await feed(receiver)
    await receiver.stop()
    result = shardgate("trace", "shop.test", "--dir", str(tmp_path))
    assert "activation 14.0 ms" in result.stdout


async def test_a_state_file_naming_the_old_jsonl_file_still_finds_the_spans(
    receiver: Receiver, tmp_path: Path
) -> None:
    # `local up` records the span file in state.json; one written before the binary file names spans.jsonl.
    await feed(receiver)
    await receiver.stop()
    write_state(tmp_path, {"status": "stopped", "otlp": {"spans": str(tmp_path / "otlp" / "spans.jsonl")}})
    result = shardgate("trace", "shop.test", "--dir", str(tmp_path), "--json")
    assert json.loads(result.stdout)["trace_id"] == CHANGE.hex()
