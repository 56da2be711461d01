"""The compilers' memory at N hosts, measured without the rest of the stack.

`bench.pipeline` reads each compiler's RSS inside the whole pipeline (~200 MB per process at 100k
Ingresses, 64 shards over two compilers, when this was written). That takes the whole stack and many
minutes; this script reproduces it with the real compilers and their real edges, and nothing else:

- its own nats-server (JetStream) and redis-server on free ports (`shardgate.local.servers`);
- the corpus `bench.pipeline` loads, translated by the watcher's own code (`translate_ingress`,
  `translate_secret`, ...) and published as the watcher publishes it: one delta per (source, unit),
  the wire form as body. N Ingresses (one host each, four paths, 100 tenant namespaces), each tenant's
  four Services and EndpointSlices, and with TLS (the default) the platform wildcard Secret in every
  namespace and one Secret per custom domain (one host in five: 20k at 100k);
- two compiler processes (`--procs`), each the real `Ownership` (`python -m shardgate.compiler` minus
  signals and tracing) over 64 shards: both members are registered before either starts, so each takes
  its own half at once and nothing is handed over.

A child reports when the shards it owns have applied every published delta: its RSS after imports and
after the load, the growth per unit it holds, its CPU per delta during the load, and what its workers
hold, deep-sized per structure (contributions by unit kind, fragment hashes). With `--tracemalloc` (a
second, slower pass) the Python heap and its top allocation sites too.

At 100k hosts (2 cores, shared): 219 and 165 MB RSS with the decoded wire dicts held (359db55), 104 and
89 MB with units held packed and TLS Secrets' units not held (775961b); 2,400 → 720 B per unit. What
RSS holds beyond the workers' state (~25 MB, not given back by malloc_trim, not live in tracemalloc) is
most likely arenas pinned by the load's peak: every shard's batch of 256 decoded deltas in flight at once.

`--compare <rev>` runs the same compilers again from a snapshot of `<rev>` (`bench.snapshot`) on the same
published stream (Redis flushed in between), so a change to the compiler's state is judged against the
code before it in one run. Numbers only: nothing is asserted. Results go to bench/results/.

    .venv/bin/python -m bench.compiler_memory -n 100000 --compare HEAD~1
    .venv/bin/python -m bench.compiler_memory -n 20000 --tracemalloc
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench import heapstats
from shardgate.adapters.jetstream import DeltaBus
from shardgate.adapters.store import MEMBERS, ShardStore, k
from shardgate.keys import shard_of
from shardgate.records import Delta

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
ECHO_PORT = 18080
PUBLISH_IN_FLIGHT = 256
MEMBER_PREFIX = "compiler-"


def _load_trim() -> Any:
    """glibc's malloc_trim (None elsewhere), called here directly so that any revision can be measured."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


_malloc_trim = _load_trim()


# -- the corpus (parent only: the children never import the watcher) ----------------------------------


@dataclass
class Corpus:
    deltas: int = 0
    sources: int = 0
    units: int = 0
    tls_secrets: int = 0
    body_bytes: int = 0  # packed contribution bodies, as Redis stores them


