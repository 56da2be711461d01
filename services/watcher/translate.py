"""Kubernetes objects (raw JSON dicts) → contributions per unit.

Pure: no I/O, no clock, no globals. One object in, one `Translation` out: the contributions the object
makes to each unit (see `shardgate.model`), plus the reasons for anything that was left out. Bad input
never raises. The watcher logs the reasons with the object's key and reports them as Kubernetes Events.

What a problem rejects, in an Ingress (the smallest unit that still means what the user wrote):

- the whole Ingress: a malformed spec, an invalid or refused annotation (annotations apply to every
  host), more hosts than `Limits.max_hosts_per_ingress`;
- one host of it: an invalid path, regex, backend or port in any of that host's rules, or more paths
  than `Limits.max_paths_per_host`. Admitting the host's other paths would send the broken path's
  traffic to whatever shorter prefix matches instead — a silent misroute — so the host is left out;
- one rule: an invalid host name (there is no host to attach it to);
- one TLS entry: an invalid secret name or TLS host.

Rules without a host and `spec.defaultBackend` contribute to the catch-all unit
(`keys.host_unit(model.CATCH_ALL_HOST)`), the second as `HostRoutes.default_backend`.

Which Ingresses are ours: `spec.ingressClassName` (or the legacy `kubernetes.io/ingress.class`
annotation) equal to the configured class; an Ingress naming no class at all only when an IngressClass
marked `ingressclass.kubernetes.io/is-default-class: "true"` names our controller. `IngressClasses`
keeps the little the watcher needs to know about IngressClass objects to decide that.

The watcher keeps the contributions of every Ingress for as long as it exists, so the strings that repeat
across objects — namespaces, Service and port names, paths, creation times, Secret names — are
`sys.intern`ed: one copy per distinct value instead of one per object parsed from JSON; and the caller may
pass `share` (`shared.Shared.share`) to get one instance of each equal backend, path rule and list of path
rules. Neither changes a value, only how many copies of it exist.
"""

from __future__ import annotations

import base64
import binascii
import sys
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

from shardgate import keys
from shardgate.keys import SourceKind
from shardgate.model import (
    CATCH_ALL_HOST,
    Backend,
    Contribution,
    EndpointPort,
    EndpointSliceSpec,
    HostRoutes,
    PathRule,
    PathType,
    ServicePort,
    ServiceSpec,
    TlsCertificate,
)

from . import validate
from .annotations import DEFAULT_MAX_TIMEOUT_S, DEFAULT_MAX_VALUE_BYTES, capture_refs, parse_annotations
from .certs import check_certificate_expiry, epoch_ns
from .shared import Share

Obj = dict[str, Any]
_T = TypeVar("_T", bound=Hashable)

DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TLS_SECRET_TYPE = "kubernetes.io/tls"

