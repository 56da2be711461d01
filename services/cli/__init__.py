"""The `shardgate` console command: the local stack, echo backends, the demo and the trace of a host.

shardgate local up [--dir D] [--detach] [--compilers N] [--shards S] [--without PARTS]
shardgate local status [--dir D] [--json]
shardgate local down [--dir D]
shardgate echo --name NAME [--port P] [--host H]
shardgate trace HOST [--dir D] [--otlp-http URL] [--json]
shardgate demo [--dir D] [--hold]
"""

from __future__ import annotations

import argparse
import sys

from shardgate.cli import demo, echo, local, trace


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shardgate", description="shardgate gateway control plane")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="{local,echo,trace,demo}")
    local.add_parser(subparsers)
    echo.add_parser(subparsers)
    trace.add_parser(subparsers)
    demo.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))
