"""Compiler settings, read from the environment (flags override in `main`)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from shardgate.keys import DEFAULT_SHARDS
from shardgate.settings import settings_from_env


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    """Where the delta stream lives (JetStream) and change notices go (core NATS)."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Where fragments, revisions, change logs and leases live."""
    shards: int = DEFAULT_SHARDS
    """Virtual shard count; must be the same in every process and never change for a live cluster."""
    worker_id: str = field(default_factory=_default_worker_id)
    """This replica's name in the membership set; unique per process (hostname-pid by default)."""
    lease_ttl_ms: int = 3000
    """How long a dead compiler's shards stay orphaned; renewed every third of it."""
    batch_size: int = 256
    """Deltas per fetch: bigger batches share one Redis commit and one notice, smaller ones cut latency."""
    fetch_timeout_s: float = 1.0
    """How long an idle shard waits for deltas before re-checking that it should still run."""
    log_cap: int = 10_000
    """Change-log entries kept per shard; a pusher further behind than that takes a snapshot."""
    notice_inline_bytes: int = 65_536
    """A commit's fragments ride in its change notice when they come to at most this many bytes, so
    pushers need not read them from Redis (one host: ~1-2 KB); 0: never. A notice that would pass the
    NATS server's max_payload (1 MB by default) goes without them."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Each field from `SHARDGATE_<FIELD>` (see `shardgate.settings`)."""
        return settings_from_env(cls, env)
