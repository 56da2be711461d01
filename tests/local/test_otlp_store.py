"""The raw-batch span store answers exactly as the decode-everything store it replaced, and its file and
memory stay what they promise.

`Reference` is the previous store's lookup (every span decoded on arrival, grouped by trace, no
eviction), kept here as the specification: random batches with the pipeline's attribute spellings,
out-of-order arrival, span links, lone spans and tied start times must get the same JSON from both.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import DESCRIPTOR as TRACE_SERVICE_FILE
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2

from shardgate.local.spans import (
    HOST_ATTRIBUTES,
    SPANS_FILE,
    Span,
    SpanStore,
    TraceView,
    is_unit_key,
    normalize_host,
    read_records,
    record_header,
    span_names_host,
    span_names_unit,
    spans_from_request,
)


class Reference:
    """The store as it was: every span decoded and filed by trace on arrival."""

    def __init__(self) -> None:
        self.traces: OrderedDict[str, list[Span]] = OrderedDict()
        self.linking: dict[str, list[Span]] = {}

    def add(self, spans: Iterable[Span]) -> None:
        for span in spans:
            self.traces.setdefault(span.trace_id, []).append(span)
            for link in span.links:
                if link.trace_id != span.trace_id:
                    self.linking.setdefault(link.trace_id, []).append(span)

    def trace(self, trace_id: str) -> TraceView | None:
        spans = self.traces.get(trace_id)
        if spans is None:
            return None
        own = {s.span_id for s in spans}
        linked: list[Span] = []
        seen: set[str] = set()
        for s in self.linking.get(trace_id, []):
            if s.span_id not in own and s.span_id not in seen:
                seen.add(s.span_id)
                linked.append(s)
        return TraceView(trace_id, tuple(spans), tuple(linked))

    def newest_for_host(self, host: str) -> TraceView | None:
        if is_unit_key(host):
            if host.startswith("h:"):
                return self.newest_for_host(host[2:])
            return self._newest(lambda s: span_names_unit(s, host))
        wanted = normalize_host(host)
        return self._newest(lambda s: span_names_host(s, wanted))

    def _newest(self, matches: Callable[[Span], bool]) -> TraceView | None:
        best: TraceView | None = None
        best_rank = (False, 0)
        for trace_id, spans in self.traces.items():
            linking = self.linking.get(trace_id, [])
            if any(matches(s) for s in spans) or any(matches(s) for s in linking):
                view = self.trace(trace_id)
                assert view is not None
                rank = (len(view.spans) + len(view.linked) > 1, view.start_ns)
                if best is None or rank >= best_rank:
                    best, best_rank = view, rank
        return best

    def recent(self, limit: int) -> list[dict[str, Any]]:
        summaries: list[dict[str, Any]] = []
        for trace_id, spans in self.traces.items():
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


# -- random pipelines ---------------------------------------------------------------------------------

HOSTS = ["shop.test", "a.test", "k8s.test", "ab12", "x.y.test"]
RARE = "rare.test"
"""Named seldom, so that a lone span is sometimes all there is for it."""
UNITS = ["s:demo/echo", "s:demo/other", "c:demo/tls"]


def spelling(rng: random.Random, host: str) -> AnyValue:
    """One of the ways a span may carry a host, all of which name it."""
    choice = rng.randrange(8)
    if choice == 0:
        return AnyValue(string_value=host.upper())
    if choice == 1:
        return AnyValue(string_value=f" {host}.")
    if choice == 2:
        return AnyValue(string_value=f"{host}:8443")
    if choice == 3 and "k" in host:
        return AnyValue(string_value=host.replace("k", "\u212a"))  # KELVIN SIGN lowers to k
    if choice == 4 and all(c in "0123456789abcdef" for c in host):
        return AnyValue(bytes_value=bytes.fromhex(host))  # compared as its hex
    if choice == 5:
        inner = ArrayValue(values=[AnyValue(string_value="other.test"), AnyValue(string_value=host)])
        return AnyValue(array_value=ArrayValue(values=[AnyValue(array_value=inner)]))
    return AnyValue(string_value=host)


def naming_attributes(rng: random.Random) -> list[KeyValue]:
    out: list[KeyValue] = []
    for _ in range(rng.choice([0, 0, 1, 1, 2])):
        host = RARE if rng.random() < 0.03 else rng.choice(HOSTS)
        kind = rng.randrange(7)
        if kind == 0:
            out.append(KeyValue(key=rng.choice(HOST_ATTRIBUTES), value=spelling(rng, host)))
        elif kind == 1:
            unit = AnyValue(string_value=f"h:{host.upper() if rng.random() < 0.3 else host}")
            out.append(KeyValue(key=rng.choice(["sg.unit", "shardgate.unit"]), value=unit))
        elif kind == 2:
            units = [AnyValue(string_value=rng.choice(UNITS)), AnyValue(string_value=f"h:{host}")]
            out.append(KeyValue(key="sg.unit", value=AnyValue(array_value=ArrayValue(values=units))))
        elif kind == 3:
            out.append(KeyValue(key="sg.unit", value=AnyValue(string_value=rng.choice(UNITS))))
        elif kind == 4:  # a repeated key: the last one counts
            out.append(KeyValue(key="sg.host", value=AnyValue(string_value="gone.test")))
            out.append(KeyValue(key="sg.host", value=AnyValue(string_value=host)))
        elif kind == 5:
            out.append(KeyValue(key="sg.host", value=AnyValue(int_value=7)))
        else:
            out.append(KeyValue(key="note", value=AnyValue(string_value=host)))  # not a naming attribute
    out.append(KeyValue(key="sg.shard", value=AnyValue(int_value=rng.randrange(4))))
    return out


def random_batches(rng: random.Random, n_traces: int = 40) -> list[bytes]:
    trace_ids = [rng.randbytes(16) for _ in range(n_traces)]
    spans: list[tuple[str, trace_pb2.Span]] = []
    for trace_id in trace_ids:
        for _ in range(rng.choice([1, 1, 1, 2, 3, 5])):
            links = []
            for _ in range(rng.choice([0] * 12 + [1, 2])):
                target = rng.choice([*trace_ids, trace_id, rng.randbytes(16)])
                links.append(trace_pb2.Span.Link(trace_id=target, span_id=rng.randbytes(8)))
            start = 1_000 + rng.randrange(20) * 10  # coarse: ties happen
            span_id = rng.randbytes(8) if rng.random() > 0.05 else b"\x01" * 8  # sometimes shared
            span = trace_pb2.Span(
                trace_id=trace_id,
                span_id=span_id,
                name=rng.choice(["watcher.event", "compiler.apply", "envoy.ack"]),
                start_time_unix_nano=start,
                end_time_unix_nano=start + rng.randrange(50),
                attributes=naming_attributes(rng),
                links=links,
            )
            spans.append((rng.choice(["shardgate-watcher", "shardgate-compiler", "shardgate-pusher"]), span))
    rng.shuffle(spans)
    batches: list[bytes] = []
    while spans:
        n = rng.randint(1, 12)
        take, spans = spans[:n], spans[n:]
        request = ExportTraceServiceRequest()
        for service, span in take:
            resource_spans = request.resource_spans.add()
            resource_spans.resource.CopyFrom(
                Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])
            )
            resource_spans.scope_spans.add().spans.append(span)
        batches.append(request.SerializeToString())
    return batches


def queries() -> list[str]:
    out = ["nowhere.test", "h:nowhere.test", "s:nowhere/none", ""]
    for host in [*HOSTS, RARE]:
        out += [host, host.upper() + ".", f"{host}:80", f"h:{host}"]
    return out + UNITS


def as_json(view: TraceView | None) -> dict[str, Any] | None:
    return view.to_json() if view is not None else None


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("index_budget", [0, 40, 200_000])
def test_answers_as_the_decode_everything_store(seed: int, index_budget: int) -> None:
    rng = random.Random(seed)
    batches = random_batches(rng)
    reference = Reference()
    store = SpanStore(max_index_entries=index_budget)
    for data in batches:
        reference.add(spans_from_request(ExportTraceServiceRequest.FromString(data)))
        store.add_export(data)

    for _ in range(2):  # the second round runs on whatever the first left indexed
        for query in queries():
            assert as_json(store.newest_for_host(query)) == as_json(reference.newest_for_host(query)), query
    for trace_id in reference.traces:
        assert as_json(store.trace(trace_id)) == as_json(reference.trace(trace_id))
    assert store.trace("00" * 16) is None and store.trace("not hex") is None
    assert store.recent(1000) == reference.recent(1000)
    assert len(store) == sum(len(spans) for spans in reference.traces.values())
    assert store.index_entries <= index_budget


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("sg.host", AnyValue(string_value="Shop.Test.")),
        ("host", AnyValue(string_value=" shop.test:8443")),
        ("sg.host", AnyValue(string_value="\u212a8s.test")),  # KELVIN SIGN: a byte search for "k8s" misses it
        ("sg.host", AnyValue(bytes_value=bytes.fromhex("ab12"))),  # compared as the hex "ab12"
        ("sg.unit", AnyValue(string_value="h:SHOP.test")),
        ("shardgate.hosts", AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="shop.test")]))),
    ],
)
def test_each_spelling_is_found_alone_in_its_batch(key: str, value: AnyValue) -> None:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.append(
        trace_pb2.Span(
            trace_id=b"\x05" * 16, span_id=b"\x06" * 8, attributes=[KeyValue(key=key, value=value)]
        )
    )
    store = SpanStore()
    store.add_export(request.SerializeToString())
    (named,) = spans_from_request(request)
    hosts = [h for h in ("shop.test", "k8s.test", "ab12") if span_names_host(named, h)]
    assert len(hosts) == 1
    view = store.newest_for_host(hosts[0])
    assert view is not None and view.trace_id == "05" * 16


def test_a_found_trace_gathers_its_spans_from_every_batch() -> None:
    # The change's spans come in three batches; the batch span (its own trace) links to it; later, a
    # lone span names the host again and must not win over the change.
    change, batch_trace, lone = b"\x11" * 16, b"\x22" * 16, b"\x33" * 16

    def span(
        trace_id: bytes, n: int, start: int, host: str | None = None, link: bool = False
    ) -> trace_pb2.Span:
        attributes = [KeyValue(key="sg.host", value=AnyValue(string_value=host))] if host else []
        links = [trace_pb2.Span.Link(trace_id=change, span_id=b"\x01" * 8)] if link else []
        return trace_pb2.Span(
            trace_id=trace_id,
            span_id=bytes([n]) * 8,
            name=f"s{n}",
            start_time_unix_nano=start,
            end_time_unix_nano=start + 1,
            attributes=attributes,
            links=links,
        )

    def request(*spans: trace_pb2.Span) -> bytes:
        r = ExportTraceServiceRequest()
        r.resource_spans.add().scope_spans.add().spans.extend(spans)
        data: bytes = r.SerializeToString()
        return data

    store = SpanStore()
    store.add_export(request(span(change, 1, 100, "shop.test")))
    store.add_export(request(span(batch_trace, 2, 105, link=True)))
    store.add_export(request(span(change, 3, 110)))
    store.add_export(request(span(lone, 4, 500, "SHOP.test")))
    view = store.newest_for_host("shop.test")
    assert view is not None and view.trace_id == change.hex()
    assert [s.name for s in view.spans] == ["s1", "s3"] and [s.name for s in view.linked] == ["s2"]


# -- the span file ------------------------------------------------------------------------------------


def span_file_message() -> Any:
    """`message SpanFile { repeated ExportTraceServiceRequest requests = 1; }`, as the docs promise."""
    pool = descriptor_pool.Default()
    try:
        descriptor = pool.FindMessageTypeByName("shardgate.test.SpanFile")
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto(
            name="shardgate_test_span_file.proto",
            package="shardgate.test",
            dependency=[TRACE_SERVICE_FILE.name],
            syntax="proto3",
        )
        message = proto.message_type.add(name="SpanFile")
        message.field.add(
            name="requests",
            number=1,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
            type_name=".opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest",
        )
        pool.Add(proto)
        descriptor = pool.FindMessageTypeByName("shardgate.test.SpanFile")
    return message_factory.GetMessageClass(descriptor)


def test_the_span_file_is_the_requests_as_received(tmp_path: Path) -> None:
    batches = random_batches(random.Random(1))
    path = tmp_path / SPANS_FILE
    store = SpanStore(path=path)
    for data in batches:
        store.add_export(data)
    raw = path.read_bytes()
    assert raw == b"".join(record_header(len(d)) + d for d in batches)
    assert list(read_records(path)) == batches
    parsed = span_file_message().FromString(raw)
    assert [r.SerializeToString() for r in parsed.requests] == [
        ExportTraceServiceRequest.FromString(d).SerializeToString() for d in batches
    ]
    # After the receiver is gone, the file answers as the receiver did.
    reread = SpanStore.from_file(path)
    for query in queries():
        assert as_json(reread.newest_for_host(query)) == as_json(store.newest_for_host(query))


def test_a_torn_last_record_is_skipped_then_cut(tmp_path: Path) -> None:
    batches = random_batches(random.Random(2))
    path = tmp_path / SPANS_FILE
    path.write_bytes(b"".join(record_header(len(d)) + d for d in batches[:3]))
    with path.open("ab") as f:  # a crash halfway through the fourth
        f.write((record_header(len(batches[3])) + batches[3])[: len(batches[3]) // 2])
    assert list(read_records(path)) == batches[:3]

    writer = SpanStore(path=path)
    writer.add_export(batches[4])
    assert list(read_records(path)) == [*batches[:3], batches[4]]


def test_the_file_rotates_once_and_is_read_back_in_order(tmp_path: Path) -> None:
    batches = random_batches(random.Random(3), n_traces=80)
    path = tmp_path / SPANS_FILE
    store = SpanStore(path=path, max_file_bytes=sum(map(len, batches)) // 3)
    for data in batches:
        store.add_export(data)
    rotated = path.with_name(SPANS_FILE + ".1")
    assert rotated.exists()
    kept = list(read_records(rotated)) + list(read_records(path))
    assert kept == batches[-len(kept) :] and len(kept) < len(batches)
    assert SpanStore.from_file(path).exports() == kept


def test_memory_stays_within_its_bounds() -> None:
    batches = random_batches(random.Random(4), n_traces=300)
    store = SpanStore(max_bytes=sum(map(len, batches)) // 4, max_index_entries=100)
    for data in batches:
        store.add_export(data)
        assert store.raw_bytes <= store.max_bytes
    for query in queries():
        store.newest_for_host(query)
        assert store.index_entries <= 100
    assert store.exports() == batches[-store.batches :]
    # One request larger than the bound is still kept (alone): the newest batch always is.
    store.add_export(b"".join(batches))
    assert store.batches == 1


def test_bytes_that_are_no_request_are_kept_and_ignored() -> None:
    good = random_batches(random.Random(5))
    store = SpanStore()
    reference = Reference()
    for data in good:
        store.add_export(b"\xff\xff not protobuf")
        store.add_export(data)
        reference.add(spans_from_request(ExportTraceServiceRequest.FromString(data)))
    for query in queries():
        assert as_json(store.newest_for_host(query)) == as_json(reference.newest_for_host(query))
    assert len(store) == sum(len(spans) for spans in reference.traces.values())
