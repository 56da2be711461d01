"""One command for the activation benchmarks: every approach at every N, in one run, then the docs.

For each N it measures, one after the other on the same machine: shardgate's xDS layout and the
whole-table xDS baseline in real Envoy (`bench.layout`), and the reload-based baseline in nginx
(`bench.nginx_reload`); then, for each N, shardgate through the whole pipeline (`bench.pipeline`, in a
process of its own: the local stack, activation, a burst, the handshake rates, cold starts, memory; at
the largest N of a full run with py-spy on our services during the burst). The raw results go to
`bench/results/<timestamp>.json` and `bench/results/pipeline-<timestamp>.json`; `docs/BENCHMARKS.md`
and `docs/benchmarks-activation.png` are regenerated from all of them (`bench.report`).

    .venv/bin/python -m bench.run --quick     # N = 1k, 5k: a few minutes
    .venv/bin/python -m bench.run             # N = 1k, 10k, 100k: ~12 min on a fast 2-core machine

The pipeline runs the working tree's code (the run records its commit, and whether `libs/` or `services/`
had changes); to measure one commit while the tree changes, put a `bench.snapshot` of it on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import common, layout, nginx_reload, report
from shardgate.local.servers import REPO_ROOT, envoy_binary

APPROACHES = ("scoped", "whole-table", "nginx-reload")
RESULTS_DIR = REPO_ROOT / "bench" / "results"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N = 1k, 5k with fewer samples")
    parser.add_argument("--sizes", help="comma-separated N, e.g. 1000,10000 (overrides the mode's)")
    parser.add_argument("--adds", type=int, help="new hosts timed per Envoy layout and N")
    parser.add_argument("--edits", type=int, help="edits timed per Envoy layout and N")
    parser.add_argument(
        "--reloads", type=int, help="new hosts timed in nginx per N (plus half as many edits)"
    )
    parser.add_argument(
        "--approaches", default=",".join(APPROACHES), help="subset of " + ",".join(APPROACHES)
    )
    parser.add_argument(
        "--nginx-max-n",
        type=int,
        default=20000,
        help="skip nginx above this N (0: no limit); its memory grows ~linearly with N: peak 2.3 GB RSS "
        "/ 1.3 GB PSS at 10k here, so 100k needs a machine to itself (default 20000)",
    )
    parser.add_argument(
        "--no-pipeline", dest="pipeline", action="store_false", help="skip the whole-pipeline runs"
    )
    parser.add_argument(
        "--pipeline-sizes", help="comma-separated N for the whole pipeline (default: the sizes)"
    )
    parser.add_argument(
        "--burst",
        type=int,
        help="new Ingresses in each pipeline run's burst (default: N up to 10,000; --quick: up to 1,000)",
    )
    parser.add_argument("--no-docs", action="store_true", help="write the JSON only")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the result JSON")
    parser.add_argument(
        "--docs", type=Path, default=report.DOC.parent, help="directory for the page and plot"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([1000, 5000] if quick else [1000, 10000, 100000])
    )
    args.adds = args.adds if args.adds is not None else (20 if quick else 50)
    args.edits = args.edits if args.edits is not None else (10 if quick else 20)
    args.reloads = args.reloads if args.reloads is not None else (10 if quick else 20)
    args.pipeline_sizes = (
        [int(s) for s in args.pipeline_sizes.split(",")] if args.pipeline_sizes else list(args.sizes)
    )
    args.approaches = [a for a in args.approaches.split(",") if a]
    unknown = set(args.approaches) - set(APPROACHES)
    if unknown:
        parser.error(f"unknown approaches: {sorted(unknown)}")
    return args


def measure_one(approach: str, n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if approach == "nginx-reload":
        return asyncio.run(nginx_reload.measure(n, args.reloads, max(1, args.reloads // 2), workdir))
    return asyncio.run(layout.measure(approach, n, args.adds, args.edits, workdir))


def pipeline_argv(n: int, args: argparse.Namespace, profile: bool) -> list[str]:
    """The `bench.pipeline` arguments for the run at `n`."""
    burst = args.burst if args.burst is not None else min(n, 1000 if args.quick else 10000)
    argv = ["-n", str(n), "--adds", str(args.adds), "--burst", str(burst)]
    if profile:
        argv.append("--profile")
    if args.out.resolve() != RESULTS_DIR.resolve():
        argv += ["--out", str(args.out)]
    return argv


def run_pipelines(args: argparse.Namespace) -> list[Path]:
    """Each pipeline run in a process of its own, one after the other; the result files they wrote (a
    run that failed still writes what it measured, and the others go on)."""
    py_spy = Path(sys.executable).parent / "py-spy"
    largest = max(args.pipeline_sizes, default=0)
    written: list[Path] = []
    for n in args.pipeline_sizes:
        profile = not args.quick and n == largest and py_spy.exists()
        argv = pipeline_argv(n, args, profile)
        print(f"[bench] pipeline N={n}: bench.pipeline {' '.join(argv)}", file=sys.stderr, flush=True)
        before = set(args.out.glob("pipeline-*.json"))
        done = subprocess.run([sys.executable, "-m", "bench.pipeline", *argv], cwd=REPO_ROOT)
        new = sorted(set(args.out.glob("pipeline-*.json")) - before)
        if done.returncode != 0:
            print(f"[bench] pipeline N={n} failed (exit {done.returncode})", file=sys.stderr, flush=True)
        written += new
    return written


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    run: dict[str, Any] = {
        "command": ".venv/bin/python -m bench.run" + "".join(" " + shlex.quote(a) for a in argv),
        "started": started.isoformat(timespec="seconds"),
        "machine": common.machine_info(),
        "versions": {
            "envoy": common.tool_version([envoy_binary(), "--version"]),
            "nginx": common.tool_version([shutil.which("nginx") or "/usr/sbin/nginx", "-v"]),
        },
        "settings": {
            "sizes": args.sizes,
            "adds": args.adds,
            "edits": args.edits,
            "reloads": args.reloads,
            "nginx_max_n": args.nginx_max_n,
        },
        "results": [],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as tmp:
        for n in args.sizes:
            for approach in args.approaches:
                print(f"[bench] {approach} N={n} ...", file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                if approach == "nginx-reload" and 0 < args.nginx_max_n < n:
                    reason = f"skipped: N above --nginx-max-n {args.nginx_max_n} (memory on a shared machine)"
                    run["results"].append({"approach": approach, "n": n, "skipped": reason})
                    print(f"[bench] {approach} N={n}: {reason}", file=sys.stderr, flush=True)
                    continue
                try:
                    result = measure_one(approach, n, args, Path(tmp))
                except Exception as exc:  # one failed approach must not lose the others' figures
                    traceback.print_exc()
                    result = {"approach": approach, "n": n, "error": f"{type(exc).__name__}: {exc}"}
                result["wall_s"] = round(time.perf_counter() - t0, 1)
                run["results"].append(result)
                brief = {
                    k: result.get(k)
                    for k in ("add", "edit", "rss_loaded_mb", "load_s", "error")
                    if k in result
                }
                print(f"[bench] {approach} N={n}: {json.dumps(brief)}", file=sys.stderr, flush=True)
                out.write_text(json.dumps(run, indent=1))  # keep what is done if a later size fails
    run["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    run["machine"]["loadavg_end"] = common.machine_info()["loadavg"]
    out.write_text(json.dumps(run, indent=1))
    print(f"[bench] wrote {out}", file=sys.stderr)
    pipelines = run_pipelines(args) if args.pipeline else []
    if not args.no_docs:
        doc, plot = args.docs / report.DOC.name, args.docs / report.PLOT.name
        report.write([out.resolve(), *(p.resolve() for p in pipelines)], doc, plot)
        print(f"[bench] wrote {doc} and {plot}", file=sys.stderr)


if __name__ == "__main__":
    main()