def objects(n: int, tls: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind, object) in the order a tenant creates them: backends (and wildcard Secrets), then hosts."""
    from bench import common
    from bench.pipeline import NAMESPACES, SECRETS, backends, host_objects, wildcard_secret

    ca = None
    if tls:
        from bench.certs import BenchCA

        ca = BenchCA()
    rv = 1000
    for j in range(NAMESPACES):
        ns = f"{common.NAMESPACE}-{j}"
        posts = backends(ECHO_PORT, ns)
        if ca is not None:
            posts.append(wildcard_secret(ca, ns))
        for path, obj in posts:
            rv += 1
            obj["metadata"]["resourceVersion"] = str(rv)
            yield path.rsplit("/", 1)[-1], obj
    for i in range(n):
        for path, obj in host_objects(f"ing-{i}", common.host_name(i), i, ca):
            rv += 1
            obj["metadata"].update(resourceVersion=str(rv), creationTimestamp=common.CREATED)
            yield ("secrets" if path == SECRETS else path.rsplit("/", 1)[-1]), obj


def deltas(n: int, tls: bool, corpus: Corpus) -> Iterator[Delta]:
    """What the watcher publishes for the corpus, translated by its own code."""
    import msgpack

    from shardgate.watcher import translate as tr

    policy, classes, now = tr.ClassPolicy(), tr.IngressClasses(), datetime.now(UTC)
    translate = {
        "ingresses": lambda o: tr.translate_ingress(o, policy, classes),
        "services": tr.translate_service,
        "endpointslices": tr.translate_endpoint_slice,
        "secrets": lambda o: tr.translate_secret(o, now),
    }
    units: set[str] = set()
    for kind, obj in objects(n, tls):
        t = translate[kind](obj)
        if t.reasons:
            raise RuntimeError(f"compiler_memory: {t.source} not admitted: {t.reasons}")
        corpus.sources += 1
        corpus.tls_secrets += kind == "secrets"
        for unit, contribution in t.contributions.items():
            wire = contribution.to_wire()
            corpus.body_bytes += len(msgpack.packb(wire, use_bin_type=True))
            corpus.deltas += 1
            units.add(unit)
            yield Delta(unit, t.source, f"{t.rv}.1", wire, time.time_ns())
    corpus.units = len(units)


async def publish(nats_url: str, shards: int, n: int, tls: bool) -> tuple[Corpus, dict[int, tuple[int, int]]]:
    """Publish the corpus; returns it and, per shard, its last stream sequence and its delta count."""
    corpus, last = Corpus(), {}
    bus = await DeltaBus.connect(nats_url, shards, name="bench-watcher")
    try:
        pending: list[tuple[int, asyncio.Task[int]]] = []

        async def settle() -> None:
            for shard, task in pending:
                seq, count = last.get(shard, (0, 0))
                last[shard] = (max(seq, await task), count + 1)
            pending.clear()

        for d in deltas(n, tls, corpus):
            pending.append((shard_of(d.unit, shards), asyncio.create_task(bus.publish(d))))
            if len(pending) >= PUBLISH_IN_FLIGHT:
                await settle()
        await settle()
    finally:
        await bus.close()
    return corpus, last


# -- one compiler (a child process) ---------------------------------------------------------------------


@dataclass
class Child:
    member: str
    members: list[str]
    nats_url: str
    redis_url: str
    shards: int
    expect: dict[int, tuple[int, int]]  # shard -> (last sequence to apply, its deltas)
    trace_malloc: bool = False
    top: int = 15


async def _caught_up(store: ShardStore, want: dict[int, int]) -> bool:
    async with store.r.pipeline(transaction=False) as p:
        for shard in want:
            p.get(k(shard, "seq"))
        seqs = await p.execute()
    return all(int(s or 0) >= want[shard] for shard, s in zip(want, seqs, strict=True))


async def run_child(c: Child) -> None:
    """Load, report on stdout, then stay (holding the shards, alive in the member set) until the parent
    closes stdin: a compiler that left early would hand its shards to the others while they still load."""
    print(json.dumps(await load_child(c)), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    os._exit(0)  # leases, consumers and connections die with the servers


async def load_child(c: Child) -> dict[str, Any]:
    from shardgate.compiler.ownership import Ownership, desired_shards
    from shardgate.compiler.settings import Settings
    from shardgate.compiler.worker import ShardWorker
    from shardgate.xds import compile_unit

    # As in production but for the lease TTL: a child blocked by a heap snapshot must not lose its
    # membership, or the other children would take its shards (the figures are of a steady state).
    settings = Settings(
        nats_url=c.nats_url, redis_url=c.redis_url, shards=c.shards, worker_id=c.member, lease_ttl_ms=60_000
    )
    bus = await DeltaBus.connect(c.nats_url, c.shards, name=c.member)
    store = ShardStore.from_url(c.redis_url)
    states: dict[int, Any] = {}  # what load_shard returned per shard: where an old worker kept its hashes
    if not any("hash" in name for name in ShardWorker.__init__.__code__.co_names):
        load_shard = store.load_shard

        async def recording_load_shard(shard: int) -> Any:
            states[shard] = state = await load_shard(shard)
            return state

        store.load_shard = recording_load_shard  # type: ignore[method-assign]
    mine = desired_shards(c.member, c.members, c.shards)
    want = {s: c.expect[s][0] for s in sorted(mine) if s in c.expect}
    applied = sum(c.expect[s][1] for s in want)
    own = Ownership(settings, bus, store, compile_unit)
    gc.collect()
    rss_imports = heapstats.rss_mb()
    if c.trace_malloc:
        tracemalloc.start(4)
    t0, cpu0 = time.perf_counter(), time.process_time()
    task = asyncio.create_task(own.run())
    while not (own.owned == mine and await _caught_up(store, want)):
        if task.done():
            task.result()
            raise RuntimeError("compiler_memory: the compiler stopped")
        await asyncio.sleep(0.2)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    gc.collect()
    rss_loaded = heapstats.rss_mb()
    rss_trimmed = rss_loaded if _malloc_trim is None else (_malloc_trim(0), heapstats.rss_mb())[1]
    workers = [w for w, _ in own.workers.values()]
    structures, units = held_by(workers, states)
    traced = heapstats.traced_heap(units, c.top, "unit") if c.trace_malloc else {}
    return {
        "member": c.member,
        "shards": len(mine),
        "units": units,
        "rss_imports_mb": round(rss_imports, 1),
        "rss_loaded_mb": round(rss_loaded, 1),
        "rss_bytes_per_unit": round((rss_loaded - rss_imports) * 2**20 / max(units, 1)),
        "rss_trimmed_mb": round(rss_trimmed, 1),  # after malloc_trim(0): what malloc kept but nothing uses
        "load_s": round(elapsed, 2),
        "cpu_s": round(cpu, 2),
        "deltas": applied,
        "cpu_us_per_delta": round(cpu / max(applied, 1) * 1e6, 1),
        "structures": structures,
        **traced,
    }


def held_by(workers: list[Any], states: dict[int, Any]) -> tuple[list[tuple[str, int, int]], int]:
    """What the workers' per-unit state holds, deep-sized (each object counted once): (structure and unit
    kind, bytes, entries), largest first; and how many units the workers know. Reads what either the
    current worker or an older one has: its dict attributes, and the hashes in the ShardState that the
    old worker (which kept them in a local) mutated in place."""
    seen: set[int] = set()
    sizes: dict[str, list[int]] = {}

    def add(name: str, size: int, entries: int = 1) -> None:
        acc = sizes.setdefault(name, [0, 0])
        acc[0] += size
        acc[1] += entries

    units: set[str] = set()
    for w in workers:
        held = {a: v for a, v in heapstats.vars_of(w).items() if a not in _NOT_HELD}
        if w.shard in states:
            held["hashes"] = states[w.shard].hashes
        for attr, value in held.items():
            if not isinstance(value, dict):
                add(attr, heapstats.deep_size(value, seen))
                continue
            units.update(value)
            seen.add(id(value))
            add(f"{attr} (table)", sys.getsizeof(value), 0)
            for unit, v in value.items():
                add(f"{attr} {unit[:2]}", heapstats.deep_size(unit, seen) + heapstats.deep_size(v, seen))
    ordered = sorted(((name, b, e) for name, (b, e) in sizes.items() if b), key=lambda x: -x[1])
    return ordered, len(units)


_NOT_HELD = ("settings", "bus", "store", "compile_unit", "token", "shard", "stopping")


# -- the driver -------------------------------------------------------------------------------------------


@dataclass
class Run:
    n: int
    procs: int = 2
    shards: int = 64
    tls: bool = True
    compare: str | None = None  # a git revision to measure too, from a snapshot
    trace_malloc: bool = False
    top: int = 15


def _children(run: Run, nats_url: str, redis_url: str, expect: dict[int, tuple[int, int]], code: str | None,
              trace_malloc: bool) -> list[dict[str, Any]]:  # fmt: skip
    """One child per compiler, all at once; `code` (a PYTHONPATH) runs another revision's compiler."""
    members = [f"{MEMBER_PREFIX}{i + 1}" for i in range(run.procs)]
    _register(redis_url, members)
    env = dict(os.environ)
    if code:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [code, env.get("PYTHONPATH")]))
    procs = []
    for member in members:
        child = {"member": member, "members": members, "nats_url": nats_url, "redis_url": redis_url,
                 "shards": run.shards, "expect": expect, "trace_malloc": trace_malloc,
                 "top": run.top}  # fmt: skip
        cmd = [sys.executable, "-m", "bench.compiler_memory", "--child", json.dumps(child)]
        procs.append(
            subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        )
    out = []
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line:
                raise RuntimeError(f"compiler_memory: a child failed ({p.wait()})")
            out.append(json.loads(line))
    finally:
        for p in procs:
            p.communicate()  # closes stdin: every child has reported, so they may go
    return out


