"""The watcher's memory and per-Ingress CPU at N Ingresses, measured alone, without the rest of the stack.

`bench.pipeline` reads the watcher's RSS inside the whole pipeline (757 MB at 100k Ingresses when this was
written, against a budget of ~300-400 MB). That takes the whole stack and many minutes; this script
reproduces the figure in one process in about a minute, so a change to the watcher's data structures can
be judged by a number.

It runs the real `Watcher` (`services/watcher/service.py`: followers, caches, publish workers, the Lease
elector, status feedback) against in-memory stand-ins for its three edges: a Kubernetes API that answers
lists and feeds watch streams from queues, a JetStream bus that acks every delta, and an index store that
keeps what it is given. Everything between the edges is the production code path; only I/O is fake.

The cluster is `bench.pipeline`'s: `ingress()` and `backends()` (100 tenant namespaces, four Services and
EndpointSlices each, one host per Ingress, four paths), with the fields the API server adds (uid,
resourceVersion, generation, creationTimestamp, an empty status). With TLS (the default), every custom
domain (one Ingress in five) names a `kubernetes.io/tls` Secret holding a real certificate chain (an EC
P-256 leaf for the host, signed by a shared CA whose certificate follows it in `tls.crt`, as ACME issues
them) and its key.

Two ways in, as in production:

- `events`: the watcher starts on an empty cluster and every Secret and Ingress arrives as a watch event
  (how `bench.pipeline` loads it); after its status write-back the Ingress comes back as a MODIFIED event
  carrying the status, as from a real API server.
- `list`: everything exists when the watcher starts (a restart, a standby, a re-list after 410): one list
  per kind, which holds every raw object at once for a moment.

Each (N, mode) runs in a fresh process. Reported: RSS after imports, after the load and its growth per
Ingress; the watcher's CPU time per Ingress during the load (process time of the one thread, harness
included: object generation is measured apart and subtracted); with `--tracemalloc` (a second, slower
run: tracemalloc roughly doubles allocation cost) the Python heap per Ingress and its top allocation
sites. Numbers only: nothing is asserted.

    .venv/bin/python -m bench.watcher_memory                      # N = 10k and 100k, both modes
    .venv/bin/python -m bench.watcher_memory -n 100000 --mode events --tracemalloc
    .venv/bin/python -m bench.watcher_memory -n 20000 --profile /tmp/w.prof   # cProfile of the load
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import gc
import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from bench import common, heapstats
from bench.pipeline import NAMESPACES, backends, ingress, namespace_of
from shardgate.adapters.kube import (
    ENDPOINT_SLICE,
    INGRESS,
    SECRET,
    SERVICE,
    NotFound,
    Resource,
)
from shardgate.records import Delta
from shardgate.watcher.index import SourceEntry
from shardgate.watcher.service import Watcher
from shardgate.watcher.settings import Settings
from shardgate.watcher.tenancy import HostRecord

Obj = dict[str, Any]
STATUS_ADDRESS = "127.0.0.1"  # what the local stack configures
ECHO_PORT = 18080
CHUNK = 500  # events queued before the harness yields to the watcher: a watch stream's read-ahead
MODES = ("events", "list")


# -- the cluster ---------------------------------------------------------------------------------------


class Certificates:
    """Real PEM chains for TLS Secrets: a leaf per host (own EC P-256 key) signed by one CA."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
        self.ca_name = name
        ca = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - timedelta(days=1))
            .not_valid_after(self.now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_pem = ca.public_bytes(serialization.Encoding.PEM)

    def pair(self, host: str) -> tuple[bytes, bytes]:
        """(tls.crt: leaf + CA, tls.key) for `host`."""
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(self.ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - timedelta(days=1))
            .not_valid_after(self.now + timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return leaf.public_bytes(serialization.Encoding.PEM) + self.ca_pem, key_pem


def has_tls(i: int) -> bool:
    """A custom domain (`common.host_name`: one in five) gets a certificate."""
    return i % 5 == 4


def secret_name(i: int) -> str:
    return f"tls-{i}"


@dataclass
class Cluster:
    """Objects as the API server returns them, built on demand: the harness keeps none of them, and
    the CPU time spent building them (`built_s`) is subtracted from the watcher's."""

    n: int
    tls: bool
    certs: Certificates | None = None
    rv: int = 1000
    pem_bytes: int = 0  # tls.crt + tls.key of every Secret built
    built_s: float = 0.0

    def _server_fields(self, obj: Obj, i: int) -> Obj:
        self.rv += 1
        meta = obj["metadata"]
        meta["uid"] = f"00000000-0000-4000-8000-{i:012d}"
        meta["resourceVersion"] = str(self.rv)
        meta["generation"] = 1
        meta["creationTimestamp"] = common.CREATED
        return obj

    def ingress(self, i: int, status: bool = False) -> Obj:
        started = time.process_time()
        host = common.host_name(i)
        obj = ingress(f"ing-{i}", host, i)
        if self.tls and has_tls(i):
            obj["spec"]["tls"] = [{"hosts": [host], "secretName": secret_name(i)}]
        obj["status"] = {"loadBalancer": {"ingress": [{"ip": STATUS_ADDRESS}]}} if status else {}
        self._server_fields(obj, i)
        self.built_s += time.process_time() - started
        return obj

    def secret(self, i: int) -> Obj:
        started = time.process_time()
        if self.certs is None:
            self.certs = Certificates()
        crt, key = self.certs.pair(common.host_name(i))
        self.pem_bytes += len(crt) + len(key)
        obj = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret_name(i), "namespace": namespace_of(i)},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(key).decode()},
        }
        self._server_fields(obj, i)
        self.built_s += time.process_time() - started
        return obj

    def backends(self, plural: str) -> list[Obj]:
        """The Services (or EndpointSlices) of every tenant namespace."""
        return [
            self._server_fields(obj, j)
            for j in range(NAMESPACES)
            for path, obj in backends(ECHO_PORT, f"{common.NAMESPACE}-{j}")
            if path.rstrip("/").rsplit("/", 1)[-1] == plural
        ]

    def tls_indexes(self) -> list[int]:
        return [i for i in range(self.n) if self.tls and has_tls(i)]

    def secrets(self) -> Iterator[Obj]:
        return (self.secret(i) for i in self.tls_indexes())

    def ingresses(self, status: bool = False) -> Iterator[Obj]:
        return (self.ingress(i, status) for i in range(self.n))


