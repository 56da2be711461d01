"""Helpers for the local-stack tests: the real `shardgate` command as a subprocess, and a receiver."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shardgate.local.otlp import SPANS_FILE, Receiver
from shardgate.local.spans import SpanStore

CLI = [sys.executable, "-m", "shardgate.cli"]


def shardgate(*args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the console command (blocking: not from a test whose event loop must keep serving)."""
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"shardgate {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


async def shardgate_async(*args: str, timeout: float = 30.0) -> tuple[int, str]:
    """Run the console command while this event loop keeps serving (e.g. an in-process receiver)."""
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return int(proc.returncode or 0), out.decode()


def status_json(directory: Path) -> dict[str, Any]:
    result = shardgate("local", "status", "--dir", str(directory), "--json", check=False)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[Receiver]:
    """The OTLP receiver in this test's event loop, keeping its span file where a stack would."""
    (tmp_path / "otlp").mkdir()
    server = Receiver(SpanStore(path=tmp_path / "otlp" / SPANS_FILE))
    await server.start()
    yield server
    await server.stop()
