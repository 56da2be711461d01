"""Activation of a new domain in real Envoy against the number N of domains it already has.

Two xDS layouts, each served by shardgate's own ResourceCache and Delta ADS server to a fresh Envoy:

- `scoped` — shardgate's layout: the static listener from `shardgate.xds.listeners` (scoped routes keyed
  by host) and one `ScopedRouteConfiguration` per host, compiled by `shardgate.xds.compile_unit` from the
  same contributions the compiler merges. A new host is one small resource.
- `whole-table` — the baseline of Istio-style gateways: a listener whose connection manager takes one
  RouteConfiguration over RDS holding every host as a virtual host. A new host resends the whole table.
  Each virtual host is serialized once and the table is assembled by concatenating those bytes (a
  repeated field is its elements' encodings back to back), so the time measured is Envoy's, not Python
  rebuilding protos.

The state is bulk-loaded straight into the cache (no watcher, NATS, compiler or Redis: those are not in
this measurement) before Envoy connects; the load time is Envoy's start until the last host answers.
Then each sample adds one new host (or edits an existing one) and times from building its resources to
the first 200 from the echo backend through Envoy on a fresh connection. Each change carries a trace, so
the pusher's own `envoy.ack` span splits the time into: until the push is sent (build, apply, the
stream's hold-off), push to Envoy's ACK (Envoy applying it), and ACK to the first 200 (negative when the
route served before the ACK reached the pusher). Envoy runs with
`--concurrency 1`, as the tests and the local stack run it.

    .venv/bin/python -m bench.layout --layout scoped -n 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import any_pb2
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bench import common
from shardgate.keys import SourceKind, host_unit, service_unit, source_key
from shardgate.local.echo import EchoServer
from shardgate.local.servers import Envoy, free_port
from shardgate.merge import merge_host
from shardgate.model import (
    Contribution,
    EndpointPort,
    EndpointSliceSpec,
    HostRoutes,
    ServicePort,
    ServiceSpec,
)
from shardgate.pusher.cache import ResourceCache
from shardgate.pusher.server import bound_port, serve_ads
from shardgate.records import Fragment, Resource, make_resource
from shardgate.xds import compile_unit, types
from shardgate.xds.bootstrap import bootstrap
from shardgate.xds.listeners import http_connection_manager, static_resources
from shardgate.xds.routes import route_match
from shardgate.xds.tls import HTTPS_LISTENER, https_listener_resource

LAYOUTS = ("scoped", "whole-table")
TABLE_NAME = "all-hosts"
# The owner of the one big resource: a service-kind key, which the pusher cache indexes no further.
TABLE_UNIT = "s:bench/whole-table"
PAUSE = 0.02  # between samples, so one change's push never overlaps the next


_ACKS = InMemorySpanExporter()


def trace_acks() -> None:
    """Receive the pusher's own `envoy.ack` spans: they time each push from sending it to Envoy's ACK."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_ACKS))
        trace.set_tracer_provider(provider)


def new_traceparent() -> tuple[str, int]:
    trace_id = random.getrandbits(128) or 1
    return f"00-{trace_id:032x}-{random.getrandbits(64) or 1:016x}-01", trace_id


def ack_span(trace_id: int) -> tuple[int, int] | None:
    """(sent, acked) in epoch ns of the push that carried the change traced as `trace_id`."""
    for span in _ACKS.get_finished_spans():
        if span.context is not None and span.context.trace_id == trace_id and span.name == "envoy.ack":
            assert span.start_time is not None and span.end_time is not None
            return span.start_time, span.end_time
    return None


def service_fragment(name: str, echo_port: int) -> Fragment:
    """A Service with one port and one ready endpoint: the echo backend on loopback."""
    contributions: dict[str, Contribution] = {
        source_key(SourceKind.SERVICE, common.NAMESPACE, name): ServiceSpec((ServicePort("http", 80, 8080),)),
        source_key(SourceKind.ENDPOINTSLICE, common.NAMESPACE, name + "-1"): EndpointSliceSpec(
            (EndpointPort("http", echo_port),), ("127.0.0.1",)
        ),
    }
    return compile_unit(service_unit(common.NAMESPACE, name), contributions)


def host_contribution(routes: HostRoutes) -> dict[str, Contribution]:
    return {source_key(SourceKind.INGRESS, routes.namespace, routes.ingress): routes}


