"""The normalized model: what shardgate keeps of the Kubernetes objects it reads.

The watcher turns each Kubernetes object into *contributions*: the part of the object that matters to
one unit. An Ingress with three hosts contributes to three host units; a Service and each of its
EndpointSlices contribute to one service unit; a TLS Secret is the whole of its secret unit. The
compiler merges every contribution to a unit into that unit's fragment.

Contributions are plain frozen dataclasses with a stable wire form (`to_wire` / `*_from_wire`), so
that the watcher can compare what it sent before with what it would send now (exact deltas), and the
compiler can store them per unit without importing anything from Kubernetes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

Wire = dict[str, Any]


class PathType(StrEnum):
    EXACT = "Exact"
    PREFIX = "Prefix"
    IMPLEMENTATION_SPECIFIC = "ImplementationSpecific"


@dataclass(frozen=True, slots=True)
class Backend:
    """A Service backend in the Ingress's own namespace; `port` is a number or a port name."""

    service: str
    port: int | str


@dataclass(frozen=True, slots=True)
class PathRule:
    path: str
    path_type: PathType
    backend: Backend


CATCH_ALL_HOST = "*"
"""The host of rules without a host and of `spec.defaultBackend`: requests no host scope matches."""


@dataclass(frozen=True, slots=True)
class Canary:
    """nginx `canary-*`: this Ingress's backends take a share of the primary Ingress's traffic."""

    weight: int | None = None  # 0..weight_total
    weight_total: int = 100
    header: str | None = None  # requests with this header set to "always" (or `header_value`) go here
    header_value: str | None = None


@dataclass(frozen=True, slots=True)
class Cors:
    allow_origins: tuple[str, ...] = ("*",)
    allow_methods: str = "GET, PUT, POST, DELETE, PATCH, OPTIONS"
    allow_headers: str = (
        "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,"
        "Range,Authorization"
    )
    expose_headers: str = ""
    allow_credentials: bool = True
    max_age_s: int = 1728000


@dataclass(frozen=True, slots=True)
class IngressOptions:
    """The validated meaning of an Ingress's annotations (nginx-compatible names); defaults = absent.

    Every field is already parsed and checked by the watcher: nothing here is user text that reaches
    Envoy unchecked, and there is no field for free-form configuration (snippets are refused upstream).
    """

    rewrite_target: str | None = None
    use_regex: bool = False
    ssl_redirect: bool | None = None  # None: redirect HTTP to HTTPS when the host has TLS (nginx default)
    force_ssl_redirect: bool = False
    canary: Canary | None = None
    backend_protocol: str = "HTTP"  # HTTP, HTTPS, GRPC, GRPCS
    connect_timeout_s: float | None = None
    read_timeout_s: float | None = None
    send_timeout_s: float | None = None
    whitelist_source_range: tuple[str, ...] = ()  # CIDRs, normalized
    cors: Cors | None = None
    permanent_redirect: str | None = None
    permanent_redirect_code: int = 301
    app_root: str | None = None

    def to_wire(self) -> Wire:
        """Only the fields that differ from the defaults: most Ingresses carry none."""
        out: Wire = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if value != getattr(_DEFAULT_OPTIONS, name):
                if isinstance(value, Canary | Cors):
                    value = {f: getattr(value, f) for f in value.__slots__}
                elif isinstance(value, tuple):
                    value = list(value)
                out[name] = value
        return out


_DEFAULT_OPTIONS = IngressOptions()


def ingress_options_from_wire(w: Wire | None) -> IngressOptions:
    if not w:
        return _DEFAULT_OPTIONS
    values = dict(w)
    if values.get("canary") is not None:
        values["canary"] = Canary(**values["canary"])
    if values.get("cors") is not None:
        cors = dict(values["cors"])
        cors["allow_origins"] = tuple(cors.get("allow_origins", ("*",)))
        values["cors"] = Cors(**cors)
    if "whitelist_source_range" in values:
        values["whitelist_source_range"] = tuple(values["whitelist_source_range"])
    return IngressOptions(**values)


