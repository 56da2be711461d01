"""Activation through the whole pipeline: API stand-in → watcher → JetStream → compiler → Redis → Envoy.

`bench.layout` feeds Envoy straight from the pusher's cache; this benchmark starts the real local stack
(`shardgate.local.stack`: nats-server, redis-server, the API stand-in, the OTLP receiver, one watcher, two
compilers, one pusher, one Envoy; 64 shards) and times what a user sees, from the API accepting an
Ingress to its backend answering through Envoy.

**The bulk load** goes through the front door: N Ingresses are POSTed to the API stand-in with many
concurrent aiohttp requests (`--concurrency`), while the watcher runs, so the watcher, JetStream, the
compilers, Redis, the pusher and Envoy build the state exactly as they would for a real cluster — the
watcher's published index, the shards' contributions, fragments, revisions and change logs, the pusher's
cache and Envoy's scopes are all the pipeline's own work; nothing is written behind its back. One
Ingress per host (`ing-<i>` → `common.host_name(i)`), spread over 100 tenant namespaces (see
`NAMESPACES`): four in five under the platform domain `apps.bench.test`, one in five a custom domain,
four paths each over two of the namespace's four Services, all answered by one echo backend (a separate
process). The load is done when Redis holds a fragment for every unit and a
sample of hosts (the last 20 created and 30 random) answers through Envoy; then the benchmark waits until
the API's resourceVersion (the watcher's status write-backs) and the shards' revisions stop moving.

**TLS, as a platform serves it** (`--no-tls` drops it, for comparison with runs from before): every host
is a TLS host. Platform hosts name their namespace's platform wildcard Secret (`*.apps.bench.test`, one
`kubernetes.io/tls` Secret per tenant namespace, created with the Services); each custom domain has a
Secret of its own with a certificate for exactly that host, POSTed just before the Ingress that names it
(bulk load, burst and activation alike). Certificates come from `bench.certs` (one bench CA, EC P-256, one
shared leaf key) and are made before a phase's clock starts. A TLS host's plain-HTTP request is answered
by the HTTP → HTTPS redirect, so every probe is HTTPS to the gateway's HTTPS port with SNI = host, the
certificate verified against the bench CA: "served" means the gateway presented that host's certificate
(or the wildcard) and the echo answered 200. After the load, one host of each kind is checked for the
certificate it is served with and for the redirect on plain HTTP (`tls_check` in the result).

**Phases**, in this order, on the same stack:

1. *activation*: one new Ingress at a time: from the 201 of its POST to the first 200 from the echo through
   Envoy (fresh connection per probe, polled every 1 ms), with a pause between samples; the per-stage split
   from each change's trace (`bench.stages`, fetched from the OTLP receiver's `GET /traces?host=`). One
   sample in five is a custom domain (its Secret POSTed first, the clock starting at the Ingress's 201),
   the rest platform hosts; the result splits the activation by kind.
   With `--lapse`, then: the watcher is SIGSTOPped past its Lease's renew deadline (there is no other
   watcher to take the Lease) and SIGCONTed, and an Ingress is created at once: time until it answers, and
   whether the watcher resumed from memory or took over in full (its log).
2. *burst*: `--burst` new Ingresses POSTed as fast as the API accepts them (same concurrency); the time from
   the first POST to the last host answering, found by `BURST_PROBERS` probers taking the hosts in
   creation order (HTTPS; after a miss, plain HTTP until the route is in Envoy, then HTTPS again); then
   the gateway's first and repeated handshake rates at rest (`handshakes`).
3. *cold start*: (a) the gateway Envoy is stopped and a fresh one started: time until a sample of hosts
   (the last created and random ones) answers; (b) the pusher is SIGKILLed and started again: time until its
   ADS port listens, and until an Ingress created right after the restart answers through Envoy; (c) one
   compiler is SIGKILLed and started again: time until an Ingress on one of its shards answers.
4. *memory*: VmRSS of watcher, compilers and pusher (and Envoy, NATS, Redis, the stand-ins) after the load
   and after the burst.

`--profile` attaches py-spy (`record --nonblocking`, raw collapsed stacks) to the watcher, the compilers
and the pusher for the burst; `bench.profiles` summarizes the files.

    .venv/bin/python -m bench.pipeline -n 1000 --adds 20 --burst 1000
    .venv/bin/python -m bench.pipeline -n 100000 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import glob
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

import shardgate
from bench import common, stages
from bench.certs import BenchCA
from shardgate.compiler.ownership import desired_owner
from shardgate.keys import shard_of
from shardgate.local.procs import PythonService
from shardgate.local.servers import envoy_binary, free_port, wait_for_port
from shardgate.local.stack import Stack, StackOptions

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
INGRESSES = "/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses"
SERVICES = "/api/v1/namespaces/{ns}/services"
SECRETS = "/api/v1/namespaces/{ns}/secrets"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
OURS = ("watcher", "compiler-1", "compiler-2", "pusher")
OTHERS = ("envoy", "nats", "redis", "kubeapi", "otlp")
BURST_PROBERS = 16
"""Burst hosts probed at once, each prober taking the next host in creation order (the runs without
`burst_probers` in their settings used two sweepers, each host waiting for the ones before it in its
share). Probing still trails the pipeline: the driver gets its share of the two cores like every other
process, and in a 10k burst on 10k (at 15429d9) a host was probed ~17 s after Envoy's ACK at the median,
whether the 16 probers ran in the driver's event loop or in a process of their own (tried, not kept). So
"all served" is an upper bound, and the result also says when Envoy ACKed the last traced host
(`last_ack_s`)."""
GATE_POLL = 0.05
"""Seconds between plain-HTTP probes of a burst host whose route is not in Envoy yet (`burst`). Every
HTTPS probe of a host that is not served yet is a full handshake in which Envoy asks the pusher for a
certificate it does not have (on-demand SDS): the runs that probed HTTPS blindly every 20 ms cost Envoy,
the pusher and this driver several ms of CPU per burst Ingress on the two cores the burst is measured
on."""
SWEEP_POLL = 0.1
ACKED_RESOURCES = "shardgate_pusher_acked_resources_total"
ACK_POLL = 0.1
"""Seconds between reads of the pusher's ACK counter in a burst (`all_acked_s`: when Envoy had ACKed a
scope for every burst host, all of them, not only the traced sample)."""
"""Seconds between HTTPS probes of a burst host whose route is in Envoy but which is not answered yet (a
custom domain whose certificate is still on its way through its own shard)."""
SPAN_EXPORT_WAIT = 6.0  # the SDK's BatchSpanProcessor exports every 5 s
WILDCARD = f"*.{common.PLATFORM_DOMAIN}"
WILDCARD_SECRET = "platform-wildcard-tls"  # in every tenant namespace: Secrets are namespaced
PLATFORM, CUSTOM = "platform", "custom"  # the two kinds of host: wildcard certificate, or its own

Post = tuple[str, dict[str, Any]]  # (API path, with {ns} for the namespace; the object)


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} [pipeline] {message}", file=sys.stderr, flush=True)


# -- objects -----------------------------------------------------------------------------------------


NAMESPACES = 100
"""Tenant namespaces the Ingresses are spread over (`ing-<i>` in `bench-<i mod NAMESPACES>`). The watcher
throttles the changes each namespace causes (SHARDGATE_NAMESPACE_RATE, 50/s after a burst of 500: fair
publishing between tenants), so N Ingresses in one namespace would measure that throttle, not the
pipeline; a real cluster's tens of thousands of domains belong to many tenants."""