# -- the edges -----------------------------------------------------------------------------------------


class FakeApi:
    """The Kubernetes API as the watcher uses it: lists, watch streams fed from queues, the Lease, status
    writes and Events. Lists are built when asked and not kept, as a real client's response is not."""

    def __init__(self, lists: dict[str, Callable[[], Iterator[Obj]]]) -> None:
        self.lists = lists
        self.queues: dict[str, asyncio.Queue[tuple[str, Obj]]] = {}
        self.lease: Obj | None = None
        self.patched: list[tuple[str, str]] = []  # (namespace, name) of each status write
        self.events = 0

    def queue(self, plural: str) -> asyncio.Queue[tuple[str, Obj]]:
        return self.queues.setdefault(plural, asyncio.Queue())

    async def list_raw(self, res: Resource, limit: int = 500, field_selector: str | None = None
                       ) -> tuple[list[Obj], str]:  # fmt: skip
        """Every object, built a page of `limit` at a time with the event loop running in between, as
        a real list's pages arrive."""
        build = self.lists.get(res.plural)
        items: list[Obj] = []
        for obj in build() if build else ():
            items.append(obj)
            if len(items) % limit == 0:
                await asyncio.sleep(0)
        return items, "1"

    async def watch_raw(self, res: Resource, resource_version: str, timeout_seconds: int = 300,
                        field_selector: str | None = None) -> AsyncIterator[tuple[str, Obj]]:  # fmt: skip
        queue = self.queue(res.plural)
        while True:
            yield await queue.get()
            queue.task_done()

    async def get(self, res: Resource, namespace: str | None, name: str) -> Obj:
        raise NotFound(f"{res.plural} {namespace}/{name}: the harness serves lists and watches only")

    async def get_lease(self, namespace: str, name: str) -> Obj | None:
        return self.lease

    async def create_lease(self, namespace: str, name: str, spec: Obj) -> Obj:
        self.lease = {
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
            "spec": spec,
        }
        return self.lease

    async def update_lease(self, lease: Obj, spec: Obj) -> Obj:
        rv = int(lease["metadata"]["resourceVersion"]) + 1
        self.lease = {"metadata": {**lease["metadata"], "resourceVersion": str(rv)}, "spec": spec}
        return self.lease

    async def patch_ingress_status(self, namespace: str, name: str, load_balancer: Obj) -> Obj:
        await asyncio.sleep(0)
        self.patched.append((namespace, name))
        return {}

    async def create_event(self, involved: Obj, reason: str, message: str, component: str, now: str) -> Obj:
        await asyncio.sleep(0)
        self.events += 1
        return {}