def _register(redis_url: str, members: list[str]) -> None:
    """A fresh Redis state, with every member already alive (for an hour, or until its own heartbeat):
    each compiler's first tick takes its own half, so nothing is handed over while the load runs."""

    async def go() -> None:
        r = aioredis.Redis.from_url(redis_url)
        try:
            await r.flushall()
            sec, _ = await r.time()
            await r.zadd(MEMBERS, {m: (int(sec) + 3600) * 1000 for m in members})
        finally:
            await r.aclose()

    asyncio.run(go())


def _commit_of(rev: str) -> str:
    return subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def measure(run: Run) -> dict[str, Any]:
    from shardgate.local.servers import NatsServer, RedisServer

    result: dict[str, Any] = {"n": run.n, "procs": run.procs, "shards": run.shards, "tls": run.tls}
    with tempfile.TemporaryDirectory(prefix="sg-compiler-memory-") as tmp:
        nats, redis = NatsServer(Path(tmp) / "nats"), RedisServer(Path(tmp) / "redis")
        nats.start()
        try:
            redis.start()
            t0 = time.perf_counter()
            corpus, expect = asyncio.run(publish(nats.url, run.shards, run.n, run.tls))
            result["corpus"] = {**vars(corpus), "publish_s": round(time.perf_counter() - t0, 1)}
            variants: list[tuple[str, str | None]] = [("working tree", None)]
            if run.compare:
                from bench.snapshot import snapshot

                variants.append((_commit_of(run.compare), str(snapshot(run.compare))))
            result["variants"] = []
            for label, code in variants:
                children = _children(run, nats.url, redis.url, expect, code, False)
                if run.trace_malloc:
                    traced = _children(run, nats.url, redis.url, expect, code, True)
                    for c, t in zip(children, traced, strict=True):
                        c.update({key: t[key] for key in ("heap_mb", "heap_bytes_per_unit", "top")})
                result["variants"].append({"code": label, "compilers": children})
        finally:
            redis.stop(kill=True)
            nats.stop(kill=True)
    return result


