"""Start and stop the real servers shardgate runs against: nats-server, redis-server and Envoy.

The tests and the local stack share this: each server is started on a free loopback port, in a
directory of its own, and can be stopped (gracefully or by SIGKILL) and started again on the same port
with the same data, which is what the fault-tolerance tests need. The servers the machine itself runs
(NATS on 4222, Redis on 6379) are never touched.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


class ServerError(RuntimeError):
    """A server binary is missing or did not come up."""


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, never one this process already handed out: two servers asking
    in a row must not both get the port the kernel just released (seen: Envoy's listener 'already in
    use')."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_for_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise ServerError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


def find_binary(name: str, env_var: str, candidates: list[str]) -> str:
    """Find a server binary: the env var first, then the project's venvs, then PATH."""
    if os.environ.get(env_var):
        return os.environ[env_var]
    for pattern in candidates:
        for hit in sorted(glob.glob(str(REPO_ROOT / pattern))):
            if os.access(hit, os.X_OK):
                return hit
    venv_bin = Path(sys.executable).parent / name
    if venv_bin.exists():
        return str(venv_bin)
    found = shutil.which(name)
    if found:
        return found
    raise ServerError(f"{name} not found: run `make setup` or set {env_var}")


def nats_binary() -> str:
    return find_binary("nats-server", "SHARDGATE_NATS_SERVER", [".venv/bin/nats-server"])


def redis_binary() -> str:
    return find_binary("redis-server", "SHARDGATE_REDIS_SERVER", [])


def envoy_binary() -> str:
    return find_binary(
        "envoy",
        "SHARDGATE_ENVOY",
        [".venv-envoy/lib/python3*/site-packages/envoy/_bin/envoy"],
    )


class Server:
    """One child process listening on `port`; restartable with the same port and data directory."""

    name = "server"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self, timeout: float = 20.0) -> None:
        if self.running:
            return
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child for its lifetime
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True
        )
        log.close()
        try:
            self.wait_ready(timeout)
        except ServerError:
            self.stop(kill=True)
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise ServerError(f"{self.name} did not start:\n{tail}") from None

    def wait_ready(self, timeout: float) -> None:
        wait_for_port(self.port, timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, kill: bool = False, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class NatsServer(Server):
    """nats-server with JetStream on file storage in the work directory."""

    name = "nats"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        js_dir = str(self.workdir / "js")
        return [nats_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", js_dir]


class RedisServer(Server):
    """redis-server without persistence unless `appendonly` is asked for."""

    name = "redis"

    def __init__(self, workdir: Path, port: int | None = None, appendonly: bool = False) -> None:
        super().__init__(workdir, port)
        self.appendonly = appendonly

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            redis_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--protected-mode", "no",
        ]  # fmt: skip


class Envoy(Server):
    """A real Envoy with the given bootstrap; `port` is its admin port."""

    name = "envoy"

    def __init__(self, workdir: Path, bootstrap: dict[str, Any], admin_port: int, base_id: int | None = None):
        super().__init__(workdir, admin_port)
        self.bootstrap_path = self.workdir / "bootstrap.json"
        self.bootstrap_path.write_text(json.dumps(bootstrap, indent=1))
        self.base_id = base_id if base_id is not None else admin_port

    def command(self) -> list[str]:
        return [
            envoy_binary(),
            "-c", str(self.bootstrap_path),
            "--base-id", str(self.base_id),
            "--concurrency", "1",
            "--log-level", "warn",
            "--disable-hot-restart",
        ]  # fmt: skip

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
