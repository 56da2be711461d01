"""Table tests: Kubernetes objects in, contributions (and reasons) out."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from shardgate.keys import host_unit, secret_unit, service_unit
from shardgate.model import (
    Backend,
    EndpointPort,
    EndpointSliceSpec,
    HostRoutes,
    PathRule,
    PathType,
    ServicePort,
    ServiceSpec,
    TlsCertificate,
)
from shardgate.watcher.translate import (
    ClassPolicy,
    IngressClasses,
    translate_endpoint_slice,
    translate_ingress,
    translate_secret,
    translate_service,
)

POLICY = ClassPolicy()
CREATED = "2024-01-01T00:00:00Z"


def ingress(
    rules: Any, tls: Any = None, cls: str | None = "shardgate", annotations: Any = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"rules": rules}
    if cls is not None:
        spec["ingressClassName"] = cls
    if tls is not None:
        spec["tls"] = tls
    meta: dict[str, Any] = {
        "name": "web",
        "namespace": "ns",
        "resourceVersion": "7",
        "creationTimestamp": CREATED,
    }
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": spec}


def rule(host: str | None, *paths: dict[str, Any]) -> dict[str, Any]:
    r: dict[str, Any] = {"http": {"paths": list(paths)}}
    if host is not None:
        r["host"] = host
    return r


def path(p: str = "/", ptype: str = "Prefix", svc: str = "app", port: Any = 80) -> dict[str, Any]:
    port_ref = {"number": port} if isinstance(port, int) else {"name": port}
    return {"path": p, "pathType": ptype, "backend": {"service": {"name": svc, "port": port_ref}}}


def routes(*paths: PathRule, tls: str | None = None) -> HostRoutes:
    return HostRoutes("ns", "web", CREATED, tuple(paths), tls)


def pr(p: str = "/", ptype: PathType = PathType.PREFIX, svc: str = "app", port: int | str = 80) -> PathRule:
    return PathRule(p, ptype, Backend(svc, port))


INGRESS_CASES = [
    pytest.param(
        ingress([rule("a.example.com", path())]), {host_unit("a.example.com"): routes(pr())}, 0, id="one"
    ),
    pytest.param(
        ingress([rule("A.Example.com", path()), rule("b.example.com", path("/x", "Exact", "b", "http"))]),
        {
            host_unit("a.example.com"): routes(pr()),
            host_unit("b.example.com"): routes(pr("/x", PathType.EXACT, "b", "http")),
        },
        0,
        id="two-hosts-named-port-lowercased",
    ),
    pytest.param(
        ingress(
            [rule("a.example.com", path("/", "ImplementationSpecific"))],
            [{"hosts": ["a.example.com"], "secretName": "crt"}],
        ),
        {host_unit("a.example.com"): routes(pr("/", PathType.IMPLEMENTATION_SPECIFIC), tls="crt")},
        0,
        id="tls-and-implementation-specific",
    ),
    pytest.param(
        ingress([rule("a.example.com", path("/a")), rule("a.example.com", path("/b"))]),
        {host_unit("a.example.com"): routes(pr("/a"), pr("/b"))},
        0,
        id="same-host-twice-merged",
    ),
    pytest.param(ingress([rule(None, path())]), {}, 1, id="no-host-skipped"),
    pytest.param(
        ingress([rule(None, path()), rule("*.wild.example.com", path())]),
        {host_unit("*.wild.example.com"): routes(pr())},
        1,
        id="wildcard-kept-catchall-skipped",
    ),
    pytest.param(ingress([rule("bad_host!", path())]), {}, 1, id="invalid-host"),
    pytest.param(
        ingress(
            [rule("a.example.com", path("nope"), path("/ok"), path("/p", port=70000), path("/q", "Regex"))]
        ),
        {host_unit("a.example.com"): routes(pr("/ok"))},
        3,
        id="bad-paths-skipped",
    ),
    pytest.param(
        ingress([rule("a.example.com", {"path": "/", "pathType": "Prefix", "backend": {"resource": {}}})]),
        {},
        2,
        id="resource-backend-then-no-paths",
    ),
    pytest.param(ingress("garbage"), {}, 1, id="rules-not-a-list"),
    pytest.param(ingress([rule("a.example.com", path())], cls="nginx"), {}, 0, id="other-class"),
    pytest.param(
        ingress(
            [rule("a.example.com", path())],
            cls=None,
            annotations={"kubernetes.io/ingress.class": "shardgate"},
        ),
        {host_unit("a.example.com"): routes(pr())},
        0,
        id="legacy-annotation",
    ),
    pytest.param(ingress([rule("a.example.com", path())], cls=None), {}, 0, id="classless-without-default"),
]


@pytest.mark.parametrize(("obj", "expected", "n_reasons"), INGRESS_CASES)
def test_translate_ingress(obj: dict[str, Any], expected: dict[str, Any], n_reasons: int) -> None:
    t = translate_ingress(obj, POLICY, IngressClasses())
    assert t.source == "ingress/ns/web"
    assert t.rv == "7"
    assert t.contributions == expected
    assert len(t.reasons) == n_reasons, t.reasons
    assert t.admitted == bool(expected)


def test_classless_ingress_follows_default_ingress_class() -> None:
    classes = IngressClasses()
    obj = ingress([rule("a.example.com", path())], cls=None)
    default = {
        "metadata": {"name": "sg", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "shardgate.io/ingress-controller"},
    }
    other_default = {
        "metadata": {"name": "x", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "k8s.io/ingress-nginx"},
    }
    classes.apply("ADDED", other_default)
    assert not translate_ingress(obj, POLICY, classes).ours
    classes.apply("ADDED", default)
    t = translate_ingress(obj, POLICY, classes)
    assert t.ours and t.classless and list(t.contributions) == [host_unit("a.example.com")]
    classes.apply("DELETED", default)
    assert translate_ingress(obj, POLICY, classes).contributions == {}


def test_malformed_objects_never_raise() -> None:
    for junk in (
        {},
        {"metadata": "x"},
        {"metadata": {"name": "a"}},
        {"metadata": {"name": 3, "namespace": "n"}},
    ):
        for fn in (translate_service, translate_endpoint_slice, translate_secret):
            t = fn(junk)
            assert t.source == "" and t.contributions == {} and t.reasons
        t = translate_ingress(junk, POLICY, IngressClasses())
        assert t.source == "" and t.reasons
    t = translate_ingress(
        {"metadata": {"name": "a", "namespace": "n"}, "spec": [1]}, POLICY, IngressClasses()
    )
    assert t.contributions == {}
    meta = {"name": "a", "namespace": "n"}
    assert translate_ingress(
        {"metadata": meta, "spec": {"ingressClassName": "shardgate", "rules": [None, 5]}},
        POLICY,
        IngressClasses(),
    ).reasons == ["rule[0]: not an object", "rule[1]: not an object"]


def meta(name: str = "svc", labels: Any = None) -> dict[str, Any]:
    m: dict[str, Any] = {"name": name, "namespace": "ns", "resourceVersion": "3"}
    if labels is not None:
        m["labels"] = labels
    return m


SERVICE_CASES = [
    pytest.param(
        {"metadata": meta(), "spec": {"ports": [{"port": 80}]}},
        ServiceSpec((ServicePort("", 80, 80),)),
        0,
        id="unnamed-port-target-defaults-to-port",
    ),
    pytest.param(
        {
            "metadata": meta(),
            "spec": {
                "ports": [
                    {"name": "http", "port": 80, "targetPort": "web"},
                    {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"},
                    {"name": "bad", "port": 0},
                ]
            },
        },
        ServiceSpec((ServicePort("http", 80, "web"), ServicePort("dns", 53, 5353, "UDP"))),
        1,
        id="named-ports-bad-port-skipped",
    ),
    pytest.param({"metadata": meta(), "spec": {}}, ServiceSpec(()), 0, id="no-ports"),
]


@pytest.mark.parametrize(("obj", "expected", "n_reasons"), SERVICE_CASES)
def test_translate_service(obj: dict[str, Any], expected: ServiceSpec, n_reasons: int) -> None:
    t = translate_service(obj)
    assert t.source == "service/ns/svc"
    assert t.contributions == {service_unit("ns", "svc"): expected}
    assert len(t.reasons) == n_reasons


SLICE_LABELS = {"kubernetes.io/service-name": "svc"}
SLICE_CASES = [
    pytest.param(
        {
            "metadata": meta("svc-abc", SLICE_LABELS),
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "x", "port": None}],
            "endpoints": [
                {"addresses": ["10.0.0.2"], "conditions": {"ready": True}},
                {"addresses": ["10.0.0.1"]},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": False}},
            ],
        },
        {
            service_unit("ns", "svc"): EndpointSliceSpec(
                (EndpointPort("http", 8080),), ("10.0.0.1", "10.0.0.2")
            )
        },
        1,
        id="ready-or-absent-only",
    ),
    pytest.param(
        {"metadata": meta("svc-abc", SLICE_LABELS), "addressType": "FQDN", "endpoints": []},
        {},
        1,
        id="fqdn-ignored",
    ),
    pytest.param({"metadata": meta("svc-abc"), "addressType": "IPv4"}, {}, 1, id="no-service-label"),
    pytest.param(
        {"metadata": meta("svc-abc", SLICE_LABELS), "addressType": "IPv6", "ports": [{"port": 80}]},
        {service_unit("ns", "svc"): EndpointSliceSpec((EndpointPort("", 80),), ())},
        0,
        id="ipv6-empty",
    ),
]


@pytest.mark.parametrize(("obj", "expected", "n_reasons"), SLICE_CASES)
def test_translate_endpoint_slice(obj: dict[str, Any], expected: dict[str, Any], n_reasons: int) -> None:
    t = translate_endpoint_slice(obj)
    assert t.source == "endpointslice/ns/svc-abc"
    assert t.contributions == expected
    assert len(t.reasons) == n_reasons


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


SECRET_CASES = [
    pytest.param(
        {
            "metadata": meta("crt"),
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": b64(b"C"), "tls.key": b64(b"K")},
        },
        {secret_unit("ns", "crt"): TlsCertificate(b"C", b"K")},
        0,
        id="tls",
    ),
    pytest.param(
        {"metadata": meta("crt"), "type": "Opaque", "data": {"a": "b"}}, {}, 0, id="opaque-silently-ignored"
    ),
    pytest.param(
        {
            "metadata": meta("crt"),
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": "!!!", "tls.key": b64(b"K")},
        },
        {},
        1,
        id="bad-base64",
    ),
    pytest.param(
        {"metadata": meta("crt"), "type": "kubernetes.io/tls", "data": {"tls.crt": b64(b"C")}},
        {},
        1,
        id="no-key",
    ),
]


@pytest.mark.parametrize(("obj", "expected", "n_reasons"), SECRET_CASES)
def test_translate_secret(obj: dict[str, Any], expected: dict[str, Any], n_reasons: int) -> None:
    t = translate_secret(obj)
    assert t.source == "secret/ns/crt"
    assert t.contributions == expected
    assert len(t.reasons) == n_reasons
