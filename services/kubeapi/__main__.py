"""``python -m shardgate.kubeapi``: the stand-in API server as a program, for the local stack."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from shardgate.kubeapi.server import ServerConfig, serve


def main(argv: list[str] | None = None) -> None:
    defaults = ServerConfig()
    parser = argparse.ArgumentParser(
        prog="python -m shardgate.kubeapi",
        description="A small in-memory Kubernetes API server stand-in (plain HTTP, no auth).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--kubeconfig", help="write a kubeconfig pointing kubectl at the server")
    parser.add_argument("--history-size", type=int, default=defaults.history_size)
    parser.add_argument("--bookmark-interval", type=float, default=defaults.bookmark_interval)
    parser.add_argument(
        "--no-auto-create-namespaces",
        action="store_true",
        help="answer 404 for a missing namespace, as the real server does",
    )
    args = parser.parse_args(argv)
    config = ServerConfig(
        history_size=args.history_size,
        bookmark_interval=args.bookmark_interval,
        auto_create_namespaces=not args.no_auto_create_namespaces,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, config, kubeconfig=args.kubeconfig))


if __name__ == "__main__":
    main()
