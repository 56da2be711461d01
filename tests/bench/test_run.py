"""The benchmark runs end to end in a tiny mode: every approach serves its new hosts and the page is written.

Behaviour only: the figures are not asserted (timings on a shared 2-core machine say nothing here), only
that each approach loaded its hosts, served every new and edited host, and that the report shows them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shardgate.local.servers import REPO_ROOT

pytestmark = pytest.mark.integration


def test_tiny_run_measures_every_approach_and_writes_the_page(tmp_path: Path) -> None:
    approaches = ["scoped", "whole-table"] + (["nginx-reload"] if shutil.which("nginx") else [])
    subprocess.run(
        [sys.executable, "-m", "bench.run", "--sizes", "20,40", "--adds", "2", "--edits", "1",
         "--reloads", "2", "--approaches", ",".join(approaches), "--nginx-max-n", "30",
         "--pipeline-sizes", "20", "--burst", "4", "--quick",
         "--out", str(tmp_path / "results"), "--docs", str(tmp_path)],
        cwd=REPO_ROOT, check=True, timeout=480,
    )  # fmt: skip
    (result_file,) = (tmp_path / "results").glob("2*.json")
    run = json.loads(result_file.read_text())
    assert run["command"].startswith(".venv/bin/python -m bench.run --sizes 20,40")
    got = {(r["approach"], r["n"]): r for r in run["results"]}
    assert set(got) == {(a, n) for a in approaches for n in (20, 40)}
    if "nginx-reload" in approaches:
        assert "--nginx-max-n 30" in got.pop(("nginx-reload", 40))["skipped"]
    for (approach, _), result in got.items():
        assert "error" not in result and "skipped" not in result, result
        assert result["add"]["n"] == 2
        assert result["edit"]["n"] == 1
        assert len(result["add_ms"]) == 2
        assert result["rss_loaded_mb"] > 0
        if approach != "nginx-reload":
            assert result["first_add_ms"] > 0
    page = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| 40 |" in page and "[a]" in page
    assert "What is NOT measured yet" in page
    assert "push → Envoy's ACK" in page  # the per-stage split from the pusher's envoy.ack spans
    if "nginx-reload" in approaches:
        assert "nginx reload at N = 40 [a]: skipped" in page
    assert (tmp_path / "benchmarks-activation.png").stat().st_size > 0
    # The same command ran the whole pipeline, in a process of its own, and the page shows it.
    (pipeline_file,) = (tmp_path / "results").glob("pipeline-*.json")
    pipeline = json.loads(pipeline_file.read_text())
    assert "error" not in pipeline, pipeline.get("error")
    assert pipeline["command"].endswith(f"-n 20 --adds 2 --burst 4 --out {tmp_path / 'results'}")
    assert pipeline["result"]["activation"]["add"]["n"] == 2 and pipeline["result"]["burst"]["count"] == 4
    one_at_a_time = page.split("### A new Ingress, one at a time")[1].split("###")[0]
    assert any(line.startswith("| 20 | ") and "(2)" in line for line in one_at_a_time.splitlines())
    assert "### Targets" in page


def test_whole_table_is_a_valid_route_configuration() -> None:
    from envoy.config.route.v3 import route_pb2

    sys.path.insert(0, str(REPO_ROOT))
    from bench import common
    from bench.layout import TABLE_NAME, WholeTable

    table = WholeTable()
    for i in range(3):
        table.put(common.host_routes(i, common.host_name(i)), common.host_name(i))
    table.put(common.host_routes(0, common.host_name(0), edited=True), common.host_name(0))
    (resource,) = table.fragment().resources
    config = route_pb2.RouteConfiguration.FromString(resource.body)
    assert config.name == TABLE_NAME
    assert [v.domains[0] for v in config.virtual_hosts] == [common.host_name(i) for i in range(3)]
    assert [len(v.routes) for v in config.virtual_hosts] == [5, 4, 4]
