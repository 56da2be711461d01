"""The reload-based baseline: nginx with N server blocks, a new host added by re-rendering and reloading.

This is what ingress-nginx does for a new host: render the whole nginx.conf from every Ingress, then
`nginx -s reload`. The master re-parses the whole configuration, starts new workers and lets the old
ones drain. Each sample is timed from rendering the config to the first 200 from the echo backend for
the new host on a fresh connection, the same probe the Envoy layouts get. ingress-nginx also runs
`nginx -t` on the new config before reloading; that is NOT done here, so this baseline is, if anything,
faster than the real controller.

nginx runs as Debian's `nginx-light` (1.22) with one worker (Envoy runs with `--concurrency 1`), in a
prefix directory of its own on a free loopback port. Memory is the sum of the RSS (and of the PSS, which
counts pages the master and workers share once) of the master and all its children, sampled after the
load and every 20 ms during the reloads (old workers still draining count).

    .venv/bin/python -m bench.nginx_reload -n 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common
from shardgate.local.echo import EchoServer
from shardgate.local.servers import free_port, wait_for_port
from shardgate.model import PathType

PAUSE = 0.05  # between samples: the previous reload's old workers are left to drain


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        raise RuntimeError("nginx not found: apt-get install -y nginx-light")
    return found


def _upstream(name: str) -> str:
    return name.replace("-", "_")


def render(prefix: Path, port: int, echo_ports: dict[str, int], hosts: list[tuple[int, str, bool]]) -> str:
    """nginx.conf for every (index, host, edited) with the same paths and backends the Envoy bench uses."""
    services = [common.service_name(s) for s in range(common.SERVICES)]
    upstreams = [(svc, echo_ports[common.ECHO_MAIN]) for svc in services]
    upstreams.append((common.EDIT_SERVICE, echo_ports[common.ECHO_EDIT]))
    out = [
        "daemon off;",
        "worker_processes 1;",
        f"pid {prefix}/nginx.pid;",
        f"error_log {prefix}/error.log warn;",
        "events { worker_connections 1024; }",
        "http {",
        "  access_log off;",
        f"  client_body_temp_path {prefix}/tmp/body; proxy_temp_path {prefix}/tmp/proxy;",
        f"  fastcgi_temp_path {prefix}/tmp/fcgi; uwsgi_temp_path {prefix}/tmp/uwsgi;",
        f"  scgi_temp_path {prefix}/tmp/scgi;",
        "  server_names_hash_max_size 1048576; server_names_hash_bucket_size 128;",
        '  proxy_http_version 1.1; proxy_set_header Connection "";',
    ]
    for svc, echo_port in upstreams:
        out.append(f"  upstream {_upstream(svc)} {{ server 127.0.0.1:{echo_port}; keepalive 8; }}")
    out.append(f"  server {{ listen 127.0.0.1:{port} default_server; return 404; }}")
    for i, host, edited in hosts:
        out.append(f"  server {{ listen 127.0.0.1:{port}; server_name {host};")
        for path, path_type, svc in common.host_paths(i, edited):
            match = f"= {path}" if path_type is PathType.EXACT else path
            out.append(f"    location {match} {{ proxy_pass http://{_upstream(svc)}; }}")
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


class Nginx:
    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.conf = prefix / "nginx.conf"
        for sub in ("tmp", "logs"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self, *extra: str) -> list[str]:
        return [nginx_binary(), "-p", str(self.prefix), "-c", str(self.conf), *extra]

    def start(self, port: int) -> None:
        log = open(self.prefix / "stderr.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            self.argv(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        wait_for_port(port, timeout=600)

    async def reload(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.argv("-s", "reload"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"nginx -s reload failed: {out.decode(errors='replace')}")

    def memory_mb(self) -> tuple[float, float]:
        """(sum of RSS, sum of PSS) over the master and its children."""
        if self.proc is None:
            return 0.0, 0.0
        pids = [self.proc.pid, *common.children(self.proc.pid)]
        return sum(common.rss_mb(p) for p in pids), sum(common.pss_mb(p) for p in pids)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


async def measure(n: int, adds: int, edits: int, workdir: Path) -> dict[str, Any]:
    """Load N hosts into nginx, then time `adds` new hosts and `edits` edits, each a re-render + reload."""
    echo_main, echo_edit = EchoServer(common.ECHO_MAIN), EchoServer(common.ECHO_EDIT)
    await echo_main.start()
    await echo_edit.start()
    echo_ports = {common.ECHO_MAIN: echo_main.port, common.ECHO_EDIT: echo_edit.port}
    port = free_port()
    prefix = workdir / f"nginx-{n}"
    nginx = Nginx(prefix)
    hosts: list[tuple[int, str, bool]] = [(i, common.host_name(i), False) for i in range(n)]
    result: dict[str, Any] = {"approach": "nginx-reload", "n": n}
    peak_rss = peak_pss = 0.0
    sampling = True

    async def sample_memory() -> None:
        nonlocal peak_rss, peak_pss
        while sampling:
            rss, pss = await asyncio.to_thread(nginx.memory_mb)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            await asyncio.sleep(0.02)

    try:
        t_start = time.perf_counter()
        nginx.conf.write_text(render(prefix, port, echo_ports, hosts))
        await asyncio.to_thread(nginx.start, port)
        await common.wait_answered(port, hosts[-1][1], common.PROBE_PATH, common.ECHO_MAIN, timeout=600)
        result["load_s"] = round(time.perf_counter() - t_start, 3)
        rss, pss = nginx.memory_mb()
        result["rss_loaded_mb"], result["pss_loaded_mb"] = round(rss, 1), round(pss, 1)
        render_ms: list[float] = []

        async def change(host: str, path: str, backend: str) -> float:
            await asyncio.sleep(PAUSE)
            t0 = time.perf_counter()
            nginx.conf.write_text(render(prefix, port, echo_ports, hosts))
            render_ms.append((time.perf_counter() - t0) * 1000)
            await nginx.reload()
            done = await common.wait_answered(port, host, path, backend)
            return (done - t0) * 1000

        sampler = asyncio.create_task(sample_memory())
        add_ms, edit_ms = [], []
        for k in range(adds):
            host = common.new_host_name(k)
            hosts.append((n + k, host, False))
            add_ms.append(await change(host, common.PROBE_PATH, common.ECHO_MAIN))
        for k in range(edits):
            i = (k * 7919) % n
            hosts[i] = (i, hosts[i][1], True)
            edit_ms.append(await change(hosts[i][1], common.EDIT_PROBE_PATH, common.ECHO_EDIT))
        sampling = False
        await sampler
        result["add_ms"] = [round(v, 3) for v in add_ms]
        result["edit_ms"] = [round(v, 3) for v in edit_ms]
        result["add"] = common.summary(add_ms)
        result["edit"] = common.summary(edit_ms)
        result["render"] = common.summary(render_ms)
        rss, pss = nginx.memory_mb()
        result["rss_end_mb"], result["pss_end_mb"] = round(rss, 1), round(pss, 1)
        result["rss_peak_mb"], result["pss_peak_mb"] = round(peak_rss, 1), round(peak_pss, 1)
    finally:
        sampling = False
        with contextlib.suppress(Exception):
            await asyncio.to_thread(nginx.stop)
        await echo_main.stop()
        await echo_edit.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=1000, help="existing hosts")
    parser.add_argument("--adds", type=int, default=10)
    parser.add_argument("--edits", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as tmp:
        result = asyncio.run(measure(args.n, args.adds, args.edits, Path(tmp)))
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_ms")}, indent=1))


if __name__ == "__main__":
    main()
