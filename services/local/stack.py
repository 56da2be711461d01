"""The local stack: the whole pipeline on loopback, one supervisor process owning every child.

`shardgate local up` runs `run_foreground`: it starts, each on a free port and in a directory of its own
under the stack directory, nats-server (JetStream), redis-server, the Kubernetes API stand-in, the OTLP
receiver, one watcher, N compilers (two by default, distinct SHARDGATE_WORKER_ID), one pusher and one
Envoy whose bootstrap points at the pusher; writes `state.json` (schema in `state.py`); then supervises.

Why a supervisor rather than fire-and-forget: a dev stack whose compiler died silently looks exactly
like a pipeline bug. So a child that exits is reported at once and restarted on the same port with the
same data (what the pipeline is built to survive); if one exits `max_restarts` times within
`restart_window` seconds, the stack stops everything and exits 1 with that child's log tail — loud, not
flapping forever. SIGINT/SIGTERM stop the children in two waves (gateway and services first, then the
servers and the trace receiver, so the last spans still land): SIGTERM, then SIGKILL after `grace`.

A service whose module has no `__main__` yet is skipped and reported (state "skipped" with the reason),
so the stack is usable while the pipeline is being built; `--without` skips parts on purpose.

Each `up` starts from empty state: Redis keeps nothing and the API stand-in is in memory, so the old
JetStream directory is removed too (a stream that remembers deltas the compiled state has forgotten
would be a lie). The span file is kept; each child's log from the previous run is kept as `<name>.log.1`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from shardgate.local.procs import PythonService, alive, module_runnable, proc_start_time, stop_pids
from shardgate.local.servers import Envoy, NatsServer, RedisServer, Server, ServerError, free_port
from shardgate.local.spans import SPANS_FILE
from shardgate.local.state import VERSION, read_state, write_state
from shardgate.xds.bootstrap import bootstrap as envoy_bootstrap

PARTS = ("nats", "redis", "kubeapi", "otlp", "watcher", "compiler", "pusher", "envoy")
RESERVED_PORTS = frozenset({4222, 6222, 8222, 6379})
"""The machine's own NATS and Redis: never bind, never signal."""
GATEWAY_NODE = "gateway-0"
LOOPBACK = "127.0.0.1"


class StackError(RuntimeError):
    """The stack could not start, or a child kept dying."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived while the stack was still starting."""


@dataclass
class StackOptions:
    directory: Path
    shards: int = 64
    """Virtual shards (SHARDGATE_SHARDS): the services' default; the stack passes it to all of them."""
    compilers: int = 2
    """Two by default so shard ownership is really shared, as in production."""
    without: frozenset[str] = frozenset()
    grace: float = 5.0
    """Seconds between SIGTERM and SIGKILL when stopping."""
    max_restarts: int = 3
    restart_window: float = 60.0
    start_timeout: float = 30.0


@dataclass
class Member:
    name: str
    server: Server
    wave: int
    """Stop order: wave 0 (gateway, services) before wave 1 (servers, receivers)."""
    ports: dict[str, int]
    restarts: list[float] = field(default_factory=list)
    state: str = "starting"
    reason: str | None = None


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


