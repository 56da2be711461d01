"""Spans as the local stack keeps them: plain records, a bounded store, and the host lookup.

No collector or Jaeger can be installed on these machines, so the local stack keeps its own spans. They
arrive as OTLP protobuf (see `otlp.py`), are flattened here into `Span` records that serialize to one JSON
line each, and are held in a store bounded by span count (oldest traces go first) that can also be
rebuilt from the JSONL file after the receiver is gone. The one question the CLI asks — "the newest change
to host H" — is answered here, tolerant of how the pipeline names the host: `sg.host`, `host`, or a unit
key `sg.unit == "h:<host>"`. Batches use span links (DESIGN.md, Tracing), so a span in another trace that
links to a change's trace is returned with it, as `linked`. (The `shardgate.` spelling of the `sg.` attributes
is accepted too; the pipeline should settle on one.)
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

HOST_ATTRIBUTES = ("sg.host", "shardgate.host", "host", "sg.hosts", "shardgate.hosts")
UNIT_ATTRIBUTES = ("sg.unit", "shardgate.unit")


@dataclass(frozen=True, slots=True)
class Link:
    trace_id: str
    span_id: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Span:
    """One finished span, flattened: ids in hex, times in Unix nanoseconds, attribute values as JSON."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    service: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    links: tuple[Link, ...] = ()
    status_code: int = 0
    """OTLP status: 0 unset, 1 ok, 2 error."""
    status_message: str = ""

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Span:
        links = tuple(
            Link(str(x["trace_id"]), str(x["span_id"]), dict(x.get("attributes") or {}))
            for x in data.get("links") or ()
        )
        return cls(
            trace_id=str(data["trace_id"]),
            span_id=str(data["span_id"]),
            parent_span_id=str(data.get("parent_span_id") or ""),
            name=str(data["name"]),
            service=str(data.get("service") or "unknown"),
            start_ns=int(data["start_ns"]),
            end_ns=int(data["end_ns"]),
            attributes=dict(data.get("attributes") or {}),
            links=links,
            status_code=int(data.get("status_code") or 0),
            status_message=str(data.get("status_message") or ""),
        )


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


def spans_from_request(request: ExportTraceServiceRequest) -> list[Span]:
    """Flatten an OTLP export request; the service is the resource's `service.name`."""
    out: list[Span] = []
    for resource_spans in request.resource_spans:
        service = str(_attributes(resource_spans.resource.attributes).get("service.name", "unknown"))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                links = tuple(
                    Link(link.trace_id.hex(), link.span_id.hex(), _attributes(link.attributes))
                    for link in span.links
                )
                out.append(
                    Span(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        service=service,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=_attributes(span.attributes),
                        links=links,
                        status_code=span.status.code,
                        status_message=span.status.message,
                    )
                )
    return out


def normalize_host(host: str) -> str:
    """Hosts compare as DNS does: case-insensitive, without a trailing dot or a port."""
    host = host.strip().lower().rstrip(".")
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host


def _matches(value: Any, host: str) -> bool:
    if isinstance(value, list):
        return any(_matches(v, host) for v in value)
    return isinstance(value, str) and normalize_host(value) == host


def span_names_host(span: Span, host: str) -> bool:
    """True when the span carries `host` (already normalized) under any of the names the pipeline uses."""
    attrs = span.attributes
    if any(_matches(attrs.get(name), host) for name in HOST_ATTRIBUTES):
        return True
    for name in UNIT_ATTRIBUTES:
        unit = attrs.get(name)
        units = unit if isinstance(unit, list) else [unit]
        if any(isinstance(u, str) and u.startswith("h:") and normalize_host(u[2:]) == host for u in units):
            return True
    return False


def is_unit_key(value: str) -> bool:
    """`s:demo/echo-a` is a unit key; `shop.test:8080` and `shop.test` are hosts."""
    return len(value) > 2 and value[1] == ":" and value[0].isalpha() and not value[2].isdigit()


def span_names_unit(span: Span, unit: str) -> bool:
    for name in UNIT_ATTRIBUTES:
        value = span.attributes.get(name)
        if value == unit or (isinstance(value, list) and unit in value):
            return True
    return False


