"""`state.json`: what a running local stack tells the CLI, the demo and the tests about itself.

Written atomically by the stack's supervisor whenever something changes; read by `shardgate local
status|down`, `shardgate trace` and `shardgate demo`. The schema (version 1):

    {
      "version": 1,
      "status": "starting" | "ready" | "stopping" | "stopped" | "failed",
      "error": str | null,                       # why it failed
      "dir": str,                                # the stack directory (absolute)
      "supervisor": {"pid": int, "start_time": int},
      "kubeconfig": str | null,                  # null when the API stand-in is not available
      "gateway": {"http": "127.0.0.1:PORT", "https": "127.0.0.1:PORT", "node": str},
                                                 # https: certificates chosen by SNI (on-demand SDS)
      "nats": "nats://127.0.0.1:PORT",
      "redis": "redis://127.0.0.1:PORT/0",
      "kubeapi": "http(s)://127.0.0.1:PORT" | null,
      "otlp": {"grpc": "http://127.0.0.1:PORT", "http": "http://127.0.0.1:PORT", "spans": str},
      "xds": "127.0.0.1:PORT",                   # the pusher's ADS listener
      "envoy_admin": "http://127.0.0.1:PORT",
      "shards": int,
      "processes": {
        NAME: {"state": "running" | "exited" | "stopped" | "skipped" | "restarting",
               "pid": int | null, "start_time": int | null, "ports": {str: int},
               "command": [str], "log": str | null, "restarts": int, "reason": str | null}
      }
    }
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"
DEFAULT_DIR = Path(".local/stack")
VERSION = 1


def stack_dir(value: str | Path | None = None) -> Path:
    """The stack directory: the argument, else $SHARDGATE_STACK_DIR, else .local/stack (absolute)."""
    raw = value or os.environ.get("SHARDGATE_STACK_DIR") or DEFAULT_DIR
    return Path(raw).expanduser().resolve()


def state_path(directory: Path) -> Path:
    return directory / STATE_FILE


def read_state(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(state_path(directory).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_state(directory: Path, state: dict[str, Any]) -> None:
    path = state_path(directory)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
