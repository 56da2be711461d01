"""`shardgate local up|down|status`: the local stack from the command line; the work is in shardgate.local."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from shardgate.cli.console import make_console
from shardgate.local.procs import alive
from shardgate.local.servers import ServerError
from shardgate.local.stack import (
    PARTS,
    StackError,
    StackOptions,
    cli_argv,
    run_detached,
    run_foreground,
    stop_recorded,
)
from shardgate.local.state import read_state, stack_dir

STATE_STYLES = {
    "running": "green",
    "skipped": "yellow",
    "restarting": "yellow",
    "exited": "red",
    "dead": "red",
}


def _listens(name: str, state: dict[str, Any], process: dict[str, Any]) -> str:
    fixed = {
        "nats": state.get("nats"),
        "redis": state.get("redis"),
        "kubeapi": state.get("kubeapi"),
        "otlp": f"grpc {state['otlp']['grpc']}  http {state['otlp']['http']}",
        "pusher": f"ADS {state.get('xds')}",
        "envoy": f"http://{state['gateway']['http']}  admin {state.get('envoy_admin')}",
    }
    return str(fixed.get(name) or ", ".join(f"{k} {v}" for k, v in process.get("ports", {}).items()))


def _relative(path: str | None, directory: str | None) -> str:
    if not path:
        return ""
    return path.removeprefix(f"{directory}/") if directory else path


def print_stack(console: Console, state: dict[str, Any]) -> None:
    table = Table(
        title=f"shardgate local stack: {state.get('status')}  ({state.get('dir')})", title_justify="left"
    )
    table.add_column("part", no_wrap=True)
    table.add_column("listens on", no_wrap=True)
    table.add_column("pid", no_wrap=True)
    table.add_column("state")
    table.add_column("log", no_wrap=True)
    for name, process in (state.get("processes") or {}).items():
        status = process.get("state", "?")
        detail = f"{status}: {process['reason']}" if process.get("reason") else status
        table.add_row(
            name,
            _listens(name, state, process) if status != "skipped" else "",
            str(process.get("pid") or ""),
            f"[{STATE_STYLES.get(status, 'white')}]{detail}[/]",
            _relative(process.get("log"), state.get("dir")),
        )
    console.print(table)
    if state.get("error"):
        console.print(f"[red]{state['error']}[/red]")
    if state.get("status") != "ready":
        return
    if state.get("kubeconfig"):
        console.print(f"kubeconfig: {state['kubeconfig']}")
        console.print(f"[bold]export KUBECONFIG={state['kubeconfig']}[/bold]")
    console.print(f"gateway: curl -H 'Host: <host>' http://{state['gateway']['http']}/")


def refreshed(state: dict[str, Any]) -> dict[str, Any]:
    """The recorded state with liveness checked now: dead processes and a dead supervisor show as such."""
    supervisor = state.get("supervisor") or {}
    supervisor["alive"] = alive(supervisor.get("pid"), supervisor.get("start_time"))
    if not supervisor["alive"] and state.get("status") in ("starting", "ready", "stopping"):
        state["status"] = "dead"
    for process in (state.get("processes") or {}).values():
        if process.get("pid") and not alive(process["pid"], process.get("start_time")):
            process["state"] = "dead"
            process["pid"] = None
    return state


def up(args: argparse.Namespace) -> int:
    console = make_console()
    directory = stack_dir(args.dir)
    without = frozenset(w.strip() for w in (args.without or "").split(",") if w.strip())
    unknown = without - set(PARTS)
    if unknown:
        console.print(f"[red]unknown parts {sorted(unknown)}; known: {', '.join(PARTS)}[/red]")
        return 2
    options = StackOptions(directory, shards=args.shards, compilers=args.compilers, without=without)
    try:
        if args.detach:
            state = run_detached(directory, cli_argv(directory, options))
            print_stack(console, state)
            console.print(f"running in the background; logs in {directory}; stop with `shardgate local down`")
            return 0
        code: int = run_foreground(options, lambda state: print_stack(console, state))
        return code
    except (StackError, ServerError) as exc:
        console.print(f"[red]{exc}[/red]")
        return 1


def down(args: argparse.Namespace) -> int:
    console = make_console()
    directory = stack_dir(args.dir)
    if read_state(directory) is None:
        console.print(f"no stack in {directory}")
        return 0
    outcome = stop_recorded(directory)
    if not outcome:
        console.print("nothing was running")
    for name, result in outcome.items():
        console.print(f"{name}: {result}")
    return 0


def status(args: argparse.Namespace) -> int:
    directory = stack_dir(args.dir)
    state = read_state(directory)
    if state is None:
        if args.json:
            print(json.dumps({"status": "absent", "dir": str(directory)}))
        else:
            make_console().print(f"no stack in {directory}")
        return 1
    state = refreshed(state)
    if args.json:
        print(json.dumps(state, indent=2))
    else:
        print_stack(make_console(), state)
    return 0 if state.get("status") == "ready" else 1


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    local = subparsers.add_parser("local", help="run the whole pipeline on loopback")
    commands = local.add_subparsers(dest="local_command", required=True, metavar="{up,down,status}")
    dir_help = "the stack directory (default: $SHARDGATE_STACK_DIR or .local/stack)"

    p = commands.add_parser("up", help="start the stack (foreground unless --detach)")
    p.add_argument("--dir", help=dir_help)
    p.add_argument("--detach", action="store_true", help="run in the background; return once ready")
    p.add_argument("--shards", type=int, default=64, help="virtual shards (SHARDGATE_SHARDS)")
    p.add_argument("--compilers", type=int, default=2, help="compiler workers")
    p.add_argument("--without", help=f"comma-separated parts to leave out: {','.join(PARTS)}")
    p.set_defaults(func=up)

    p = commands.add_parser("down", help="stop the stack recorded in the directory")
    p.add_argument("--dir", help=dir_help)
    p.set_defaults(func=down)

    p = commands.add_parser("status", help="where each part listens and whether it runs")
    p.add_argument("--dir", help=dir_help)
    p.add_argument("--json", action="store_true", help="print state.json (with liveness checked now)")
    p.set_defaults(func=status)
