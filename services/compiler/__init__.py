"""The compiler: sharded workers that turn per-unit deltas into fragments in Redis."""
