"""The watcher: Kubernetes objects in, exact per-unit deltas on JetStream out (see service.py)."""
