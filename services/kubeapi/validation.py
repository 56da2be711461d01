"""The little validation every kind gets, so garbage is refused the way the real server refuses it.

Only shape is checked: the body is an object, kind/apiVersion agree with the URL, name and
namespace agree with the URL and are DNS names, labels and annotations are string maps.
No kind-specific semantics (Ingress rules and the like are the controller's business).
"""

from __future__ import annotations

import re
from typing import Any

from shardgate.kubeapi.errors import bad_request, invalid
from shardgate.kubeapi.kinds import Kind

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def check_name(kind: Kind, name: str) -> None:
    if not name:
        raise invalid(kind, name, "metadata.name", "Required value: name or generateName is required")
    if len(name) > 253 or not _SUBDOMAIN.match(name):
        raise invalid(
            kind,
            name,
            "metadata.name",
            f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case '
            "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
            "character",
        )
    if kind.kind == "Namespace" and (len(name) > 63 or not _LABEL.match(name)):
        raise invalid(kind, name, "metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 label')


def check_body(kind: Kind, body: Any, *, namespace: str | None, name: str | None = None) -> dict[str, Any]:
    """Check a create/update body against the URL; fill in kind/apiVersion/namespace if absent."""
    if not isinstance(body, dict):
        raise bad_request("the body of the request must be a JSON object")
    api_version = body.get("apiVersion")
    if api_version is not None and api_version != kind.api_version:
        raise bad_request(
            f"the API version in the data ({api_version}) does not match the expected API "
            f"version ({kind.api_version})"
        )
    obj_kind = body.get("kind")
    if obj_kind is not None and obj_kind != kind.kind:
        raise bad_request(f"the kind in the data ({obj_kind}) does not match the expected kind ({kind.kind})")
    body["apiVersion"] = kind.api_version
    body["kind"] = kind.kind
    meta = body.get("metadata")
    if meta is None:
        meta = body["metadata"] = {}
    if not isinstance(meta, dict):
        raise bad_request("metadata must be an object")
    obj_name = meta.get("name") or ""
    if not isinstance(obj_name, str):
        raise invalid(kind, str(obj_name), "metadata.name", "must be a string")
    if name is not None and obj_name != name:
        raise bad_request(f"the name of the object ({obj_name}) does not match the name on the URL ({name})")
    if kind.namespaced:
        obj_ns = meta.get("namespace")
        if obj_ns and namespace and obj_ns != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        ns = namespace or obj_ns
        if not ns:
            raise bad_request("a namespace is required for a namespaced resource")
        meta["namespace"] = ns
    else:
        meta.pop("namespace", None)
    _check_string_map(kind, obj_name, meta, "labels")
    _check_string_map(kind, obj_name, meta, "annotations")
    for section in ("spec", "status"):
        if section in body and body[section] is not None and not isinstance(body[section], dict):
            raise invalid(kind, obj_name, section, "must be an object")
    if not obj_name and not meta.get("generateName"):
        check_name(kind, "")
    if obj_name:
        check_name(kind, obj_name)
    return body


def _check_string_map(kind: Kind, name: str, meta: dict[str, Any], key: str) -> None:
    value = meta.get(key)
    if value is None:
        return
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise invalid(kind, name, f"metadata.{key}", "must be a map of string to string")