def namespace_of(i: int, namespaces: int = NAMESPACES) -> str:
    return f"{common.NAMESPACE}-{i % namespaces}"


def ingress(name: str, host: str, i: int, tls_secret: str | None = None) -> dict[str, Any]:
    """`ing-<i>`'s Ingress for `host`; with `tls_secret`, a TLS host served with that Secret."""
    paths = [
        {"path": p, "pathType": str(t), "backend": {"service": {"name": s, "port": {"number": 80}}}}
        for p, t, s in common.host_paths(i)
    ]
    rule = {"host": host, "http": {"paths": paths}}
    spec: dict[str, Any] = {"ingressClassName": "shardgate", "rules": [rule]}
    if tls_secret is not None:
        spec["tls"] = [{"hosts": [host], "secretName": tls_secret}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace_of(i)},
        "spec": spec,
    }


def kind_of(host: str) -> str:
    return PLATFORM if common.is_platform(host) else CUSTOM


def host_objects(name: str, host: str, i: int, ca: BenchCA | None) -> list[Post]:
    """What a tenant creates for one host, in order: for a custom domain with TLS its Secret, then the
    Ingress (a platform host names its namespace's wildcard Secret, which exists already). Without `ca`,
    a plain-HTTP Ingress."""
    if ca is None:
        return [(INGRESSES, ingress(name, host, i))]
    if kind_of(host) == PLATFORM:
        return [(INGRESSES, ingress(name, host, i, WILDCARD_SECRET))]
    secret = f"{name}-tls"
    return [(SECRETS, ca.secret(namespace_of(i), secret, host)), (INGRESSES, ingress(name, host, i, secret))]


def wildcard_secret(ca: BenchCA, namespace: str) -> Post:
    """The platform wildcard certificate, as one tenant namespace's copy of it."""
    return SECRETS, ca.secret(namespace, WILDCARD_SECRET, WILDCARD)


def tls_mix(hosts: list[str], tls: bool) -> dict[str, int]:
    """How many of `hosts` are served with the platform wildcard, with their own certificate, or plain."""
    platform = sum(1 for h in hosts if kind_of(h) == PLATFORM)
    if not tls:
        return {"wildcard_cert": 0, "own_cert": 0, "plain": len(hosts)}
    return {"wildcard_cert": platform, "own_cert": len(hosts) - platform, "plain": 0}


def backends(echo_port: int, namespace: str) -> list[tuple[str, dict[str, Any]]]:
    """The four Services of one tenant namespace, each with an EndpointSlice on the echo backend."""
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(common.SERVICES):
        name = f"bench-svc-{i}"
        out.append((SERVICES, {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": echo_port}]},
        }))  # fmt: skip
        out.append((SLICES, {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-1", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": echo_port, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        }))  # fmt: skip
    return out


# -- the driver ----------------------------------------------------------------------------------------