class Stack:
    def __init__(self, options: StackOptions, log: Callable[[str], None] = _log) -> None:
        self.options = options
        self.dir = options.directory
        self.log = log
        self.members: dict[str, Member] = {}
        self.skipped: dict[str, str] = {}
        self.status = "starting"
        self.error: str | None = None
        self._taken: set[int] = set()
        self.port = {
            name: self._free_port()
            for name in (
                "nats",
                "redis",
                "kubeapi",
                "otlp_grpc",
                "otlp_http",
                "xds",
                "gateway",
                "gateway_https",
                "admin",
                "pusher_metrics",
            )
        }
        self.kubeconfig = self.dir / "kubeconfig"
        self.kubeapi_url: str | None = None

    def _free_port(self) -> int:
        while True:
            port: int = free_port()
            if port not in self._taken and port not in RESERVED_PORTS:
                self._taken.add(port)
                return port

    # -- state --------------------------------------------------------------------------------------

    def _common_env(self, service: str) -> dict[str, str]:
        return {
            "SHARDGATE_NATS_URL": f"nats://127.0.0.1:{self.port['nats']}",
            "SHARDGATE_REDIS_URL": f"redis://127.0.0.1:{self.port['redis']}/0",
            "SHARDGATE_SHARDS": str(self.options.shards),
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.port['otlp_grpc']}",
            "OTEL_SERVICE_NAME": service,
        }

    def to_state(self) -> dict[str, Any]:
        processes: dict[str, Any] = {}
        for name, member in self.members.items():
            proc = member.server.proc
            pid = proc.pid if proc is not None and proc.poll() is None else None
            processes[name] = {
                "state": member.state,
                "pid": pid,
                "start_time": proc_start_time(pid) if pid else None,
                "ports": member.ports,
                "command": member.server.command(),
                "log": str(member.server.log_path),
                "restarts": len(member.restarts),
                "reason": member.reason,
            }
        for name, reason in self.skipped.items():
            processes[name] = {
                "state": "skipped", "pid": None, "start_time": None, "ports": {}, "command": [],
                "log": None, "restarts": 0, "reason": reason,
            }  # fmt: skip
        return {
            "version": VERSION,
            "status": self.status,
            "error": self.error,
            "dir": str(self.dir),
            "supervisor": {"pid": os.getpid(), "start_time": proc_start_time(os.getpid())},
            "kubeconfig": str(self.kubeconfig) if "kubeapi" in self.members else None,
            "gateway": {
                "http": f"127.0.0.1:{self.port['gateway']}",
                "https": f"127.0.0.1:{self.port['gateway_https']}",
                "node": GATEWAY_NODE,
            },
            "nats": f"nats://127.0.0.1:{self.port['nats']}",
            "redis": f"redis://127.0.0.1:{self.port['redis']}/0",
            "kubeapi": self.kubeapi_url,
            "otlp": {
                "grpc": f"http://127.0.0.1:{self.port['otlp_grpc']}",
                "http": f"http://127.0.0.1:{self.port['otlp_http']}",
                "spans": str(self.dir / "otlp" / SPANS_FILE),
            },
            "xds": f"127.0.0.1:{self.port['xds']}",
            "envoy_admin": f"http://127.0.0.1:{self.port['admin']}",
            "pusher_metrics": f"http://127.0.0.1:{self.port['pusher_metrics']}/metrics",
            "shards": self.options.shards,
            "processes": processes,
        }

    def save(self) -> None:
        write_state(self.dir, self.to_state())

    # -- start --------------------------------------------------------------------------------------

    def _wanted(self, part: str) -> bool:
        return part not in self.options.without

    def _service(
        self, name: str, module: str, wave: int, ports: dict[str, int], **kwargs: Any
    ) -> PythonService | None:
        """Declare a `python -m` child, or record why it is skipped."""
        part = name.split("-")[0]
        if not self._wanted(part):
            self.skipped[name] = "left out with --without"
            return None
        if not module_runnable(module):
            self.skipped[name] = f"{module} is not runnable yet (no __main__)"
            return None
        service = PythonService(name, self.dir / name, module, ready_ports=list(ports.values()), **kwargs)
        self.members[name] = Member(name, service, wave, ports)
        return service

    def _start_server(self, member: Member) -> None:
        member.server.start(self.options.start_timeout)
        member.state = "running"
        self.log(f"{member.name} listening on {member.ports}")

    def _start_services(self, services: list[PythonService | None]) -> None:
        started = [s for s in services if s is not None]
        for service in started:
            service.spawn()
        for service in started:
            service.wait_ready(self.options.start_timeout)
            member = self.members[service.name]
            member.state = "running"
            self.log(f"{service.name} started (pid {service.proc.pid if service.proc else '?'})")

    def _service_env(self, name: str) -> dict[str, str]:
        """The environment each pipeline service is configured by (see the report / ARCHITECTURE.md)."""
        part = name.split("-")[0]
        env = self._common_env(f"shardgate-{part}")
        if part == "watcher":
            env["SHARDGATE_KUBECONFIG"] = str(self.kubeconfig)
            env["SHARDGATE_STATUS_ADDRESS"] = "127.0.0.1"
        elif part == "compiler":
            env["SHARDGATE_WORKER_ID"] = name
        elif part == "pusher":
            env["SHARDGATE_XDS_ADDR"] = f"127.0.0.1:{self.port['xds']}"
            env["SHARDGATE_GATEWAY_HTTP_PORT"] = str(self.port["gateway"])
            env["SHARDGATE_GATEWAY_HTTPS_PORT"] = str(self.port["gateway_https"])
            env["SHARDGATE_METRICS_PORT"] = str(self.port["pusher_metrics"])
        return env

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.dir / "nats" / "js", ignore_errors=True)
        self.kubeconfig.unlink(missing_ok=True)
        for log in self.dir.glob("*/*.log"):  # one run per log file; the previous run's is kept as .1
            log.replace(log.with_name(log.name + ".1"))
        self.save()
        self._start_stores()
        self._start_edges()
        self._start_pipeline()
        self._start_gateway()
        self.status = "ready"
        self.save()

    def _start_stores(self) -> None:
        servers: list[tuple[str, Server]] = [
            ("nats", NatsServer(self.dir / "nats", self.port["nats"])),
            ("redis", RedisServer(self.dir / "redis", self.port["redis"])),
        ]
        for name, server in servers:
            if not self._wanted(name):
                self.skipped[name] = "left out with --without"
                continue
            self.members[name] = Member(name, server, 1, {"client": self.port[name]})
            self._start_server(self.members[name])
        self.save()

    def _start_edges(self) -> None:
        """The trace receiver and the API stand-in: what the pipeline talks to besides the stores."""
        grpc_port, http_port, api_port = self.port["otlp_grpc"], self.port["otlp_http"], self.port["kubeapi"]
        otlp = self._service(
            "otlp",
            "shardgate.local.otlp",
            1,
            {"grpc": grpc_port, "http": http_port},
            args=[
                "--grpc-port",
                str(grpc_port),
                "--http-port",
                str(http_port),
                "--dir",
                str(self.dir / "otlp"),
            ],
        )
        kubeapi = self._service(
            "kubeapi",
            "shardgate.kubeapi",
            1,
            {"http": api_port},
            args=["--host", "127.0.0.1", "--port", str(api_port), "--kubeconfig", str(self.kubeconfig)],
            ready_files=[self.kubeconfig],
        )
        self._start_services([otlp, kubeapi])
        if kubeapi is not None:
            self.kubeapi_url = _kubeconfig_server(self.kubeconfig)
        self.save()

    def _start_pipeline(self) -> None:
        names = ["watcher", *(f"compiler-{i}" for i in range(1, self.options.compilers + 1)), "pusher"]
        services: list[PythonService | None] = []
        for name in names:
            if name == "watcher" and "kubeapi" not in self.members and self._wanted("watcher"):
                self.skipped[name] = "needs the API stand-in (shardgate.kubeapi), which is not running"
                continue
            ports = {"xds": self.port["xds"]} if name == "pusher" else {}
            module = f"shardgate.{name.split('-')[0]}"
            services.append(self._service(name, module, 0, ports, env=self._service_env(name)))
        self._start_services(services)
        self.save()

    def _start_gateway(self) -> None:
        if not self._wanted("envoy"):
            self.skipped["envoy"] = "left out with --without"
            return
        admin, xds = self.port["admin"], self.port["xds"]
        bootstrap = envoy_bootstrap(node_id=GATEWAY_NODE, ads_host=LOOPBACK, ads_port=xds, admin_port=admin)
        envoy = Envoy(self.dir / "envoy", bootstrap, admin)
        ports = {
            "admin": self.port["admin"],
            "http": self.port["gateway"],
            "https": self.port["gateway_https"],
        }
        self.members["envoy"] = Member("envoy", envoy, 0, ports)
        self._start_server(self.members["envoy"])

    # -- supervise ----------------------------------------------------------------------------------

    def check(self) -> None:
        """Report and restart children that exited; raise StackError when one keeps dying."""
        for member in self.members.values():
            proc = member.server.proc
            if member.state != "running" or proc is None or proc.poll() is None:
                continue
            code = proc.returncode
            now = time.monotonic()
            member.restarts = [t for t in member.restarts if now - t < self.options.restart_window]
            tail = _tail(member.server.log_path)
            if len(member.restarts) >= self.options.max_restarts:
                member.state = "exited"
                member.reason = f"exited with code {code}"
                raise StackError(
                    f"{member.name} exited with code {code}, {len(member.restarts) + 1} times in "
                    f"{self.options.restart_window:.0f}s; giving up. Last log lines:\n{tail}"
                )
            member.restarts.append(now)
            member.state = "restarting"
            member.reason = f"exited with code {code}"
            self.log(
                f"{member.name} EXITED with code {code}; restarting "
                f"({len(member.restarts)}/{self.options.max_restarts}). Log tail:\n{tail}"
            )
            self.save()
            time.sleep(0.25 * len(member.restarts))
            try:
                member.server.proc = None
                member.server.start(self.options.start_timeout)
            except ServerError as exc:
                member.state = "exited"
                raise StackError(f"{member.name} could not be restarted: {exc}") from exc
            member.state = "running"
            self.log(f"{member.name} restarted")
            self.save()

    def stop(self) -> None:
        """Stop the children, wave by wave: SIGTERM, then SIGKILL after the grace period."""
        if self.status not in ("failed",):
            self.status = "stopping"
        self.save()
        for wave in (0, 1):
            members = [m for m in self.members.values() if m.wave == wave]
            for member in members:
                proc = member.server.proc
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self.options.grace
            for member in members:
                proc = member.server.proc
                if proc is None:
                    continue
                try:
                    proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.log(f"{member.name} ignored SIGTERM for {self.options.grace:.0f}s; killing it")
                    proc.kill()
                    proc.wait()
                member.server.proc = None
                if member.state != "exited":
                    member.state = "stopped"
        if self.status != "failed":
            self.status = "stopped"
        self.save()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _kubeconfig_server(path: Path) -> str | None:
    try:
        config = yaml.safe_load(path.read_text())
        return str(config["clusters"][0]["cluster"]["server"])
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
        return None


