"""Validators and annotation parsing: user text in, a value or a reason out (table-driven)."""

from __future__ import annotations

from typing import Any

import pytest

from shardgate.model import Canary, Cors, IngressOptions
from shardgate.watcher.annotations import parse_annotations
from shardgate.watcher.validate import (
    envoy_path_regex,
    envoy_program_size,
    host_error,
    path_error,
    port_name_error,
    port_number_error,
    regex_error,
    secret_name_error,
    service_name_error,
)

HOSTS_OK = [
    "a.example.com",
    "*.example.com",
    "x",
    "a-b.c0",
    "*.com",
    "a" * 63 + ".com",
    "xn--bcher-kva.example",
]
HOSTS_BAD = [
    "", "*", "*.", "a..b", "-a.com", "a-.com", "a_b.com", "a.*.com", "**.a.com", "*a.com", "a.com.",
    "a" * 64 + ".com", ".".join(["a" * 60] * 5), "10.0.0.1", "[::1]", "::1", "1.2.3", "a.com:80", "a b.com",
    "bücher.example", 5,
]  # fmt: skip


@pytest.mark.parametrize("host", HOSTS_OK)
def test_hosts_ok(host: str) -> None:
    assert host_error(host) is None


@pytest.mark.parametrize("host", HOSTS_BAD)
def test_hosts_refused(host: Any) -> None:
    assert host_error(host)


@pytest.mark.parametrize(
    ("path", "exact_or_prefix", "ok"),
    [
        ("/", True, True),
        ("/a/b-c_d.e~f%20", True, True),
        ("a", True, False),
        ("", True, False),
        ("/a b", True, False),
        ("/a\tb", False, False),
        ("/a\x00", False, False),
        ("/ä", False, False),
        ("/a?b", False, False),
        ("/a#b", False, False),
        ("/a//b", True, False),
        ("/a//b", False, True),
        ("/a/./b", True, False),
        ("/a/../b", True, False),
        ("/a%2fb", True, False),
        ("/a/..", True, False),
        ("/a/.", True, False),
        ("/" + "a" * 2000, False, False),
        (None, False, False),
    ],
)
def test_paths(path: Any, exact_or_prefix: bool, ok: bool) -> None:
    assert (path_error(path, exact_or_prefix) is None) == ok, path_error(path, exact_or_prefix)


@pytest.mark.parametrize(
    ("pattern", "error", "groups"),
    [
        ("/api/(.*)", None, 1),
        ("/(v[0-9]+)/(users|items)/([a-z0-9-]+)", None, 3),
        ("/(a", "does not compile as RE2", 0),
        ("/(?<=x)a", "does not compile as RE2", 0),  # look-behind: PCRE, not RE2
        (r"/(a)\1", "does not compile as RE2", 0),  # back-references: not RE2
        ("/" + "(a|b|c)" * 40, "too complex", 0),
        ("/a{1,1000}", "does not compile as RE2", 0),  # RE2 bounds repetitions at 1000 nested... and size
        ("api", "must start with '/'", 0),
        ("/a b", "printable ASCII", 0),
    ],
)
def test_regex(pattern: str, error: str | None, groups: int) -> None:
    why, n = regex_error(pattern)
    if error is None:
        assert why is None and n == groups
    else:
        assert why is not None and (error in why or "too complex" in why), why


@pytest.mark.parametrize(
    "pattern", ["/api/(.*)", "/(v[0-9]+)/(users|items)/([a-z0-9-]+)", "/" + "[a-z]" * 93, "/" + "[a-z]" * 94]
)
def test_program_size_is_the_compilers(pattern: str) -> None:
    """The watcher refuses exactly what the xDS compiler (and so Envoy) would refuse."""
    from shardgate.xds import options, regex

    assert envoy_path_regex(pattern) == options.envoy_path_regex(pattern)
    assert envoy_program_size(envoy_path_regex(pattern)) == regex.program_size(
        options.envoy_path_regex(pattern)
    )
    refused = regex_error(pattern)[0] is not None
    assert refused == (regex.program_size(options.envoy_path_regex(pattern)) > regex.MAX_PROGRAM_SIZE)


