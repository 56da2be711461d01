"""A watch event's span, noted when the event arrives and started when its change is published.

A change waits in the publish queue from its event until a worker takes it (in a bulk load, tens of
thousands wait at once). It used to wait holding a started SDK span (its attributes, lock, context: a few
KB each); the arrival time and attributes are all it needs until then. The span is started, dated from
the event's arrival, when the change is taken up, so the trace is the same; only its bytes are not
held while it waits. Those waiting spans were freed at the end of a 100k load and left CPython's
allocator with ~200 MB of free space in arenas it could not give back (docs/ARCHITECTURE.md, the
watcher's memory).
"""

from __future__ import annotations

from typing import NamedTuple

from opentelemetry import trace
from opentelemetry.util.types import Attributes

from shardgate import telemetry

tracer = telemetry.tracer("shardgate.watcher")


class EventSpan(NamedTuple):
    """A `watcher.event` span not started yet: what it will say, and when its event arrived."""

    attributes: Attributes
    observed_ns: int

    def start(self) -> trace.Span:
        return tracer.start_span("watcher.event", attributes=self.attributes, start_time=self.observed_ns)
