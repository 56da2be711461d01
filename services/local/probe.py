"""Real HTTP through the gateway: "does host H, path P reach backend B yet?", and how long it took.

The demo measures activation this way and the end-to-end tests can too: a request with the Host header
to Envoy's listener, answered by an echo backend (`echo.py`) that names itself in its JSON. Polling is
tight (a few ms) because the thing being measured is tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

POLL_INTERVAL = 0.003


@dataclass(frozen=True, slots=True)
class Answer:
    host: str
    path: str
    status: int
    """HTTP status; 0 when the connection failed."""
    backend: str | None
    """The `name` the echo backend reported, None if the answer was not an echo's."""
    body: dict[str, Any] | None


async def ask(session: aiohttp.ClientSession, gateway: str, host: str, path: str) -> Answer:
    """One GET to `gateway` ("127.0.0.1:PORT") with `Host: host`."""
    try:
        async with session.get(
            f"http://{gateway}{path}", headers={"Host": host}, timeout=aiohttp.ClientTimeout(total=2)
        ) as response:
            raw = await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        return Answer(host, path, 0, None, None)
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    backend = body.get("name") if isinstance(body, dict) else None
    return Answer(host, path, status, backend if isinstance(backend, str) else None, body)


async def wait_for_backend(
    session: aiohttp.ClientSession,
    gateway: str,
    host: str,
    path: str,
    backend: str | None,
    since: float,
    timeout: float = 30.0,
) -> tuple[float | None, Answer]:
    """Poll until `host`+`path` is answered 200 by `backend` (with backend None: until the gateway
    itself answers 404, i.e. it has no route for it; a 503 from a route to a dead backend is not that).

    Returns (seconds from `since`, a `time.monotonic()` value, to the first such answer, or None on
    timeout; the last answer seen).
    """
    deadline = time.monotonic() + timeout
    while True:
        answer = await ask(session, gateway, host, path)
        if backend is not None:
            reached = answer.status == 200 and answer.backend == backend
        else:
            reached = answer.status == 404 and answer.backend is None
        if reached:
            return time.monotonic() - since, answer
        if time.monotonic() > deadline:
            return None, answer
        await asyncio.sleep(POLL_INTERVAL)