def running_supervisor(directory: Path) -> int | None:
    """The pid of a live supervisor recorded in the directory's state.json, if any."""
    state = read_state(directory)
    if not state:
        return None
    supervisor = state.get("supervisor") or {}
    pid, start_time = supervisor.get("pid"), supervisor.get("start_time")
    return int(pid) if pid and alive(int(pid), start_time) else None


def run_foreground(options: StackOptions, on_ready: Callable[[dict[str, Any]], None]) -> int:
    """Start the stack, call `on_ready(state)`, supervise until SIGINT/SIGTERM; the exit code."""
    other = running_supervisor(options.directory)
    if other is not None and other != os.getpid():
        raise StackError(
            f"a stack is already running in {options.directory} (pid {other}): `shardgate local down`"
        )
    stack = Stack(options)
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if stack.status == "starting":
            raise Interrupted

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        stack.start()
        on_ready(stack.to_state())
        while not stopping:
            stack.check()
            time.sleep(0.2)
        stack.log("stopping the stack")
    except Interrupted:
        stack.log("interrupted while starting; stopping what was started")
    except (StackError, ServerError) as exc:
        stack.status = "failed"
        stack.error = str(exc)
        stack.log(f"STACK FAILED: {exc}")
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


def run_detached(directory: Path, argv: list[str], timeout: float = 60.0) -> dict[str, Any]:
    """Re-run `argv` (a foreground `local up`) in a new session; return its state once ready."""
    other = running_supervisor(directory)
    if other is not None:
        raise StackError(f"a stack is already running in {directory} (pid {other}): `shardgate local down`")
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "stack.log"
    if log_path.exists():
        log_path.replace(log_path.with_name("stack.log.1"))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state: dict[str, Any] | None = read_state(directory)
        if state and state.get("supervisor", {}).get("pid") == proc.pid:
            if state.get("status") == "ready":
                return state
            if state.get("status") == "failed":
                break
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    else:
        proc.terminate()
    proc.wait(30)
    raise StackError(f"the stack did not become ready; {log_path}:\n{_tail(log_path, 40)}")


