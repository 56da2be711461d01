"""The watcher end to end against the API stand-in, a real nats-server and a real redis-server."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shardgate import keys
from shardgate.adapters.kube import ENDPOINT_SLICE, EVENT, INGRESS, INGRESS_CLASS, SECRET, SERVICE
from shardgate.model import HostRoutes, host_routes_from_wire
from shardgate.watcher.index import SourceEntry

from .conftest import STATUS_ADDRESS, Env, StartWatcher, settle, wait_for, wait_until
from .helpers import default_class, endpoint_slice, host, ingress, service, summary, tls_secret

pytestmark = pytest.mark.integration

ING = "ingress/default/web"


async def lb_of(env: Env, name: str, ns: str = "default") -> list[Any]:
    obj = await env.kube.get(INGRESS, ns, name)
    return list(((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])


async def test_ingress_lifecycle_publishes_exact_deltas(
    env: Env, start_watcher: StartWatcher, spans: InMemorySpanExporter
) -> None:
    w = await start_watcher("w1")
    await wait_until(w.watcher.publishing, what="leadership")

    await env.kube.create(INGRESS, "default", ingress("web", ["a.example.com", "b.example.com"], tls="crt"))
    await settle(env, w.watcher)
    new = env.log.new()
    assert summary(new) == {(host("a.example.com"), ING, True), (host("b.example.com"), ING, True)}
    body = host_routes_from_wire(new[0].delta.body or {})
    assert (
        isinstance(body, HostRoutes) and body.tls_secret == "crt" and body.paths[0].backend.service == "app"
    )
    assert all(m.traceparent for m in new), "each delta carries its publish span's trace context"
    assert all(m.delta.observed_ns > 0 for m in new)
    # One trace: the event's span, with the object's facts, parents one publish span per delta.
    finished = spans.get_finished_spans()
    event = next(s for s in finished if s.name == "watcher.event" and s.attributes["k8s.object.key"] == ING)
    assert event.attributes["k8s.event.type"] == "ADDED"
    # Started only when its change was taken up (traced.py), but dated from the event's arrival.
    assert event.start_time in {m.delta.observed_ns for m in new}
    assert event.attributes["k8s.creation_timestamp"] and event.attributes["k8s.generation"] == 1
    assert set(event.attributes["sg.hosts"]) == {"a.example.com", "b.example.com"}
    publishes = [
        s for s in finished if s.name == "watcher.publish" and s.parent.span_id == event.context.span_id
    ]
    assert {s.attributes["sg.unit"] for s in publishes} == {
        host("a.example.com"),
        host("b.example.com"),
    }
    for s in publishes:
        assert s.attributes["sg.shard"] == keys.shard_of(s.attributes["sg.unit"])
    assert {m.traceparent.split("-")[2] for m in new} == {f"{s.context.span_id:016x}" for s in publishes}

    # The status write comes back as a watch event; it must not produce deltas (nor another write).
    await wait_for(lambda: _eq(lb_of(env, "web"), [{"ip": STATUS_ADDRESS}]), what="status written")
    await settle(env, w.watcher)
    assert env.log.new() == []

    # One host removed: a tombstone for that host only.
    current = await env.kube.get(INGRESS, "default", "web")
    current["spec"]["rules"] = current["spec"]["rules"][:1]
    await env.kube.replace(INGRESS, "default", "web", current)
    await settle(env, w.watcher)
    assert summary(env.log.new()) == {(host("b.example.com"), ING, False)}

    # A change outside the spec the model reads (a label): nothing.
    current = await env.kube.get(INGRESS, "default", "web")
    current["metadata"]["labels"] = {"team": "x"}
    await env.kube.replace(INGRESS, "default", "web", current)
    await settle(env, w.watcher)
    assert env.log.new() == []

    # Services, EndpointSlices and TLS Secrets each go to their unit.
    await env.kube.create(SERVICE, "default", service("app"))
    await env.kube.create(ENDPOINT_SLICE, "default", endpoint_slice("app-1", "app", ["10.0.0.1"]))
    await env.kube.create(SECRET, "default", tls_secret("crt"))
    await env.kube.create(SECRET, "default", {"metadata": {"name": "opaque"}, "type": "Opaque", "data": {}})
    await settle(env, w.watcher)
    svc_unit = keys.service_unit("default", "app")
    assert summary(env.log.new()) == {
        (svc_unit, "service/default/app", True),
        (svc_unit, "endpointslice/default/app-1", True),
        (keys.secret_unit("default", "crt"), "secret/default/crt", True),
    }

    # The Ingress stops being ours: tombstones, and the status we wrote is cleared.
    current = await env.kube.get(INGRESS, "default", "web")
    current["spec"]["ingressClassName"] = "nginx"
    await env.kube.replace(INGRESS, "default", "web", current)
    await settle(env, w.watcher)
    assert summary(env.log.new()) == {(host("a.example.com"), ING, False)}
    await wait_for(lambda: _eq(lb_of(env, "web"), []), what="status cleared")

    # Deleted objects: tombstones.
    await env.kube.delete(SERVICE, "default", "app")
    await env.kube.delete(ENDPOINT_SLICE, "default", "app-1")
    await env.kube.delete(INGRESS, "default", "web")
    await settle(env, w.watcher)
    assert summary(env.log.new()) == {
        (svc_unit, "service/default/app", False),
        (svc_unit, "endpointslice/default/app-1", False),
    }

    # The persisted index is exactly what was published and not retracted.
    r = aioredis.Redis.from_url(env.redis.url)
    raw = await r.hgetall("sg:watcher:index")
    await r.aclose()
    index = {k.decode(): SourceEntry.decode(v) for k, v in raw.items()}
    assert {s: set(e.units) for s, e in index.items()} == {
        "secret/default/crt": {keys.secret_unit("default", "crt")}
    }


async def _eq(coro: Any, expected: Any) -> bool:
    return bool(await coro == expected)


async def test_classless_ingress_follows_the_default_class(env: Env, start_watcher: StartWatcher) -> None:
    w = await start_watcher("w1")
    await wait_until(w.watcher.publishing, what="leadership")
    await env.kube.create(INGRESS, "default", ingress("plain", ["c.example.com"], cls=None))
    await settle(env, w.watcher)
    assert env.log.new() == []
    await env.kube.create(INGRESS_CLASS, None, default_class())
    await settle(env, w.watcher)
    assert summary(env.log.new()) == {(host("c.example.com"), "ingress/default/plain", True)}
    await wait_for(lambda: _eq(lb_of(env, "plain"), [{"ip": STATUS_ADDRESS}]), what="status written")
    await env.kube.delete(INGRESS_CLASS, None, "sg-default")
    await settle(env, w.watcher)
    assert summary(env.log.new()) == {(host("c.example.com"), "ingress/default/plain", False)}


async def test_malformed_ingress_is_reported_not_fatal(env: Env, start_watcher: StartWatcher) -> None:
    w = await start_watcher("w1")
    await wait_until(w.watcher.publishing, what="leadership")
    bad = ingress("bad", ["ok.example.com"])
    bad["spec"]["rules"].append({"host": "Not A Host!", "http": {"paths": []}})
    bad["spec"]["rules"].append({"http": {"paths": []}})
    await env.kube.create(INGRESS, "default", bad)
    await env.kube.create(INGRESS, "default", ingress("good", ["good.example.com"]))
    await settle(env, w.watcher)
    assert summary(env.log.new()) == {
        (host("ok.example.com"), "ingress/default/bad", True),
        (host("good.example.com"), "ingress/default/good", True),
    }

    async def event_written() -> bool:
        events, _ = await env.kube.list_raw(EVENT)
        return any(e["involvedObject"]["name"] == "bad" and "invalid host" in e["message"] for e in events)

    await wait_for(event_written, what="a Warning Event on the bad Ingress")
