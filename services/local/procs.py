"""Child processes of the local stack that are our own Python services, and checks on recorded pids.

The real servers have their launchers in `servers.py`; the stack's own services (`python -m
shardgate.<name>`) need only a command, an environment and a notion of "ready": the ports they will
listen on are open (or, for a service that listens on nothing, it is still alive after a moment). They
reuse `Server`'s restart-on-the-same-port behaviour. A pid recorded in `state.json` is checked against
its start time before anything signals it, so `down` never hits an unrelated process that reused it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from shardgate.local.servers import Server, ServerError

SETTLE_SECONDS = 0.5
"""How long a service that opens no port must stay alive after spawning to count as started."""


def module_runnable(module: str) -> bool:
    """True when `python -m <module>` would find something to run (a package's __main__ or a module)."""
    try:
        spec = importlib.util.find_spec(module)
        if spec is None:
            return False
        if spec.submodule_search_locations is not None:  # a package: needs __main__
            return importlib.util.find_spec(f"{module}.__main__") is not None
        return True
    except (ImportError, ValueError):
        return False


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class PythonService(Server):  # type: ignore[misc]  # (Server is Any to mypy: see the report)
    """`python -m <module> [args]` with extra environment; ready when `ready_ports` accept connections."""

    proc: subprocess.Popen[bytes] | None

    def __init__(
        self,
        name: str,
        workdir: Path,
        module: str,
        args: list[str] | None = None,
        env: Mapping[str, str] | None = None,
        ready_ports: list[int] | None = None,
        ready_files: list[Path] | None = None,
    ) -> None:
        self.name = name
        self.module = module
        self.args = list(args or [])
        self.env = dict(env or {})
        self.ready_ports = list(ready_ports or [])
        self.ready_files = list(ready_files or [])
        super().__init__(workdir, self.ready_ports[0] if self.ready_ports else 0)

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.args]

    def spawn(self) -> None:
        """Start the process without waiting for it (so several services can start in parallel)."""
        if self.running:
            return
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=env,
                start_new_session=True,
            )

    def start(self, timeout: float = 20.0) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Wait for the ports and files; fail fast, with the log's tail, if the process exits first."""
        deadline = time.monotonic() + timeout
        settle_until = time.monotonic() + SETTLE_SECONDS
        while True:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                self.proc = None
                raise ServerError(f"{self.name} exited (code {code}) while starting:\n{self.log_tail()}")
            ports_ok = all(_port_open(p) for p in self.ready_ports)
            files_ok = all(f.exists() for f in self.ready_files)
            if ports_ok and files_ok and (self.ready_ports or time.monotonic() >= settle_until):
                return
            if time.monotonic() > deadline:
                self.stop(kill=True)
                raise ServerError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.03)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return str(self.log_path.read_text(errors="replace"))[-chars:]
        except OSError:
            return ""


def proc_start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has exited already
        return None
    return int(fields[19])


def alive(pid: int | None, start_time: int | None) -> bool:
    """True when `pid` still names the process that was recorded with `start_time`."""
    if not pid:
        return False
    current = proc_start_time(pid)
    return current is not None and (start_time is None or current == start_time)


def stop_pids(pids: Mapping[str, tuple[int, int | None]], grace: float = 5.0) -> dict[str, str]:
    """SIGTERM every live recorded pid, SIGKILL what is left after `grace`; returns name -> outcome."""
    outcome: dict[str, str] = {}
    pending: dict[str, int] = {}
    for name, (pid, start_time) in pids.items():
        if not alive(pid, start_time):
            outcome[name] = "not running"
            continue
        try:
            os.kill(pid, signal.SIGTERM)
            pending[name] = pid
        except ProcessLookupError:
            outcome[name] = "not running"
    deadline = time.monotonic() + grace
    while pending and time.monotonic() < deadline:
        for name, pid in list(pending.items()):
            if not alive(pid, pids[name][1]):
                outcome[name] = "stopped"
                del pending[name]
        time.sleep(0.05)
    for name, pid in pending.items():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        outcome[name] = "killed"
    return outcome
