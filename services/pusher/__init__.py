"""The pusher: relays compiled fragments to gateway Envoys over ADS (Delta first, SotW for compatibility).

- `cache`: fragments by unit, resources by (type URL, name); tells streams which names changed.
- `stream`: one ADS stream's loop (read requests, collapse changes, push in order).
- `delta` / `sotw`: the two protocols' per-stream state and responses.
- `nonces` / `acks`: what each nonce carried; ACK spans end a change's trace, NACKs are reported.
- `server`: the gRPC edge (`serve_ads`). `follower`: keeps the cache equal to Redis. `main`: wiring.
"""
