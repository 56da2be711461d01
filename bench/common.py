"""What every benchmark shares: the host mix, the HTTP probe, percentiles and process memory.

The approaches are compared on the same corpus of hosts and the same probe, so the only thing that
differs between them is how a new host reaches the data plane. The probe is a real HTTP/1.1 request on a
fresh TCP connection per attempt (`Connection: close`): a reload-based proxy keeps serving old
connections with its old config, and a fresh connection is what a new client of a new domain opens. It
is written on asyncio streams rather than an HTTP client library so that one attempt costs a fraction
of a millisecond and the polling resolution stays well under what is being measured.

A TLS host is probed over HTTPS (`ask(..., tls=context)`): its plain-HTTP request is answered by the
HTTP → HTTPS redirect, not by its backend, and "served" for a client of a TLS host means the handshake
with SNI = host presents a certificate that verifies for that host *and* the backend answers. Each HTTPS
probe is a fresh connection with a full handshake, the way a new client of a new domain arrives.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from shardgate.model import Backend, HostRoutes, PathRule, PathType

NAMESPACE = "bench"
SERVICES = 4  # services bench-svc-0..3, all answered by the echo named ECHO_MAIN
ECHO_MAIN = "echo-main"
ECHO_EDIT = "echo-edit"  # answers the path an edit adds, so the probe can tell the edit is live
EDIT_SERVICE = "bench-svc-edit"
EDIT_PATH = "/v2"
PROBE_PATH = "/api/probe"  # matches the "/api" prefix every host has
EDIT_PROBE_PATH = "/v2/probe"  # before an edit: the "/" route (echo-main); after: echo-edit
PLATFORM_DOMAIN = "apps.bench.test"
POLL_INTERVAL = 0.001
CREATED = "2026-01-01T00:00:00Z"


def host_name(i: int) -> str:
    """The i-th existing host: four in five under the platform domain, one in five a custom domain."""
    return f"www.tenant-{i}.example" if i % 5 == 4 else f"app-{i}.{PLATFORM_DOMAIN}"


def is_platform(host: str) -> bool:
    """Under the platform domain (served with its wildcard certificate), rather than a custom domain."""
    return host.endswith("." + PLATFORM_DOMAIN)


def new_host_name(k: int) -> str:
    return f"new-{k}.{PLATFORM_DOMAIN}"


def service_name(i: int) -> str:
    return f"bench-svc-{i % SERVICES}"


def host_paths(i: int, edited: bool = False) -> list[tuple[str, PathType, str]]:
    """Four paths per host (three prefixes, one exact) over two of the services; an edit adds one."""
    svc, other = service_name(i), service_name(i + 1)
    paths = [
        ("/", PathType.PREFIX, svc),
        ("/api", PathType.PREFIX, svc),
        ("/static", PathType.PREFIX, other),
        ("/healthz", PathType.EXACT, svc),
    ]
    if edited:
        paths.append((EDIT_PATH, PathType.PREFIX, EDIT_SERVICE))
    return paths


def host_routes(i: int, host: str, edited: bool = False) -> HostRoutes:
    """The contribution one Ingress (`ing-<i>` in the bench namespace) makes to its host."""
    return HostRoutes(
        namespace=NAMESPACE,
        ingress=f"ing-{i}",
        created=CREATED,
        paths=tuple(PathRule(p, t, Backend(s, 80)) for p, t, s in host_paths(i, edited)),
    )


# -- the probe ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    status: int  # 0: the connection (or the TLS handshake) failed
    backend: str | None  # the echo's name, None when the answer was not an echo's
    names: tuple[str, ...] = ()  # HTTPS: the DNS names of the (verified) certificate the server presented


async def _read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """Head and body, the body by Content-Length: Envoy holds a connection it closes after a local reply
    (a 404) open for its `delayed_close_timeout` (1 s) waiting for the client to close first, so reading
    to EOF would turn every miss into a one-second wait."""
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return head, await reader.readexactly(int(value))
    return head, await reader.read(-1)


HANDSHAKE_TIMEOUT = 5.0
"""Seconds a probe waits for the TLS handshake. The gateway holds a handshake until the control plane
answers its SDS request for the SNI; asyncio's own default (60 s) would turn a held handshake into a
minute-long probe."""


async def _connect(
    port: int, host: str, tls: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if tls is None:
        return await asyncio.open_connection("127.0.0.1", port)
    return await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1", port, ssl=tls, server_hostname=host, ssl_handshake_timeout=HANDSHAKE_TIMEOUT
        ),
        HANDSHAKE_TIMEOUT + 1,
    )


def _peer_names(writer: asyncio.StreamWriter) -> tuple[str, ...]:
    """The DNS SANs of the certificate the server presented (already verified by the context)."""
    tls = writer.get_extra_info("ssl_object")
    cert = tls.getpeercert() if tls is not None else None
    return tuple(str(v) for k, v in (cert or {}).get("subjectAltName", ()) if k == "DNS")


async def ask(port: int, host: str, path: str, tls: ssl.SSLContext | None = None) -> Reply:
    """One GET on a fresh connection to 127.0.0.1:port with `Host: host`; with `tls`, over HTTPS with
    SNI = `host`, the certificate verified by the context (a handshake that fails is a failed probe)."""
    try:
        reader, writer = await _connect(port, host, tls)
    except (OSError, TimeoutError):  # ssl.SSLError is an OSError
        return Reply(0, None)
    try:
        names = _peer_names(writer)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        head, body = await asyncio.wait_for(_read_response(reader), 5.0)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return Reply(0, None)
    finally:
        writer.close()
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return Reply(0, None)
    backend = None
    if status == 200 and body.startswith(b"{"):
        try:
            name = json.loads(body).get("name")
        except ValueError:
            name = None
        backend = name if isinstance(name, str) else None
    return Reply(status, backend, names)


async def wait_answered(
    port: int,
    host: str,
    path: str,
    backend: str,
    timeout: float = 120.0,
    tls: ssl.SSLContext | None = None,
) -> float:
    """Poll until `host` + `path` is answered 200 by `backend` (over HTTPS with `tls`: see `ask`);
    returns time.perf_counter() of that answer."""
    deadline = time.perf_counter() + timeout
    while True:
        reply = await ask(port, host, path, tls)
        now = time.perf_counter()
        if reply.status == 200 and reply.backend == backend:
            return now
        if now > deadline:
            raise TimeoutError(f"{host}{path} not answered by {backend} within {timeout:.0f}s: {reply}")
        await asyncio.sleep(POLL_INTERVAL)


# -- numbers -----------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); with few samples p99 ≈ the max."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = q / 100 * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(samples_ms: Sequence[float]) -> dict[str, float | int]:
    return {
        "n": len(samples_ms),
        "p50": round(percentile(samples_ms, 50), 3),
        "p99": round(percentile(samples_ms, 99), 3),
        "max": round(max(samples_ms), 3) if samples_ms else math.nan,
    }


def rss_mb(pid: int) -> float:
    """VmRSS of one process in MB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def pss_mb(pid: int) -> float:
    """Proportional set size in MB: pages shared between processes (nginx's master and workers share
    the parsed configuration copy-on-write) are split between them instead of counted in each."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc (every process's parent is in its stat line)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def machine_info() -> dict[str, object]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), cpu)
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
    }


def tool_version(argv: list[str]) -> str:
    """First line a `--version`-style command prints (nginx prints to stderr), or "" if missing."""
    if shutil.which(argv[0]) is None and not os.path.exists(argv[0]):
        return ""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    text = (done.stdout + done.stderr).strip()
    # Envoy: "<path> version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"; nginx: "nginx version: nginx/1.22.1".
    envoy = re.search(r"version: [0-9a-f]+/([0-9.]+)/", text)
    if envoy:
        return f"Envoy {envoy.group(1)}"
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