class Bench:
    def __init__(
        self,
        stack: Stack,
        session: aiohttp.ClientSession,
        redis: aioredis.Redis,
        ca: BenchCA | None = None,
    ) -> None:
        self.stack = stack
        self.session = session
        self.redis = redis
        self.ca = ca  # None: plain-HTTP hosts (--no-tls)
        self.api = f"http://127.0.0.1:{stack.port['kubeapi']}"
        self.otlp = f"http://127.0.0.1:{stack.port['otlp_http']}"
        self.gateway = stack.port["gateway"]
        self.gateway_https = stack.port["gateway_https"]
        self.client_tls = ca.client_context() if ca else None
        self.shards = stack.options.shards
        self.hosts: list[str] = []  # every host created, in creation order
        self.progress: list[tuple[float, int]] = []  # the bulk load's (seconds after POSTs, fragments)

    def pid(self, name: str) -> int | None:
        member = self.stack.members.get(name)
        proc = member.server.proc if member else None
        return proc.pid if proc is not None and proc.poll() is None else None

    async def post(self, path: str, body: dict[str, Any]) -> tuple[float, int]:
        """POST until the API accepts it (retrying only overload and connection errors); the
        perf_counter() and time_ns() at which the 201 came back."""
        url = self.api + path.format(ns=body["metadata"]["namespace"])
        data = json.dumps(body, separators=(",", ":")).encode()
        delay = 0.05
        while True:
            try:
                async with self.session.post(
                    url, data=data, headers={"Content-Type": "application/json"}
                ) as resp:
                    await resp.read()
                    if resp.status in (200, 201):
                        return time.perf_counter(), time.time_ns()
                    if resp.status < 500 and resp.status != 429:
                        raise RuntimeError(f"POST {url}: {resp.status} {await resp.text()}")
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def create_many(self, items: list[list[Post]], concurrency: int) -> list[tuple[float, int]]:
        """POST every item with `concurrency` items in flight, the objects of one item in order (a
        Secret before the Ingress that names it); the 201 times of each item's last object, in order."""
        out: list[tuple[float, int]] = [(0.0, 0)] * len(items)
        cursor = iter(range(len(items)))

        async def worker() -> None:
            for i in cursor:
                for post in items[i]:
                    out[i] = await self.post(*post)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return out

    def objects(self, name: str, host: str, i: int) -> list[Post]:
        return host_objects(name, host, i, self.ca)

    def objects_of(self, hosts: list[tuple[str, str, int]]) -> list[list[Post]]:
        """`objects` of every (name, host, i), certificates signed here. Without the cyclic garbage
        collector: building 100k nested dicts (and 20k Secrets) triggers its full passes over everything
        built so far, which took about half of the 20 s this takes at N = 100k with it."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            return [self.objects(*h) for h in hosts]
        finally:
            if enabled:
                gc.enable()

    async def ask(self, host: str, path: str = common.PROBE_PATH) -> common.Reply:
        """One probe of `host` the way it is served: HTTPS with SNI = host for a TLS host."""
        if self.client_tls is None:
            return await common.ask(self.gateway, host, path)
        return await common.ask(self.gateway_https, host, path, self.client_tls)

    async def wait_answered(self, host: str, timeout: float) -> float:
        """Until `host` is answered 200 by the echo (see `ask`); the perf_counter() of that answer."""
        port = self.gateway if self.client_tls is None else self.gateway_https
        return await common.wait_answered(
            port, host, common.PROBE_PATH, common.ECHO_MAIN, timeout, self.client_tls
        )

    async def fragments(self) -> int:
        async with self.redis.pipeline(transaction=False) as p:
            for s in range(self.shards):
                p.hlen(f"sg:{{{s}}}:frag")
            return sum(await p.execute())

    async def revisions(self) -> int:
        async with self.redis.pipeline(transaction=False) as p:
            for s in range(self.shards):
                p.get(f"sg:{{{s}}}:rev")
            return sum(int(v or 0) for v in await p.execute())

    async def api_version(self) -> str:
        async with self.session.get(self.api + "/apis/networking.k8s.io/v1/ingresses?limit=1") as resp:
            return str((await resp.json())["metadata"]["resourceVersion"])

    async def wait_leases(self, stable: float = 3.0, timeout: float = 180.0) -> float:
        """Until every shard's lease is held by its desired owner among the live compilers (rendezvous
        hashing, as `Ownership` computes it) and nothing changed for `stable` s. Compilers that start a
        moment apart first split the shards unevenly and hand some over at their next ownership tick
        (every lease TTL / 3): a shard being handed over is not fetched, which a measurement must not see."""
        started = time.perf_counter()
        last, since = None, time.perf_counter()
        while time.perf_counter() - started < timeout:
            async with self.redis.pipeline(transaction=False) as p:
                p.zrange("sg:members", 0, -1)
                for s in range(self.shards):
                    p.get(f"sg:{{{s}}}:lease")
                members, *raw = await p.execute()
            live = sorted(_text(m) for m in members)
            holders = tuple(_text(v).split(":")[0] for v in raw)
            settled = len(live) == self.stack.options.compilers and all(
                h == desired_owner(s, live) for s, h in enumerate(holders)
            )
            if not settled or holders != last:
                last, since = holders, time.perf_counter()
            elif time.perf_counter() - since >= stable:
                return round(time.perf_counter() - started, 2)
            await asyncio.sleep(0.2)
        raise TimeoutError(f"shard ownership did not settle within {timeout:.0f}s: {last}")

    async def wait_units(self, units: int, progress: list[tuple[float, int]], stall: float = 90.0) -> float:
        """Until Redis holds `units` fragments; fails when the count has not moved for `stall` s. Appends
        (seconds, fragments) to `progress` every 5 s: the load's throughput as N grows."""
        started = last_mark = time.perf_counter()
        last, since = -1, time.perf_counter()
        while (have := await self.fragments()) < units:
            now = time.perf_counter()
            if now - last_mark >= 5.0:
                progress.append((round(now - started, 1), have))
                last_mark = now
            if have != last:
                last, since = have, now
            elif now - since > stall:
                raise TimeoutError(f"Redis holds {have} of {units} fragments, no progress for {stall:.0f}s")
            await asyncio.sleep(0.1)
        return time.perf_counter()

    async def wait_quiet(self, quiet: float = 2.0, timeout: float = 300.0) -> float:
        """Until the watcher's status write-backs and the shards' revisions rest for `quiet` s. The API's
        resourceVersion is global, and the watcher's Lease renewal moves it every 2 s: fewer than 5 writes
        in `quiet` s counts as rest."""
        started = time.perf_counter()
        last: tuple[int, int] | None = None
        since = time.perf_counter()
        while time.perf_counter() - started < timeout:
            now = (int(await self.api_version()), await self.revisions())
            if last is None or now[1] != last[1] or now[0] - last[0] >= 5:
                last, since = now, time.perf_counter()
            elif time.perf_counter() - since >= quiet:
                break
            await asyncio.sleep(0.2)
        return time.perf_counter() - started

    async def wait_hosts(self, hosts: list[str], timeout: float) -> float:
        """Until every host answers 200 from the echo; the perf_counter() of the last first answer."""
        done = await asyncio.gather(*(self.wait_answered(h, timeout) for h in hosts))
        return max(done)

    async def envoy_connected(self, timeout: float) -> float:
        """Until Envoy's `control_plane.connected_state` gauge is 1 (its ADS stream is up)."""
        url = f"http://127.0.0.1:{self.stack.port['admin']}/stats?filter=control_plane.connected_state"
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            try:
                async with self.session.get(url) as resp:
                    if (await resp.text()).strip().endswith(": 1"):
                        return time.perf_counter()
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.005)
        raise TimeoutError(f"Envoy not connected to the pusher after {timeout:.0f}s")

    def sample(self, last: int = 20, spread: int = 30) -> list[str]:
        rng = random.Random(len(self.hosts))
        return self.hosts[-last:] + rng.sample(self.hosts, min(spread, len(self.hosts)))

    async def trace(self, host: str) -> dict[str, Any] | None:
        async with self.session.get(self.otlp + "/traces", params={"host": host}) as resp:
            return await resp.json() if resp.status == 200 else None  # type: ignore[no-any-return]

    async def splits(self, samples: list[dict[str, Any]]) -> list[dict[str, float]]:
        return [split for _, split in await self.traced(samples)]

    async def traced(self, samples: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, float]]]:
        """Each sample whose trace is complete, with its stage split (`bench.stages`)."""
        await asyncio.sleep(SPAN_EXPORT_WAIT)
        out = []
        for s in samples:
            trace = await self.trace(s["host"])
            split = stages.split(trace, s["accepted_ns"], s["served_ns"]) if trace else None
            if split is not None:
                out.append((s, split))
        return out

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each process of the stack, and by this driver (its POSTs, probes)."""
        used = {name: common.cpu_seconds(pid) for name in OURS + OTHERS if (pid := self.pid(name))}
        used["driver"] = sum(os.times()[:2])
        return used

    async def memory(self) -> dict[str, float]:
        rss = {name: round(common.rss_mb(pid), 1) for name in OURS + OTHERS if (pid := self.pid(name))}
        rss["ours_total"] = round(sum(rss.get(n, 0.0) for n in OURS), 1)
        rss["envoy_certs"] = await self.envoy_certs()
        return rss

    async def acked_scopes(self) -> float | None:
        """Scopes (one per host) in responses Envoy has ACKed so far, from the pusher's Prometheus counter
        (`shardgate_pusher_acked_resources_total`); None when its metrics do not answer."""
        url = f"http://127.0.0.1:{self.stack.port['pusher_metrics']}/metrics"
        try:
            async with self.session.get(url) as resp:
                text = await resp.text()
        except aiohttp.ClientError:
            return None
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == ACKED_RESOURCES and sample.labels.get("type") == "ScopedRouteConfiguration":
                    return float(sample.value)
        return 0.0

    async def envoy_certs(self) -> float:
        """Certificates Envoy holds (`on_demand_secret.cert_active`): one per SNI a client asked for, each
        part of Envoy's RSS (ARCHITECTURE.md, TLS); NaN when the admin port does not answer."""
        url = f"http://127.0.0.1:{self.stack.port['admin']}/stats"
        params = {"format": "json", "filter": r"on_demand_secret\.cert_active$"}
        try:
            async with self.session.get(url, params=params) as resp:
                stats = (await resp.json(content_type=None))["stats"]
        except (aiohttp.ClientError, ValueError, KeyError):
            return float("nan")
        return float(sum(s.get("value", 0) for s in stats))