def _any(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def table_listener(port: int) -> Resource:
    """The whole-table baseline's listener: one connection manager, one RouteConfiguration over RDS."""
    manager = hcm.HttpConnectionManager(
        stat_prefix="http",
        rds=hcm.Rds(config_source=types.ads_source(), route_config_name=TABLE_NAME),
        http_filters=[
            hcm.HttpFilter(name="envoy.filters.http.router", typed_config=_any(router_pb2.Router()))
        ],
    )
    listener = listener_pb2.Listener(
        name="http",
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
        ),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager", typed_config=_any(manager)
                    )
                ]
            )
        ],
    )
    return make_resource(types.LISTENER, listener.name, listener.SerializeToString(deterministic=True))


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field: tag, length, bytes."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


class WholeTable:
    """Every host as one virtual host of one RouteConfiguration; each vhost serialized once."""

    def __init__(self) -> None:
        self.vhosts: dict[str, bytes] = {}

    def put(self, routes: HostRoutes, host: str) -> None:
        config = merge_host(host_unit(host), host_contribution(routes))
        assert config is not None
        vhost = route_components_pb2.VirtualHost(
            name=host,
            domains=[host],
            routes=[
                route_components_pb2.Route(
                    match=route_match(r), route=route_components_pb2.RouteAction(cluster=r.cluster)
                )
                for r in config.routes
            ],
        )
        self.vhosts[host] = _field(
            2, vhost.SerializeToString(deterministic=True)
        )  # RouteConfiguration.virtual_hosts

    def fragment(self) -> Fragment:
        body = _field(1, TABLE_NAME.encode()) + b"".join(self.vhosts.values())  # field 1: name
        return Fragment(TABLE_UNIT, (make_resource(types.ROUTE, TABLE_NAME, body),))


