"""`docs/BENCHMARKS.md` and `docs/benchmarks-activation.png` from one or more result files of `bench.run`.

Every figure in the page comes from a result file and is printed with the run (and so the command) that
measured it; nothing is typed in by hand. Given several files, a later file's figure for the same
approach and N replaces an earlier one, so a long run at one size can be added to a quick run:

    .venv/bin/python -m bench.report bench/results/A.json bench/results/B.json
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from shardgate.local.servers import REPO_ROOT

DOC = REPO_ROOT / "docs" / "BENCHMARKS.md"
PLOT = REPO_ROOT / "docs" / "benchmarks-activation.png"
TEMPLATE = Path(__file__).with_name("BENCHMARKS.template.md")
LABELS = {
    "scoped": "shardgate (scoped routes, one scope per host)",
    "whole-table": "whole-table xDS (one RouteConfiguration)",
    "nginx-reload": "nginx re-render + reload",
}
SHORT = {"scoped": "shardgate", "whole-table": "whole-table", "nginx-reload": "nginx reload"}
ORDER = ("scoped", "whole-table", "nginx-reload")

Cell = tuple[dict[str, Any], str]  # a result and the tag of its run
SKIPPED = "skipped"  # a result that was deliberately not measured (see `skipped`)


def load(paths: list[Path]) -> tuple[list[tuple[str, dict[str, Any], Path]], dict[tuple[str, int], Cell]]:
    """Every run, tagged a, b, c...; the cells of the `bench.run` runs (`bench.pipeline` runs, with
    `"kind": "pipeline"`, are read by `bench.report_pipeline`)."""
    runs, cells = [], {}
    for index, path in enumerate(paths):
        run = json.loads(path.read_text())
        tag = chr(ord("a") + index)
        runs.append((tag, run, path))
        for result in run.get("results", ()):
            key = (result["approach"], result["n"])
            if "error" not in result and "skipped" not in result:
                cells[key] = (result, tag)
            elif "skipped" in result and key not in cells:
                cells[key] = ({SKIPPED: result["skipped"]}, tag)
    return runs, cells


def _ms(value: float) -> str:
    return "–" if value is None or math.isnan(value) else (f"{value:.1f}" if value < 100 else f"{value:.0f}")


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if not a or not b else f"{a / b:.0f}×" if a / b >= 10 else f"{a / b:.1f}×"


def _measured(cells: dict[tuple[str, int], Cell], approach: str, n: int) -> Cell | None:
    cell = cells.get((approach, n))
    return None if cell is None or SKIPPED in cell[0] else cell


def _get(cells: dict[tuple[str, int], Cell], approach: str, n: int, kind: str, q: str) -> float | None:
    cell = _measured(cells, approach, n)
    return None if cell is None else float(cell[0][kind][q])


def activation_table(cells: dict[tuple[str, int], Cell], sizes: list[int], kind: str) -> str:
    present = [a for a in ORDER if any((a, n) in cells for n in sizes)]
    head = ["N"] + [f"{SHORT[a]} p50 / p99 (samples) [run]" for a in present]
    head += [f"{SHORT[a]} ÷ shardgate p50 / p99" for a in present if a != "scoped"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in sizes:
        row = [f"{n:,}"]
        for a in present:
            cell = cells.get((a, n))
            if cell is None:
                row.append("not measured")
                continue
            if SKIPPED in cell[0]:
                row.append(f"skipped [{cell[1]}]")
                continue
            s = cell[0][kind]
            row.append(f"{_ms(s['p50'])} / {_ms(s['p99'])} ({s['n']}) [{cell[1]}]")
        for a in present:
            if a == "scoped":
                continue
            row.append(
                f"{_ratio(_get(cells, a, n, kind, 'p50'), _get(cells, 'scoped', n, kind, 'p50'))} / "
                f"{_ratio(_get(cells, a, n, kind, 'p99'), _get(cells, 'scoped', n, kind, 'p99'))}"
            )
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def load_table(cells: dict[tuple[str, int], Cell], sizes: list[int]) -> str:
    head = ["approach", "N", "load until the last host answers", "memory after load", "memory at the end",
            "first change after the load", "run"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in ORDER:
        for n in sizes:
            cell = _measured(cells, a, n)
            if cell is None:
                continue
            r, tag = cell
            if a == "nginx-reload":
                loaded = f"{r['rss_loaded_mb']:.0f} MB RSS / {r['pss_loaded_mb']:.0f} MB PSS (all processes)"
                end = (f"{r['rss_end_mb']:.0f} / {r['pss_end_mb']:.0f} MB; peak during reloads "
                       f"{r['rss_peak_mb']:.0f} / {r['pss_peak_mb']:.0f} MB")  # fmt: skip
                first = f"– (rendering the config: {_ms(r['render']['p50'])} ms p50 of each change)"
            else:
                loaded = f"{r['rss_loaded_mb']:.0f} MB RSS (Envoy)"
                end = f"{r['rss_end_mb']:.0f} MB RSS"
                first = f"{_ms(r['first_add_ms'])} ms (building all N in Python: {r['build_s']:.2f} s)"
            lines.append(
                f"| {SHORT[a]} | {n:,} | {r['load_s']:.2f} s | {loaded} | {end} | {first} | [{tag}] |"
            )
    return "\n".join(lines)


def skipped(runs: list[tuple[str, dict[str, Any], Path]]) -> str:
    notes = [
        f"- {SHORT[r['approach']]} at N = {r['n']:,} [{tag}]: {r['skipped']}"
        for tag, run, _ in runs
        for r in run.get("results", ())
        if "skipped" in r
    ]
    notes += [
        f"- {SHORT[r['approach']]} at N = {r['n']:,} [{tag}] failed: `{r['error']}`"
        for tag, run, _ in runs
        for r in run.get("results", ())
        if "error" in r
    ]
    return "\n".join(notes) if notes else "- none"


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def stages_table(cells: dict[tuple[str, int], Cell], sizes: list[int]) -> str:
    head = ["approach", "N", "until the push is sent", "push → Envoy's ACK", "ACK → first 200", "run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in ("scoped", "whole-table"):
        for n in sizes:
            cell = _measured(cells, a, n)
            if cell is None or "add" not in cell[0].get("stages", {}):
                continue
            st = cell[0]["stages"]["add"]
            parts = [
                f"{_ms(st[k]['p50'])} / {_ms(st[k]['p99'])}"
                for k in ("to_push", "push_to_ack", "ack_to_served")
            ]
            lines.append(f"| {SHORT[a]} | {n:,} | " + " | ".join(parts) + f" | [{cell[1]}] |")
    return "\n".join(lines)


def runs_list(runs: list[tuple[str, dict[str, Any], Path]]) -> str:
    from bench.report_pipeline import command as pipeline_command

    out = []
    for tag, run, path in runs:
        m = run["machine"]
        v = run["versions"]
        code = run.get("code")
        if code:
            where = (
                f"a snapshot of commit {code['commit'][:12]}"
                if code.get("snapshot")
                else (
                    f"the working tree at {code['commit'][:12]}"
                    + (" with local changes" if code.get("dirty") else "")
                )
            )
            v = {**v, "nginx": f"code: {where}"}
        out.append(
            f"- **[{tag}]** `{pipeline_command(run) if code else run['command']}` — "
            f"{run['started']} → {run.get('finished', '(unfinished)')}, "
            f"raw results in `{_rel(path)}` on the machine that ran it (git ignores `bench/results/`). "
            f"{m['cpu']}, {m['cores']} cores, "
            f"{m['memory_gb']} GB, Linux {m['kernel']}, Python {m['python']}; {v['envoy']}"
            + (f"; {v['nginx']}. " if v.get("nginx") else ". ")
            + f"Load average at start {', '.join(f'{x:.2f}' for x in m['loadavg'])}"
            + (f", at end {', '.join(f'{x:.2f}' for x in m['loadavg_end'])}" if "loadavg_end" in m else "")
            + "."
        )
    return "\n".join(out)


def plot(
    cells: dict[tuple[str, int], Cell],
    sizes: list[int],
    path: Path,
    pipeline: dict[int, dict[str, float]] | None = None,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    colors = {"scoped": "tab:green", "whole-table": "tab:orange", "nginx-reload": "tab:red"}
    for a in ORDER:
        ns = [n for n in sizes if _measured(cells, a, n)]
        if not ns:
            continue
        for q, style in (("p50", "-o"), ("p99", "--^")):
            ys = [cells[(a, n)][0]["add"][q] for n in ns]
            ax.plot(ns, ys, style, color=colors[a], label=f"{SHORT[a]} {q}")
    if pipeline:
        ns = sorted(pipeline)
        for q, style in (("p50", "-s"), ("p99", "--v")):
            ax.plot(ns, [pipeline[n][q] for n in ns], style, color="tab:blue",
                    label=f"shardgate, whole pipeline (API 201 → 200) {q}")  # fmt: skip
        sizes = sorted(set(sizes) | set(ns))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sizes, [f"{n / 1000:g}k" if n >= 1000 else str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("existing domains N")
    ax.set_ylabel("activation of a new domain (ms, log)")
    ax.set_title("New domain: change applied (or API 201) → first 200 through the proxy")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(paths: list[Path], doc: Path = DOC, plot_path: Path = PLOT) -> None:
    runs, cells = load(paths)
    sizes = sorted({n for _, n in cells})
    scoped = [n for n in sizes if _measured(cells, "scoped", n)]
    flat = "not measured"
    if len(scoped) >= 2:
        lo, hi = scoped[0], scoped[-1]
        p99_lo, p99_hi = _get(cells, "scoped", lo, "add", "p99"), _get(cells, "scoped", hi, "add", "p99")
        flat = (
            f"p99 at {hi:,} ÷ p99 at {lo:,} = {_ratio(p99_hi, p99_lo)}, from the pusher's cache to Envoy"
            " only, where Envoy's own step is most of the time (issue 3's target, ≤ 1.5× at 100k vs 1k, is"
            " for the whole pipeline: see its Targets table)"
        )
    from bench.report_pipeline import activation_by_n, pipeline_section

    text = TEMPLATE.read_text().format(
        pipeline=pipeline_section(runs),
        add_table=activation_table(cells, sizes, "add"),
        edit_table=activation_table(cells, sizes, "edit"),
        load_table=load_table(cells, sizes),
        stages_table=stages_table(cells, sizes),
        skipped=skipped(runs),
        runs=runs_list(runs),
        flatness=flat,
        sources=" ".join(_rel(p) for _, _, p in runs),
    )
    doc.write_text(text)
    plot(cells, sizes, plot_path, activation_by_n(runs))


if __name__ == "__main__":
    write([Path(p).resolve() for p in sys.argv[1:]])
