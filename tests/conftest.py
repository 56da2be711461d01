"""Fixtures that start real servers on free loopback ports, one set per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shardgate.local.servers import NatsServer, RedisServer


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop(kill=True)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop(kill=True)
