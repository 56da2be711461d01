"""Where the time of one change goes in the pipeline, from its trace.

Every change is one trace (ARCHITECTURE.md, Tracing): the watcher's `watcher.event` and
`watcher.publish`, the compiler's `compiler.apply`, the pusher's `pusher.relay`, and `envoy.ack` from the
push that carried it to Envoy's ACK. The benchmark knows two more instants the spans cannot: when the API
stand-in answered the POST with 201, and when the first 200 came back through Envoy. Stages are the gaps
between consecutive instants, so they add up to the whole activation:

    api → watcher        201 returned           → watcher.event starts (watch event received)
    watcher              watcher.event starts   → watcher.publish ends (translate, JetStream ack)
    JetStream → compiler watcher.publish ends   → compiler.apply starts (the shard's fetch returned)
    compiler             compiler.apply starts  → pusher.relay starts (compile, Redis commit, notice)
    pusher               pusher.relay starts    → envoy.ack starts (fragments, cache, send)
    Envoy                envoy.ack starts       → envoy.ack ends (Envoy applies the push and ACKs)
    ACK → 200            envoy.ack ends         → first 200 (negative: served before the ACK landed)

All instants are Unix nanoseconds from one machine's clock. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bench.common import summary

STAGES = ("api_to_watcher", "watcher", "jetstream_to_compiler", "compiler", "pusher", "envoy", "ack_to_200")
LABELS = {
    "api_to_watcher": "API 201 → watcher event",
    "watcher": "watcher (translate + JetStream publish)",
    "jetstream_to_compiler": "JetStream → compiler fetch",
    "compiler": "compiler (compile + Redis commit + notice)",
    "pusher": "pusher (fragments from the notice or Redis + cache + push)",
    "envoy": "Envoy applies → ACK",
    "ack_to_200": "ACK → first 200",
    "to_ack": "whole: API 201 → Envoy's ACK",
}


def _first(spans: Iterable[Mapping[str, Any]], name: str, key: str = "start_ns") -> int | None:
    values = [int(s[key]) for s in spans if s.get("name") == name]
    return min(values) if values else None


def split(trace: Mapping[str, Any], accepted_ns: int, served_ns: int | None) -> dict[str, float] | None:
    """Milliseconds per stage for one change, or None when a span is missing from its trace. Without
    `served_ns` (a burst, where the probe's answer time is not the host's own) the last stage is left
    out; `to_ack` is always the whole time from the 201 to Envoy's ACK."""
    spans = list(trace.get("spans") or ()) + list(trace.get("linked") or ())
    points = [
        accepted_ns,
        _first(spans, "watcher.event"),
        _first(spans, "watcher.publish", "end_ns"),
        _first(spans, "compiler.apply"),
        _first(spans, "pusher.relay"),
        _first(spans, "envoy.ack"),
        _first(spans, "envoy.ack", "end_ns"),
    ]
    if any(p is None for p in points):
        return None
    ns = [int(p) for p in points if p is not None]
    if served_ns is not None:
        ns.append(served_ns)
    out = {stage: (ns[i + 1] - ns[i]) / 1e6 for i, stage in enumerate(STAGES[: len(ns) - 1])}
    out["to_ack"] = (ns[6] - ns[0]) / 1e6
    return out


def summarize(splits: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float | int]]:
    keys = [k for k in (*STAGES, "to_ack") if splits and all(k in s for s in splits)]
    return {k: summary([s[k] for s in splits]) for k in keys}
