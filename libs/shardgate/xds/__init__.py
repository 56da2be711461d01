"""Envoy v3 resources from shardgate's merged configurations: pure, no I/O.

- `compile`: a unit's contributions → its `Fragment` (serialized resources, content-hashed once).
- `routes`, `clusters`, `secrets`: one kind of unit each, config → proto message; a host's scope and its
  own upstream clusters (`clusters.upstream`).
- `options`: an Ingress's annotations as route pieces; `regex`: RE2 patterns as Envoy judges them.
- `listeners`: the static listener the pusher serves itself (scoped routes keyed by host) and the
  connection manager every gateway listener shares; `filters`: its HTTP filter chain and the per-route
  configs that steer it; `wildcard`: how a request finds its scope (exact, `*.parent`, catch-all `*`).
- `bootstrap`: the Envoy bootstrap that points a gateway at a pusher over ADS.
- `types`: type URLs and the push order.
"""

from shardgate.xds.compile import compile_unit

__all__ = ["compile_unit"]
