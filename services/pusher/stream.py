"""The life of one ADS stream, shared by Delta and SotW: read requests, wait for changes, push.

Two tasks per stream: the gRPC handler's own task writes, a reader task applies Envoy's requests to the
stream's state. Both requests and cache changes only mark state and set one event; the writer then yields
(`hold_off`, by default one turn of the loop, so changes applied together go out together), builds the
responses from the current state and writes them in push order. While a write is blocked on a slow Envoy,
further changes keep collapsing into the next push, so a slow gateway costs the pusher memory proportional
to the names pending, never a queue of stale responses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from shardgate import heap

from .cache import Changes, ResourceCache
from .metrics import STREAMS

log = logging.getLogger(__name__)

# The discovery protos carry no type information (no stubs); requests and responses are typed as Any.
Req = Any
Resp = Any

# The writer yields once (`hold_off` 0) before building responses, so changes applied in the same turn of
# the event loop go out together; it does not wait longer. A fixed wait (it was 2 ms) put that much on every
# lone change's activation, and a burst is folded by flow control instead: while a push is unanswered
# (Delta: one per type, `delta.py`) or being written, changes collect into the next one.
DEFAULT_HOLD_OFF = 0.0

# A push of this many resources (a new or reconnecting Envoy's first response at 100k hosts holds all of
# them) leaves ~100 MB that malloc keeps after the messages are freed: it is handed back once written.
LARGE_PUSH = 10_000


class AdsStream:
    protocol = "ads"

    def __init__(self, cache: ResourceCache, hold_off: float = DEFAULT_HOLD_OFF) -> None:
        self.cache = cache
        self.hold_off = hold_off
        self.node_id = ""
        self._wake = asyncio.Event()
        self._closed = False

    # Protocol-specific parts ------------------------------------------------------------------------

    def handle(self, request: Req) -> None:
        raise NotImplementedError

    def on_change(self, changes: Changes) -> None:
        raise NotImplementedError

    def responses(self) -> list[Resp]:
        raise NotImplementedError

    # Shared loop ------------------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def _read(self, requests: AsyncIterator[Req]) -> None:
        try:
            async for request in requests:
                self.handle(request)
        finally:
            self._closed = True
            self._wake.set()

    async def run(self, requests: AsyncIterator[Req], write: Callable[[Resp], Awaitable[None]]) -> None:
        cancel_watch = self.cache.watch(self.on_change)
        reader = asyncio.create_task(self._read(requests))
        STREAMS.labels(self.protocol).inc()
        try:
            while True:
                await self._wake.wait()
                if self._closed:
                    break
                await asyncio.sleep(self.hold_off)
                self._wake.clear()
                pushed = 0
                for response in self.responses():
                    pushed += len(response.resources) + len(getattr(response, "removed_resources", ()))
                    await write(response)
                    del response  # the loop variable would keep the last one alive past the trim
                if pushed >= LARGE_PUSH:
                    heap.trim(f"a push of {pushed} resources")
            await reader  # re-raise what ended the stream, if anything
        finally:
            STREAMS.labels(self.protocol).dec()
            cancel_watch()
            reader.cancel()
            log.info("%s stream from node %r closed", self.protocol, self.node_id)
