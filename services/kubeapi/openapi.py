"""Just enough OpenAPI for kubectl's default (``--validate=strict``) create and apply.

kubectl validates a manifest before sending it unless the server says it validates fields
itself. It asks /openapi/v3 (then /openapi/v2) whether the kind's PATCH operation takes a
``fieldValidation`` query parameter; if so it skips client-side schema validation and sends
``fieldValidation=Strict`` (which this stand-in accepts and ignores). So /openapi/v3 serves, per
group version, a document whose only content is one PATCH operation per kind with its
``x-kubernetes-group-version-kind`` and that parameter. There are no schemas: ``kubectl explain``
does not work, and client-side apply computes its strategic merge patch from kubectl's built-in
types instead (which it does when the OpenAPI lookup finds nothing).

/openapi/v2 is protobuf-only for kubectl; it gets an empty ``openapi_v2.Document`` (zero bytes
decode to an empty message), so a v2 fallback finds no schema and skips validation. Either
document alone is enough for kubectl 1.37; with both answering 404, ``kubectl apply``/``create``
fail with "failed to download openapi ... turn validation off with --validate=false" (measured;
``test_kubectl.py::test_without_openapi_kubectl_needs_validate_false`` keeps that true). The
response Content-Type must parse as a Go media type, so it is
``...spec.v2.v1.0+protobuf``, not the ``@v1.0`` spelling kubectl puts in Accept.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from shardgate.kubeapi.kinds import Kind, KindTable

V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"

_PARAMS = [
    {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    for name in ("dryRun", "fieldManager", "fieldValidation", "force")
]


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _item_path(kind: Kind) -> str:
    base = "/" + _gv_path(kind.group, kind.version)
    if kind.namespaced:
        return f"{base}/namespaces/{{namespace}}/{kind.plural}/{{name}}"
    return f"{base}/{kind.plural}/{{name}}"


def group_version_doc(kinds: KindTable, group: str, version: str) -> dict[str, Any] | None:
    served = kinds.in_group_version(group, version)
    if not served:
        return None
    paths: dict[str, Any] = {}
    for k in served:
        paths[_item_path(k)] = {
            "patch": {
                "operationId": f"patch{k.kind}",
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {
                    "group": k.group,
                    "version": k.version,
                    "kind": k.kind,
                },
                "parameters": _PARAMS,
                "responses": {"200": {"description": "OK"}},
            }
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "shardgate kubeapi stand-in", "version": version},
        "paths": paths,
        "components": {"schemas": {}},
    }


def _hash(doc: dict[str, Any]) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest().upper()


def v3_root(kinds: KindTable) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for group, versions in kinds.group_versions().items():
        for version in versions:
            doc = group_version_doc(kinds, group, version)
            assert doc is not None
            path = _gv_path(group, version)
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={_hash(doc)}"}
    return {"paths": paths}
