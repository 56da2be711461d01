"""The Delta and SotW stream logic, driven request by request without gRPC or Envoy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from shardgate.pusher import stream as stream_module
from shardgate.pusher.cache import ResourceCache
from shardgate.pusher.delta import DeltaStream
from shardgate.pusher.sotw import SotwStream
from shardgate.records import Fragment, make_resource
from shardgate.xds import types

SCOPE, CLA = types.SCOPED_ROUTE, types.ENDPOINT
TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def host(name: str, body: bytes = b"v1") -> Fragment:
    return Fragment(f"h:{name}", (make_resource(SCOPE, f"host:{name}", body),))


def delta_req(type_url: str = SCOPE, nonce: str = "", **kw: object) -> discovery_pb2.DeltaDiscoveryRequest:
    return discovery_pb2.DeltaDiscoveryRequest(
        node=base_pb2.Node(id="gw-1"), type_url=type_url, response_nonce=nonce, **kw
    )


def names(resp: discovery_pb2.DeltaDiscoveryResponse) -> tuple[list[str], list[str]]:
    return sorted(r.name for r in resp.resources), sorted(resp.removed_resources)


def test_first_wildcard_request_respects_initial_versions() -> None:
    cache = ResourceCache()
    cache.apply({"h:a": host("a"), "h:b": host("b"), "h:c": host("c", b"v2")})
    stream = DeltaStream(cache, hold_off=0)
    have = {"host:a": cache.get(SCOPE, "host:a").version, "host:c": "old", "host:gone": "x"}  # type: ignore[union-attr]
    stream.handle(delta_req(initial_resource_versions=have))
    (resp,) = stream.responses()
    assert names(resp) == (["host:b", "host:c"], ["host:gone"])
    assert stream.responses() == []


def test_first_request_is_answered_even_when_empty() -> None:
    stream = DeltaStream(ResourceCache(), hold_off=0)
    stream.handle(delta_req())
    (resp,) = stream.responses()
    assert names(resp) == ([], []) and resp.nonce


def test_changes_send_only_changed_names_and_removals() -> None:
    cache = ResourceCache()
    cache.apply({"h:a": host("a"), "h:b": host("b")})
    stream = DeltaStream(cache, hold_off=0)
    cancel = cache.watch(stream.on_change)
    stream.handle(delta_req())
    (first,) = stream.responses()
    stream.handle(delta_req(nonce=first.nonce))  # Envoy ACKs
    cache.apply({"h:a": host("a", b"v2"), "h:b": None, "h:new": host("new")})
    cache.apply({"h:new": None})  # added and removed before the push: nothing to say about it
    (resp,) = stream.responses()
    assert names(resp) == (["host:a"], ["host:b"])
    cancel()


def test_named_subscription_gets_resource_or_removal() -> None:
    cache = ResourceCache()
    cache.apply({"s:ns/web": Fragment("s:ns/web", (make_resource(CLA, "ns/web:80", b"e"),))})
    stream = DeltaStream(cache, hold_off=0)
    cache.watch(stream.on_change)
    stream.handle(delta_req(CLA, resource_names_subscribe=["ns/web:80", "ns/unknown:80"]))
    (resp,) = stream.responses()
    assert names(resp) == (["ns/web:80"], ["ns/unknown:80"])
    # A change to a name nobody subscribed to does not wake this stream's EDS.
    cache.apply({"s:ns/other": Fragment("s:ns/other", (make_resource(CLA, "ns/other:80", b"e"),))})
    assert stream.responses() == []
    stream.handle(delta_req(CLA, nonce=resp.nonce, resource_names_subscribe=["ns/other:80"]))
    (resp2,) = stream.responses()
    assert names(resp2) == (["ns/other:80"], [])


def test_stale_nonce_is_not_a_new_subscription_nor_an_answer() -> None:
    cache = ResourceCache()
    cache.apply({"h:a": host("a")})
    stream = DeltaStream(cache, hold_off=0)
    stream.handle(delta_req())
    assert len(stream.responses()) == 1
    stream.handle(delta_req(nonce="no-such-nonce"))
    assert stream.responses() == []  # not treated as a first request: nothing resent


def test_ack_ends_one_span_per_trace(spans: InMemorySpanExporter) -> None:
    spans.clear()
    cache = ResourceCache()
    stream = DeltaStream(cache, hold_off=0)
    cache.watch(stream.on_change)
    stream.handle(delta_req())
    first = stream.responses()[0]
    stream.handle(delta_req(nonce=first.nonce))
    cache.apply({"h:a": host("a")}, {"h:a": TP})
    (resp,) = stream.responses()
    assert not spans.get_finished_spans()
    stream.handle(delta_req(nonce=resp.nonce))
    (span,) = [s for s in spans.get_finished_spans() if s.name == "envoy.ack"]
    assert span.context.trace_id == int(TP.split("-")[1], 16)
    assert span.parent is not None and span.parent.span_id == int(TP.split("-")[2], 16)
    attrs = dict(span.attributes or {})
    assert attrs["envoy.node_id"] == "gw-1"
    assert attrs["xds.nonce"] == resp.nonce
    assert attrs["xds.resource_names"] == ("host:a",)
    assert attrs["sg.unit"] == "h:a"
    assert span.end_time is not None and span.start_time is not None and span.end_time >= span.start_time


def subscribed() -> tuple[ResourceCache, DeltaStream]:
    """A cache and a Delta stream on it whose first (empty) response Envoy has ACKed."""
    cache = ResourceCache()
    stream = DeltaStream(cache, hold_off=0)
    cache.watch(stream.on_change)
    stream.handle(delta_req())
    stream.handle(delta_req(nonce=stream.responses()[0].nonce))
    return cache, stream


def acked_scopes() -> float:
    return (
        REGISTRY.get_sample_value(
            "shardgate_pusher_acked_resources_total", {"type": "ScopedRouteConfiguration"}
        )
        or 0.0
    )


def test_acked_resources_are_counted_and_nacked_ones_are_not() -> None:
    """Pushed minus ACKed is what Envoy has not taken yet (the benchmark waits on it in a burst)."""
    cache, stream = subscribed()
    before = acked_scopes()
    cache.apply({"h:a": host("a"), "h:b": host("b")})
    (resp,) = stream.responses()
    assert acked_scopes() == before  # sent, not answered yet
    stream.handle(delta_req(nonce=resp.nonce))
    assert acked_scopes() == before + 2
    cache.apply({"h:c": host("c")})
    (refused,) = stream.responses()
    stream.handle(delta_req(nonce=refused.nonce, error_detail=status_pb2.Status(code=3, message="no")))
    assert acked_scopes() == before + 2


def test_delta_nack_holds_back_the_named_resource_and_resends_the_rest() -> None:
    cache, stream = subscribed()
    cache.apply({"h:bad": host("bad"), "h:good": host("good")})
    (resp,) = stream.responses()
    error = status_pb2.Status(code=3, message='scope "host:bad": invalid regex')
    stream.handle(delta_req(nonce=resp.nonce, error_detail=error))
    (retry,) = stream.responses()
    assert names(retry) == (["host:good"], [])
    stream.handle(delta_req(nonce=retry.nonce))
    cache.apply({"h:bad": host("bad", b"fixed")})
    (fixed,) = stream.responses()
    assert names(fixed) == (["host:bad"], [])


def test_delta_holds_changes_until_envoy_answers_then_sends_them_as_one() -> None:
    """Flow control: one unanswered response per type; what changes meanwhile goes out together."""
    cache = ResourceCache()
    stream = DeltaStream(cache, hold_off=0)
    cache.watch(stream.on_change)
    stream.handle(delta_req())
    (first,) = stream.responses()
    cache.apply({"h:a": host("a")})
    assert stream.responses() == []  # the first push is not answered yet
    cache.apply({"h:b": host("b")})
    cache.apply({"h:a": host("a", b"v2")})
    assert stream.responses() == []
    stream.handle(delta_req(nonce=first.nonce))
    (both,) = stream.responses()
    assert sorted(names(both)[0]) == ["host:a", "host:b"]
    assert {r.name: r.version for r in both.resources}["host:a"] == cache.get(SCOPE, "host:a").version  # type: ignore[union-attr]


def sotw_req(type_url: str = SCOPE, nonce: str = "", **kw: object) -> discovery_pb2.DiscoveryRequest:
    return discovery_pb2.DiscoveryRequest(
        node=base_pb2.Node(id="gw-s"), type_url=type_url, response_nonce=nonce, **kw
    )


def test_sotw_sends_full_set_and_ignores_stale_requests() -> None:
    cache = ResourceCache()
    cache.apply({"h:a": host("a"), "h:b": host("b")})
    stream = SotwStream(cache, hold_off=0)
    cache.watch(stream.on_change)
    stream.handle(sotw_req())
    (r1,) = stream.responses()
    assert len(r1.resources) == 2 and r1.version_info == str(cache.revision(SCOPE))
    stream.handle(sotw_req(nonce=r1.nonce, version_info=r1.version_info))
    assert stream.responses() == []
    cache.apply({"h:c": host("c")})
    (r2,) = stream.responses()
    assert len(r2.resources) == 3  # SotW: the full set, by nature
    stream.handle(sotw_req(nonce=r1.nonce, resource_names=["whatever"]))  # stale: ignored
    assert stream.responses() == []


def test_sotw_nack_keeps_the_last_accepted_version_of_the_named_resource() -> None:
    cache = ResourceCache()
    cache.apply({"h:a": host("a"), "h:b": host("b")})
    stream = SotwStream(cache, hold_off=0)
    cache.watch(stream.on_change)
    stream.handle(sotw_req())
    (r1,) = stream.responses()
    stream.handle(sotw_req(nonce=r1.nonce))
    cache.apply({"h:a": host("a", b"bad"), "h:b": host("b", b"v2")})
    (r2,) = stream.responses()
    stream.handle(sotw_req(nonce=r2.nonce, error_detail=status_pb2.Status(message="host:a is broken")))
    (r3,) = stream.responses()
    bodies = sorted(a.value for a in r3.resources)
    assert bodies == [b"v1", b"v2"]  # a's last accepted version, b's new one


async def test_a_large_push_hands_the_freed_heap_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new Envoy's first response holds every scope: once written, malloc's pages go back."""
    trims: list[str] = []
    monkeypatch.setattr(stream_module.heap, "trim", lambda reason="": trims.append(reason) or True)
    monkeypatch.setattr(stream_module, "LARGE_PUSH", 3)
    cache = ResourceCache()
    cache.apply({f"h:{i}": host(str(i)) for i in range(3)})
    requests: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest | None] = asyncio.Queue()
    written: asyncio.Queue[discovery_pb2.DeltaDiscoveryResponse] = asyncio.Queue()

    async def envoy() -> AsyncIterator[discovery_pb2.DeltaDiscoveryRequest]:
        while (req := await requests.get()) is not None:
            yield req

    async def write(resp: discovery_pb2.DeltaDiscoveryResponse) -> None:
        await written.put(resp)

    stream = DeltaStream(cache, hold_off=0)
    task = asyncio.create_task(stream.run(envoy(), write))
    await requests.put(delta_req())
    first = await asyncio.wait_for(written.get(), 10)
    assert len(first.resources) == 3 and trims == ["a push of 3 resources"]
    await requests.put(delta_req(nonce=first.nonce))
    cache.apply({"h:4": host("4")})  # a small push afterwards: nothing to hand back
    second = await asyncio.wait_for(written.get(), 10)
    assert len(second.resources) == 1 and trims == ["a push of 3 resources"]
    await requests.put(None)
    await task
