"""What the local OTLP receiver costs on ingest, and how long a `?host=` question takes afterwards.

In the pipeline benchmark the receiver shares a 2-core machine with everything being measured, so each
CPU second it spends taking spans is stolen from the watcher, the compilers and the pusher. This feeds
it spans shaped like the pipeline's own (per change: `watcher.event`, `watcher.publish`,
`compiler.apply`, `pusher.relay`, `envoy.ack`, with the attributes those services set; about one
change in a hundred has a compiler span link), in the batches a `BatchSpanProcessor` sends (up to 512
spans per request, one resource per service), through the real gRPC `TraceService/Export` of the real
receiver process (`python -m shardgate.local.otlp`). The requests are serialized before the clock
starts and sent as raw bytes, so the client's own cost stays out of the receiver's figures.

Reported: the receiver's CPU seconds (user + system, all threads, from /proc) per 100k spans while it
ingests, its RSS and span file size afterwards, the latency of `GET /traces?host=` for the newest
change, a change in the middle, the oldest change and a host nothing names (the scan's worst case) —
first ask and warm median of the repeats — and how long `shardgate trace` takes from the span file
alone (`SpanStore.from_file`, as after `local down`). Numbers only: no thresholds are asserted.

    .venv/bin/python -m bench.otlp_ingest --spans 200000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from bench import common
from shardgate.local import otlp
from shardgate.local.servers import free_port, wait_for_port
from shardgate.local.spans import SpanStore

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SPANS_PER_CHANGE = 5
WINDOW = 256
"""Changes per export round: the watcher's and the pusher's requests then carry 512 spans each (the
BatchSpanProcessor's default maximum), the compiler's 256."""
LINKED_EVERY = 100
SHARDS = 8
MS = 1_000_000
T0 = 1_800_000_000_000_000_000
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _value(v: str | int | bool | list[str]) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, list):
        return AnyValue(array_value=ArrayValue(values=[AnyValue(string_value=x) for x in v]))
    return AnyValue(string_value=v)


def _attrs(values: dict[str, str | int | bool | list[str]]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_value(v)) for k, v in values.items()]


def _resource(service: str) -> Resource:
    return Resource(
        attributes=_attrs(
            {
                "telemetry.sdk.language": "python",
                "telemetry.sdk.name": "opentelemetry",
                "telemetry.sdk.version": "1.27.0",
                "service.name": service,
            }
        )
    )


@dataclass(frozen=True, slots=True)
class Change:
    index: int
    host: str
    trace_id: bytes
    ids: tuple[bytes, ...]  # span ids: event, publish, apply, relay, ack
    t0: int


def _change(rng: random.Random, i: int) -> Change:
    ids = tuple(rng.randbytes(8) for _ in range(SPANS_PER_CHANGE))
    return Change(i, common.host_name(i), rng.randbytes(16), ids, T0 + i * MS)


def _span(
    c: Change, k: int, name: str, start: int, end: int, attrs: dict[str, Any], links: list[Span.Link]
) -> Span:
    return Span(
        trace_id=c.trace_id,
        span_id=c.ids[k],
        parent_span_id=c.ids[k - 1] if k else b"",
        name=name,
        kind=Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        attributes=_attrs(attrs),
        links=links,
        status=Status(code=Status.STATUS_CODE_UNSET),
    )


def _request(service: str, scope: str, spans: list[Span]) -> bytes:
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=_resource(service),
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name=scope), spans=spans)],
            )
        ]
    )
    data: bytes = request.SerializeToString()
    return data


def build_requests(n_spans: int, seed: int = 7) -> tuple[list[bytes], list[Change]]:
    """Serialized Export requests in the order the services would send them, and the changes they carry."""
    rng = random.Random(seed)
    changes = [_change(rng, i) for i in range(max(1, n_spans // SPANS_PER_CHANGE))]
    requests: list[bytes] = []
    for revision, w in enumerate(range(0, len(changes), WINDOW), start=1):
        window = changes[w : w + WINDOW]
        watcher: list[Span] = []
        compiler: list[Span] = []
        pusher: list[Span] = []
        names = [f"{rng.getrandbits(64):016x}" for _ in range(16)]
        nonce = str(revision)
        for c in window:
            unit, shard, t = f"h:{c.host}", c.index % SHARDS, c.t0
            watcher.append(
                _span(
                    c,
                    0,
                    "watcher.event",
                    t,
                    t + 3 * MS,
                    {
                        "k8s.kind": "Ingress",
                        "k8s.event.type": "ADDED",
                        "k8s.resource_version": str(1000 + c.index),
                        "k8s.creation_timestamp": common.CREATED,
                        "k8s.generation": 1,
                        "sg.hosts": [c.host],
                    },
                    [],
                )
            )
            watcher.append(
                _span(
                    c,
                    1,
                    "watcher.publish",
                    t + MS,
                    t + 2 * MS,
                    {
                        "sg.unit": unit,
                        "sg.shard": shard,
                        "sg.tombstone": False,
                        "sg.host": c.host,
                        "messaging.nats.stream_sequence": c.index + 1,
                    },
                    [],
                )
            )
            links = []
            if c.index % LINKED_EVERY == LINKED_EVERY - 1:  # two deltas to one unit in a batch
                other = changes[c.index - 1]
                links = [Span.Link(trace_id=other.trace_id, span_id=other.ids[1])]
            compiler.append(
                _span(
                    c,
                    2,
                    "compiler.apply",
                    t + 4 * MS,
                    t + 9 * MS,
                    {
                        "sg.unit": unit,
                        "sg.shard": shard,
                        "sg.batch_size": len(window),
                        "sg.changed": True,
                        "sg.deltas": 1 + len(links),
                        "sg.host": c.host,
                        "sg.revision": revision,
                    },
                    links,
                )
            )
            pusher.append(
                _span(
                    c,
                    3,
                    "pusher.relay",
                    t + 10 * MS,
                    t + 11 * MS,
                    {"sg.unit": unit, "sg.shard": shard, "sg.revision": revision, "sg.host": c.host},
                    [],
                )
            )
            pusher.append(
                _span(
                    c,
                    4,
                    "envoy.ack",
                    t + 11 * MS,
                    t + 15 * MS,
                    {
                        "envoy.node_id": "gateway-0",
                        "xds.type_url": "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration",
                        "xds.nonce": nonce,
                        "xds.resource_names": names,
                        "xds.resource_count": len(window),
                        "sg.unit": unit,
                        "sg.shard": shard,
                    },
                    [],
                )
            )
        requests.append(_request("shardgate-watcher", "shardgate.watcher", watcher))
        requests.append(_request("shardgate-compiler", "shardgate.compiler", compiler))
        requests.append(_request("shardgate-pusher", "shardgate.pusher", pusher))
    return requests, changes


def _newest_linker(n_changes: int) -> int:
    """The newest change whose `compiler.apply` links to the change before it (whose trace shows it)."""
    return max(LINKED_EVERY - 1, (n_changes // LINKED_EVERY) * LINKED_EVERY - 1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its threads so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def feed(port: int, requests: list[bytes], concurrency: int) -> None:
    """Send the serialized requests through the Export method, `concurrency` in flight."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        export = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        queue = iter(requests)

        async def sender() -> None:
            for body in queue:
                await export(body, timeout=60)

        await asyncio.gather(*(sender() for _ in range(concurrency)))


async def ask(http: aiohttp.ClientSession, url: str, host: str) -> tuple[float, int, dict[str, Any]]:
    t = time.perf_counter()
    async with http.get(f"{url}/traces", params={"host": host}) as response:
        body: dict[str, Any] = await response.json()
        return (time.perf_counter() - t) * 1000, response.status, body


async def queries(url: str, pid: int, cases: dict[str, str], repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        for label, host in cases.items():
            cpu0 = cpu_seconds(pid)
            first, status, body = await ask(http, url, host)
            warm = [(await ask(http, url, host))[0] for _ in range(repeats)]
            out[label] = {
                "host": host,
                "status": status,
                "spans": len(body.get("spans") or ()),
                "linked": len(body.get("linked") or ()),
                "first_ms": round(first, 2),
                "warm_p50_ms": round(statistics.median(warm), 2) if warm else None,
                "receiver_cpu_s": round(cpu_seconds(pid) - cpu0, 3),
            }
    return out


async def drive(
    pid: int,
    grpc_port: int,
    http_port: int,
    requests: list[bytes],
    cases: dict[str, str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Feed the running receiver, then ask it for the `cases`."""
    await asyncio.sleep(0.5)  # let start-up CPU settle
    idle0 = cpu_seconds(pid)
    await asyncio.sleep(1.0)
    idle_cpu = cpu_seconds(pid) - idle0
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    await feed(grpc_port, requests, args.concurrency)
    wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    await asyncio.sleep(1.0)
    after_cpu = cpu_seconds(pid) - cpu0 - cpu  # work left after the last Export answered
    rss = common.rss_mb(pid)
    asked = await queries(f"http://127.0.0.1:{http_port}", pid, cases, args.repeats)
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{http_port}/healthz") as response,
    ):
        health = await response.json()
    return {
        "health": health,
        "rss_after_queries_mb": common.rss_mb(pid),
        "wall_s": wall,
        "cpu_s": cpu,
        "after_cpu_s": after_cpu,
        "idle_cpu_s": idle_cpu,
        "rss_mb": rss,
        "query": asked,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    t = time.perf_counter()
    requests, changes = build_requests(args.spans)
    n_spans = len(changes) * SPANS_PER_CHANGE
    built_s = time.perf_counter() - t
    cases = {
        "newest": changes[-1].host,
        "middle": changes[len(changes) // 2].host,
        "oldest": changes[0].host,
        "linked": changes[_newest_linker(len(changes)) - 1].host,
        "missing": "nowhere.bench.test",
    }
    with tempfile.TemporaryDirectory(prefix="sg-otlp-bench-") as tmp:
        directory = Path(tmp)
        grpc_port, http_port = free_port(), free_port()
        argv = [sys.executable, "-m", "shardgate.local.otlp", "--grpc-port", str(grpc_port)]
        argv += ["--http-port", str(http_port), "--dir", str(directory), *args.receiver_args]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(grpc_port)
            wait_for_port(http_port)
            got = asyncio.run(drive(proc.pid, grpc_port, http_port, requests, cases, args))
        finally:
            proc.terminate()
            proc.wait(10)
        files = {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()}
        t = time.perf_counter()
        view = SpanStore.from_file(directory / otlp.SPANS_FILE).newest_for_host(changes[-1].host)
        from_file_ms = (time.perf_counter() - t) * 1000
    wall, cpu = got["wall_s"], got["cpu_s"]
    return {
        "spans": n_spans,
        "requests": len(requests),
        "request_bytes": sum(len(r) for r in requests),
        "build_s": round(built_s, 2),
        "ingest": {
            "wall_s": round(wall, 3),
            "spans_per_s": round(n_spans / wall),
            "receiver_cpu_s": round(cpu, 3),
            "receiver_cpu_s_per_100k_spans": round(cpu / n_spans * 100_000, 3),
            "receiver_cpu_s_after": round(got["after_cpu_s"], 3),
            "receiver_idle_cpu_s_per_s": round(got["idle_cpu_s"], 3),
        },
        "receiver_rss_mb": round(got["rss_mb"], 1),
        "receiver_rss_after_queries_mb": round(got["rss_after_queries_mb"], 1),
        "healthz": got["health"],
        "files": files,
        "query": got["query"],
        "from_file": {"ms": round(from_file_ms, 1), "found": view is not None},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.otlp_ingest", description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, default=200_000, help="spans to feed (5 per change)")
    parser.add_argument("--concurrency", type=int, default=4, help="Export requests in flight")
    parser.add_argument("--repeats", type=int, default=5, help="warm repeats of each query")
    parser.add_argument(
        "receiver_args", nargs="*", help="passed on to the receiver (after --), e.g. -- --max-mb 32"
    )
    args = parser.parse_args(argv)
    result = run(args)
    ingest = result["ingest"]
    print(
        f"ingest: {result['spans']:,} spans in {result['requests']} requests "
        f"({result['request_bytes'] / 1e6:.1f} MB) in {ingest['wall_s']:.2f} s; receiver CPU "
        f"{ingest['receiver_cpu_s']:.2f} s = {ingest['receiver_cpu_s_per_100k_spans']:.3f} s per 100k spans "
        f"(+{ingest['receiver_cpu_s_after']:.2f} s after; idle {ingest['receiver_idle_cpu_s_per_s']:.3f} s/s)"
    )
    print(
        f"receiver RSS {result['receiver_rss_mb']:.1f} MB after ingest, "
        f"{result['receiver_rss_after_queries_mb']:.1f} MB after the queries; /healthz {result['healthz']}; "
        f"files {result['files']}"
    )
    for label, q in result["query"].items():
        print(
            f"?host= {label:8} {q['status']} spans={q['spans']} linked={q['linked']}: first "
            f"{q['first_ms']:.1f} ms, warm p50 {q['warm_p50_ms']} ms, receiver CPU {q['receiver_cpu_s']} s"
        )
    from_file = result["from_file"]
    print(f"from the span file alone: {from_file['ms']:.0f} ms (found={from_file['found']})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
