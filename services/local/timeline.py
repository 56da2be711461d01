"""The timeline of one change: where its time went, from the watcher seeing it to the gateway's ACK.

Pure: a `TraceView` in, rows and a total out; no clock, no I/O. `shardgate trace` and `shardgate demo`
render it. The activation time is measured from the trace's first span to the end of the last
`envoy.ack` span (the change is live on every gateway that ACKed it); a trace that has no ACK yet is
measured to the end of its last span and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shardgate.local.spans import Span, TraceView

ACK_SPAN = "envoy.ack"
SHOWN_ATTRIBUTES = ("host", "unit", "shard", "revision")
"""Shown under these names, read from `sg.<name>` or `shardgate.<name>`."""
ERROR_ATTRIBUTES = ("envoy.error", "error.message", "exception.message")
STATUS_ERROR = 2


@dataclass(frozen=True, slots=True)
class Row:
    service: str
    name: str
    offset_ms: float
    duration_ms: float
    linked: bool
    """True for a span of another trace (a batch) that links to this change."""
    attributes: dict[str, Any]
    error: str | None = None
    """Why the span failed (a NACK's message, an error status), None if it did not."""

    @property
    def end_ms(self) -> float:
        return self.offset_ms + self.duration_ms


@dataclass(frozen=True, slots=True)
class Timeline:
    trace_id: str
    rows: tuple[Row, ...]
    total_ms: float
    acked: bool
    """True when the total ends at an `envoy.ack` span, False when it ends at the last span."""


def build_timeline(view: TraceView) -> Timeline:
    """Rows in start order (ties: the longer span, the parent, first), offsets from the first own span."""
    own = list(view.spans)
    everything: list[tuple[Span, bool]] = [(s, False) for s in own] + [(s, True) for s in view.linked]
    if not everything:
        return Timeline(view.trace_id, (), 0.0, False)
    t0 = min(s.start_ns for s in own) if own else min(s.start_ns for s, _ in everything)
    everything.sort(key=lambda pair: (pair[0].start_ns, -pair[0].end_ns))
    rows = tuple(
        Row(
            service=span.service,
            name=span.name,
            offset_ms=(span.start_ns - t0) / 1e6,
            duration_ms=span.duration_ns / 1e6,
            linked=linked,
            attributes=_shown(span.attributes),
            error=_error(span),
        )
        for span, linked in everything
    )
    acks = [s for s, _ in everything if s.name == ACK_SPAN]
    end_ns = max(s.end_ns for s in acks) if acks else max(s.end_ns for s, _ in everything)
    return Timeline(view.trace_id, rows, (end_ns - t0) / 1e6, bool(acks))


def _shown(attributes: dict[str, Any]) -> dict[str, Any]:
    shown = {}
    for name in SHOWN_ATTRIBUTES:
        for key in (f"sg.{name}", f"shardgate.{name}"):
            if key in attributes:
                shown[name] = attributes[key]
                break
    return shown


def _error(span: Span) -> str | None:
    for key in ERROR_ATTRIBUTES:
        if span.attributes.get(key):
            return str(span.attributes[key])
    if span.status_code == STATUS_ERROR:
        return span.status_message or "error"
    return None
