"""Following one kind: list, then watch from the list's resourceVersion, for as long as the watcher runs.

Watches resume from the last resourceVersion seen (events and bookmarks); on 410 Gone the kind is
listed again, on other API errors the watch is retried after a backoff. A bug in a handler is logged
and answered with a fresh list, so one bad object never stops a kind. Followers only hand what they
read to their handlers (`caches.py`); they know nothing of publishing or leadership, so every
replica, leader or not, runs them and keeps its caches warm.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from shardgate.adapters.kube import Expired, KubeClient, KubeError, Resource

from .backoff import Backoff

log = logging.getLogger(__name__)

Obj = dict[str, Any]
OnList = Callable[[list[Obj], int], Awaitable[None]]  # (every object, observed ns); may `consume` it
OnEvent = Callable[[str, Obj, int], None]  # (ADDED / MODIFIED / DELETED, the object, observed ns)


def rv_of(obj: Obj) -> str:
    meta = obj.get("metadata")
    return str(meta.get("resourceVersion") or "") if isinstance(meta, dict) else ""


class Followers:
    """Runs the followers and keeps what the watcher reports of them: the last resourceVersion seen and
    the number of complete lists, per kind."""

    def __init__(self, kube: KubeClient, page_size: int, watch_timeout: int) -> None:
        self.kube = kube
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.seen_rv: dict[str, str] = {}  # kind -> last resourceVersion seen (events and bookmarks)
        self.lists: dict[str, int] = {}  # kind -> complete lists so far (1 + re-lists)

    def task(
        self,
        name: str,
        res: Resource,
        on_list: OnList,
        on_event: OnEvent,
        field_selector: str | None = None,
        after: asyncio.Event | None = None,
    ) -> asyncio.Task[None]:
        """Follow `res` (once `after` is set, if given) in a task of its own."""
        return asyncio.create_task(
            self.follow(name, res, on_list, on_event, field_selector, after), name=f"watch-{name}"
        )

    async def follow(
        self,
        name: str,
        res: Resource,
        on_list: OnList,
        on_event: OnEvent,
        field_selector: str | None = None,
        after: asyncio.Event | None = None,
    ) -> None:
        if after is not None:
            await after.wait()
        backoff = Backoff()
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    rv = await self._list(name, res, on_list, field_selector)
                    backoff.reset()
                async for etype, obj in self.kube.watch_raw(res, rv, self.watch_timeout, field_selector):
                    observed_ns = time.time_ns()
                    if etype != "BOOKMARK":
                        on_event(etype, obj, observed_ns)
                    rv = rv_of(obj) or rv
                    self.seen_rv[name] = rv
                    backoff.reset()
            except Expired as exc:
                log.info("%s: %s; listing again", name, exc)
                rv = None
            except KubeError as exc:
                delay = backoff.next()
                log.warning("%s: %s; retrying in %.1fs", name, exc, delay)
                await asyncio.sleep(delay)
            except Exception:  # a bug in a handler: log it, start over from a fresh list
                delay = backoff.next()
                log.exception("%s: unexpected error; listing again in %.1fs", name, delay)
                rv = None
                await asyncio.sleep(delay)

    async def _list(self, name: str, res: Resource, on_list: OnList, field_selector: str | None) -> str:
        """List `res` into its handler; the list's resourceVersion.

        A method of its own so that the raw objects are freed when it returns: held by `follow`'s frame,
        a list of 100k Ingresses (~3 KB each as parsed JSON) stayed alive for as long as the watch ran.
        """
        items, rv = await self.kube.list_raw(res, self.page_size, field_selector)
        count = len(items)
        await on_list(items, time.time_ns())
        self.seen_rv[name] = rv
        self.lists[name] = self.lists.get(name, 0) + 1
        log.info("%s: listed %d objects at resourceVersion %s", name, count, rv)
        return rv


LIST_SLICE = 256
"""Objects a list handler goes through before it lets the event loop run: handling a list of 100k
Ingresses in one go held the loop for 10 s and more, and the Lease, renewed on the same loop, lapsed."""


async def consume(items: list[Obj]) -> AsyncIterator[Obj]:
    """`items` in order, for a list handler: each dropped from the list as it is handed out, so that
    the handler frees every raw object it is done with (whatever it keeps of them) instead of holding
    them all to the end, and the memory of the first objects is reused for what is kept of the later
    ones; and the event loop runs every `LIST_SLICE` objects. Empties `items`."""
    items.reverse()
    handed = 0
    while items:
        yield items.pop()
        handed += 1
        if handed % LIST_SLICE == 0:
            await asyncio.sleep(0)