# -- phases --------------------------------------------------------------------------------------------


def cpu_used(before: dict[str, float], after: dict[str, float], ingresses: int) -> dict[str, Any]:
    """Where the CPU of a phase went: seconds per process, and milliseconds per Ingress, of all of them
    together and of ours (watcher, compilers, pusher). On two cores, a phase that keeps both busy is
    bounded by the total, whatever the pipeline's parallelism."""
    seconds = {name: round(after[name] - before.get(name, 0.0), 2) for name in after}
    total = sum(seconds.values())
    ours = sum(v for k, v in seconds.items() if k in OURS)
    return {
        "seconds": dict(sorted(seconds.items(), key=lambda kv: -kv[1])),
        "total_s": round(total, 2),
        "ms_per_ingress": round(total * 1000 / max(ingresses, 1), 2),
        "ours_ms_per_ingress": round(ours * 1000 / max(ingresses, 1), 2),
    }


async def bulk_load(b: Bench, n: int, concurrency: int) -> dict[str, Any]:
    hosts = [common.host_name(i) for i in range(n)]
    made = time.perf_counter()
    items = b.objects_of([(f"ing-{i}", h, i) for i, h in enumerate(hosts)])
    mix = tls_mix(hosts, b.ca is not None)
    objects_s = time.perf_counter() - made
    log(f"objects for {n} hosts ({mix}) made in {objects_s:.1f}s")
    secrets = mix["own_cert"] + (NAMESPACES if b.ca else 0)  # a Secret is a unit too
    cpu_before = b.cpu()
    t0 = time.perf_counter()
    accepted = await b.create_many(items, concurrency)
    posted = max((a[0] for a in accepted), default=t0)
    b.hosts.extend(hosts)
    progress: list[tuple[float, int]] = []
    b.progress = progress
    in_redis = await b.wait_units(n + common.SERVICES * NAMESPACES + secrets, progress)
    served = await b.wait_hosts(b.sample(), timeout=600.0)
    cpu = cpu_used(cpu_before, b.cpu(), n)
    log(
        f"loaded {n}: posted in {posted - t0:.1f}s, in Redis at {in_redis - t0:.1f}s, "
        f"served at {served - t0:.1f}s"
    )
    quiet = await b.wait_quiet()
    return {
        "mix": mix,
        "objects_s": round(objects_s, 2),  # building the objects, certificates included: untimed
        "post_s": round(posted - t0, 2),
        "post_rate": round(n / max(posted - t0, 1e-9)),
        "redis_s": round(in_redis - t0, 2),
        "served_s": round(served - t0, 2),
        "quiet_after_s": round(quiet, 1),
        "cpu": cpu,
        "progress": progress,
    }


