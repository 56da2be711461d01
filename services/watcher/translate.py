"""Kubernetes objects (raw JSON dicts) → contributions per unit.

Pure: no I/O, no clock, no globals. One object in, one `Translation` out: the contributions the object
makes to each unit (see `shardgate.model`), plus the reasons for anything that was skipped. Bad input
never raises: a malformed object contributes nothing and says why, a malformed part of an Ingress (one
rule, one path) is skipped and says why, and the rest of the object still counts. The watcher logs the
reasons with the object's key and, for Ingresses, also reports them as Kubernetes Events.

Which Ingresses are ours: `spec.ingressClassName` (or the legacy `kubernetes.io/ingress.class`
annotation) equal to the configured class; an Ingress naming no class at all only when an IngressClass
marked `ingressclass.kubernetes.io/is-default-class: "true"` names our controller. `IngressClasses`
keeps the little the watcher needs to know about IngressClass objects to decide that.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

from shardgate import keys
from shardgate.keys import SourceKind
from shardgate.model import (
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

Obj = dict[str, Any]

DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TLS_SECRET_TYPE = "kubernetes.io/tls"

_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_HOST_RE = re.compile(rf"^(?:\*\.)?{_LABEL}(?:\.{_LABEL})*$")
_PATH_TYPES = {str(p): p for p in PathType}
_IP_FAMILIES = ("IPv4", "IPv6")


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


def _meta(obj: Obj) -> tuple[str, str, str] | None:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return None
    name, namespace = meta.get("name"), meta.get("namespace")
    if not isinstance(name, str) or not name or not isinstance(namespace, str) or not namespace:
        return None
    return namespace, name, str(meta.get("resourceVersion", ""))


def _keyless(kind: str) -> Translation:
    return Translation("", "", reasons=[f"{kind} without metadata.name/namespace"])


def ingress_class_of(obj: Obj) -> str | None:
    spec = obj.get("spec")
    if isinstance(spec, dict) and isinstance(spec.get("ingressClassName"), str):
        return str(spec["ingressClassName"])
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    legacy = annotations.get(LEGACY_CLASS_ANNOTATION) if isinstance(annotations, dict) else None
    return legacy if isinstance(legacy, str) else None


def valid_host(host: Any) -> bool:
    return isinstance(host, str) and len(host) <= 253 and bool(_HOST_RE.match(host.lower()))


def _backend(raw: Any) -> Backend | str:
    """A Service backend, or the reason it is unusable."""
    if not isinstance(raw, dict):
        return "backend is not an object"
    service = raw.get("service")
    if not isinstance(service, dict):
        return "backend is not a Service (resource backends are not supported)"
    name = service.get("name")
    if not isinstance(name, str) or not name:
        return "backend service has no name"
    port = service.get("port")
    if not isinstance(port, dict):
        return f"backend service {name} has no port"
    number, port_name = port.get("number"), port.get("name")
    if isinstance(number, int) and not isinstance(number, bool):
        if not 1 <= number <= 65535:
            return f"backend service {name} port {number} out of range"
        return Backend(name, number)
    if isinstance(port_name, str) and port_name:
        return Backend(name, port_name)
    return f"backend service {name} has neither port number nor port name"


def _paths(rule: Obj, where: str, reasons: list[str]) -> list[PathRule]:
    http = rule.get("http")
    if not isinstance(http, dict) or not isinstance(http.get("paths"), list):
        reasons.append(f"{where}: no http paths")
        return []
    out: list[PathRule] = []
    for i, raw in enumerate(http["paths"]):
        at = f"{where} path[{i}]"
        if not isinstance(raw, dict):
            reasons.append(f"{at}: not an object")
            continue
        path = raw.get("path", "/")
        ptype = _PATH_TYPES.get(raw.get("pathType") or str(PathType.IMPLEMENTATION_SPECIFIC))
        if ptype is None:
            reasons.append(f"{at}: unknown pathType {raw.get('pathType')!r}")
            continue
        if not isinstance(path, str) or not path.startswith("/"):
            reasons.append(f"{at}: path {path!r} must start with /")
            continue
        backend = _backend(raw.get("backend"))
        if isinstance(backend, str):
            reasons.append(f"{at}: {backend}")
            continue
        out.append(PathRule(path, ptype, backend))
    return out


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
        if not isinstance(secret, str) or not secret:
            reasons.append(f"tls[{i}]: no secretName")
            continue
        for host in entry.get("hosts") or []:
            if isinstance(host, str):
                out.setdefault(host.lower(), secret)
    return out


def translate_ingress(obj: Obj, policy: ClassPolicy, classes: IngressClasses) -> Translation:
    """An Ingress → HostRoutes per host it names, if the Ingress is ours."""
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
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        t.reasons.append("spec is not an object")
        return t
    rules = spec.get("rules") or []
    if not isinstance(rules, list):
        t.reasons.append("spec.rules is not a list")
        return t
    created = str((obj.get("metadata") or {}).get("creationTimestamp") or "")
    tls = _tls_secrets(spec, t.reasons)
    paths_by_host: dict[str, list[PathRule]] = {}
    for i, rule in enumerate(rules):
        where = f"rule[{i}]"
        if not isinstance(rule, dict):
            t.reasons.append(f"{where}: not an object")
            continue
        host = rule.get("host")
        if host is None or host == "":
            # Catch-all rules and spec.defaultBackend get their semantics in a later step.
            t.reasons.append(f"{where}: no host (catch-all rules are not supported yet)")
            continue
        if not valid_host(host):
            t.reasons.append(f"{where}: invalid host {host!r}")
            continue
        paths = _paths(rule, f"{where} ({host})", t.reasons)
        if paths:
            paths_by_host.setdefault(host.lower(), []).extend(paths)
        elif isinstance(rule.get("http"), dict):
            t.reasons.append(f"{where} ({host}): no usable path, host skipped")
    for host, paths in paths_by_host.items():
        t.contributions[keys.host_unit(host)] = HostRoutes(
            namespace=namespace, ingress=name, created=created, paths=tuple(paths), tls_secret=tls.get(host)
        )
    t.admitted = bool(t.contributions)
    return t


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


def translate_secret(obj: Obj) -> Translation:
    """A `kubernetes.io/tls` Secret → its certificate; other Secrets contribute nothing, silently."""
    key = _meta(obj)
    if key is None:
        return _keyless("Secret")
    namespace, name, rv = key
    t = Translation(keys.source_key(SourceKind.SECRET, namespace, name), rv)
    if obj.get("type") != TLS_SECRET_TYPE:
        return t
    data = obj.get("data") or {}
    if not isinstance(data, dict):
        t.reasons.append("data is not an object")
        return t
    try:
        crt = base64.b64decode(data.get("tls.crt") or "", validate=True)
        key_pem = base64.b64decode(data.get("tls.key") or "", validate=True)
    except (binascii.Error, TypeError, ValueError):
        t.reasons.append("tls.crt or tls.key is not valid base64")
        return t
    if not crt or not key_pem:
        t.reasons.append("tls.crt or tls.key is missing")
        return t
    t.contributions[keys.secret_unit(namespace, name)] = TlsCertificate(crt, key_pem)
    return t


def _is_port(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def load_balancer_ingress(obj: Obj) -> list[Obj]:
    """The Ingress's current `status.loadBalancer.ingress` (empty when unset)."""
    status = obj.get("status")
    lb = status.get("loadBalancer") if isinstance(status, dict) else None
    current = lb.get("ingress") if isinstance(lb, dict) else None
    return current if isinstance(current, list) else []
