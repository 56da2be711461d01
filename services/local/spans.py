"""Spans as the local stack keeps them: raw OTLP batches in a bounded ring, decoded only when asked for.

No collector or Jaeger can be installed on these machines, so the local stack keeps its own spans. The
receiver (`otlp.py`) shares a machine with the pipeline the benchmarks measure, and almost no span is
ever asked for, so taking a span must cost next to nothing: each `Export` request is kept as the bytes it
arrived as, appended to the span file and to an in-memory ring bounded in bytes (the oldest batches go
first). Nothing is decoded until a question comes; then a plain byte search over the ring finds the few
batches that can hold the answer, only those are decoded (into the `Span` records the API returns), and
what a decode learned about a batch (its trace ids, link targets and the hosts and units it names) is
cached, within a bound, for the next question.

The one question the CLI asks — "the newest change to host H" — is answered here, tolerant of how the
pipeline names the host: `sg.host`, `host`, or a unit key `sg.unit == "h:<host>"`. Batches use span links
(DESIGN.md, Tracing), so a span in another trace that links to a change's trace is returned with it, as
`linked`. (The `shardgate.` spelling of the `sg.` attributes is accepted too; the pipeline should settle on
one.)

The span file (`SPANS_FILE`) is a sequence of records, each one `Export` request exactly as received:

    record := 0x0A  varint(len)  ExportTraceServiceRequest[len]

that is, protobuf field 1 (wire type 2) repeated, so the whole file also parses as a protobuf message
`{ repeated ExportTraceServiceRequest requests = 1; }` (`protoc --decode_raw < spans.pb` shows it). It is
rotated once (to `spans.pb.1`) when it passes `max_file_bytes`; a torn last record (a crash mid-write) is
ignored by readers and cut off by the next writer. `SpanStore.from_file` rebuilds the store from it, so
`shardgate trace` still answers after the receiver is gone.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage

log = logging.getLogger("shardgate.local.spans")

HOST_ATTRIBUTES = ("sg.host", "shardgate.host", "host", "sg.hosts", "shardgate.hosts")
UNIT_ATTRIBUTES = ("sg.unit", "shardgate.unit")
_NAMING_ATTRIBUTES = frozenset(HOST_ATTRIBUTES + UNIT_ATTRIBUTES)

SPANS_FILE = "spans.pb"
RECORD_TAG = b"\x0a"
"""Protobuf field 1, wire type 2 (length-delimited): every record of the span file starts with it."""
_KELVIN = "\u212a".encode()
"""The one non-ASCII character whose lower case is ASCII (K → k): a host byte search must not miss it."""


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


def _service(resource_spans: ResourceSpans) -> str:
    return str(_attributes(resource_spans.resource.attributes).get("service.name", "unknown"))


def _record(span: SpanMessage, service: str) -> Span:
    links = tuple(
        Link(link.trace_id.hex(), link.span_id.hex(), _attributes(link.attributes)) for link in span.links
    )
    return Span(
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


def _messages(request: ExportTraceServiceRequest) -> Iterator[tuple[int, SpanMessage]]:
    """Every span of a request in arrival order, with the number of the resource it came under."""
    for i, resource_spans in enumerate(request.resource_spans):
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield i, span


class _Services:
    """The service of each resource of one request, read only for resources a wanted span is under."""

    def __init__(self, request: ExportTraceServiceRequest) -> None:
        self.request = request
        self.names: dict[int, str] = {}

    def __getitem__(self, resource: int) -> str:
        name = self.names.get(resource)
        if name is None:
            name = self.names[resource] = _service(self.request.resource_spans[resource])
        return name


def spans_from_request(request: ExportTraceServiceRequest) -> list[Span]:
    """Flatten an OTLP export request; the service is the resource's `service.name`."""
    services = _Services(request)
    return [_record(span, services[resource]) for resource, span in _messages(request)]


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


def _host_keys(value: Any, out: set[str]) -> None:
    """Every host `span_names_host` would find in one host attribute's value (lists nest)."""
    if isinstance(value, list):
        for v in value:
            _host_keys(v, out)
    elif isinstance(value, str):
        out.add(normalize_host(value))