def test_names_and_ports() -> None:
    assert service_name_error("web-1") is None and service_name_error("1web") and service_name_error("Web")
    assert secret_name_error("tls.web-1") is None and secret_name_error("a_b") and secret_name_error("")
    assert port_number_error(1) is None and port_number_error(65535) is None
    assert all(port_number_error(p) for p in (0, 65536, -1, True, "80", 80.0))
    assert port_name_error("http") is None and port_name_error("h2c-web") is None
    assert all(port_name_error(n) for n in ("", "80", "HTTP", "a--b", "-a", "a" * 16, 5))


N = "nginx.ingress.kubernetes.io/"
D = IngressOptions()

ANNOTATIONS_OK = [
    pytest.param({}, D, id="none"),
    pytest.param({N + "rewrite-target": "/$1/x"}, IngressOptions(rewrite_target="/$1/x"), id="rewrite"),
    pytest.param({N + "use-regex": "True"}, IngressOptions(use_regex=True), id="use-regex-go-bool"),
    pytest.param({N + "ssl-redirect": "false"}, IngressOptions(ssl_redirect=False), id="ssl-redirect"),
    pytest.param({N + "force-ssl-redirect": "1"}, IngressOptions(force_ssl_redirect=True), id="force-ssl"),
    pytest.param(
        {N + "canary": "true", N + "canary-weight": "5", N + "canary-weight-total": "1000"},
        IngressOptions(canary=Canary(weight=5, weight_total=1000)),
        id="canary-weight",
    ),
    pytest.param(
        {N + "canary": "true", N + "canary-by-header": "X-Canary", N + "canary-by-header-value": "yes"},
        IngressOptions(canary=Canary(header="x-canary", header_value="yes")),
        id="canary-header",
    ),
    pytest.param({N + "canary-weight": "5"}, D, id="canary-settings-without-canary-ignored"),
    pytest.param({N + "backend-protocol": "grpcs"}, IngressOptions(backend_protocol="GRPCS"), id="protocol"),
    pytest.param(
        {N + "proxy-connect-timeout": "5", N + "proxy-read-timeout": "120", N + "proxy-send-timeout": "3600"},
        IngressOptions(connect_timeout_s=5.0, read_timeout_s=120.0, send_timeout_s=3600.0),
        id="timeouts",
    ),
    pytest.param(
        {N + "whitelist-source-range": "10.1.2.3/8, 192.168.0.1,10.0.0.0/8 ,2001:db8::1/64"},
        IngressOptions(whitelist_source_range=("10.0.0.0/8", "192.168.0.1/32", "2001:db8::/64")),
        id="cidrs-normalized-deduplicated",
    ),
    pytest.param(
        {
            N + "enable-cors": "true",
            N + "cors-allow-origin": "https://a.example.com, https://*.b.example.com:8443",
            N + "cors-allow-methods": "get,POST",
            N + "cors-allow-headers": "X-A, X-B",
            N + "cors-expose-headers": "X-C",
            N + "cors-allow-credentials": "false",
            N + "cors-max-age": "600",
        },
        IngressOptions(
            cors=Cors(
                allow_origins=("https://a.example.com", "https://*.b.example.com:8443"),
                allow_methods="GET, POST",
                allow_headers="X-A,X-B",
                expose_headers="X-C",
                allow_credentials=False,
                max_age_s=600,
            )
        ),
        id="cors",
    ),
    pytest.param({N + "enable-cors": "true"}, IngressOptions(cors=Cors()), id="cors-defaults"),
    pytest.param(
        {N + "permanent-redirect": "https://new.example.com/x?a=1", N + "permanent-redirect-code": "308"},
        IngressOptions(permanent_redirect="https://new.example.com/x?a=1", permanent_redirect_code=308),
        id="redirect",
    ),
    pytest.param({N + "app-root": "/app"}, IngressOptions(app_root="/app"), id="app-root"),
    pytest.param({N + "proxy-body-size": "8m", "other.io/x": "y"}, D, id="unsupported-ignored"),
]


