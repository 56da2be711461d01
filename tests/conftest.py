"""Fixtures that start real servers on free loopback ports, one set per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shardgate.local.servers import NatsServer, RedisServer
from shardgate.telemetry import setup_tracing


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


_EXPORTER: InMemorySpanExporter | None = None


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """This test's finished spans: the process-wide tracer provider (set once) records them in memory."""
    global _EXPORTER
    if _EXPORTER is None:
        _EXPORTER = InMemorySpanExporter()
        setup_tracing("shardgate-tests").add_span_processor(SimpleSpanProcessor(_EXPORTER))
    _EXPORTER.clear()
    return _EXPORTER
