"""`shardgate echo --name NAME`: run one echo backend in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from shardgate.local.echo import EchoServer


async def _serve(name: str, host: str, port: int) -> None:
    server = EchoServer(name, host, port)
    await server.start()
    print(f"echo {name!r} listening on {server.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def run(args: argparse.Namespace) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.name, args.host, args.port))
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("echo", help="an HTTP backend that answers with JSON about the request")
    parser.add_argument("--name", required=True, help="returned as `name` in every answer")
    parser.add_argument("--port", type=int, default=0, help="default: a free port (printed)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.set_defaults(func=run)