async def measure(
    layout: str, n: int, adds: int, edits: int, workdir: Path, https: bool = False
) -> dict[str, Any]:
    """Load N hosts into a fresh Envoy with `layout`, then time `adds` new hosts and `edits` edits.

    `https` adds the gateway's HTTPS listener (the same scoped routes behind TLS), as the pipeline runs it.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: one of {LAYOUTS}")
    echo_main, echo_edit = EchoServer(common.ECHO_MAIN), EchoServer(common.ECHO_EDIT)
    await echo_main.start()
    await echo_edit.start()
    http_port = free_port()
    table = WholeTable()
    statics = (
        [table_listener(http_port)]
        if layout == "whole-table"
        else list(static_resources("127.0.0.1", http_port))
    )
    if https and layout == "scoped":
        statics.append(
            https_listener_resource(
                http_connection_manager(HTTPS_LISTENER, https=True), "127.0.0.1", free_port()
            )
        )
    cache = ResourceCache(statics)

    bulk: dict[str, Fragment | None] = {}
    for s in range(common.SERVICES):
        bulk[service_unit(common.NAMESPACE, common.service_name(s))] = service_fragment(
            common.service_name(s), echo_main.port
        )
    bulk[service_unit(common.NAMESPACE, common.EDIT_SERVICE)] = service_fragment(
        common.EDIT_SERVICE, echo_edit.port
    )
    t_build = time.perf_counter()
    for i in range(n):
        host = common.host_name(i)
        routes = common.host_routes(i, host)
        if layout == "scoped":
            bulk[host_unit(host)] = compile_unit(host_unit(host), host_contribution(routes))
        else:
            table.put(routes, host)
    if layout == "whole-table":
        bulk[TABLE_UNIT] = table.fragment()
    cache.apply(bulk)
    build_s = time.perf_counter() - t_build

    server = await serve_ads(cache, "127.0.0.1", 0)
    admin_port = free_port()
    envoy = Envoy(
        workdir / f"envoy-{layout}-{n}",
        bootstrap(
            node_id=f"bench-{layout}",
            ads_host="127.0.0.1",
            ads_port=bound_port(server),
            admin_port=admin_port,
        ),
        admin_port,
    )
    result: dict[str, Any] = {"approach": layout, "n": n, "https": https}
    try:
        t_start = time.perf_counter()
        await asyncio.to_thread(envoy.start)
        assert envoy.proc is not None
        first, last = common.host_name(0), common.host_name(n - 1)
        await common.wait_answered(http_port, last, common.PROBE_PATH, common.ECHO_MAIN, timeout=600)
        await common.wait_answered(http_port, first, common.PROBE_PATH, common.ECHO_MAIN, timeout=60)
        result["load_s"] = round(time.perf_counter() - t_start, 3)
        result["build_s"] = round(build_s, 3)
        result["rss_loaded_mb"] = round(common.rss_mb(envoy.proc.pid), 1)

        Change = tuple[dict[str, Fragment | None], str, str, str]  # cache changes, host, path, backend

        def add(k: int) -> Change:
            host = common.new_host_name(k)
            routes = common.host_routes(n + k, host)
            if layout == "scoped":
                return {host_unit(host): compile_unit(host_unit(host), host_contribution(routes))}, host, \
                    common.PROBE_PATH, common.ECHO_MAIN  # fmt: skip
            table.put(routes, host)
            return {TABLE_UNIT: table.fragment()}, host, common.PROBE_PATH, common.ECHO_MAIN

        def edit(k: int) -> Change:
            i = (k * 7919) % n  # spread the edits over the table
            host = common.host_name(i)
            routes = common.host_routes(i, host, edited=True)
            if layout == "scoped":
                return {host_unit(host): compile_unit(host_unit(host), host_contribution(routes))}, host, \
                    common.EDIT_PROBE_PATH, common.ECHO_EDIT  # fmt: skip
            table.put(routes, host)
            return {TABLE_UNIT: table.fragment()}, host, common.EDIT_PROBE_PATH, common.ECHO_EDIT

        stages: dict[str, dict[str, list[float]]] = {}

        async def timed(kind: str, change: Callable[[int], Change], k: int) -> float:
            await asyncio.sleep(PAUSE)
            traceparent, trace_id = new_traceparent()
            t0, t0_ns = time.perf_counter(), time.time_ns()
            changes, host, path, backend = change(k)
            cache.apply(changes, {unit: traceparent for unit in changes})
            done = await common.wait_answered(http_port, host, path, backend)
            served_ns = t0_ns + (done - t0) * 1e9
            for _ in range(200):  # Envoy may answer with the new route before its ACK reaches the pusher
                acked = ack_span(trace_id)
                if acked is not None:
                    sent, ack = acked
                    by_stage = stages.setdefault(kind, {})
                    by_stage.setdefault("to_push", []).append((sent - t0_ns) / 1e6)
                    by_stage.setdefault("push_to_ack", []).append((ack - sent) / 1e6)
                    by_stage.setdefault("ack_to_served", []).append((served_ns - ack) / 1e6)
                    break
                await asyncio.sleep(0.005)
            return (done - t0) * 1000

        trace_acks()
        # The first change after a bulk load is a known one-off outlier in Envoy (notes/facts.md): it is
        # reported on its own, not mixed into the distribution of steady-state changes.
        result["first_add_ms"] = round(await timed("first", add, 0), 3)
        add_ms = [await timed("add", add, k) for k in range(1, adds + 1)]
        edit_ms = [await timed("edit", edit, k) for k in range(edits)]
        result["add_ms"] = [round(v, 3) for v in add_ms]
        result["edit_ms"] = [round(v, 3) for v in edit_ms]
        result["stages"] = {
            kind: {stage: common.summary(values) for stage, values in by_stage.items()}
            for kind, by_stage in stages.items()
            if kind != "first"
        }
        result["add"] = common.summary(add_ms)
        result["edit"] = common.summary(edit_ms)
        result["rss_end_mb"] = round(common.rss_mb(envoy.proc.pid), 1)
    finally:
        await asyncio.to_thread(envoy.stop, True)
        await server.stop(None)
        await echo_main.stop()
        await echo_edit.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layout", choices=LAYOUTS, default="scoped")
    parser.add_argument("-n", type=int, default=1000, help="existing hosts")
    parser.add_argument("--adds", type=int, default=20)
    parser.add_argument("--edits", type=int, default=10)
    parser.add_argument("--https", action="store_true", help="add the HTTPS listener, as the pipeline has")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as tmp:
        result = asyncio.run(measure(args.layout, args.n, args.adds, args.edits, Path(tmp), args.https))
    print(
        json.dumps(
            {k: v for k, v in result.items() if not k.endswith("_ms") or k == "first_add_ms"}, indent=1
        )
    )


if __name__ == "__main__":
    main()
