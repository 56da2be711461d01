"""Table tests: Kubernetes objects in, contributions (and reasons) out."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from shardgate.keys import host_unit, secret_unit, service_unit
from shardgate.model import (
    CATCH_ALL_HOST,
    Backend,
    EndpointPort,
    EndpointSliceSpec,
    HostRoutes,
    IngressOptions,
    PathRule,
    PathType,
    ServicePort,
    ServiceSpec,
    TlsCertificate,
)
from shardgate.watcher.translate import (
    ClassPolicy,
    IngressClasses,
    Limits,
    translate_endpoint_slice,
    translate_ingress,
    translate_secret,
    translate_service,
)

from .helpers import make_cert

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


def routes(*paths: PathRule, tls: str | None = None, options: IngressOptions | None = None) -> HostRoutes:
    return HostRoutes("ns", "web", CREATED, tuple(paths), tls, options or IngressOptions())


def with_spec(obj: dict[str, Any], **fields: Any) -> dict[str, Any]:
    obj["spec"].update(fields)
    return obj


def backend(svc: str, port: int | str) -> dict[str, Any]:
    return {"service": {"name": svc, "port": {"number": port} if isinstance(port, int) else {"name": port}}}


CATCH_ALL = host_unit(CATCH_ALL_HOST)


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
    pytest.param(ingress([rule(None, path())]), {CATCH_ALL: routes(pr())}, 0, id="no-host-is-catch-all"),
    pytest.param(
        ingress([rule(None, path()), rule("*.wild.example.com", path())]),
        {host_unit("*.wild.example.com"): routes(pr()), CATCH_ALL: routes(pr())},
        0,
        id="wildcard-and-catch-all",
    ),
    pytest.param(
        with_spec(ingress([rule("a.example.com", path())]), defaultBackend=backend("dflt", "http")),
        {
            host_unit("a.example.com"): routes(pr()),
            CATCH_ALL: replace(routes(), default_backend=Backend("dflt", "http")),
        },
        0,
        id="default-backend-to-catch-all",
    ),
    pytest.param(
        with_spec(ingress([rule("a.example.com", path())]), defaultBackend={"resource": {"kind": "X"}}),
        {host_unit("a.example.com"): routes(pr())},
        2,
        id="bad-default-backend-rejects-only-the-catch-all",
    ),
    pytest.param(ingress([rule("bad_host!", path())]), {}, 1, id="invalid-host"),
    pytest.param(ingress([rule("10.0.0.1", path())]), {}, 1, id="ip-is-not-a-host"),
    pytest.param(ingress([rule("a.*.example.com", path())]), {}, 1, id="wildcard-not-leading"),
    pytest.param(
        ingress(
            [
                rule("a.example.com", path("nope"), path("/ok"), path("/p", port=70000), path("/q", "Regex")),
                rule("b.example.com", path()),
            ]
        ),
        {host_unit("b.example.com"): routes(pr())},
        4,
        id="bad-paths-reject-their-host-only",
    ),
    pytest.param(
        ingress([rule("a.example.com", path("/a b"), path("/x//y"), path("/x/.."), path("/q?x=1"))]),
        {},
        5,
        id="path-characters-and-sequences",
    ),
    pytest.param(
        ingress([rule("a.example.com", path("/x//y", "ImplementationSpecific"))]),
        {host_unit("a.example.com"): routes(pr("/x//y", PathType.IMPLEMENTATION_SPECIFIC))},
        0,
        id="implementation-specific-may-hold-double-slash",
    ),
    pytest.param(
        ingress([rule("a.example.com", {"path": "/", "pathType": "Prefix", "backend": {"resource": {}}})]),
        {},
        2,
        id="resource-backend-rejected-with-reason",
    ),
    pytest.param(
        ingress([rule("a.example.com", path(svc="Bad_Name"), path("/b", port="no_such_port!"))]),
        {},
        3,
        id="service-name-and-port-name",
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


N = "nginx.ingress.kubernetes.io/"
REGEX = {N + "use-regex": "true"}
ANNOTATED_CASES = [
    pytest.param(
        ingress(
            [rule("a.example.com", path("/api/(.*)", "ImplementationSpecific"), path("/x", "Exact"))],
            annotations={**REGEX, N + "rewrite-target": "/$1"},
        ),
        {
            host_unit("a.example.com"): routes(
                pr("/api/(.*)", PathType.IMPLEMENTATION_SPECIFIC),
                pr("/x", PathType.EXACT),
                options=IngressOptions(rewrite_target="/$1", use_regex=True),
            )
        },
        0,
        id="regex-with-rewrite",
    ),
    pytest.param(
        ingress(
            [rule("a.example.com", path("/api/(.*)", "Prefix"))], annotations={N + "rewrite-target": "/$1"}
        ),
        {
            host_unit("a.example.com"): routes(
                pr("/api/(.*)"), options=IngressOptions(rewrite_target="/$1", use_regex=True)
            )
        },
        0,
        id="capture-groups-imply-regex",
    ),
    pytest.param(
        ingress([rule("a.example.com", path("/api/(.*)"))], annotations={N + "rewrite-target": "/$2"}),
        {},
        2,
        id="rewrite-refers-to-a-missing-group",
    ),
    pytest.param(
        ingress([rule("a.example.com", path("/(a")), rule("b.example.com", path("/b"))], annotations=REGEX),
        {host_unit("b.example.com"): routes(pr("/b"), options=IngressOptions(use_regex=True))},
        2,
        id="invalid-regex-rejects-its-host",
    ),
    pytest.param(
        ingress([rule("a.example.com", path("/" + "(a|b|c)" * 40))], annotations=REGEX),
        {},
        2,
        id="regex-too-complex",
    ),
    pytest.param(
        ingress([rule("a.example.com", path())], annotations={N + "server-snippet": "return 200;"}),
        {},
        2,
        id="snippet-rejects-the-ingress",
    ),
    pytest.param(
        ingress([rule("a.example.com", path())], annotations={N + "proxy-read-timeout": "forever"}),
        {},
        2,
        id="bad-annotation-value-rejects-the-ingress",
    ),
    pytest.param(
        ingress(
            [rule("a.example.com", path())],
            annotations={
                N + "proxy-body-size": "8m",
                "kubectl.kubernetes.io/last-applied-configuration": "x" * 9000,
            },
        ),
        {host_unit("a.example.com"): routes(pr())},
        0,
        id="unknown-annotation-ignored-foreign-ones-unbounded",
    ),
]


@pytest.mark.parametrize(("obj", "expected", "n_reasons"), INGRESS_CASES + ANNOTATED_CASES)
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
        for fn in (translate_service, translate_endpoint_slice, lambda o: translate_secret(o, NOW)):
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
    bad_key = {"metadata": {"name": "a|b", "namespace": "n"}}
    assert translate_ingress(bad_key, POLICY, IngressClasses()).source == ""


def test_limits_hosts_per_ingress_and_paths_per_host() -> None:
    limits = Limits(max_hosts_per_ingress=2, max_paths_per_host=2)
    three_hosts = ingress([rule(f"h{i}.example.com", path()) for i in range(3)])
    t = translate_ingress(three_hosts, POLICY, IngressClasses(), limits)
    assert t.contributions == {} and "more than the limit of 2" in t.reasons[0]
    assert t.claims == set(), "an Ingress over the host limit claims nothing either"
    bad_annotation = ingress([rule("h0.example.com", path())], annotations={N + "use-regex": "maybe"})
    t = translate_ingress(bad_annotation, POLICY, IngressClasses(), limits)
    assert t.contributions == {} and t.claims == {"h0.example.com"}, "a rejected Ingress still claims"
    many_paths = ingress(
        [rule("a.example.com", path("/1"), path("/2"), path("/3")), rule("b.example.com", path())]
    )
    t = translate_ingress(many_paths, POLICY, IngressClasses(), limits)
    assert list(t.contributions) == [host_unit("b.example.com")]
    assert any("3 paths, more than the limit of 2" in r for r in t.reasons)
    big = ingress([rule("a.example.com", path())], annotations={N + "app-root": "/" + "a" * 200})
    t = translate_ingress(big, POLICY, IngressClasses(), Limits(max_annotation_value_bytes=100))
    assert t.contributions == {} and "longer than 100 bytes" in t.reasons[0]


def test_sharing_annotation_and_claims() -> None:
    obj = ingress(
        [rule("a.example.com", path()), rule(None, path())],
        annotations={"shardgate.io/allow-host-sharing-with": "team-b, team-c"},
    )
    t = translate_ingress(obj, POLICY, IngressClasses())
    assert t.sharing == {"team-b", "team-c"} and t.claims == {"a.example.com", CATCH_ALL_HOST}
    assert t.created == CREATED


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


NOW = datetime.now(UTC)
GOOD = make_cert(["Shop.Example.com", "*.shop.example.com"])
EC384 = make_cert(["a.example.com"], key=ec.generate_private_key(ec.SECP384R1()))
EXPIRED = make_cert(["a.example.com"], not_after=NOW - timedelta(days=1))
OTHER_KEY = make_cert(["b.example.com"])[1]
SMALL_RSA = make_cert(["a.example.com"], key=rsa.generate_private_key(65537, 1024))
ED25519 = make_cert(
    ["a.example.com"],
    key=ed25519.Ed25519PrivateKey.generate(),
    signer=ec.generate_private_key(ec.SECP256R1()),
)
ENCRYPTED_KEY = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.BestAvailableEncryption(b"pw"),
)


def tls(crt: bytes | str, key: bytes | str | None) -> dict[str, Any]:
    data = {"tls.crt": crt if isinstance(crt, str) else b64(crt)}
    if key is not None:
        data["tls.key"] = key if isinstance(key, str) else b64(key)
    return {"metadata": meta("crt"), "type": "kubernetes.io/tls", "data": data}


SECRET_CASES = [
    pytest.param(
        tls(*GOOD),
        TlsCertificate(*GOOD, names=("*.shop.example.com", "shop.example.com")),
        id="valid-with-sans",
    ),
    pytest.param(tls(*EC384), TlsCertificate(*EC384, names=("a.example.com",)), id="p384"),
    pytest.param(tls(b"CERT", b"KEY"), "not a PEM certificate", id="bad-pem"),
    pytest.param(tls(GOOD[0], b"KEY"), "not an unencrypted PEM private key", id="bad-key-pem"),
    pytest.param(tls(GOOD[0], ENCRYPTED_KEY), "not an unencrypted PEM private key", id="encrypted-key"),
    pytest.param(tls(GOOD[0], OTHER_KEY), "does not match", id="key-of-another-cert"),
    pytest.param(
        tls(GOOD[0] + EC384[0], GOOD[1]),
        TlsCertificate(GOOD[0] + EC384[0], GOOD[1], names=("*.shop.example.com", "shop.example.com")),
        id="chain-leaf-first",
    ),
    pytest.param(tls(*EXPIRED), "expired", id="expired"),
    pytest.param(tls(*SMALL_RSA), "RSA key of 1024 bits", id="rsa-1024"),
    pytest.param(tls(*ED25519), "keys are not served", id="ed25519"),
    pytest.param(tls("!!!", b"K"), "not valid base64", id="bad-base64"),
    pytest.param(tls(GOOD[0], None), "missing", id="no-key"),
]


@pytest.mark.parametrize(("obj", "expected"), SECRET_CASES)
def test_translate_secret(obj: dict[str, Any], expected: TlsCertificate | str) -> None:
    t = translate_secret(obj, NOW)
    assert t.source == "secret/ns/crt"
    cert = t.contributions[secret_unit("ns", "crt")]
    assert isinstance(cert, TlsCertificate)
    if isinstance(expected, TlsCertificate):
        assert cert == expected and t.reasons == []
    else:
        assert cert.cert_pem == b"" and cert.key_pem == b"" and cert.error and expected in cert.error
        assert len(t.reasons) == 1 and expected in t.reasons[0]


def test_expiry_is_judged_at_the_observation_time() -> None:
    t = translate_secret(tls(*EXPIRED), NOW - timedelta(days=3))
    assert t.reasons == [] and abs(t.expires_ns - (NOW - timedelta(days=1)).timestamp() * 1e9) < 2e9
    assert translate_secret(tls(*EXPIRED), NOW).expires_ns == 0


def test_other_secrets_contribute_nothing() -> None:
    t = translate_secret({"metadata": meta("crt"), "type": "Opaque", "data": {"a": "b"}}, NOW)
    assert t.source == "secret/ns/crt" and t.contributions == {} and t.reasons == []