_PATH_TYPES = {str(p): p for p in PathType}
_IP_FAMILIES = ("IPv4", "IPv6")


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one Ingress may ask for (see `Settings` for each default's reason)."""

    max_hosts_per_ingress: int = 100
    max_paths_per_host: int = 100
    max_annotation_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    max_path_length: int = validate.DEFAULT_MAX_PATH_LENGTH
    regex_max_program_size: int = validate.DEFAULT_REGEX_PROGRAM_SIZE
    max_timeout_s: int = DEFAULT_MAX_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class ClassPolicy:
    """The configured class and controller an Ingress must belong to."""

    ingress_class: str = "shardgate"
    controller: str = "shardgate.io/ingress-controller"


class IngressClasses:
    """IngressClass name → (controller, is default): enough to admit Ingresses that name no class."""

    def __init__(self) -> None:
        self._classes: dict[str, tuple[str, bool]] = {}

    def apply(self, event_type: str, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not isinstance(name, str):
            return
        if event_type == "DELETED":
            self._classes.pop(name, None)
            return
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        annotations = meta.get("annotations") or {}
        is_default = str(annotations.get(DEFAULT_CLASS_ANNOTATION, "")).lower() == "true"
        self._classes[name] = (str((spec or {}).get("controller", "")), is_default)

    def replace(self, objs: list[Obj]) -> None:
        self._classes.clear()
        for obj in objs:
            self.apply("ADDED", obj)

    def default_for(self, controller: str) -> bool:
        """True when some IngressClass is the cluster default and belongs to `controller`."""
        return any(ctrl == controller and default for ctrl, default in self._classes.values())


@dataclass(slots=True)
class Translation:
    """What one object contributes, and why anything was left out.

    `source` is "" only when the object is too malformed to have a key. `admitted` is for Ingresses:
    ours and contributing to at least one host (the watcher writes their status). `classless` marks an
    Ingress whose admission depends on the default IngressClass, so it must be re-translated when
    that changes.
    """

    source: str
    rv: str
    contributions: dict[str, Contribution] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    admitted: bool = False
    ours: bool = False
    classless: bool = False
    claims: frozenset[str] = frozenset()  # hosts an Ingress of ours names, valid or not: host ownership
    sharing: frozenset[str] = frozenset()  # namespaces this Ingress lets share its hosts
    created: str = ""
    ignored: tuple[str, ...] = ()  # unsupported annotations, logged (not reported as Events)
    expires_ns: int = 0  # a usable TLS certificate's notAfter (epoch ns): check it again then


def _meta(obj: Obj) -> tuple[str, str, str] | None:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return None
    name, namespace = meta.get("name"), meta.get("namespace")
    if validate.object_key_error(namespace, name) is not None:
        return None
    return sys.intern(str(namespace)), str(name), str(meta.get("resourceVersion", ""))


def _keyless(kind: str) -> Translation:
    return Translation("", "", reasons=[f"{kind} without a valid metadata.name/namespace"])


def ingress_class_of(obj: Obj) -> str | None:
    spec = obj.get("spec")
    if isinstance(spec, dict) and isinstance(spec.get("ingressClassName"), str):
        return str(spec["ingressClassName"])
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    legacy = annotations.get(LEGACY_CLASS_ANNOTATION) if isinstance(annotations, dict) else None
    return legacy if isinstance(legacy, str) else None


def valid_host(host: Any) -> bool:
    return isinstance(host, str) and validate.host_error(host.lower()) is None


def _backend(raw: Any) -> Backend | str:
    """A Service backend, or the reason it is unusable."""
    if not isinstance(raw, dict):
        return "backend is not an object"
    if "resource" in raw:
        return "resource backends are not supported: use a Service backend"
    service = raw.get("service")
    if not isinstance(service, dict):
        return "backend has no service"
    name = service.get("name")
    if (why := validate.service_name_error(name)) is not None:
        return f"backend: {why}"
    port = service.get("port")
    if not isinstance(port, dict):
        return f"backend service {name} has no port"
    number, port_name = port.get("number"), port.get("name")
    if number is not None and port_name is not None:
        return f"backend service {name} has both a port number and a port name"
    if number is not None:
        if (why := validate.port_number_error(number)) is not None:
            return f"backend service {name}: {why}"
        return Backend(sys.intern(str(name)), number)
    if port_name is not None:
        if (why := validate.port_name_error(port_name)) is not None:
            return f"backend service {name}: {why}"
        return Backend(sys.intern(str(name)), sys.intern(str(port_name)))
    return f"backend service {name} has neither port number nor port name"


@dataclass(frozen=True, slots=True)
class _PathCheck:
    limits: Limits
    regex: bool  # use-regex: Prefix and ImplementationSpecific paths are RE2 patterns
    captures: int  # the highest $N the rewrite target refers to
    share: Share  # one instance per equal value (see the module's docstring)


def _unshared(value: _T, /) -> _T:
    return value


def _paths(rule: Obj, where: str, check: _PathCheck) -> tuple[list[PathRule], list[str]]:
    """A rule's paths, or the reasons the rule cannot be admitted (then the whole host is left out)."""
    http = rule.get("http")
    if not isinstance(http, dict) or not isinstance(http.get("paths"), list) or not http["paths"]:
        return [], [f"{where}: no http paths"]
    out: list[PathRule] = []
    errors: list[str] = []
    for i, raw in enumerate(http["paths"]):
        at = f"{where} path[{i}]"
        if not isinstance(raw, dict):
            errors.append(f"{at}: not an object")
            continue
        ptype = _PATH_TYPES.get(raw.get("pathType") or str(PathType.IMPLEMENTATION_SPECIFIC))
        if ptype is None:
            errors.append(f"{at}: unknown pathType {raw.get('pathType')!r}")
            continue
        path = raw.get("path", "/")
        if check.regex and ptype is not PathType.EXACT:
            why, groups = validate.regex_error(
                path, check.limits.max_path_length, check.limits.regex_max_program_size
            )
            if why is None and check.captures > groups:
                why = (
                    f"rewrite-target refers to ${check.captures} but regex path {path!r} has {groups} groups"
                )
        else:
            why = validate.path_error(path, ptype is not PathType.IMPLEMENTATION_SPECIFIC,
                                      check.limits.max_path_length)  # fmt: skip
        if why is not None:
            errors.append(f"{at}: {why}")
            continue
        backend = _backend(raw.get("backend"))
        if isinstance(backend, str):
            errors.append(f"{at}: {backend}")
            continue
        out.append(check.share(PathRule(sys.intern(path), ptype, check.share(backend))))
    return out, errors


def _tls_secrets(spec: Obj, reasons: list[str]) -> dict[str, str]:
    """host (lower-case) → secretName; the first TLS entry naming a host wins."""
    out: dict[str, str] = {}
    tls = spec.get("tls") or []
    if not isinstance(tls, list):
        reasons.append("spec.tls is not a list")
        return out
    for i, entry in enumerate(tls):
        if not isinstance(entry, dict):
            reasons.append(f"tls[{i}]: not an object")
            continue
        secret = entry.get("secretName")
        if (why := validate.secret_name_error(secret)) is not None:
            reasons.append(f"tls[{i}]: {why}")
            continue
        hosts = entry.get("hosts") or []
        for host in hosts if isinstance(hosts, list) else []:
            if not isinstance(host, str) or (why := validate.host_error(host.lower())) is not None:
                reasons.append(f"tls[{i}]: {why or 'host is not a string'}")
                continue
            out.setdefault(host.lower(), sys.intern(str(secret)))
    return out


def translate_ingress(
    obj: Obj,
    policy: ClassPolicy,
    classes: IngressClasses,
    limits: Limits | None = None,
    share: Share = _unshared,
) -> Translation:
    """An Ingress → HostRoutes per host it names (and the catch-all), if the Ingress is ours."""
    limits = limits or Limits()
    key = _meta(obj)
    if key is None:
        return _keyless("Ingress")
    namespace, name, rv = key
    t = Translation(keys.source_key(SourceKind.INGRESS, namespace, name), rv)
    cls = ingress_class_of(obj)
    t.classless = cls is None
    t.ours = cls == policy.ingress_class if cls is not None else classes.default_for(policy.controller)
    if not t.ours:
        return t
    meta = obj["metadata"]
    t.created = sys.intern(str(meta.get("creationTimestamp") or ""))
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        t.reasons.append("spec is not an object")
        return t
    rules = spec.get("rules") or []
    if not isinstance(rules, list):
        t.reasons.append("spec.rules is not a list")
        return t
    parsed = parse_annotations(
        meta.get("annotations"), limits.max_annotation_value_bytes, limits.max_timeout_s,
        limits.max_path_length,
    )  # fmt: skip
    options = parsed.options
    t.sharing, t.ignored = parsed.sharing, tuple(parsed.ignored)
    captures = capture_refs(options.rewrite_target or "")
    if captures and not options.use_regex:
        if "nginx.ingress.kubernetes.io/use-regex" in (meta.get("annotations") or {}):
            parsed.errors.append("rewrite-target refers to capture groups but use-regex is false")
        else:
            options = replace(options, use_regex=True)  # as in nginx: capture groups imply regex paths
    check = _PathCheck(limits, options.use_regex, captures, share)

    paths_by_host: dict[str, list[PathRule]] = {}
    bad_hosts: dict[str, list[str]] = {}
    for i, rule in enumerate(rules):
        where = f"rule[{i}]"
        if not isinstance(rule, dict):
            t.reasons.append(f"{where}: not an object")
            continue
        host = rule.get("host")
        if host is None or host == "":
            host = CATCH_ALL_HOST
        elif not isinstance(host, str) or (why := validate.host_error(host.lower())) is not None:
            t.reasons.append(f"{where}: {why if isinstance(host, str) else 'host is not a string'}")
            continue
        host = host.lower()
        paths, errors = _paths(rule, f"{where} ({host})", check)
        paths_by_host.setdefault(host, []).extend(paths)
        if errors:
            bad_hosts.setdefault(host, []).extend(errors)

    default: Backend | None = None
    if spec.get("defaultBackend") is not None:
        backend = _backend(spec.get("defaultBackend"))
        paths_by_host.setdefault(CATCH_ALL_HOST, [])
        if isinstance(backend, str):
            bad_hosts.setdefault(CATCH_ALL_HOST, []).append(f"defaultBackend: {backend}")
        else:
            default = backend
    t.claims = frozenset(paths_by_host)
    tls = _tls_secrets(spec, t.reasons)

    if len(paths_by_host) > limits.max_hosts_per_ingress:
        parsed.errors.append(
            f"{len(paths_by_host)} hosts: more than the limit of {limits.max_hosts_per_ingress}"
        )
        t.claims = frozenset()  # nor may it squat them: the limit bounds what one object can hold
    if parsed.errors:
        t.reasons[:0] = [*parsed.errors, "Ingress not admitted"]
        return t
    for host, paths in paths_by_host.items():
        if len(paths) > limits.max_paths_per_host:
            bad_hosts.setdefault(host, []).append(
                f"{host}: {len(paths)} paths, more than the limit of {limits.max_paths_per_host}"
            )
        if host in bad_hosts:
            t.reasons.extend(bad_hosts[host])
            t.reasons.append(f"host {host} not admitted")
            continue
        t.contributions[keys.host_unit(host)] = HostRoutes(
            namespace=namespace,
            ingress=name,
            created=t.created,
            paths=share(tuple(paths)),
            tls_secret=tls.get(host) if host != CATCH_ALL_HOST else None,
            options=options,
            default_backend=default if host == CATCH_ALL_HOST else None,
        )
    t.admitted = bool(t.contributions)
    return t


def ingress_fingerprint(obj: Obj) -> int | None:
    """A hash of what `translate_ingress` reads of an Ingress besides its key and resourceVersion: its
    spec, annotations and creationTimestamp. Equal fingerprints (same key, same IngressClasses) translate
    alike, so an update that changes none of them — a status write, our own coming back among them, or a
    label — need not be translated again. None when there is no fingerprint: translate.

    The spec stands in as (uid, generation): the API server bumps `metadata.generation` on every change
    of an Ingress's spec and never otherwise, and a re-created Ingress has a new uid. Hashing those costs
    a microsecond; the spec itself (json.dumps) cost ~15 µs, as much as translating a small Ingress."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not meta.get("uid") or not meta.get("generation"):
        return None
    try:
        return hash(
            (meta["uid"], meta["generation"], meta.get("creationTimestamp"), repr(meta.get("annotations")))
        )
    except TypeError:  # a malformed (unhashable) uid or generation
        return None


def translate_service(obj: Obj) -> Translation:
    key = _meta(obj)
    if key is None:
        return _keyless("Service")
    namespace, name, rv = key
    t = Translation(keys.source_key(SourceKind.SERVICE, namespace, name), rv)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        t.reasons.append("spec is not an object")
        return t
    ports: list[ServicePort] = []
    for i, raw in enumerate(spec.get("ports") or []):
        if not isinstance(raw, dict) or not _is_port(raw.get("port")):
            t.reasons.append(f"port[{i}]: no valid port number")
            continue
        target: int | str = raw["port"]
        if _is_port(raw.get("targetPort")) or (isinstance(raw.get("targetPort"), str) and raw["targetPort"]):
            target = raw["targetPort"]
        port_name = raw.get("name") or ""
        ports.append(ServicePort(str(port_name), raw["port"], target, str(raw.get("protocol") or "TCP")))
    t.contributions[keys.service_unit(namespace, name)] = ServiceSpec(tuple(ports))
    return t


def translate_endpoint_slice(obj: Obj) -> Translation:
    """An EndpointSlice → its service unit's ready IP endpoints; FQDN slices are not for us."""
    key = _meta(obj)
    if key is None:
        return _keyless("EndpointSlice")
    namespace, name, rv = key
    t = Translation(keys.source_key(SourceKind.ENDPOINTSLICE, namespace, name), rv)
    labels = (obj.get("metadata") or {}).get("labels") or {}
    service = labels.get(SERVICE_NAME_LABEL) if isinstance(labels, dict) else None
    if not isinstance(service, str) or not service:
        t.reasons.append(f"no {SERVICE_NAME_LABEL} label")
        return t
    if obj.get("addressType") not in _IP_FAMILIES:
        t.reasons.append(f"addressType {obj.get('addressType')!r} is not IPv4/IPv6")
        return t
    ports: list[EndpointPort] = []
    for i, raw in enumerate(obj.get("ports") or []):
        if not isinstance(raw, dict) or not _is_port(raw.get("port")):
            t.reasons.append(f"port[{i}]: no valid port number")
            continue
        ports.append(EndpointPort(str(raw.get("name") or ""), raw["port"], str(raw.get("protocol") or "TCP")))
    addresses: set[str] = set()
    for raw in obj.get("endpoints") or []:
        if not isinstance(raw, dict):
            continue
        conditions = raw.get("conditions") or {}
        if isinstance(conditions, dict) and conditions.get("ready") is False:
            continue
        addresses.update(a for a in raw.get("addresses") or [] if isinstance(a, str) and a)
    t.contributions[keys.service_unit(namespace, service)] = EndpointSliceSpec(
        tuple(sorted(ports, key=lambda p: (p.name, p.port))), tuple(sorted(addresses))
    )
    return t


def translate_secret(obj: Obj, now: datetime) -> Translation:
    """A `kubernetes.io/tls` Secret → its certificate, checked at `now` (when it was observed).

    A broken TLS Secret still contributes — a `TlsCertificate` carrying only the error — so the hosts
    that use it are reported instead of silently losing their certificate. Other Secrets contribute
    nothing, silently.
    """
    key = _meta(obj)
    if key is None:
        return _keyless("Secret")
    namespace, name, rv = key
    t = Translation(keys.source_key(SourceKind.SECRET, namespace, name), rv)
    if obj.get("type") != TLS_SECRET_TYPE:
        return t
    data = obj.get("data") or {}
    cert: TlsCertificate
    if not isinstance(data, dict):
        cert = TlsCertificate(b"", b"", error="data is not an object")
    else:
        try:
            crt = base64.b64decode(data.get("tls.crt") or "", validate=True)
            key_pem = base64.b64decode(data.get("tls.key") or "", validate=True)
        except (binascii.Error, TypeError, ValueError):
            cert = TlsCertificate(b"", b"", error="tls.crt or tls.key is not valid base64")
        else:
            if not crt or not key_pem:
                cert = TlsCertificate(b"", b"", error="tls.crt or tls.key is missing")
            else:
                cert, expires = check_certificate_expiry(crt, key_pem, now)
                t.expires_ns = epoch_ns(expires) if expires is not None else 0
    if cert.error:
        t.reasons.append(f"certificate not usable: {cert.error}")
    t.contributions[keys.secret_unit(namespace, name)] = cert
    return t


def _is_port(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def load_balancer_ingress(obj: Obj) -> list[Obj]:
    """The Ingress's current `status.loadBalancer.ingress` (empty when unset)."""
    status = obj.get("status")
    lb = status.get("loadBalancer") if isinstance(status, dict) else None
    current = lb.get("ingress") if isinstance(lb, dict) else None
    return current if isinstance(current, list) else []