@pytest.mark.parametrize(("annotations", "expected"), ANNOTATIONS_OK)
def test_annotations_parse(annotations: dict[str, str], expected: IngressOptions) -> None:
    parsed = parse_annotations(annotations)
    assert parsed.errors == [] and parsed.options == expected


ANNOTATIONS_BAD = [
    ({N + "configuration-snippet": "more_set_headers x"}, "snippets"),
    ({N + "server-snippet": "x"}, "snippets"),
    ({N + "auth-snippet": "x"}, "snippets"),
    ({N + "stream-snippet": "x"}, "snippets"),
    ({"nginx.org/server-snippets": "x"}, "snippets"),
    ({N + "modsecurity-transaction-id": "$x"}, "copied into the gateway"),
    ({N + "auth-url": "http://auth"}, "restricts access"),
    ({N + "denylist-source-range": "1.2.3.4"}, "restricts access"),
    ({N + "use-regex": "yes"}, "not a boolean"),
    ({N + "rewrite-target": "no-slash"}, "not a path"),
    ({N + "rewrite-target": "/a b"}, "not a path"),
    ({N + "rewrite-target": "/$0"}, "capture groups $1-$9"),
    ({N + "app-root": "/$1"}, "'$'"),
    ({N + "canary": "true", N + "canary-weight": "101"}, "0-100"),
    ({N + "canary": "true", N + "canary-weight": "-1"}, "0-100"),
    ({N + "canary": "true", N + "canary-weight-total": "0"}, "integer"),
    ({N + "canary": "true", N + "canary-by-header": "X Canary"}, "header name"),
    ({N + "canary": "true", N + "canary-by-header-value": "x"}, "needs"),
    ({N + "canary": "true", N + "canary-by-header": "x", N + "canary-by-header-value": "a\nb"}, "printable"),
    ({N + "backend-protocol": "FCGI"}, "not one of"),
    ({N + "proxy-read-timeout": "60s"}, "integer"),
    ({N + "proxy-read-timeout": "0"}, "integer"),
    ({N + "proxy-connect-timeout": "3601"}, "integer"),
    ({N + "proxy-send-timeout": "１２"}, "integer"),  # full-width digits are digits to str.isdigit
    ({N + "whitelist-source-range": "10.0.0.0/33"}, "CIDR"),
    ({N + "whitelist-source-range": " , "}, "ambiguous"),
    ({N + "enable-cors": "true", N + "cors-allow-origin": "javascript:alert(1)"}, "origin"),
    ({N + "enable-cors": "true", N + "cors-allow-methods": "GET;DROP"}, "token"),
    ({N + "enable-cors": "true", N + "cors-max-age": "x"}, "integer"),
    ({N + "permanent-redirect": "ftp://x"}, "URL"),
    ({N + "permanent-redirect": "https://x/a b"}, "URL"),
    ({N + "permanent-redirect": "https://x", N + "permanent-redirect-code": "305"}, "not one of"),
    ({N + "app-root": "/" + "a" * 5000}, "bytes"),
    ({N + "canary": 1}, "not a string"),
    ({"shardgate.io/allow-host-sharing-with": "team-b,Team_C"}, "namespace names"),
]


@pytest.mark.parametrize(("annotations", "error"), ANNOTATIONS_BAD)
def test_annotations_refused(annotations: dict[str, Any], error: str) -> None:
    parsed = parse_annotations(annotations)
    assert parsed.errors and error in " ".join(parsed.errors), parsed.errors
    assert parsed.options == D


def test_unknown_annotations_are_listed_for_the_log_and_sharing_is_parsed() -> None:
    parsed = parse_annotations(
        {N + "proxy-body-size": "8m", "shardgate.io/allow-host-sharing-with": " team-b, team-c ,"}
    )
    assert parsed.ignored == [N + "proxy-body-size"] and parsed.sharing == {"team-b", "team-c"}
    assert parse_annotations("nope").errors
