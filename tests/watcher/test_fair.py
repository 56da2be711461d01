"""The fair queue: round-robin across namespaces, a token bucket per namespace."""

from __future__ import annotations

import asyncio

from shardgate.watcher.fair import FairQueue

from ..clock import ManualClock


def test_round_robin_a_single_change_overtakes_a_flood() -> None:
    q = FairQueue()
    for i in range(1000):
        q.put("a", f"a{i}")
    q.put("b", "b0")
    q.put("c", "c0")
    order = [q.take() for _ in range(6)]
    assert order == [("a", "a0"), ("b", "b0"), ("c", "c0"), ("a", "a1"), ("a", "a2"), ("a", "a3")]
    assert len(q) == 1000 - 4


def test_token_bucket_throttles_only_the_namespace_over_its_rate() -> None:
    clock = ManualClock(0.0)
    q = FairQueue(rate=10, burst=2, clock=clock)
    for i in range(5):
        q.put("a", f"a{i}")
    for _ in range(2):
        ns, _item = q.take()  # type: ignore[misc]
        q.charge(ns)
    wait = q.take()
    assert isinstance(wait, float) and abs(wait - 0.1) < 1e-9, "a is out of tokens: wait for one"
    q.put("b", "b0")
    assert q.take() == ("b", "b0"), "b is not held back by a's bucket"
    clock.now = 0.1
    assert q.take() == ("a", "a2")
    assert q.take() == ("a", "a3"), "taking is free: only published changes are charged"


async def test_get_waits_for_work_and_for_tokens() -> None:
    q = FairQueue(rate=50, burst=1)
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    q.put("a", "x")
    assert await getter == ("a", "x")
    q.charge("a")
    q.put("a", "y")
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await q.get() == ("a", "y")
    assert loop.time() - start >= 0.015  # one token at 50/s