async def tls_check(b: Bench) -> dict[str, Any]:
    """One loaded host of each kind, as a client sees it: the names on the certificate its HTTPS answer
    came with (the wildcard for a platform host, exactly the host for a custom domain), who answered,
    and the status of a plain-HTTP request (308 to HTTPS: the redirect a TLS host gets)."""
    out: dict[str, Any] = {}
    for kind in (PLATFORM, CUSTOM):
        host = next((h for h in b.hosts if kind_of(h) == kind), None)
        if host is None:
            continue
        https = await b.ask(host)
        http = await common.ask(b.gateway, host, common.PROBE_PATH)
        out[kind] = {
            "host": host,
            "https_status": https.status,
            "backend": https.backend,
            "cert_names": list(https.names),
            "http_status": http.status,
        }
    log(f"TLS check: {out}")
    return out


def activation_host(k: int) -> str:
    """The k-th timed host: one in five a custom domain (the second of every five, so that a short run
    has both kinds), the others platform hosts."""
    return f"www.new-{k}.example" if k % 5 == 1 else f"new-{k}.{common.PLATFORM_DOMAIN}"


async def one_change(b: Bench, name: str, host: str, i: int, timeout: float = 120.0) -> dict[str, Any]:
    """Create one host (a custom domain's Secret first, untimed) and time its Ingress from the 201 to the
    first answer from the echo through Envoy."""
    *before, (path, body) = b.objects(name, host, i)
    for post in before:
        await b.post(*post)
    sent = time.perf_counter()
    accepted, accepted_ns = await b.post(path, body)
    served = await b.wait_answered(host, timeout)
    b.hosts.append(host)
    return {
        "host": host,
        "kind": kind_of(host),
        "ms": round((served - accepted) * 1000, 3),
        "post_ms": round((accepted - sent) * 1000, 3),
        "accepted_ns": accepted_ns,
        "served_ns": accepted_ns + int((served - accepted) * 1e9),
        "served_at": served,
    }


async def activation(b: Bench, adds: int, pause: float) -> dict[str, Any]:
    samples = []
    for k in range(adds):
        samples.append(await one_change(b, f"new-{k}", activation_host(k), k))
        await asyncio.sleep(pause)
    splits = await b.splits(samples)
    ms = [s["ms"] for s in samples]
    log(f"activation: p50 {common.percentile(ms, 50):.1f} ms, p99 {common.percentile(ms, 99):.1f} ms")
    kinds = [s["kind"] for s in samples]
    by_kind = {
        kind: common.summary([m for m, k in zip(ms, kinds, strict=True) if k == kind])
        for kind in (PLATFORM, CUSTOM)
        if kind in kinds
    }
    return {
        "add": common.summary(ms),
        "add_ms": ms,
        "add_kind": kinds,
        "mix": tls_mix([s["host"] for s in samples], b.ca is not None),
        "by_kind": by_kind,
        "post_ms": common.summary([s["post_ms"] for s in samples]),
        "stages": stages.summarize(splits),
        "traced": len(splits),
    }


def start_profiles(
    b: Bench, directory: Path, seconds: int
) -> list[tuple[str, subprocess.Popen[bytes], Path]]:
    spy = Path(sys.executable).parent / "py-spy"
    out = []
    for name in OURS:
        pid = b.pid(name)
        if pid is None:
            continue
        path = directory / f"{name}.txt"
        cmd = [str(spy), "record", "--pid", str(pid), "--format", "raw", "--rate", "97", "--nonblocking",
               "--duration", str(seconds), "--output", str(path)]  # fmt: skip
        out.append((name, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), path))
    return out