@dataclass(frozen=True, slots=True)
class TraceView:
    """A trace's own spans plus spans of other traces (batches) that link to it."""

    trace_id: str
    spans: tuple[Span, ...]
    linked: tuple[Span, ...] = ()

    @property
    def start_ns(self) -> int:
        return min((s.start_ns for s in self.spans), default=0)

    def to_json(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "spans": [s.to_json() for s in self.spans],
            "linked": [s.to_json() for s in self.linked],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TraceView:
        return cls(
            trace_id=str(data["trace_id"]),
            spans=tuple(Span.from_json(s) for s in data.get("spans") or ()),
            linked=tuple(Span.from_json(s) for s in data.get("linked") or ()),
        )


class SpanStore:
    """Spans grouped by trace, at most `max_spans` of them; the oldest-arrived trace is evicted first.

    Optionally appends every span to a JSONL file, so the CLI can read the spans after the receiver has
    stopped; the file is rotated once (to `.1`) when it passes `max_file_bytes`.
    """

    def __init__(
        self, max_spans: int = 200_000, path: Path | None = None, max_file_bytes: int = 64 << 20
    ) -> None:
        self.max_spans = max_spans
        self.path = path
        self.max_file_bytes = max_file_bytes
        self._traces: OrderedDict[str, list[Span]] = OrderedDict()
        self._linking: dict[str, list[Span]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, spans: Iterable[Span], persist: bool = True) -> int:
        batch = list(spans)
        for span in batch:
            self._traces.setdefault(span.trace_id, []).append(span)
            for link in span.links:
                if link.trace_id != span.trace_id:
                    self._linking.setdefault(link.trace_id, []).append(span)
        self._count += len(batch)
        while self._count > self.max_spans and len(self._traces) > 1:
            trace_id, evicted = self._traces.popitem(last=False)
            self._linking.pop(trace_id, None)
            self._count -= len(evicted)
        if persist and self.path is not None and batch:
            self._append(batch)
        return len(batch)

    def _append(self, batch: list[Span]) -> None:
        assert self.path is not None
        if self.path.exists() and self.path.stat().st_size > self.max_file_bytes:
            self.path.replace(self.path.with_name(self.path.name + ".1"))
        with self.path.open("a", encoding="utf-8") as f:
            f.writelines(json.dumps(s.to_json(), separators=(",", ":")) + "\n" for s in batch)

    def load(self) -> int:
        """Read back what an earlier run appended to the file (bad lines are skipped)."""
        if self.path is None:
            return 0
        rotated = self.path.with_name(self.path.name + ".1")
        return sum(self.add(_read_jsonl(p), persist=False) for p in (rotated, self.path) if p.exists())

    @classmethod
    def from_file(cls, path: Path, max_spans: int = 200_000) -> SpanStore:
        store = cls(max_spans=max_spans, path=path)
        store.load()
        return store

    def trace(self, trace_id: str) -> TraceView | None:
        spans = self._traces.get(trace_id)
        if spans is None:
            return None
        own = {s.span_id for s in spans}
        linked = [s for s in self._linking.get(trace_id, []) if s.span_id not in own]
        return TraceView(trace_id, tuple(spans), tuple(_unique(linked)))

    def newest_for_host(self, host: str) -> TraceView | None:
        """The trace of the newest change to `host`: the matching trace whose first span started last.

        A trace of one lone span (an event the watcher saw and found nothing to publish for, such as
        its own status write-back) is not a change: it is returned only when nothing else names the host.
        `host` may also be a unit key (`h:<host>`, `s:<namespace>/<service>`, ...): see `names_unit`.
        """
        if is_unit_key(host):
            if host.startswith("h:"):
                return self.newest_for_host(host[2:])
            return self._newest(lambda s: span_names_unit(s, host))
        wanted = normalize_host(host)
        return self._newest(lambda s: span_names_host(s, wanted))

    def _newest(self, matches: Callable[[Span], bool]) -> TraceView | None:
        best: TraceView | None = None
        best_rank = (False, 0)
        for trace_id, spans in self._traces.items():
            linking = self._linking.get(trace_id, [])
            if any(matches(s) for s in spans) or any(matches(s) for s in linking):
                view = self.trace(trace_id)
                if view is None:
                    continue
                rank = (len(view.spans) + len(view.linked) > 1, view.start_ns)
                if best is None or rank >= best_rank:
                    best, best_rank = view, rank
        return best

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """Summaries of the newest traces by start time: id, start, span count, names, hosts."""
        summaries: list[dict[str, Any]] = []
        for trace_id, spans in self._traces.items():
            hosts = sorted(
                {v for s in spans for a in HOST_ATTRIBUTES if isinstance(v := s.attributes.get(a), str)}
            )
            summaries.append(
                {
                    "trace_id": trace_id,
                    "start_ns": min(s.start_ns for s in spans),
                    "spans": len(spans),
                    "names": sorted({s.name for s in spans}),
                    "hosts": hosts,
                }
            )
        summaries.sort(key=lambda x: int(x["start_ns"]), reverse=True)
        return summaries[:limit]


def _unique(spans: Iterable[Span]) -> Iterator[Span]:
    seen: set[str] = set()
    for span in spans:
        if span.span_id not in seen:
            seen.add(span.span_id)
            yield span


def _read_jsonl(path: Path) -> Iterator[Span]:
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                yield Span.from_json(json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue
