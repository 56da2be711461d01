"""What a process holds, for the memory benches (`bench.watcher_memory`, `bench.compiler_memory`): its
RSS, the deep size of a structure, and the heap's top allocation sites from tracemalloc.

No shardgate import: the compiler bench's children run a snapshot of another commit and use this too.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tracemalloc
import types
from collections import deque
from typing import Any

NOT_STATE = (
    type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
    types.CoroutineType, asyncio.Task, asyncio.Event, asyncio.Lock, asyncio.AbstractEventLoop,
)  # fmt: skip
"""Not followed by `deep_size`: code, the event loop and its primitives, not state."""


def rss_mb() -> float:
    """This process's VmRSS in MB."""
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def vars_of(obj: object) -> dict[str, Any]:
    """An object's attributes, whether it has a `__dict__` or `__slots__`."""
    return dict(getattr(obj, "__dict__", None) or {a: getattr(obj, a) for a in getattr(obj, "__slots__", ())})


def deep_size(root: object, seen: set[int]) -> int:
    """sys.getsizeof of `root` and of everything it reaches that is not in `seen` (then added to it);
    modules, classes, functions, methods, coroutines and loop primitives are not followed."""
    total, stack = 0, [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, NOT_STATE):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset | deque):
            stack.extend(obj)
        elif not isinstance(obj, str | bytes | int | float | bool | type(None)):
            stack.extend(getattr(obj, s) for s in getattr(type(obj), "__slots__", ()) if hasattr(obj, s))
            if hasattr(obj, "__dict__"):
                stack.append(obj.__dict__)
    return total


def _short(filename: str) -> str:
    for marker in ("/site-packages/", "/work/main/", "/lib/python3", "/tmp/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def traced_heap(count: int, top: int, per: str) -> dict[str, Any]:
    """The traced heap (tracemalloc must be running; it is stopped here) per one of `count` things (named
    `per`: "unit", "ingress") and its `top` allocation sites."""
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    tracemalloc.stop()
    count = max(count, 1)
    current = sum(s.size for s in snapshot.statistics("filename"))
    return {
        "heap_mb": round(current / 2**20, 1),
        f"heap_bytes_per_{per}": round(current / count),
        "top": [
            {"site": f"{_short(s.traceback[0].filename)}:{s.traceback[0].lineno}",
             "mb": round(s.size / 2**20, 2), "count": s.count, f"bytes_per_{per}": round(s.size / count)}
            for s in snapshot.statistics("lineno")[:top]
        ],
    }  # fmt: skip
