"""``meta.k8s.io/v1`` Table responses, which is what ``kubectl get`` asks for first.

A plain List would also do (kubectl then prints NAME and AGE by itself); Tables give the columns
people expect for the kinds the gateway cares about: Ingress (CLASS, HOSTS, ADDRESS, PORTS) and
Event (LAST SEEN, TYPE, REASON, OBJECT, MESSAGE). Everything else gets NAME and AGE.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable, Iterable
from typing import Any

from shardgate.kubeapi.kinds import Kind

Cells = Callable[[dict[str, Any], float], list[Any]]


def _column(name: str, kind: str = "string", fmt: str = "", priority: int = 0) -> dict[str, Any]:
    return {"name": name, "type": kind, "format": fmt, "description": name, "priority": priority}


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def age(timestamp: str | None, now: float) -> str:
    """The real server's short duration (``5s``, ``3m``, ``2h``, ``4d``)."""
    if not timestamp:
        return "<unknown>"
    try:
        then = calendar.timegm(time.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return "<invalid>"
    seconds = max(0, int(now - then))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _ingress(obj: dict[str, Any], now: float) -> list[Any]:
    spec = obj.get("spec") or {}
    hosts = [r["host"] for r in spec.get("rules") or [] if isinstance(r, dict) and r.get("host")]
    lbs = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    address = ",".join(str(i.get("ip") or i.get("hostname") or "") for i in lbs)
    ports = "80, 443" if spec.get("tls") else "80"
    return [
        obj["metadata"]["name"],
        spec.get("ingressClassName") or "<none>",
        ",".join(hosts) or "*",
        address,
        ports,
        age(obj["metadata"].get("creationTimestamp"), now),
    ]


def _event(obj: dict[str, Any], now: float) -> list[Any]:
    involved = obj.get("involvedObject") or {}
    seen = obj.get("lastTimestamp") or obj.get("eventTime") or obj["metadata"].get("creationTimestamp")
    if isinstance(seen, str) and "." in seen:
        seen = seen.split(".")[0] + "Z"
    return [
        age(seen, now),
        obj.get("type", ""),
        obj.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        obj.get("message", ""),
        obj["metadata"]["name"],
    ]


def _generic(obj: dict[str, Any], now: float) -> list[Any]:
    return [obj["metadata"]["name"], age(obj["metadata"].get("creationTimestamp"), now)]


_COLUMNS: dict[str, tuple[list[dict[str, Any]], Cells]] = {
    "Ingress": (
        [
            _column("Name", fmt="name"),
            _column("Class"),
            _column("Hosts"),
            _column("Address"),
            _column("Ports"),
            _column("Age"),
        ],
        _ingress,
    ),
    "Event": (
        [
            _column("Last Seen"),
            _column("Type"),
            _column("Reason"),
            _column("Object"),
            _column("Message"),
            _column("Name", fmt="name", priority=1),
        ],
        _event,
    ),
}
_GENERIC = ([_column("Name", fmt="name"), _column("Age")], _generic)


def _row_object(obj: dict[str, Any], include: str) -> dict[str, Any] | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}


def table(
    kind: Kind,
    objects: Iterable[dict[str, Any]],
    *,
    resource_version: str,
    continue_token: str | None = None,
    include_object: str = "Metadata",
    now: float | None = None,
) -> dict[str, Any]:
    columns, cells = _COLUMNS.get(kind.kind, _GENERIC)
    clock = time.time() if now is None else now
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": cells(obj, clock)}
        embedded = _row_object(obj, include_object)
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    meta: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        meta["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns,
        "rows": rows,
    }
