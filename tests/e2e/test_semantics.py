"""Ingress semantics end to end (issue 4): conformance scenarios and annotations, through real Envoy.

Every Ingress goes in with the stock `kubectl` against the API stand-in; every assertion is an HTTP
answer from the gateway, mostly the echo backend's own report of the host, path and headers it received.
Each test has a namespace and hosts of its own. A negative answer (404, "not served") is asserted only
after something applied later in the same test has been seen served, so that "not yet propagated" can
never pass for "correctly refused".
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import aiohttp
import grpc
import pytest
from aiohttp import web

from .conftest import (
    E2E,
    CertAuthority,
    envoy_config,
    eventually,
    host_rule,
    ingress,
    path_rule,
    request,
    service_yaml,
    tenant,
    wait_event,
    wait_served,
)

pytestmark = pytest.mark.e2e

A, B = "echo-a", "echo-b"


# -- path rules -----------------------------------------------------------------------------------------


async def test_exact_path_is_exact_and_case_sensitive(e2e: E2E, http: aiohttp.ClientSession) -> None:
    ns = await tenant(e2e, http, "sem-exact")
    host = "exact.sem.test"
    e2e.apply(
        ingress("exact", ns, host_rule(host, path_rule("/foo", "Exact", A), path_rule("/", "Prefix", B)))
    )
    reply = await wait_served(e2e, http, host, "/foo", A)
    assert reply.json and reply.json["path"] == "/foo" and reply.json["host"] == host
    assert (await request(e2e, http, host, "/foo?q=1")).backend == A  # the query is not part of the path
    # `/foo` (Exact) does not match `/foo/`, `/FOO` or `/foo/bar`: those fall to the Prefix `/` rule.
    for path in ("/foo/", "/FOO", "/foo/bar", "/fo"):
        reply = await request(e2e, http, host, path)
        assert reply.status == 200 and reply.backend == B, (path, reply)


async def test_prefix_matches_whole_path_elements(e2e: E2E, http: aiohttp.ClientSession) -> None:
    ns = await tenant(e2e, http, "sem-prefix")
    host = "prefix.sem.test"
    e2e.apply(
        ingress(
            "prefix",
            ns,
            host_rule(
                host,
                path_rule("/aaa/bbb", "Prefix", A),
                path_rule("/ccc/", "Prefix", B),
                path_rule("/impl", "ImplementationSpecific", B),  # documented: Prefix
            ),
        )
    )
    await wait_served(e2e, http, host, "/aaa/bbb", A)
    await wait_served(e2e, http, host, "/ccc", B)
    served = {
        "/aaa/bbb": A,
        "/aaa/bbb/": A,  # a trailing slash in the request is ignored
        "/aaa/bbb/ccc": A,
        "/ccc": B,  # a trailing slash in the rule is ignored
        "/ccc/": B,
        "/ccc/ddd": B,
        "/impl": B,
        "/impl/x": B,
    }
    for path, backend in served.items():
        reply = await request(e2e, http, host, path)
        assert reply.status == 200 and reply.backend == backend and reply.json, (path, reply)
        assert reply.json["path"] == path, (path, reply)
    # Element-wise, not string-wise: `/aaa/bbb` does not match `/aaa/bbbxyz`; `/ccc/` not `/cccd`.
    for path in ("/aaa/bbbxyz", "/aaa", "/aaa/bb", "/cccd", "/implx", "/"):
        reply = await request(e2e, http, host, path)
        assert reply.status == 404, (path, reply)


async def test_longest_match_wins_and_exact_beats_prefix(e2e: E2E, http: aiohttp.ClientSession) -> None:
    ns = await tenant(e2e, http, "sem-longest")
    host = "longest.sem.test"
    # Declared shortest first, so "first declared wins" would give the wrong answers below.
    e2e.apply(
        ingress(
            "longest",
            ns,
            host_rule(
                host,
                path_rule("/", "Prefix", A),
                path_rule("/foo", "Prefix", A),
                path_rule("/foo/bar", "Prefix", B),
                path_rule("/exact", "Prefix", A),
                path_rule("/exact", "Exact", B),
            ),
        )
    )
    await wait_served(e2e, http, host, "/foo/bar/baz", B)
    expected = {
        "/foo/bar": B,
        "/foo/bar/baz": B,
        "/foo/barx": A,
        "/foo/baz": A,
        "/foo": A,
        "/exact": B,  # Exact preferred over a Prefix of the same path
        "/exact/": A,
        "/exact/more": A,
        "/other": A,
    }
    for path, backend in expected.items():
        reply = await request(e2e, http, host, path)
        assert reply.status == 200 and reply.backend == backend, (path, reply)


async def test_paths_from_several_ingresses_merge_and_the_oldest_wins_a_conflict(
    e2e: E2E, http: aiohttp.ClientSession
) -> None:
    ns = await tenant(e2e, http, "sem-merge")
    host = "merge.sem.test"
    e2e.apply(
        ingress("first", ns, host_rule(host, path_rule("/one", "Prefix", A), path_rule("/same", "Exact", A)))
    )
    await wait_served(e2e, http, host, "/one", A)
    # A later Ingress adds a path to the same host, and claims an identical (path, type) as well.
    e2e.apply(
        ingress("second", ns, host_rule(host, path_rule("/two", "Prefix", B), path_rule("/same", "Exact", B)))
    )
    await wait_served(e2e, http, host, "/two", B)
    assert (await request(e2e, http, host, "/one")).backend == A
    for _ in range(5):
        assert (await request(e2e, http, host, "/same")).backend == A  # oldest creationTimestamp wins
    await wait_event(e2e, ns, "Ingress", "second", "/same", "first")  # the loser is told who won
    # Deleting the winner hands the conflicting path to the other Ingress.
    e2e.kubectl("delete", "ingress", "first", "-n", ns)
    await wait_served(e2e, http, host, "/same", B)
    assert (await request(e2e, http, host, "/one")).status == 404


# -- host rules -----------------------------------------------------------------------------------------


async def test_exact_host_ignores_case_and_port(e2e: E2E, http: aiohttp.ClientSession) -> None:
    ns = await tenant(e2e, http, "sem-host")
    host = "exact-host.sem.test"
    e2e.apply(ingress("host", ns, host_rule(host, path_rule("/", "Prefix", A))))
    reply = await wait_served(e2e, http, host, "/x", A)
    assert reply.json and reply.json["host"] == host
    for spelled in ("EXACT-HOST.sem.test", "Exact-Host.Sem.Test", f"{host}:8443", f"{host.upper()}:80"):
        reply = await request(e2e, http, spelled, "/x")
        assert reply.status == 200 and reply.backend == A, (spelled, reply)
    for other in ("sem.test", f"x.{host}", "exact-host.sem.test.evil"):
        assert (await request(e2e, http, other, "/x")).status == 404, other


async def test_wildcard_host_matches_exactly_one_label_and_exact_wins(
    e2e: E2E, http: aiohttp.ClientSession
) -> None:
    ns = await tenant(e2e, http, "sem-wild")
    e2e.apply(
        ingress(
            "wild",
            ns,
            host_rule("*.wild.sem.test", path_rule("/", "Prefix", A)),
            host_rule("exact.wild.sem.test", path_rule("/", "Prefix", B)),
        )
    )
    reply = await wait_served(e2e, http, "bar.wild.sem.test", "/p", A)
    assert reply.json and reply.json["host"] == "bar.wild.sem.test"
    await wait_served(e2e, http, "exact.wild.sem.test", "/p", B)  # exact beats wildcard
    for host in ("other.wild.sem.test", "BAR.Wild.Sem.Test", "bar.wild.sem.test:8080"):
        reply = await request(e2e, http, host, "/p")
        assert reply.status == 200 and reply.backend == A, (host, reply)
    # One label only: neither the bare domain nor two labels deeper.
    for host in ("wild.sem.test", "baz.bar.wild.sem.test", "x.exact.wild.sem.test"):
        reply = await request(e2e, http, host, "/p")
        assert reply.status == 404, (host, reply)

    # An exact host added later, by another Ingress, still wins over the wildcard for its name only.
    e2e.apply(ingress("late", ns, host_rule("late.wild.sem.test", path_rule("/", "Prefix", B))))
    await wait_served(e2e, http, "late.wild.sem.test", "/p", B)
    assert (await request(e2e, http, "early.wild.sem.test", "/p")).backend == A
    # Deleting the exact host gives its name back to the wildcard.
    e2e.kubectl("delete", "ingress", "late", "-n", ns)
    await wait_served(e2e, http, "late.wild.sem.test", "/p", A)


async def test_wildcard_host_paths_follow_the_same_rules(e2e: E2E, http: aiohttp.ClientSession) -> None:
    ns = await tenant(e2e, http, "sem-wildpath")
    e2e.apply(
        ingress(
            "wildpath",
            ns,
            host_rule("*.wp.sem.test", path_rule("/api", "Prefix", A), path_rule("/exact", "Exact", B)),
        )
    )
    await wait_served(e2e, http, "x.wp.sem.test", "/api/v1", A)
    assert (await request(e2e, http, "y.wp.sem.test", "/exact")).backend == B
    assert (await request(e2e, http, "y.wp.sem.test", "/exact/")).status == 404
    assert (await request(e2e, http, "y.wp.sem.test", "/apix")).status == 404


# -- backends -------------------------------------------------------------------------------------------


async def test_backend_port_by_name_and_a_service_without_endpoints(
    e2e: E2E, http: aiohttp.ClientSession
) -> None:
    ns = await tenant(e2e, http, "sem-backend")
    e2e.apply(service_yaml(ns, "no-ready", e2e.echoes[A], ready=False))
    host = "backend.sem.test"
    e2e.apply(
        ingress(
            "backend",
            ns,
            host_rule(
                host,
                path_rule("/named", "Prefix", B, port="http"),
                path_rule("/down", "Prefix", "no-ready"),
                path_rule("/missing", "Prefix", "no-such-service"),
            ),
        )
    )
    await wait_served(e2e, http, host, "/named", B)

    async def answers_503(path: str) -> bool:
        return (await request(e2e, http, host, path)).status == 503

    # Only ready endpoints get traffic: none ready is an immediate 503, not a hang (the client's 10 s).
    await eventually(
        lambda: answers_503("/down"), timeout=10, what="503 for a Service without ready endpoints"
    )
    await eventually(
        lambda: answers_503("/missing"), timeout=10, what="503 for a Service that does not exist"
    )
    # The endpoint turning ready brings the path up.
    e2e.apply(service_yaml(ns, "no-ready", e2e.echoes[A], ready=True))
    await wait_served(e2e, http, host, "/down", A)


# -- ingress class --------------------------------------------------------------------------------------


async def test_ingress_of_another_class_is_never_served(e2e: E2E, http: aiohttp.ClientSession) -> None:
    ns = await tenant(e2e, http, "sem-class")
    legacy = json.loads(
        ingress("legacy", ns, host_rule("legacy.cls.sem.test", path_rule("/")), ingress_class=None)
    )
    legacy["metadata"]["annotations"] = {"kubernetes.io/ingress.class": "shardgate"}
    legacy_other = json.loads(
        ingress(
            "legacy-other", ns, host_rule("legacy-other.cls.sem.test", path_rule("/")), ingress_class=None
        )
    )
    legacy_other["metadata"]["annotations"] = {"kubernetes.io/ingress.class": "nginx"}
    e2e.apply(ingress("other", ns, host_rule("other.cls.sem.test", path_rule("/")), ingress_class="nginx"))
    e2e.apply(json.dumps(legacy_other))
    e2e.apply(ingress("ours", ns, host_rule("ours.cls.sem.test", path_rule("/"))))
    e2e.apply(json.dumps(legacy))
    await wait_served(e2e, http, "ours.cls.sem.test", "/", A)
    await wait_served(e2e, http, "legacy.cls.sem.test", "/", A)  # the legacy annotation counts too
    for host in ("other.cls.sem.test", "legacy-other.cls.sem.test"):
        assert (await request(e2e, http, host, "/")).status == 404, host
    # Ignored entirely: nothing of it reached the gateway (while our Ingress of the same namespace did).
    dump = await envoy_config(e2e, http)
    assert "ours.cls.sem.test" in dump
    assert "other.cls.sem.test" not in dump and "legacy-other.cls.sem.test" not in dump

    def load_balancer(name: str) -> object:
        obj = json.loads(e2e.kubectl("get", "ingress", name, "-n", ns, "-o", "json"))
        return (obj.get("status") or {}).get("loadBalancer", {}).get("ingress")

    async def ours_has_status() -> bool:
        return bool(load_balancer("ours"))

    await eventually(ours_has_status, timeout=10, what="status written on our Ingress")
    assert not load_balancer("other") and not load_balancer("legacy-other")  # not ours: status untouched

    # The same object turned into our class is served: the 404s above were the class, not the Ingress.
    e2e.apply(ingress("other", ns, host_rule("other.cls.sem.test", path_rule("/"))))
    await wait_served(e2e, http, "other.cls.sem.test", "/", A)
    # ...and moved to another class again, it is withdrawn.
    e2e.apply(ingress("other", ns, host_rule("other.cls.sem.test", path_rule("/")), ingress_class="nginx"))

    async def withdrawn() -> bool:
        return (await request(e2e, http, "other.cls.sem.test", "/")).status == 404

    await eventually(withdrawn, timeout=10, what="an Ingress moved to another class stops being served")

    async def status_cleared() -> bool:
        return not load_balancer("other")

    await eventually(status_cleared, timeout=10, what="status cleared when the Ingress stopped being ours")


async def test_default_ingress_class_admits_classless_ingresses(
    e2e: E2E, http: aiohttp.ClientSession
) -> None:
    ns = await tenant(e2e, http, "sem-defclass")
    e2e.apply(
        ingress(
            "classless", ns, host_rule("classless.sem.test", path_rule("/", "Prefix", B)), ingress_class=None
        )
    )
    e2e.apply(ingress("sentinel", ns, host_rule("sentinel.defclass.sem.test", path_rule("/"))))
    await wait_served(e2e, http, "sentinel.defclass.sem.test", "/", A)
    assert (await request(e2e, http, "classless.sem.test", "/")).status == 404  # no default class yet

    default_class = """
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: shardgate-default
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec: {controller: shardgate.io/ingress-controller}
"""
    e2e.apply(default_class)
    try:
        await wait_served(e2e, http, "classless.sem.test", "/", B)
    finally:
        e2e.kubectl("delete", "ingressclass", "shardgate-default")

    async def withdrawn() -> bool:
        return (await request(e2e, http, "classless.sem.test", "/")).status == 404

    await eventually(withdrawn, timeout=10, what="class-less Ingress withdrawn when the default class goes")


# -- default backend (last among the routing tests: while it exists it answers every unknown host) ---------


async def test_ingress_with_only_a_default_backend_catches_unmatched_requests(
    e2e: E2E, http: aiohttp.ClientSession
) -> None:
    ns = await tenant(e2e, http, "sem-default")
    e2e.apply(ingress("routed", ns, host_rule("routed.default.sem.test", path_rule("/api", "Prefix", A))))
    await wait_served(e2e, http, "routed.default.sem.test", "/api", A)
    e2e.apply(ingress("default-backend", ns, default_backend=B))
    try:
        reply = await wait_served(e2e, http, "nobody.default.sem.test", "/", B)
        assert reply.json and reply.json["path"] == "/" and reply.json["host"] == "nobody.default.sem.test"
        for host, path in (("nobody.default.sem.test", "/foo"), ("127.0.0.1", "/"), ("x.y.z.test", "/a/b")):
            reply = await request(e2e, http, host, path)
            assert reply.status == 200 and reply.backend == B and reply.json, (host, path, reply)
            assert reply.json["path"] == path
        # A host's own rules still win for that host.
        assert (await request(e2e, http, "routed.default.sem.test", "/api/x")).backend == A
        # A second, newer default backend loses to the older one (documented: oldest wins) and is told.
        e2e.apply(ingress("default-backend-2", ns, default_backend=A))
        await wait_event(e2e, ns, "Ingress", "default-backend-2")
        for _ in range(5):
            assert (await request(e2e, http, "nobody.default.sem.test", "/")).backend == B

        async def status_written() -> bool:
            obj = json.loads(e2e.kubectl("get", "ingress", "default-backend", "-n", ns, "-o", "json"))
            return bool((obj.get("status") or {}).get("loadBalancer", {}).get("ingress"))

        await eventually(status_written, timeout=10, what="status written on a defaultBackend-only Ingress")
    finally:
        e2e.kubectl(
            "delete", "ingress", "default-backend", "default-backend-2", "-n", ns, "--ignore-not-found"
        )

    async def gone() -> bool:
        return (await request(e2e, http, "nobody.default.sem.test", "/")).status == 404

    await eventually(gone, timeout=10, what="unknown hosts 404 again after the default backend is deleted")


# -- annotations (nginx-compatible names) ---------------------------------------------------------------

NGINX = "nginx.ingress.kubernetes.io/"


async def test_rewrite_target_with_capture_groups(e2e: E2E, http: aiohttp.ClientSession) -> None:
    ns = await tenant(e2e, http, "ann-rewrite")
    host = "rewrite.ann.test"
    e2e.apply(
        ingress(
            "rewrite",
            ns,
            host_rule(host, path_rule("/something(/|$)(.*)", "ImplementationSpecific", A)),
            annotations={NGINX + "rewrite-target": "/$2", NGINX + "use-regex": "true"},
        )
    )
    reply = await wait_served(e2e, http, host, "/something/new", A)
    assert reply.json and reply.json["path"] == "/new"
    for asked, forwarded in (("/something", "/"), ("/something/", "/"), ("/something/a/b?x=1", "/a/b?x=1")):
        reply = await request(e2e, http, host, asked)
        assert reply.status == 200 and reply.json and reply.json["path"] == forwarded, (asked, reply)
    assert (await request(e2e, http, host, "/other")).status == 404


async def test_use_regex_paths(e2e: E2E, http: aiohttp.ClientSession) -> None:
    ns = await tenant(e2e, http, "ann-regex")
    host = "regex.ann.test"
    e2e.apply(
        ingress(
            "regex",
            ns,
            host_rule(
                host, path_rule("/v[0-9]+/items", "ImplementationSpecific", A), path_rule("/", "Prefix", B)
            ),
            annotations={NGINX + "use-regex": "true"},
        )
    )
    reply = await wait_served(e2e, http, host, "/v2/items", A)
    assert reply.json and reply.json["path"] == "/v2/items"  # matched by regex, forwarded unchanged
    assert (await request(e2e, http, host, "/v10/items")).backend == A
    # nginx regex locations (`~*`) are anchored at the start only and case-insensitive.
    assert (await request(e2e, http, host, "/v10/items/7")).backend == A
    assert (await request(e2e, http, host, "/V3/Items")).backend == A
    for path in ("/vx/items", "/v/items", "/api/v2/items"):
        assert (await request(e2e, http, host, path)).backend == B, path


async def test_canary_by_weight(e2e: E2E, http: aiohttp.ClientSession) -> None:
    ns = await tenant(e2e, http, "ann-canary-w")
    all_in, half = "all.canary.ann.test", "half.canary.ann.test"
    e2e.apply(ingress("primary", ns, host_rule(all_in, path_rule("/")), host_rule(half, path_rule("/"))))
    e2e.apply(
        ingress(
            "canary-all",
            ns,
            host_rule(all_in, path_rule("/", "Prefix", B)),
            annotations={NGINX + "canary": "true", NGINX + "canary-weight": "100"},
        )
    )
    e2e.apply(
        ingress(
            "canary-half",
            ns,
            host_rule(half, path_rule("/", "Prefix", B)),
            annotations={NGINX + "canary": "true", NGINX + "canary-weight": "50"},
        )
    )
    await wait_served(e2e, http, all_in, "/", B)
    for _ in range(20):
        assert (await request(e2e, http, all_in, "/")).backend == B  # weight 100: all of it

    seen: set[str | None] = set()

    async def both_backends() -> bool:
        seen.add((await request(e2e, http, half, "/")).backend)
        return {A, B} <= seen

    # At weight 50 both answer; 2^-k odds of missing one after k requests, bounded by the timeout.
    await eventually(both_backends, timeout=30, what=f"weight 50 reaches both backends (seen {seen})")


async def test_canary_by_header_and_header_value(e2e: E2E, http: aiohttp.ClientSession) -> None:
    ns = await tenant(e2e, http, "ann-canary-h")
    by_header, by_value = "header.canary.ann.test", "value.canary.ann.test"
    e2e.apply(
        ingress("primary", ns, host_rule(by_header, path_rule("/")), host_rule(by_value, path_rule("/")))
    )
    e2e.apply(
        ingress(
            "canary-header",
            ns,
            host_rule(by_header, path_rule("/", "Prefix", B)),
            annotations={NGINX + "canary": "true", NGINX + "canary-by-header": "X-Canary"},
        )
    )
    e2e.apply(
        ingress(
            "canary-value",
            ns,
            host_rule(by_value, path_rule("/", "Prefix", B)),
            annotations={
                NGINX + "canary": "true",
                NGINX + "canary-by-header": "X-Release",
                NGINX + "canary-by-header-value": "blue",
            },
        )
    )
    await wait_served(e2e, http, by_header, "/", B, headers={"X-Canary": "always"})
    await wait_served(e2e, http, by_value, "/", B, headers={"X-Release": "blue"})
    cases = [
        (by_header, {}, A),
        (by_header, {"X-Canary": "never"}, A),
        (by_header, {"X-Canary": "always"}, B),
        (by_value, {}, A),
        (by_value, {"X-Release": "green"}, A),
        (by_value, {"X-Release": "blue"}, B),
    ]
    for host, headers, backend in cases:
        for _ in range(3):
            reply = await request(e2e, http, host, "/", headers=headers)
            assert reply.status == 200 and reply.backend == backend, (host, headers, reply)


async def test_backend_protocol_https(e2e: E2E, http: aiohttp.ClientSession) -> None:
    """An HTTPS-only backend answers through the gateway only with `backend-protocol: HTTPS`."""
    ns = await tenant(e2e, http, "ann-proto")
    ca = CertAuthority()
    app = web.Application()

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"name": "tls-backend", "path": request.path_qs, "scheme": request.scheme})

    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ca.server_context("tls-backend.ann-proto.svc"))
    await site.start()
    try:
        port = int(runner.addresses[0][1])
        e2e.apply(service_yaml(ns, "tls-backend", port))
        e2e.apply(
            ingress(
                "https-upstream",
                ns,
                host_rule("https.proto.ann.test", path_rule("/", "Prefix", "tls-backend")),
                annotations={NGINX + "backend-protocol": "HTTPS"},
            )
        )
        e2e.apply(
            ingress(
                "plain-upstream",
                ns,
                host_rule("plain.proto.ann.test", path_rule("/", "Prefix", "tls-backend")),
            )
        )
        reply = await wait_served(e2e, http, "https.proto.ann.test", "/p", "tls-backend")
        assert reply.json and reply.json["scheme"] == "https"

        # Without the annotation the gateway speaks plain HTTP to the TLS port and gets no answer it can use.
        async def plain_fails() -> bool:
            reply = await request(e2e, http, "plain.proto.ann.test", "/p")
            return reply.status in (502, 503)

        await eventually(plain_fails, timeout=10, what="plain HTTP to a TLS backend fails")
    finally:
        await runner.cleanup()


async def test_backend_protocol_grpc(e2e: E2E, http: aiohttp.ClientSession) -> None:
    """A gRPC backend (HTTP/2 cleartext) is reachable through the gateway with `backend-protocol: GRPC`."""
    ns = await tenant(e2e, http, "ann-grpc")

    def ping(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"pong:" + request

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "sg.Echo", {"Ping": grpc.unary_unary_rpc_method_handler(ping)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        e2e.apply(service_yaml(ns, "grpc-backend", port))
        e2e.apply(
            ingress(
                "grpc",
                ns,
                host_rule("grpc.proto.ann.test", path_rule("/", "Prefix", "grpc-backend")),
                annotations={NGINX + "backend-protocol": "GRPC"},
            )
        )
        e2e.apply(
            ingress(
                "grpc-plain", ns, host_rule("plain.grpc.ann.test", path_rule("/", "Prefix", "grpc-backend"))
            )
        )

        async def call(authority: str) -> bytes | str:
            options = [("grpc.default_authority", authority)]
            async with grpc.aio.insecure_channel(
                e2e.gateway.removeprefix("http://"), options=options
            ) as channel:
                try:
                    answer: bytes = await channel.unary_unary("/sg.Echo/Ping")(b"hi", timeout=3)
                    return answer
                except grpc.aio.AioRpcError as exc:
                    return str(exc.code())

        async def answered() -> bool:
            return await call("grpc.proto.ann.test") == b"pong:hi"

        await eventually(answered, timeout=10, what="a gRPC call through the gateway")

        # Without the annotation the gateway speaks HTTP/1.1 to the backend: once that route is live (not
        # 404), the call fails.
        async def routed() -> bool:
            return (await request(e2e, http, "plain.grpc.ann.test", "/sg.Echo/Ping")).status != 404

        await eventually(routed, timeout=10, what="the route without backend-protocol is live")
        assert await call("plain.grpc.ann.test") != b"pong:hi"
    finally:
        await server.stop(None)


async def test_proxy_read_timeout(e2e: E2E, http: aiohttp.ClientSession) -> None:
    """A backend slower than `proxy-read-timeout` gets a 504; the same backend without it answers."""
    ns = await tenant(e2e, http, "ann-timeout")
    app = web.Application()

    async def answer(request: web.Request) -> web.Response:
        if request.path.startswith("/slow"):
            await asyncio.sleep(3)
        return web.json_response({"name": "slow", "path": request.path_qs})

    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        e2e.apply(service_yaml(ns, "slow", int(runner.addresses[0][1])))
        timeouts = {
            NGINX + "proxy-read-timeout": "1",
            NGINX + "proxy-connect-timeout": "3",
            NGINX + "proxy-send-timeout": "2",
        }
        e2e.apply(
            ingress(
                "impatient",
                ns,
                host_rule("impatient.ann.test", path_rule("/", "Prefix", "slow")),
                annotations=timeouts,
            )
        )
        e2e.apply(ingress("patient", ns, host_rule("patient.ann.test", path_rule("/", "Prefix", "slow"))))
        await wait_served(e2e, http, "impatient.ann.test", "/fast", "slow")
        await wait_served(e2e, http, "patient.ann.test", "/fast", "slow")
        impatient, patient = await asyncio.gather(
            request(e2e, http, "impatient.ann.test", "/slow"), request(e2e, http, "patient.ann.test", "/slow")
        )
        assert impatient.status == 504, impatient
        assert patient.status == 200 and patient.backend == "slow", patient
        # A connect timeout cannot be provoked on loopback; Envoy's running clusters show it instead.
        clusters = json.loads(await envoy_config(e2e, http, "dynamic_active_clusters"))["configs"]
        timeouts = {c["cluster"]["name"]: c["cluster"].get("connect_timeout") for c in clusters}
        assert "3s" in timeouts.values(), timeouts
    finally:
        await runner.cleanup()


async def test_whitelist_source_range(e2e: E2E, http: aiohttp.ClientSession) -> None:
    ns = await tenant(e2e, http, "ann-allow")
    e2e.apply(
        ingress(
            "allowed",
            ns,
            host_rule("allowed.ann.test", path_rule("/")),
            annotations={NGINX + "whitelist-source-range": "10.0.0.0/8, 127.0.0.0/8"},
        )
    )
    e2e.apply(
        ingress(
            "denied",
            ns,
            host_rule("denied.ann.test", path_rule("/")),
            annotations={NGINX + "whitelist-source-range": "10.0.0.0/8,192.168.0.0/16"},
        )
    )
    await wait_served(e2e, http, "allowed.ann.test", "/", A)  # we come from 127.0.0.1

    async def forbidden() -> bool:
        return (await request(e2e, http, "denied.ann.test", "/")).status == 403

    await eventually(forbidden, timeout=10, what="403 for a source outside the allowed ranges")


async def test_enable_cors(e2e: E2E, http: aiohttp.ClientSession) -> None:
    ns = await tenant(e2e, http, "ann-cors")
    host = "cors.ann.test"
    origin = "https://app.example.com"
    e2e.apply(
        ingress(
            "cors",
            ns,
            host_rule(host, path_rule("/")),
            annotations={
                NGINX + "enable-cors": "true",
                NGINX + "cors-allow-origin": origin,
                NGINX + "cors-allow-methods": "GET, PUT",
                NGINX + "cors-allow-headers": "X-Token",
                NGINX + "cors-max-age": "600",
            },
        )
    )
    preflight = {
        "Origin": origin,
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "X-Token",
    }

    async def cors_answered() -> bool:
        reply = await request(e2e, http, host, "/data", method="OPTIONS", headers=preflight)
        return reply.headers.get("Access-Control-Allow-Origin") == origin

    await eventually(cors_answered, timeout=10, what="a CORS preflight answered by the gateway")
    reply = await request(e2e, http, host, "/data", method="OPTIONS", headers=preflight)
    assert reply.status in (200, 204), reply
    assert reply.backend is None, reply  # the gateway answered the preflight, not the backend
    assert "PUT" in reply.headers.get("Access-Control-Allow-Methods", ""), reply
    assert "x-token" in reply.headers.get("Access-Control-Allow-Headers", "").lower(), reply
    assert reply.headers.get("Access-Control-Max-Age") == "600", reply
    # A simple request from the allowed origin reaches the backend and carries the CORS header back.
    reply = await request(e2e, http, host, "/data", headers={"Origin": origin})
    assert reply.status == 200 and reply.backend == A, reply
    assert reply.headers.get("Access-Control-Allow-Origin") == origin, reply
    # Another origin is not granted.
    reply = await request(e2e, http, host, "/data", headers={"Origin": "https://evil.example.net"})
    assert reply.headers.get("Access-Control-Allow-Origin") not in (origin, "https://evil.example.net", "*")


async def test_permanent_redirect(e2e: E2E, http: aiohttp.ClientSession) -> None:
    ns = await tenant(e2e, http, "ann-redirect")
    target = "https://new.example.com/landing"
    e2e.apply(
        ingress(
            "moved",
            ns,
            host_rule("moved.ann.test", path_rule("/")),
            annotations={NGINX + "permanent-redirect": target},
        )
    )
    e2e.apply(
        ingress(
            "moved-308",
            ns,
            host_rule("moved308.ann.test", path_rule("/")),
            annotations={NGINX + "permanent-redirect": target, NGINX + "permanent-redirect-code": "308"},
        )
    )

    async def redirected(host: str, code: int) -> bool:
        reply = await request(e2e, http, host, "/old/page")
        return reply.status == code and reply.headers.get("Location") == target

    await eventually(
        lambda: redirected("moved.ann.test", 301), timeout=10, what="301 to the permanent-redirect target"
    )
    await eventually(
        lambda: redirected("moved308.ann.test", 308), timeout=10, what="308 with permanent-redirect-code"
    )


async def test_app_root(e2e: E2E, http: aiohttp.ClientSession) -> None:
    ns = await tenant(e2e, http, "ann-approot")
    host = "approot.ann.test"
    e2e.apply(
        ingress("approot", ns, host_rule(host, path_rule("/")), annotations={NGINX + "app-root": "/app1"})
    )

    async def redirected() -> bool:
        reply = await request(e2e, http, host, "/")
        return reply.status == 302 and urlsplit(reply.headers.get("Location", "")).path == "/app1"

    await eventually(redirected, timeout=10, what="/ redirected to the app root")
    location = urlsplit((await request(e2e, http, host, "/")).headers["Location"])
    assert location.netloc in ("", host), location  # same host, never somewhere else
    # Only `/` is redirected; the app itself (and everything else) is served.
    for path in ("/app1", "/other"):
        reply = await request(e2e, http, host, path)
        assert reply.status == 200 and reply.backend == A and reply.json and reply.json["path"] == path, reply