class FakeBus:
    """JetStream that acks at once: the watcher's side of a publish, without the network. Like every
    fake here it yields to the event loop once per call, as a real round trip does: a fake that never
    suspends lets one publish worker run the whole queue while the Lease goes unrenewed."""

    def __init__(self) -> None:
        self.seq = 0

    async def publish(self, delta: Delta, traceparent: str = "") -> int:
        delta.encode()  # the real bus encodes every delta
        await asyncio.sleep(0)
        self.seq += 1
        return self.seq


class FakeStore:
    """The Redis index store, encoding what it is given (the real one does) and keeping nothing."""

    def __init__(self) -> None:
        self.saved = 0

    async def load(self) -> dict[str, SourceEntry]:
        return {}

    async def save(self, source: str, entry: SourceEntry | None) -> None:
        if entry is not None:
            entry.encode()
        await asyncio.sleep(0)
        self.saved += 1

    async def load_hosts(self) -> dict[str, HostRecord]:
        return {}

    async def save_hosts(self, records: dict[str, HostRecord | None]) -> None:
        for record in records.values():
            if record is not None:
                record.encode()
        await asyncio.sleep(0)

    async def close(self) -> None:
        pass


# -- one run -------------------------------------------------------------------------------------------


@dataclass
class Run:
    n: int
    mode: str
    tls: bool = True
    trace_malloc: bool = False
    top: int = 15
    profile: str | None = None
    tracing: bool = False
    result: dict[str, Any] = field(default_factory=dict)


class StallProbe:
    """The longest the event loop did not run a 10 ms ticker on time: how long the watcher held the loop
    in one go (the Lease is renewed on the same loop; past the 10 s renew deadline it lapses)."""

    TICK = 0.01

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.TICK)
            self.longest = max(self.longest, time.perf_counter() - before - self.TICK)


async def _until(pred: Callable[[], bool], what: str, timeout: float = 1800.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"watcher_memory: timed out waiting for {what}")
        await asyncio.sleep(0.005)


