"""`shardgate local up|status|down` with the real servers; the whole pipeline and the demo when it exists."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

from shardgate.local.procs import PythonService, alive
from shardgate.local.stack import Member, Stack, StackError, StackOptions
from shardgate.local.state import read_state

from .conftest import CLI, shardgate, status_json

PIPELINE = "watcher,compiler,pusher"


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status), response.read()


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def pids(state: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {n: (p["pid"], p["start_time"]) for n, p in state["processes"].items() if p.get("pid")}


def test_up_detach_status_restart_down(tmp_path: Path) -> None:
    directory = tmp_path / "stack"
    shardgate("local", "up", "--dir", str(directory), "--detach", "--without", PIPELINE)
    try:
        state = status_json(directory)
        assert state["status"] == "ready" and state["supervisor"]["alive"]
        processes = state["processes"]
        for name in ("nats", "redis", "otlp", "envoy"):
            assert processes[name]["state"] == "running", processes[name]
        pipeline = ("watcher", "compiler-1", "compiler-2", "pusher")
        assert {processes[n]["state"] for n in pipeline} == {"skipped"}
        for url in (state["nats"], state["redis"], state["otlp"]["grpc"], state["envoy_admin"]):
            assert ":4222" not in url and ":6379" not in url

        assert redis.Redis.from_url(state["redis"]).ping()
        assert get(f"{state['otlp']['http']}/healthz")[0] == 200
        assert get(f"{state['envoy_admin']}/server_info")[0] == 200
        assert state["gateway"]["http"].startswith("127.0.0.1:")
        if processes["kubeapi"]["state"] != "skipped":
            assert Path(state["kubeconfig"]).exists() and state["kubeapi"]
            kubectl = shardgate_kubectl(state["kubeconfig"], "get", "namespaces", "-o", "name")
            assert "namespace/default" in kubectl

        # A child that dies is reported and restarted on the same ports.
        otlp = processes["otlp"]
        os.kill(otlp["pid"], signal.SIGKILL)
        wait_for(lambda: status_json(directory)["processes"]["otlp"]["restarts"] == 1)
        wait_for(lambda: status_json(directory)["processes"]["otlp"]["state"] == "running")
        assert get(f"{state['otlp']['http']}/healthz")[0] == 200
        assert "otlp EXITED" in (directory / "stack.log").read_text()
        state = status_json(directory)
    finally:
        shardgate("local", "down", "--dir", str(directory))
    assert not any(alive(pid, start) for pid, start in pids(state).values())
    assert not alive(state["supervisor"]["pid"], state["supervisor"]["start_time"])
    after = shardgate("local", "status", "--dir", str(directory), "--json", check=False)
    assert after.returncode == 1 and json.loads(after.stdout)["status"] == "stopped"


def shardgate_kubectl(kubeconfig: str, *args: str) -> str:
    from shardgate.cli.demo import find_kubectl

    result = subprocess.run(
        [find_kubectl(), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "KUBECONFIG": kubeconfig},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_foreground_up_stops_children_on_sigint(tmp_path: Path) -> None:
    directory = tmp_path / "stack"
    proc = subprocess.Popen(
        [*CLI, "local", "up", "--dir", str(directory), "--without", f"{PIPELINE},kubeapi,envoy"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: (read_state(directory) or {}).get("status") == "ready")
        state = read_state(directory)
        assert state is not None and set(pids(state)) == {"nats", "redis", "otlp"}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not any(alive(pid, start) for pid, start in pids(state).values())
    assert (read_state(directory) or {})["status"] == "stopped"


def test_a_child_that_keeps_dying_stops_the_stack(tmp_path: Path) -> None:
    stack = Stack(StackOptions(tmp_path, max_restarts=1), log=lambda _: None)
    doomed = PythonService("doomed", tmp_path / "doomed", "json.tool", args=[str(tmp_path / "missing.json")])
    doomed.spawn()
    assert doomed.proc is not None and doomed.proc.wait(10) != 0
    stack.members["doomed"] = Member("doomed", doomed, 0, {}, state="running")
    with pytest.raises(StackError, match="doomed"):
        stack.check()
    assert stack.members["doomed"].state == "exited"


@pytest.mark.e2e
def test_full_stack_demo(tmp_path: Path) -> None:
    directory = tmp_path / "stack"
    shardgate("local", "up", "--dir", str(directory), "--detach")
    try:
        state = status_json(directory)
        skipped = [n for n, p in state["processes"].items() if p["state"] == "skipped"]
        assert skipped == [], f"parts of the stack did not start: {skipped}"
        result = shardgate("demo", "--dir", str(directory), "--timeout", "20", check=False)
        out = result.stdout
        assert result.returncode == 0, out + result.stderr
        assert out.count(" ok ") == 6 and "WRONG" not in out
        assert "newest change to a.demo.test" in out and "end of envoy.ack" in out
    finally:
        shardgate("local", "down", "--dir", str(directory))