@dataclass(frozen=True, slots=True)
class HostRoutes:
    """One Ingress's contribution to one host (or to CATCH_ALL_HOST)."""

    namespace: str
    ingress: str
    created: str  # creationTimestamp, RFC 3339: decides conflicts (oldest wins)
    paths: tuple[PathRule, ...]
    tls_secret: str | None = None
    options: IngressOptions = _DEFAULT_OPTIONS
    default_backend: Backend | None = None  # only on CATCH_ALL_HOST: spec.defaultBackend

    def to_wire(self) -> Wire:
        w: Wire = {
            "ns": self.namespace,
            "ing": self.ingress,
            "created": self.created,
            "paths": [[p.path, str(p.path_type), p.backend.service, p.backend.port] for p in self.paths],
            "tls": self.tls_secret,
        }
        options = self.options.to_wire()
        if options:
            w["opt"] = options
        if self.default_backend is not None:
            w["dflt"] = [self.default_backend.service, self.default_backend.port]
        return w


def host_routes_from_wire(w: Wire) -> HostRoutes:
    default = w.get("dflt")
    return HostRoutes(
        namespace=w["ns"],
        ingress=w["ing"],
        created=w["created"],
        paths=tuple(
            PathRule(path, PathType(ptype), Backend(svc, port)) for path, ptype, svc, port in w["paths"]
        ),
        tls_secret=w.get("tls"),
        options=ingress_options_from_wire(w.get("opt")),
        default_backend=Backend(default[0], default[1]) if default else None,
    )


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str  # "" when the Service has a single unnamed port
    port: int
    target_port: int | str
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A Service's contribution to its service unit."""

    ports: tuple[ServicePort, ...]

    def to_wire(self) -> Wire:
        return {"ports": [[p.name, p.port, p.target_port, p.protocol] for p in self.ports]}


def service_spec_from_wire(w: Wire) -> ServiceSpec:
    return ServiceSpec(ports=tuple(ServicePort(*p) for p in w["ports"]))


@dataclass(frozen=True, slots=True)
class EndpointPort:
    name: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class EndpointSliceSpec:
    """An EndpointSlice's contribution to its service unit; only ready addresses are kept."""

    ports: tuple[EndpointPort, ...]
    addresses: tuple[str, ...]

    def to_wire(self) -> Wire:
        return {
            "ports": [[p.name, p.port, p.protocol] for p in self.ports],
            "addrs": list(self.addresses),
        }


def endpoint_slice_from_wire(w: Wire) -> EndpointSliceSpec:
    return EndpointSliceSpec(ports=tuple(EndpointPort(*p) for p in w["ports"]), addresses=tuple(w["addrs"]))


@dataclass(frozen=True, slots=True)
class TlsCertificate:
    """A `kubernetes.io/tls` Secret's contribution to its secret unit.

    `error` is set (and the PEM left empty) when the watcher found the Secret unusable — bad PEM, a key
    that does not match, expired — so the compiler publishes no certificate for it and says why.
    """

    cert_pem: bytes
    key_pem: bytes
    error: str | None = None
    names: tuple[str, ...] = ()  # DNS names of the certificate (SAN), lower-case; for wildcard lookup

    def to_wire(self) -> Wire:
        w: Wire = {"crt": self.cert_pem, "key": self.key_pem}
        if self.error:
            w["err"] = self.error
        if self.names:
            w["names"] = list(self.names)
        return w


def tls_certificate_from_wire(w: Wire) -> TlsCertificate:
    return TlsCertificate(
        cert_pem=w["crt"], key_pem=w["key"], error=w.get("err"), names=tuple(w.get("names") or ())
    )


Contribution = HostRoutes | ServiceSpec | EndpointSliceSpec | TlsCertificate