class _Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _record_spans() -> None:
    """Spans recorded and batched as in the local stack (`telemetry.setup_tracing` with an endpoint),
    exported nowhere: their cost to the watcher, without a collector's."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Discard(), schedule_delay_millis=200))
    trace.set_tracer_provider(provider)


def _settings() -> Settings:
    return replace(
        Settings(), status_address=STATUS_ADDRESS, identity="bench-watcher", lease_namespace="default"
    )


async def _feed(api: FakeApi, plural: str, objs: Iterator[Obj], etype: str = "ADDED") -> int:
    """Queue watch events, yielding to the watcher every CHUNK events; returns how many."""
    queue, count = api.queue(plural), 0
    for obj in objs:
        queue.put_nowait((etype, obj))
        count += 1
        if count % CHUNK == 0:
            await queue.join()
    await queue.join()
    return count


async def measure(run: Run) -> dict[str, Any]:
    """Load the cluster into a real Watcher as `run.mode` says; the figures (see the module docstring)."""
    if run.tracing:
        _record_spans()
    cluster = Cluster(run.n, run.tls)
    listed = run.mode == "list"
    api = FakeApi(
        {
            SERVICE.plural: lambda: iter(cluster.backends(SERVICE.plural)),
            ENDPOINT_SLICE.plural: lambda: iter(cluster.backends(ENDPOINT_SLICE.plural)),
            **({SECRET.plural: cluster.secrets, INGRESS.plural: cluster.ingresses} if listed else {}),
        }
    )
    bus, store = FakeBus(), FakeStore()
    watcher = Watcher(_settings(), api, bus, store)  # type: ignore[arg-type]
    gc.collect()
    rss_imports = heapstats.rss_mb()

    if run.trace_malloc:
        tracemalloc.start(4)
    profiler = cProfile.Profile() if run.profile else None
    t0, cpu0 = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    task = asyncio.create_task(watcher.run())
    stalls = StallProbe()
    stalls.start()
    await _until(lambda: len(watcher.lists) == 5 and watcher.publishing(), "the Lease and the first lists")
    if not listed:
        await _feed(api, SECRET.plural, cluster.secrets())
        await _feed(api, INGRESS.plural, cluster.ingresses())
    await _until(lambda: watcher.idle() and len(api.patched) >= run.n, "every status write")
    loaded_cpu, loaded_built = time.process_time() - cpu0, cluster.built_s
    # Our status writes come back as MODIFIED events: judged again, they must change nothing.
    await _feed(api, INGRESS.plural, cluster.ingresses(status=True), "MODIFIED")
    await _until(watcher.idle, "the echoes")
    if profiler:
        profiler.disable()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    echo_cpu = cpu - loaded_cpu - (cluster.built_s - loaded_built)
    gc.collect()
    rss_loaded = heapstats.rss_mb()
    structures = held_by(watcher, run.n)
    traced = heapstats.traced_heap(run.n, run.top, "ingress") if run.trace_malloc else {}
    if profiler and run.profile:
        profiler.dump_stats(run.profile)
    leadership_changes = watcher.publishers.epoch  # before stopping: giving the Lease up is one more
    stalls.stop()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return {
        "n": run.n,
        "mode": run.mode,
        "tls_secrets": len(cluster.tls_indexes()),
        "pem_bytes": cluster.pem_bytes,
        "rss_imports_mb": round(rss_imports, 1),
        "rss_loaded_mb": round(rss_loaded, 1),
        "rss_bytes_per_ingress": round((rss_loaded - rss_imports) * 2**20 / run.n),
        "load_s": round(elapsed, 2),
        "cpu_us_per_ingress": round((cpu - cluster.built_s) / run.n * 1e6, 1),
        "echo_cpu_us_per_ingress": round(echo_cpu / run.n * 1e6, 1),  # of which its status coming back
        "harness_us_per_ingress": round(cluster.built_s / run.n * 1e6, 1),
        "published": watcher.published,
        "index_writes": store.saved,
        "status_writes": len(api.patched),
        "events": api.events,
        "leadership_changes": leadership_changes,  # 1: led throughout; more: a starved Lease
        "longest_stall_s": round(stalls.longest, 2),
        "structures": structures,
        **traced,
    }


def held_by(watcher: Watcher, n: int, top: int = 12) -> list[tuple[str, int]]:
    """Bytes per Ingress held by each attribute of the watcher's parts (deep, each object counted once,
    for the first attribute that reaches it), largest first. tracemalloc's allocation sites cannot say
    this: CPython recycles small dicts' key tables through free lists, so a long-lived dict's table is
    charged to whichever line first allocated it."""
    parts = {
        "caches": watcher.caches,
        "tenancy": watcher.tenancy,
        "admission": watcher.admission,
        "index": watcher.publishers.index,
        "publishers": watcher.publishers,
        "feedback": watcher.feedback,
        "followers": watcher.followers,
    }
    edges = (watcher, watcher.kube, watcher.bus, watcher.store, watcher.elector)  # the fakes are not its
    seen: set[int] = {id(p) for p in parts.values()} | {id(e) for e in edges}
    out: list[tuple[str, int]] = []
    for part_name, part in parts.items():
        for attr, value in heapstats.vars_of(part).items():
            out.append((f"{part_name}.{attr}", round(heapstats.deep_size(value, seen) / n)))
    return sorted((x for x in out if x[1]), key=lambda x: -x[1])[:top]


def run_one(run: Run) -> dict[str, Any]:
    return asyncio.run(measure(run))


# -- the driver ----------------------------------------------------------------------------------------


def _child(run: Run) -> dict[str, Any]:
    """`run` in a fresh interpreter, so that no run's heap or arenas count in another's RSS."""
    cmd = [sys.executable, "-m", "bench.watcher_memory", "--child", "-n", str(run.n), "--mode", run.mode,
           "--top", str(run.top)]  # fmt: skip
    if not run.tls:
        cmd.append("--no-tls")
    if run.trace_malloc:
        cmd.append("--tracemalloc")
    if run.profile:
        cmd += ["--profile", run.profile]
    if run.tracing:
        cmd.append("--tracing")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def report(r: dict[str, Any]) -> str:
    lines = [
        f"N={r['n']:>7} {r['mode']:<6} TLS Secrets {r['tls_secrets']:>6} "
        f"({r['pem_bytes'] / 2**20:.1f} MB of PEM)  "
        f"RSS {r['rss_imports_mb']} -> {r['rss_loaded_mb']} MB = {r['rss_bytes_per_ingress']} B/Ingress  "
        f"CPU {r['cpu_us_per_ingress']} us/Ingress (its status echo {r['echo_cpu_us_per_ingress']}; "
        f"load {r['load_s']} s; harness "
        f"{r['harness_us_per_ingress']} us/Ingress subtracted)  published {r['published']}, "
        f"status writes {r['status_writes']}, leadership changes {r['leadership_changes']}, "
        f"longest loop stall {r['longest_stall_s']} s"
    ]
    lines.append("  held (B/Ingress): " + ", ".join(f"{name} {size}" for name, size in r["structures"]))
    if "heap_mb" in r:
        lines.append(f"  traced heap {r['heap_mb']} MB = {r['heap_bytes_per_ingress']} B/Ingress; top sites:")
        lines += [f"    {t['bytes_per_ingress']:>6} B/Ingress {t['mb']:>8} MB {t['count']:>9}  {t['site']}"
                  for t in r["top"]]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "-n", type=int, nargs="+", default=[10_000, 100_000], help="Ingresses (one host each)"
    )
    parser.add_argument("--mode", choices=[*MODES, "both"], default="both", help="how the objects arrive")
    parser.add_argument("--no-tls", dest="tls", action="store_false", help="no TLS Secrets (the old bench)")
    parser.add_argument("--tracemalloc", action="store_true", help="also trace the heap (a slower run)")
    parser.add_argument("--top", type=int, default=15, help="allocation sites listed with --tracemalloc")
    parser.add_argument("--profile", help="write a cProfile of the load here (one N and mode)")
    parser.add_argument(
        "--tracing", action="store_true", help="record spans as the local stack does (exported nowhere)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    modes = MODES if args.mode == "both" else (args.mode,)
    if args.child:
        r = run_one(
            Run(args.n[0], modes[0], args.tls, args.tracemalloc, args.top, args.profile, args.tracing)
        )
        print(json.dumps(r))
        return [r]
    results = []
    for n in args.n:
        for mode in modes:
            r = _child(Run(n, mode, args.tls, profile=args.profile, tracing=args.tracing))
            if args.tracemalloc:
                traced = _child(Run(n, mode, args.tls, trace_malloc=True, top=args.top))
                r.update({k: traced[k] for k in ("heap_mb", "heap_bytes_per_ingress", "top")})
            print(report(r), flush=True)
            results.append(r)
    if args.json:
        print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