def report(r: dict[str, Any]) -> str:
    c = r["corpus"]
    lines = [
        f"N={r['n']} hosts: {c['sources']} sources, {c['deltas']} deltas to {c['units']} units "
        f"({c['tls_secrets']} TLS Secrets; packed bodies {c['body_bytes'] / 2**20:.1f} MB; published in "
        f"{c['publish_s']} s), {r['shards']} shards over {r['procs']} compilers"
    ]
    for v in r["variants"]:
        lines.append(f"  code: {v['code']}")
        for ch in v["compilers"]:
            lines.append(
                f"    {ch['member']}: {ch['shards']} shards, {ch['units']} units  "
                f"RSS {ch['rss_imports_mb']} -> "
                f"{ch['rss_loaded_mb']} MB = {ch['rss_bytes_per_unit']} B/unit "
                f"(malloc_trim: {ch['rss_trimmed_mb']} MB)"
                f"  load {ch['load_s']} s, "
                f"CPU {ch['cpu_s']} s = {ch['cpu_us_per_delta']} us/delta ({ch['deltas']} deltas)"
            )
            total = sum(size for _, size, _ in ch["structures"])
            lines.append(f"      held: {total / 2**20:.1f} MB = {total / max(ch['units'], 1):.0f} B/unit")
            lines += [f"        {name:<24} {size / 2**20:7.1f} MB  {size / max(e, 1):6.0f} B x {e}"
                      for name, size, e in ch["structures"]]  # fmt: skip
            if "heap_mb" in ch:
                lines.append(
                    f"      traced heap {ch['heap_mb']} MB = {ch['heap_bytes_per_unit']} B/unit; top:"
                )
                lines += [f"        {t['bytes_per_unit']:>6} B/unit {t['mb']:>8} MB {t['count']:>9}"
                          f"  {t['site']}" for t in ch["top"]]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=100_000, help="Ingresses (one host each)")
    parser.add_argument("--procs", type=int, default=2, help="compiler processes")
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--no-tls", dest="tls", action="store_false", help="no TLS Secrets")
    parser.add_argument("--compare", metavar="REV", help="measure the compiler at REV too (a snapshot)")
    parser.add_argument("--tracemalloc", action="store_true", help="also trace the heap (a slower run)")
    parser.add_argument("--top", type=int, default=15, help="allocation sites listed with --tracemalloc")
    parser.add_argument("--out", help="result JSON (default: bench/results/compiler_memory-<time>.json)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        spec["expect"] = {int(s): tuple(v) for s, v in spec["expect"].items()}
        asyncio.run(run_child(Child(**spec)))
        return {}
    result = measure(Run(args.n, args.procs, args.shards, args.tls, args.compare, args.tracemalloc, args.top))
    print(report(result), flush=True)
    out = (
        Path(args.out) if args.out else RESULTS_DIR / f"compiler_memory-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}", flush=True)
    return result


if __name__ == "__main__":
    main()