async def burst(b: Bench, count: int, concurrency: int, profile_dir: Path | None) -> dict[str, Any]:
    first = len(b.hosts)
    names = [f"burst-{k}" for k in range(count)]
    hosts = [common.host_name(first + k).replace("app-", "burst-").replace("tenant-", "burst-tenant-")
             for k in range(count)]  # fmt: skip
    items = b.objects_of([(n, h, first + k) for k, (n, h) in enumerate(zip(names, hosts, strict=True))])
    profiles = start_profiles(b, profile_dir, 900) if profile_dir else []
    if profiles:
        await asyncio.sleep(1.0)  # py-spy attaches
    served: list[float] = [0.0] * count
    probes = {"https": 0, "https_failed": 0, "gate": 0}
    queue = iter(range(count))  # shared: each prober takes the next host in creation order

    async def serve_time(host: str) -> float:
        """Until `host` is answered by the echo, probed the way it is served (HTTPS for a TLS host). A
        host that fails is probed over plain HTTP until its route is in Envoy (a TLS host's plain request
        gets the redirect then) before HTTPS is tried again: a handshake for a host that is not there
        costs Envoy an on-demand SDS request, a plain request costs it a 404."""
        while True:
            probes["https"] += 1
            reply = await b.ask(host)
            if reply.status == 200 and reply.backend == common.ECHO_MAIN:
                return time.perf_counter()
            probes["https_failed"] += 1
            while b.client_tls is not None:
                probes["gate"] += 1
                if (await common.ask(b.gateway, host, common.PROBE_PATH)).status not in (0, 404):
                    break
                if time.perf_counter() - t0 > 600:
                    raise TimeoutError(f"burst host {host} not routed within 600 s")
                await asyncio.sleep(GATE_POLL)
            if time.perf_counter() - t0 > 600:
                raise TimeoutError(f"burst host {host} not served within 600 s: {reply}")
            await asyncio.sleep(SWEEP_POLL)

    async def prober() -> None:
        for k in queue:
            served[k] = await serve_time(hosts[k])

    async def all_acked(baseline: float | None) -> float | None:
        """Seconds after t0 at which the pusher had counted an ACKed scope per burst host."""
        if baseline is None:
            return None
        while True:
            acked = await b.acked_scopes()
            if acked is not None and acked >= baseline + count:
                return time.perf_counter() - t0
            await asyncio.sleep(ACK_POLL)

    acked_before = await b.acked_scopes()
    cpu_before = b.cpu()
    t0, t0_ns = time.perf_counter(), time.time_ns()
    creating = asyncio.create_task(b.create_many(items, concurrency))
    acking = asyncio.create_task(all_acked(acked_before))
    await asyncio.gather(*(prober() for _ in range(BURST_PROBERS)))
    accepted = await creating
    try:  # every host answers through Envoy by now, so its scope is in an ACKed response
        all_acked_s = await asyncio.wait_for(acking, 30)
    except TimeoutError:
        all_acked_s = None
    cpu = cpu_used(cpu_before, b.cpu(), count)
    all_served = max(served) - t0
    posted = max(a[0] for a in accepted) - t0
    b.hosts.extend(hosts)
    profile_files = {}
    for name, proc, path in profiles:
        proc.send_signal(signal.SIGINT)  # py-spy writes what it sampled so far on Ctrl-C
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            err = b""
        profile_files[name] = (
            str(path) if path.exists() else f"missing: {err.decode(errors='replace')[-300:]}"
        )
    log(
        f"burst of {count}: posted in {posted:.1f}s, all served at {all_served:.1f}s; CPU {cpu['total_s']}s "
        f"({cpu['ms_per_ingress']} ms per Ingress, ours {cpu['ours_ms_per_ingress']}); probes {probes}"
    )
    step = max(1, count // 100)
    picks = sorted({*range(0, count, step), count - 1})
    # A prober reaches a host only after the hosts before it, so its answer time is an upper bound, not
    # the host's own: per host, the trace's envoy.ack is the end. The last host's ACK, next to "all
    # served", shows how much of that figure is the probing's.
    samples = [{"host": hosts[k], "k": k, "accepted_ns": accepted[k][1], "served_ns": None} for k in picks]
    traced = await b.traced(samples)
    splits = [split for _, split in traced]
    # Each traced host's ACK by Envoy, ms after the first POST, and how much later the probe found it.
    acked = [((s["accepted_ns"] - t0_ns) / 1e6 + split["to_ack"], s["k"]) for s, split in traced]
    last_ack = max(ms for ms, _ in acked) / 1e3 if acked else None
    lag = [(served[k] - t0) * 1e3 - ms for ms, k in acked]
    curve = sorted(t - t0 for t in served)
    return {
        "count": count,
        "mix": tls_mix(hosts, b.ca is not None),
        "post_s": round(posted, 2),
        "accept_rate": round(count / posted),
        "all_served_s": round(all_served, 2),
        "rate": round(count / all_served),
        "last_ack_s": None if last_ack is None else round(last_ack, 2),
        "all_acked_s": None if all_acked_s is None else round(all_acked_s, 2),
        "probes": probes,
        "served_by_decile_s": [round(curve[min(count - 1, count * d // 10)], 2) for d in range(1, 11)],
        "ack_to_probed_ms": common.summary(lag) if lag else None,
        "t0_ns": t0_ns,
        "stages": stages.summarize(splits),
        "traced": len(splits),
        "cpu": cpu,
        "profiles": profile_files,
    }


HANDSHAKES = 3000
"""Existing hosts the gateway's handshake rate is measured on after the burst (`handshakes`)."""


async def handshakes(b: Bench, hosts: list[str]) -> dict[str, Any]:
    """How fast the gateway answers first clients, with the pipeline at rest: `hosts` probed once each
    (the burst's probe, `BURST_PROBERS` at a time) while Envoy holds none of their certificates — every
    handshake waits for an on-demand SDS round trip, as a new host's first client does — and then the
    same hosts again, their certificates held. The burst's "all served" cannot beat the first rate."""
    out: dict[str, Any] = {}
    for label in ("first", "again"):
        queue = iter(hosts)
        failed = 0

        async def prober(queue: Iterator[str]) -> None:
            nonlocal failed
            for host in queue:
                reply = await b.ask(host)
                failed += reply.status != 200 or reply.backend != common.ECHO_MAIN

        cpu_before, started = b.cpu(), time.perf_counter()
        await asyncio.gather(*(prober(queue) for _ in range(BURST_PROBERS)))
        elapsed = time.perf_counter() - started
        cpu = cpu_used(cpu_before, b.cpu(), len(hosts))
        out[label] = {
            "handshakes": len(hosts),
            "per_s": round(len(hosts) / elapsed),
            "failed": failed,
            "cpu_ms_per_handshake": {k: round(v * 1000 / len(hosts), 3) for k, v in cpu["seconds"].items()},
        }
        log(f"handshakes ({label}): {out[label]}")
    return out


LEADING_AGAIN = "leading again, nobody else held the Lease"  # the watcher's log line of a resume
LEADING_TAKEOVER = "leading: "  # ... and of a full takeover (index reloaded, every source re-diffed)


async def lapse(b: Bench) -> dict[str, Any]:
    """The watcher's Lease lapses with nobody else to take it (one watcher: as when an API server too
    busy to answer its renewals in time): SIGSTOP it past its renew deadline, SIGCONT it, and create an
    Ingress at once. Timed until that Ingress answers through Envoy; the watcher's log says whether it
    resumed from memory or took over in full (reloading the published index and re-diffing everything)."""
    from shardgate.watcher.settings import Settings as WatcherSettings

    pid = b.pid("watcher")
    if pid is None:
        return {"error": "no watcher process"}
    log_path = b.stack.dir / "watcher" / "watcher.log"
    before = log_path.read_text(errors="replace") if log_path.exists() else ""
    paused = WatcherSettings().renew_deadline + 2.0
    os.kill(pid, signal.SIGSTOP)
    await asyncio.sleep(paused)
    os.kill(pid, signal.SIGCONT)
    t0 = time.perf_counter()
    result = await one_change(b, "after-lapse", f"after-lapse.{common.PLATFORM_DOMAIN}", 0, timeout=600)
    after = (log_path.read_text(errors="replace") if log_path.exists() else "")[len(before) :]
    resumed, took_over = after.count(LEADING_AGAIN), after.count(LEADING_TAKEOVER)
    log(
        f"lease lapse ({paused:.0f} s paused): a new Ingress served {result['served_at'] - t0:.2f}s after "
        f"SIGCONT ({result['ms']:.0f} ms after its 201); resumed {resumed}, full takeovers {took_over}"
    )
    return {
        "paused_s": paused,
        "served_after_cont_s": round(result["served_at"] - t0, 3),
        "after_201_ms": result["ms"],
        "resumed": resumed,
        "full_takeovers": took_over,
    }


async def cold_envoy(b: Bench) -> dict[str, Any]:
    envoy = b.stack.members["envoy"].server
    envoy.stop()
    probes = b.sample()
    t0 = time.perf_counter()
    await asyncio.to_thread(envoy.start)  # spawn, wait for the admin port
    started = time.perf_counter()
    served = await b.wait_hosts(probes, timeout=300)
    log(f"cold Envoy: admin up at {started - t0:.2f}s, sample served at {served - t0:.2f}s")
    return {"admin_s": round(started - t0, 2), "served_s": round(served - t0, 2), "probed": len(probes)}


async def restart_pusher(b: Bench) -> dict[str, Any]:
    """SIGKILL the pusher, start it again, and create an Ingress at once: until ADS listens, and until
    that Ingress answers through Envoy (Envoy reconnects with its own backoff)."""
    pusher = b.stack.members["pusher"].server
    pusher.stop(kill=True)
    t0 = time.perf_counter()
    pusher.spawn()
    host = f"after-pusher.{common.PLATFORM_DOMAIN}"
    change = asyncio.create_task(one_change(b, "after-pusher", host, 0, 300))
    await asyncio.to_thread(wait_for_port, b.stack.port["xds"], 300.0)
    listening = time.perf_counter()
    connected = await b.envoy_connected(300.0)
    result = await change
    log(
        f"pusher restart: ADS listening at {listening - t0:.2f}s, Envoy connected at {connected - t0:.2f}s, "
        f"new host served at {result['served_at'] - t0:.2f}s"
    )
    return {
        "listening_s": round(listening - t0, 2),
        "envoy_connected_s": round(connected - t0, 2),
        "new_host_served_s": round(result["served_at"] - t0, 2),
        "new_host_after_201_ms": result["ms"],
    }


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


async def restart_compiler(b: Bench, name: str = "compiler-1") -> dict[str, Any]:
    raw = await asyncio.gather(*(b.redis.get(f"sg:{{{s}}}:lease") for s in range(b.shards)))
    leases = [_text(v) for v in raw]
    owned = {s for s, v in enumerate(leases) if v.startswith(name + ":")}
    if not owned:
        holders = sorted({v.split(":")[0] or "(none)" for v in leases})
        return {"error": f"{name} holds no shard lease; holders: {holders}"}
    k = 0
    while shard_of(f"h:after-{name}-{k}.{common.PLATFORM_DOMAIN}", b.shards) not in owned:
        k += 1
    host = f"after-{name}-{k}.{common.PLATFORM_DOMAIN}"
    compiler = b.stack.members[name].server
    t0 = time.perf_counter()
    compiler.stop(kill=True)
    compiler.spawn()
    result = await one_change(b, f"after-{name}-{k}", host, k, timeout=120)
    served = result["served_at"]
    holder = await b.redis.get(f"sg:{{{shard_of('h:' + host, b.shards)}}}:lease")
    log(f"{name} restart: a host on its shard served {served - t0:.2f}s after the SIGKILL")
    return {
        "served_s": round(served - t0, 2),
        "after_201_ms": result["ms"],
        "owned_shards": len(owned),
        "holder_after": _text(holder) or None,
    }


# -- one run -------------------------------------------------------------------------------------------


async def drive(
    stack: Stack, args: argparse.Namespace, echo_port: int, profile_dir: Path | None, out: dict[str, Any]
) -> None:
    """Run the phases, filling `out` as each finishes: a failed or stopped run keeps what was done."""
    out["n"] = args.n
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
    redis = aioredis.Redis(port=stack.port["redis"])
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        b = Bench(stack, session, redis, BenchCA() if args.tls else None)
        out["leases_settled_s"] = await b.wait_leases()
        setup = [[x] for i in range(NAMESPACES) for x in backends(echo_port, namespace_of(i))]
        if b.ca is not None:
            setup += [[wildcard_secret(b.ca, namespace_of(i))] for i in range(NAMESPACES)]
        await b.create_many(setup, 16)
        out["load"] = await bulk_load(b, args.n, args.concurrency)
        if b.ca is not None:
            out["tls_check"] = await tls_check(b)
        out["loadavg_loaded"] = common.machine_info()["loadavg"]
        out["memory_loaded"] = await b.memory()
        log(f"memory after load: {out['memory_loaded']}")
        out["activation"] = await activation(b, args.adds, args.pause)
        out["loadavg_activation"] = common.machine_info()["loadavg"]
        if args.lapse:
            out["lapse"] = await lapse(b)
            await b.wait_quiet()
        if args.burst:
            out["burst"] = await burst(b, args.burst, args.concurrency, profile_dir)
            out["loadavg_burst"] = common.machine_info()["loadavg"]
            out["memory_burst"] = await b.memory()
            if b.ca is not None:  # after the memory: these leave certificates in Envoy
                loaded = b.hosts[: args.n]  # Envoy has been asked for the certificates of a sample only
                middle = max(0, len(loaded) // 2 - HANDSHAKES // 2)
                out["handshakes"] = await handshakes(b, loaded[middle : middle + HANDSHAKES])
            await b.wait_quiet()
        if args.cold:
            out["cold_envoy"] = await cold_envoy(b)
            await b.wait_quiet()
            out["restart_pusher"] = await restart_pusher(b)
            await b.wait_quiet()
            out["restart_compiler"] = await restart_compiler(b)
        out["memory_end"] = await b.memory()
        out["hosts_total"] = len(b.hosts)
    await redis.aclose()


def code_under_test() -> dict[str, Any]:
    """Which code the stack runs: a `bench.snapshot` of a commit, or the live working tree."""
    package = Path(shardgate.__file__).resolve().parent
    marker = package.parents[2] / "COMMIT"  # <snapshot>/tree/libs/shardgate
    if marker.exists():
        return {"commit": marker.read_text().strip(), "snapshot": str(package)}
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "libs", "services"], capture_output=True, text=True
    )
    return {"commit": commit, "snapshot": None, "dirty": bool(dirty.stdout.strip())}


def lease_losses(directory: Path) -> dict[str, int]:
    """'lease lost' / 'worker ended' lines per compiler log: shard ownership churn during the run."""
    out = {}
    for path in sorted(directory.glob("compiler-*/compiler-*.log")):
        text = path.read_text(errors="replace")
        out[path.parent.name] = text.count("lease lost") + text.count("worker ended")
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=1000, help="existing domains (one Ingress each)")
    parser.add_argument("--adds", type=int, default=50, help="single new Ingresses timed")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between timed Ingresses")
    parser.add_argument("--burst", type=int, default=10000, help="new Ingresses in the burst (0: skip)")
    parser.add_argument("--concurrency", type=int, default=64, help="POSTs in flight (bulk load, burst)")
    parser.add_argument("--no-cold", dest="cold", action="store_false", help="skip the cold starts")
    parser.add_argument(
        "--no-tls",
        dest="tls",
        action="store_false",
        help="plain-HTTP hosts and no Secrets (the mix of the runs before the TLS mix, to compare with them)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the services during the burst")
    parser.add_argument(
        "--lapse",
        action="store_true",
        help="after the activation samples, pause the watcher past its Lease deadline and time a change",
    )
    parser.add_argument(
        "--lease-ttl-ms",
        type=int,
        help="SHARDGATE_LEASE_TTL_MS for the compilers (default: theirs, 3000); see BENCHMARKS.md on churn",
    )
    parser.add_argument("--dir", type=Path, help="keep the stack (logs, spans) here instead of a temp dir")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the result JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    out: Path = args.out / f"pipeline-{stamp}.json"
    profile_dir = args.out / f"profiles-{stamp}" if args.profile else None
    if profile_dir:
        profile_dir.mkdir(parents=True)
    if args.lease_ttl_ms:
        os.environ["SHARDGATE_LEASE_TTL_MS"] = str(args.lease_ttl_ms)  # the stack's children inherit it
    if not os.environ.get("SHARDGATE_ENVOY"):  # a snapshot's REPO_ROOT has no .venv-envoy
        found = sorted(glob.glob(str(ROOT / ".venv-envoy/lib/python3*/site-packages/envoy/_bin/envoy")))
        if found:
            os.environ["SHARDGATE_ENVOY"] = found[0]
    run: dict[str, Any] = {
        "kind": "pipeline",
        "code": code_under_test(),
        "command": ".venv/bin/python -m bench.pipeline" + "".join(" " + shlex.quote(a) for a in argv),
        "started": started.isoformat(timespec="seconds"),
        "machine": common.machine_info(),
        "versions": {"envoy": common.tool_version([envoy_binary(), "--version"]), "nginx": ""},
        "settings": {
            "n": args.n,
            "adds": args.adds,
            "burst": args.burst,
            "concurrency": args.concurrency,
            "shards": 64,
            "namespaces": NAMESPACES,
            "tls": args.tls,
            "compilers": 2,
            "profile": args.profile,
            "lease_ttl_ms": int(os.environ.get("SHARDGATE_LEASE_TTL_MS", "3000")),
            "sweep_poll_s": SWEEP_POLL,
            "burst_probers": BURST_PROBERS,
            "gate_poll_s": GATE_POLL,
        },
    }
    with tempfile.TemporaryDirectory(prefix="sg-pipeline-") as tmp_dir:
        tmp = str(args.dir) if args.dir else tmp_dir
        stack = Stack(StackOptions(Path(tmp) / "stack", shards=64, compilers=2), log=log)
        echo_port = free_port()
        echo = PythonService(common.ECHO_MAIN, Path(tmp) / "echo", "shardgate.cli",
                             args=["echo", "--name", common.ECHO_MAIN, "--port", str(echo_port)],
                             ready_ports=[echo_port])  # fmt: skip
        signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
        try:
            echo.start()
            stack.start()
            run["result"] = {}
            asyncio.run(drive(stack, args, echo_port, profile_dir, run["result"]))
        except BaseException as exc:
            run["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            run["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            run["machine"]["loadavg_end"] = common.machine_info()["loadavg"]
            run["lease_churn"] = lease_losses(Path(tmp) / "stack")
            out.write_text(json.dumps(run, indent=1))
            log(f"wrote {out}")
            stack.stop()
            echo.stop(kill=True)
    return out


if __name__ == "__main__":
    main()
