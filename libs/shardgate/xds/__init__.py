"""Envoy v3 resources from shardgate's merged configurations: pure, no I/O.

- `compile`: a unit's contributions → its `Fragment` (serialized resources, content-hashed once).
- `routes`, `clusters`, `secrets`: one kind of unit each, config → proto message.
- `listeners`: the static listener the pusher serves itself (scoped routes keyed by host).
- `bootstrap`: the Envoy bootstrap that points a gateway at a pusher over ADS.
- `types`: type URLs and the push order.
"""

from shardgate.xds.compile import compile_unit

__all__ = ["compile_unit"]