def stop_recorded(directory: Path, grace: float = 5.0, timeout: float = 30.0) -> dict[str, str]:
    """`local down`: ask the supervisor to stop; if it is gone, stop the recorded children directly."""
    state = read_state(directory)
    if state is None:
        return {}
    supervisor = running_supervisor(directory)
    outcome: dict[str, str] = {}
    if supervisor is not None:
        os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive(supervisor, state["supervisor"].get("start_time")):
            time.sleep(0.05)
        outcome["supervisor"] = "stopped"
        if alive(supervisor, state["supervisor"].get("start_time")):
            os.kill(supervisor, signal.SIGKILL)
            outcome["supervisor"] = "killed"
    # Whatever is still alive (the supervisor was killed, or died earlier) is stopped here.
    leftovers = {
        name: (int(p["pid"]), p.get("start_time"))
        for name, p in (state.get("processes") or {}).items()
        if p.get("pid")
    }
    for name, result in stop_pids(leftovers, grace).items():
        if result != "not running":
            outcome[name] = result
    final = read_state(directory) or state
    if final.get("status") not in ("stopped", "failed"):
        final["status"] = "stopped"
    for process in (final.get("processes") or {}).values():
        if process.get("state") in ("running", "restarting"):
            process["state"] = "stopped"
        process["pid"] = None
    write_state(directory, final)
    return outcome


def cli_argv(directory: Path, options: StackOptions) -> list[str]:
    """The foreground `local up` command line equivalent to `options` (what --detach re-runs)."""
    argv = [sys.executable, "-m", "shardgate.cli", "local", "up", "--dir", str(directory)]
    argv += ["--shards", str(options.shards), "--compilers", str(options.compilers)]
    if options.without:
        argv += ["--without", ",".join(sorted(options.without))]
    return argv
