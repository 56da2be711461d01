"""Watches: one queue per open watch, fed synchronously by the store, drained by the HTTP stream.

The store offers every committed change to the watchers of that kind in the same (synchronous)
step that commits it, so a watcher never misses or reorders an event and a BOOKMARK sent while its
queue is empty may safely carry the store's current resourceVersion. Each event's object is
serialized once (``Record.raw``) and the same bytes go to every watcher.

Selector semantics follow the real watch cache: an object that starts matching a selector on an
update is sent as ADDED, one that stops matching as DELETED.

A watcher whose queue grows past ``max_queue`` (a consumer that stopped reading) is closed after
the queued events, like the real server does with slow watchers; the client re-watches from the
last resourceVersion it saw.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from shardgate.kubeapi.kinds import Kind
from shardgate.kubeapi.selectors import Filter

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(slots=True)
class Record:
    """One stored object version. Never mutated after it is stored, so reads share it."""

    obj: dict[str, Any]
    rv: int
    _raw: bytes | None = field(default=None, repr=False)

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = _dumps(self.obj)
        return self._raw

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"].get("namespace", ""))

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str
    kind: Kind
    record: Record
    prev: Record | None
    """The version before a MODIFIED, for selector transitions."""

    @property
    def rv(self) -> int:
        return self.record.rv


def encode_event(type_: str, raw_object: bytes) -> bytes:
    return b'{"type":"' + type_.encode() + b'","object":' + raw_object + b"}\n"


def expired_line(message: str) -> bytes:
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Expired",
        "code": 410,
    }
    return encode_event("ERROR", _dumps(status))


def bookmark_line(kind: Kind, rv: int, *, initial_events_end: bool = False) -> bytes:
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    if initial_events_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    obj = {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": meta}
    return encode_event("BOOKMARK", _dumps(obj))


class Watcher:
    """The server side of one watch request."""

    def __init__(self, kind: Kind, namespace: str | None, flt: Filter, max_queue: int) -> None:
        self.kind = kind
        self.namespace = namespace
        self.filter = flt
        self.max_queue = max_queue
        self.closed = False
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.on_close: Callable[[Watcher], None] | None = None

    def offer(self, ev: WatchEvent) -> None:
        if self.closed:
            return
        if self.namespace is not None and ev.record.namespace != self.namespace:
            return
        type_ = ev.type
        if not self.filter.everything:
            now = self.filter.matches(ev.record.obj)
            if type_ == MODIFIED:
                before = ev.prev is not None and self.filter.matches(ev.prev.obj)
                if now and not before:
                    type_ = ADDED
                elif before and not now:
                    type_ = DELETED
                elif not now:
                    return
            elif not now:
                return
        self.put(encode_event(type_, ev.record.raw))

    def put(self, line: bytes) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= self.max_queue:
            self.close()
            return
        self.queue.put_nowait(line)

    def expire(self, message: str) -> None:
        """Send the 410 Expired ERROR event and end the stream, as after a compaction."""
        if self.closed:
            return
        self.queue.put_nowait(expired_line(message))
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.queue.put_nowait(None)
        if self.on_close is not None:
            self.on_close(self)


async def pump(
    watcher: Watcher,
    write: Callable[[bytes], Awaitable[None]],
    *,
    current_rv: Callable[[], int],
    bookmark_interval: float | None,
    timeout: float | None,
) -> None:
    """Copy a watcher's events to ``write`` until it closes or ``timeout`` seconds pass.

    With ``bookmark_interval`` set, a BOOKMARK carrying the store's resourceVersion is written
    whenever that long passed since the last bookmark and nothing is waiting in the queue.
    Queued events are written in one batch to keep fan-out cheap.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout else None
    next_bookmark = loop.time() + bookmark_interval if bookmark_interval else None
    try:
        while True:
            now = loop.time()
            waits = [t - now for t in (deadline, next_bookmark) if t is not None]
            wait = max(0.0, min(waits)) if waits else None
            if deadline is not None and now >= deadline:
                return
            try:
                first = await asyncio.wait_for(watcher.queue.get(), wait)
            except TimeoutError:
                if next_bookmark is not None and loop.time() >= next_bookmark:
                    if watcher.queue.empty() and not watcher.closed:
                        await write(bookmark_line(watcher.kind, current_rv()))
                    assert bookmark_interval is not None
                    next_bookmark = loop.time() + bookmark_interval
                continue
            batch = [first]
            while not watcher.queue.empty():
                batch.append(watcher.queue.get_nowait())
            ended = None in batch
            lines = [line for line in batch if line is not None]
            if lines:
                await write(b"".join(lines))
            if ended:
                return
    finally:
        watcher.close()
