"""Top frames of py-spy profiles (`py-spy record --format raw`: collapsed stacks, one `a;b;c N` a line).

For each profile: the share of samples in which a function is on the stack (inclusive) and at the top
(self), the idle share (the event loop waiting in `select`/`epoll`), and the heaviest own-code frames.
Frames are reduced to `function (module)` so line numbers do not split one function into many rows.

    .venv/bin/python -m bench.profiles bench/results/profiles-<stamp>/*.txt
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
IDLE_TOPS = (
    "EpollSelector.select ", "select (", "poll (", "Condition.wait ", "Event.wait ",
    "_worker (concurrent/futures/thread.py)", "Thread.run (threading.py)",
    "_UnaryUnaryMultiCallable._blocking ",
)  # fmt: skip
"""A sample whose top frame is one of these is a thread waiting (py-spy cannot always tell): the event
loop in epoll, an idle executor thread, the span exporter's thread blocked in its gRPC call."""
PLUMBING = ("asyncio/", "runpy", "<frozen", "threading.py", "selectors.py", "__main__.py", "main.py)")
"""Frames on every stack (the loop, the module runner): left out of the inclusive view."""


def _short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "python3.11/", "/shardgate/", "/services/", "/libs/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


def summarize(path: Path, top: int = 12) -> dict[str, Any]:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += n
        if frames[-1].startswith(IDLE_TOPS):
            idle += n
            continue
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    busy = max(total - idle, 1)

    def rows(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * c / busy, 1)) for f, c in counter.most_common(top)]

    return {
        "samples": total,
        "idle_pct": round(100 * idle / max(total, 1), 1),
        "self": rows(own),
        "inclusive": rows(Counter({f: c for f, c in inclusive.items() if not any(p in f for p in PLUMBING)})),
    }


def main(paths: list[str]) -> None:
    for p in paths:
        s = summarize(Path(p))
        print(f"== {p}: {s['samples']} samples, idle {s['idle_pct']}%  (shares below: of busy samples)")
        print("  self:")
        for f, pct in s["self"]:
            print(f"    {pct:5.1f}%  {f}")
        print("  inclusive:")
        for f, pct in s["inclusive"]:
            print(f"    {pct:5.1f}%  {f}")


if __name__ == "__main__":
    main(sys.argv[1:])
