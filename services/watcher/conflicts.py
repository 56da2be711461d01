"""What the merge will leave out of a host, worded for the Ingress that loses.

Conflicts inside one namespace (same host, path and type) are decided by the merge — oldest Ingress
wins, then name — in the compiler. The watcher holds the same contributions, so it runs the same pure
`merge_host` over them to tell the losers with an Event, without waiting for the compiler to answer.
"""

from __future__ import annotations

from collections.abc import Mapping

from shardgate.keys import split_source, unit_name
from shardgate.merge import merge_host
from shardgate.model import HostRoutes


def _ingress(source: str) -> str:
    _, namespace, name = split_source(source)
    return f"{namespace}/{name}"


def conflict_reasons(unit: str, contributions: Mapping[str, HostRoutes]) -> dict[str, list[str]]:
    """source → why parts of its contribution to the host `unit` are not used (only losers appear)."""
    config = merge_host(unit, contributions)
    out: dict[str, list[str]] = {}
    if config is None:
        return out
    host = unit_name(unit)
    for c in config.conflicts:
        out.setdefault(c.source, []).append(
            f"{host}: {c.path_type} path {c.path} is already routed by the older Ingress "
            f"{_ingress(c.winner)}; this rule is not used"
        )
    for i in config.ignored:
        out.setdefault(i.source, []).append(f"{host}: {i.path_type} path {i.path}: {i.reason}")
    return out
