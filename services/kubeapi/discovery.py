"""Discovery documents, derived from the kind table: what kubectl reads to map ``ing`` to a URL.

kubectl first asks /api and /apis for aggregated discovery (apidiscovery.k8s.io/v2) and accepts
the plain APIVersions/APIGroupList answered here (it reads the Content-Type), then fetches the
APIResourceList of each group version.
"""

from __future__ import annotations

from typing import Any

from shardgate.kubeapi.kinds import VERBS, KindTable

GIT_VERSION = "v1.37.0-shardgate"


def version() -> dict[str, Any]:
    return {
        "major": "1",
        "minor": "37",
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def api_versions(kinds: KindTable) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": kinds.group_versions().get("", []),
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(kinds: KindTable) -> dict[str, Any]:
    groups = [_group(g, vs) for g, vs in kinds.group_versions().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(kinds: KindTable, group: str) -> dict[str, Any] | None:
    versions = kinds.group_versions().get(group)
    if not group or not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(group, versions)}


def resource_list(kinds: KindTable, group: str, version: str) -> dict[str, Any] | None:
    served = kinds.in_group_version(group, version)
    if not served:
        return None
    resources: list[dict[str, Any]] = []
    for k in served:
        entry: dict[str, Any] = {
            "name": k.plural,
            "singularName": k.singular_name,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": list(VERBS),
        }
        if k.short_names:
            entry["shortNames"] = list(k.short_names)
        resources.append(entry)
        if k.has_status:
            resources.append(
                {
                    "name": f"{k.plural}/status",
                    "singularName": "",
                    "namespaced": k.namespaced,
                    "kind": k.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }
