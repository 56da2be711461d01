"""The watcher memory benchmark at a tiny N: every figure is reported and the run is the real watcher's
(everything published, every status written). No figure is asserted: they say nothing at N = 20."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import watcher_memory as wm  # noqa: E402

BACKENDS = 2 * 4 * 100  # a Service and an EndpointSlice for each of 4 services in 100 namespaces


def test_events_then_echoes() -> None:
    r = wm.run_one(wm.Run(20, "events"))
    assert r["tls_secrets"] == 4 and r["pem_bytes"] > 0
    assert r["published"] == 20 + 4 + BACKENDS and r["status_writes"] == 20
    assert r["leadership_changes"] == 1
    assert r["rss_loaded_mb"] > 0 and r["cpu_us_per_ingress"] > 0
    assert dict(r["structures"])["caches.ingresses"] > 0
    assert "B/Ingress" in wm.report(r)


def test_a_list_with_the_heap_traced() -> None:
    r = wm.run_one(wm.Run(10, "list", tls=False, trace_malloc=True, top=3))
    assert r["tls_secrets"] == 0 and r["published"] == 10 + BACKENDS and r["status_writes"] == 10
    assert r["heap_mb"] > 0 and len(r["top"]) == 3
    assert "top sites" in wm.report(r)
