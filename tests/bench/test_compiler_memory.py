"""The compiler memory benchmark at a tiny N: real servers, two real compilers, every figure reported.
No figure is asserted: they say nothing at N = 20."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import compiler_memory as cm  # noqa: E402

BACKENDS = 2 * 4 * 100  # a Service and an EndpointSlice for each of 4 services in 100 namespaces
WILDCARDS = 100  # the platform wildcard Secret in every namespace


def test_two_compilers_load_the_corpus_and_report(tmp_path: Path) -> None:
    r = cm.main(["-n", "20", "--shards", "8", "--out", str(tmp_path / "r.json")])
    corpus = r["corpus"]
    assert corpus["tls_secrets"] == 4 + WILDCARDS
    assert corpus["deltas"] == 20 + 4 + WILDCARDS + BACKENDS == corpus["sources"]
    (variant,) = r["variants"]
    compilers = variant["compilers"]
    assert len(compilers) == 2 and sum(c["shards"] for c in compilers) == 8
    assert sum(c["units"] for c in compilers) == corpus["units"]
    assert sum(c["deltas"] for c in compilers) == corpus["deltas"]
    for c in compilers:
        held = {name for name, _, _ in c["structures"]}
        assert {"_contributions h:", "_hashes h:"} <= held
        assert c["rss_loaded_mb"] > 0 and c["cpu_us_per_delta"] > 0
    assert (tmp_path / "r.json").exists()
    assert "B/unit" in cm.report(r)