def _named(attributes: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The hosts (normalized) and the unit keys a span's naming attributes name: exactly those for which
    `span_names_host` / `span_names_unit` is true."""
    hosts: set[str] = set()
    units: set[str] = set()
    for name in HOST_ATTRIBUTES:
        _host_keys(attributes.get(name), hosts)
    for name in UNIT_ATTRIBUTES:
        unit = attributes.get(name)
        for u in unit if isinstance(unit, list) else [unit]:
            if isinstance(u, str):
                units.add(u)
                if u.startswith("h:"):
                    hosts.add(normalize_host(u[2:]))
    return hosts, units


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


# -- raw batches --------------------------------------------------------------------------------------

Naming = tuple[bytes, int | None]
"""A trace a span makes a candidate for a host or unit: its own (with the span's start, which bounds the
trace's start from above) or one it links to (start unknown)."""


@dataclass(frozen=True, slots=True)
class BatchIndex:
    """What one decode of a batch learned, enough to tell without decoding it again whether it holds
    spans of a trace, spans linking to it, or spans naming a host or unit."""

    count: int
    traces: frozenset[bytes]
    targets: frozenset[bytes]
    """Traces that a span of another trace links to."""
    hosts: dict[str, tuple[Naming, ...]]
    units: dict[str, tuple[Naming, ...]]
    entries: int
    """Trace ids held: what the store's index budget counts."""


def build_index(request: ExportTraceServiceRequest) -> BatchIndex:
    count = 0
    traces: set[bytes] = set()
    targets: set[bytes] = set()
    hosts: dict[str, list[Naming]] = {}
    units: dict[str, list[Naming]] = {}
    for _, span in _messages(request):
        count += 1
        trace_id = span.trace_id
        traces.add(trace_id)
        linked = [link.trace_id for link in span.links if link.trace_id != trace_id]
        targets.update(linked)
        # The last of a repeated key wins, as in `_attributes`; only the naming attributes are converted.
        values = {kv.key: kv.value for kv in span.attributes if kv.key in _NAMING_ATTRIBUTES}
        if not values:
            continue
        named_hosts, named_units = _named({k: _value(v) for k, v in values.items()})
        if not named_hosts and not named_units:
            continue
        naming: list[Naming] = [(trace_id, span.start_time_unix_nano)]
        naming += [(t, None) for t in dict.fromkeys(linked)]
        for host in named_hosts:
            hosts.setdefault(host, []).extend(naming)
        for unit in named_units:
            units.setdefault(unit, []).extend(naming)
    entries = len(traces) + len(targets) + sum(map(len, hosts.values())) + sum(map(len, units.values()))
    return BatchIndex(
        count,
        frozenset(traces),
        frozenset(targets),
        {k: tuple(v) for k, v in hosts.items()},
        {k: tuple(v) for k, v in units.items()},
        entries,
    )


class Batch:
    """One Export request as received, with what has been learned about it so far."""

    __slots__ = ("count", "data", "index", "seq")

    def __init__(self, seq: int, data: bytes) -> None:
        self.seq = seq
        self.data = data
        self.count: int | None = None
        """Spans in the batch, once known (kept: an int costs nothing)."""
        self.index: BatchIndex | None = None
        """Kept while the store's index budget allows."""

    def request(self) -> ExportTraceServiceRequest | None:
        """The decoded request; None for bytes that are not one (they are kept, and count no span)."""
        try:
            request: ExportTraceServiceRequest = ExportTraceServiceRequest.FromString(self.data)
            return request
        except (DecodeError, ValueError) as exc:
            log.debug("batch %d does not decode: %s", self.seq, exc)
            return None


@dataclass(frozen=True, slots=True)
class _Probe:
    """A byte search that is true for every batch holding a span that names a host or unit (it may be
    true for others: those are decoded and found not to)."""

    folded: bytes | None = None
    """Searched in the lower-cased batch: a host compares case-insensitively."""
    anchor: bytes | None = None
    """The host's longest run of non-letters, which case folding leaves as it is: a batch without it
    cannot hold the host in any case, and is ruled out without lower-casing it (a copy)."""
    exact: tuple[bytes, ...] = ()
    kelvin: bool = False
    always: bool = False

    @classmethod
    def for_host(cls, host: str) -> _Probe:
        if not host.isascii():  # str.lower() folds characters bytes.lower() does not: decode everything
            return cls(always=True)
        exact: tuple[bytes, ...] = ()
        if len(host) % 2 == 0 and all(c in "0123456789abcdef" for c in host):
            exact = (bytes.fromhex(host),)  # a bytes-valued attribute is compared as its hex
        runs = "".join(c if not c.isalpha() else " " for c in host).split(" ")
        anchor = max(runs, key=len).encode()
        return cls(
            folded=host.encode(), anchor=anchor if len(anchor) >= 3 else None, exact=exact, kelvin="k" in host
        )

    @classmethod
    def for_unit(cls, unit: str) -> _Probe:
        try:
            return cls(exact=(unit.encode(),))
        except UnicodeEncodeError:
            return cls(always=True)

    def __call__(self, data: bytes) -> bool:
        if self.always or any(x in data for x in self.exact) or (self.kelvin and _KELVIN in data):
            return True
        if self.folded is None:
            return False
        if self.anchor is not None:
            if self.anchor not in data:
                return False
            if self.folded in data:
                return True
        return self.folded in data.lower()


# -- the span file ------------------------------------------------------------------------------------


def record_header(length: int) -> bytes:
    """The tag and varint length that precede one request in the span file."""
    out = bytearray(RECORD_TAG)
    while True:
        byte, length = length & 0x7F, length >> 7
        if length:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(f: IO[bytes]) -> int | None:
    value = shift = 0
    for _ in range(10):
        b = f.read(1)
        if not b:
            return None
        value |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return value
        shift += 7
    return None


def read_records(path: Path) -> Iterator[bytes]:
    """The requests a span file holds, oldest first, as far as they are whole (a torn or foreign tail,
    such as a record being written right now, ends the file)."""
    with path.open("rb") as f:
        while True:
            tag = f.read(1)
            if tag != RECORD_TAG:
                if tag:
                    log.warning("%s: no span record at offset %d; the rest is skipped", path, f.tell() - 1)
                return
            length = _read_varint(f)
            if length is None:
                return
            data = f.read(length)
            if len(data) < length:
                return
            yield data


def _whole_length(path: Path) -> int:
    """Where the last whole record of a span file ends (a crash may have left a torn one after it)."""
    end = 0
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        while True:
            tag = f.read(1)
            length = _read_varint(f) if tag == RECORD_TAG else None
            if length is None or f.tell() + length > size:
                return end
            end = f.seek(length, os.SEEK_CUR)


# -- the store ----------------------------------------------------------------------------------------


class SpanStore:
    """The newest raw batches, at most `max_bytes` of them (the oldest batch is evicted first; the newest
    one is always kept), answering for a host or a trace by decoding only the batches that can matter.

    Optionally appends every batch to the span file (module docstring), so the CLI can read the spans
    after the receiver has stopped; the file is rotated once (to `.1`) when it passes `max_file_bytes`.
    Decoded batches keep a `BatchIndex` while all kept indexes hold at most `max_index_entries` entries
    (least recently used go first), so memory stays bounded by `max_bytes` plus that budget.
    """

    def __init__(
        self,
        max_bytes: int = 64 << 20,
        path: Path | None = None,
        max_file_bytes: int = 64 << 20,
        max_index_entries: int = 200_000,
    ) -> None:
        self.max_bytes = max_bytes
        self.path = path
        self.max_file_bytes = max_file_bytes
        self.max_index_entries = max_index_entries
        self._ring: deque[Batch] = deque()
        self._bytes = 0
        self._seq = 0
        self._indexed: OrderedDict[int, Batch] = OrderedDict()
        self._index_entries = 0
        self._file_checked = False

    # -- taking batches

    def add_export(self, data: bytes, persist: bool = True) -> None:
        """Keep one serialized `ExportTraceServiceRequest`: O(its bytes), nothing is decoded."""
        self._seq += 1
        self._ring.append(Batch(self._seq, data))
        self._bytes += len(data)
        while self._bytes > self.max_bytes and len(self._ring) > 1:
            evicted = self._ring.popleft()
            self._bytes -= len(evicted.data)
            self._forget_index(evicted)
        if persist and self.path is not None:
            self._append(data)

    def _append(self, data: bytes) -> None:
        assert self.path is not None
        if not self._file_checked and self.path.exists():
            whole = _whole_length(self.path)
            if whole < self.path.stat().st_size:
                log.warning("%s: cutting a torn last record at offset %d", self.path, whole)
                os.truncate(self.path, whole)
        self._file_checked = True
        if self.path.exists() and self.path.stat().st_size > self.max_file_bytes:
            self.path.replace(self.path.with_name(self.path.name + ".1"))
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            header = record_header(len(data))
            written = os.writev(fd, [header, data])
            if written < len(header) + len(data):  # a full disk: leave no torn record between whole ones
                os.ftruncate(fd, size)
                raise OSError(f"short write to {self.path} ({written} of {len(header) + len(data)} bytes)")
        finally:
            os.close(fd)

    def load(self) -> int:
        """Read back what an earlier run appended to the file (as far as it is whole); the batches read."""
        if self.path is None:
            return 0
        rotated = self.path.with_name(self.path.name + ".1")
        n = 0
        for p in (rotated, self.path):
            if p.exists():
                for data in read_records(p):
                    self.add_export(data, persist=False)
                    n += 1
        return n

    @classmethod
    def from_file(cls, path: Path, max_bytes: int = 64 << 20) -> SpanStore:
        store = cls(max_bytes=max_bytes, path=path)
        store.load()
        return store

    # -- what is kept

    def __len__(self) -> int:
        """Spans kept; batches not counted yet are decoded for it (once each)."""
        total = 0
        for batch in self._ring:
            if batch.count is None:
                request = batch.request()
                batch.count = sum(1 for _ in _messages(request)) if request is not None else 0
            total += batch.count
        return total

    @property
    def batches(self) -> int:
        return len(self._ring)

    def exports(self) -> list[bytes]:
        """The kept requests as received, oldest first."""
        return [batch.data for batch in self._ring]

    @property
    def raw_bytes(self) -> int:
        """Bytes of the kept requests: what `max_bytes` bounds."""
        return self._bytes

    @property
    def index_entries(self) -> int:
        return self._index_entries

    def _index(self, batch: Batch, request: ExportTraceServiceRequest | None = None) -> BatchIndex:
        """The batch's index, decoding it if it has none; kept within the budget."""
        if batch.index is not None:
            self._indexed.move_to_end(batch.seq)
            return batch.index
        if request is None:
            request = batch.request()
        index = build_index(request) if request is not None else build_index(ExportTraceServiceRequest())
        batch.count = index.count
        if index.entries <= self.max_index_entries:
            batch.index = index
            self._indexed[batch.seq] = batch
            self._index_entries += index.entries
            while self._index_entries > self.max_index_entries:
                _, old = self._indexed.popitem(last=False)
                self._forget_index(old)
        return index

    def _forget_index(self, batch: Batch) -> None:
        if batch.index is not None:
            self._index_entries -= batch.index.entries
            self._indexed.pop(batch.seq, None)
            batch.index = None

    # -- questions

    def trace(self, trace_id: str) -> TraceView | None:
        try:
            raw = bytes.fromhex(trace_id)
        except ValueError:
            return None
        if raw.hex() != trace_id:  # fromhex accepts spaces and upper case; the ids are plain lower hex
            return None
        found = self._gather(raw)
        return found[0] if found is not None else None

    def _gather(self, trace_id: bytes) -> tuple[TraceView, tuple[int, int]] | None:
        """The trace's view, and where its first span arrived (batch, position); None if no span of it
        is kept. Only batches whose bytes hold the id (or whose index lists it) are decoded."""
        own: list[Span] = []
        linking: list[Span] = []
        first: tuple[int, int] | None = None
        for batch in self._ring:
            index = batch.index
            if index is not None:
                if trace_id not in index.traces and trace_id not in index.targets:
                    continue
                self._indexed.move_to_end(batch.seq)
            elif trace_id not in batch.data:
                continue
            request = batch.request()
            if request is None:
                continue
            if index is None:
                self._index(batch, request)
            services = _Services(request)
            for position, (resource, span) in enumerate(_messages(request)):
                if span.trace_id == trace_id:
                    own.append(_record(span, services[resource]))
                    first = first or (batch.seq, position)
                elif any(link.trace_id == trace_id for link in span.links):
                    linking.append(_record(span, services[resource]))
        if first is None:
            return None
        ids = {s.span_id for s in own}
        linked = tuple(_unique(s for s in linking if s.span_id not in ids))
        return TraceView(trace_id.hex(), tuple(own), linked), first

    def newest_for_host(self, host: str) -> TraceView | None:
        """The trace of the newest change to `host`: the matching trace whose first span started last.

        A trace of one lone span (an event the watcher saw and found nothing to publish for, such as
        its own status write-back) is not a change: it is returned only when nothing else names the host.
        A trace matches when one of its spans names the host, or a span of another trace that links to it
        does. `host` may also be a unit key (`h:<host>`, `s:<namespace>/<service>`, ...): see
        `span_names_unit`.
        """
        if is_unit_key(host):
            if host.startswith("h:"):
                return self.newest_for_host(host[2:])
            return self._newest(_Probe.for_unit(host), lambda index: index.units.get(host, ()))
        wanted = normalize_host(host)
        return self._newest(_Probe.for_host(wanted), lambda index: index.hosts.get(wanted, ()))

    def _newest(self, probe: _Probe, naming: Callable[[BatchIndex], tuple[Naming, ...]]) -> TraceView | None:
        # 1. Candidates: traces named (or linked to by a span naming the key) in any kept batch. A byte
        # search rules out almost every batch without decoding it.
        bound: dict[bytes, float] = {}  # candidate -> the start of an own span seen (an upper bound), or inf
        for batch in self._ring:
            if batch.index is None and not probe(batch.data):
                continue
            for trace_id, start in naming(self._index(batch)):
                seen = bound.get(trace_id, math.inf)
                bound[trace_id] = min(seen, start) if start is not None else seen
        # 2. The best by (several spans, start), ties to the later-arrived trace. A trace's start can only
        # fall below its bound, so once the best has several spans, no candidate bounded below its start
        # can win: those are never gathered.
        best: tuple[bool, int, tuple[int, int]] | None = None
        view: TraceView | None = None
        for trace_id in sorted(bound, key=lambda t: bound[t], reverse=True):
            if best is not None and best[0] and bound[trace_id] < best[1]:
                break
            found = self._gather(trace_id)
            if found is None:
                continue
            candidate, first = found
            rank = (len(candidate.spans) + len(candidate.linked) > 1, candidate.start_ns, first)
            if best is None or rank > best:
                best, view = rank, candidate
        return view

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """Summaries of the newest traces by start time: id, start, span count, names, hosts. Decodes
        every kept batch (one at a time): a debugging aid, not for a hot loop."""
        starts: dict[str, int] = {}  # first-arrived trace first, as the sort below keeps it for ties
        counts: dict[str, int] = {}
        names: dict[str, set[str]] = {}
        hosts: dict[str, set[str]] = {}
        for batch in self._ring:
            request = batch.request()
            if request is None:
                continue
            services = _Services(request)
            for resource, message in _messages(request):
                span = _record(message, services[resource])
                trace_id = span.trace_id
                starts[trace_id] = min(starts.get(trace_id, span.start_ns), span.start_ns)
                counts[trace_id] = counts.get(trace_id, 0) + 1
                names.setdefault(trace_id, set()).add(span.name)
                hosts.setdefault(trace_id, set()).update(
                    v for a in HOST_ATTRIBUTES if isinstance(v := span.attributes.get(a), str)
                )
        summaries: list[dict[str, Any]] = [
            {
                "trace_id": trace_id,
                "start_ns": start,
                "spans": counts[trace_id],
                "names": sorted(names[trace_id]),
                "hosts": sorted(hosts[trace_id]),
            }
            for trace_id, start in starts.items()
        ]
        summaries.sort(key=lambda x: int(x["start_ns"]), reverse=True)
        return summaries[:limit]


def _unique(spans: Iterable[Span]) -> Iterator[Span]:
    seen: set[str] = set()
    for span in spans:
        if span.span_id not in seen:
            seen.add(span.span_id)
            yield span
