"""The pusher's Prometheus metrics, in one place so every label set is declared once.

`type` labels carry the short type name (`Cluster`, `ScopedRouteConfiguration`): the type URL prefix
is noise on a dashboard.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

NACKS = Counter("shardgate_pusher_nacks", "Responses Envoy rejected (NACK), by type", ["type"])
PUSHES = Counter("shardgate_pusher_pushes", "Responses sent to Envoys", ["protocol", "type"])
PUSHED_RESOURCES = Counter(
    "shardgate_pusher_pushed_resources", "Resources (and removals) sent to Envoys", ["protocol", "type"]
)
ACKED_RESOURCES = Counter(
    "shardgate_pusher_acked_resources",
    "Resources (and removals) in responses Envoy ACKed, by type: pushed minus ACKed is what is in flight",
    ["type"],
)
STREAMS = Gauge("shardgate_pusher_streams", "Open ADS streams", ["protocol"])
NAME_CLASHES = Counter(
    "shardgate_pusher_name_clashes", "A unit's resource refused because another unit owns the name", ["type"]
)


def short_type(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1]


SNI_ANSWERS = Counter(
    "shardgate_pusher_sni_answers",
    "Certificates looked up by SNI, by outcome (served, no_host, no_secret, broken)",
    ["outcome"],
)
SNI_EVICTIONS = Counter(
    "shardgate_pusher_sni_evictions",
    "SNIs answered through a wildcard host that a stream evicted from its gateway (per-stream cap)",
)
