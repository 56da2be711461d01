"""The "Through the whole pipeline" section of `docs/BENCHMARKS.md`, from `bench.pipeline` result files.

Like the rest of the page, every figure is read from a result file and printed with the tag of its run
(the run list gives the exact command); the issue-3 targets are checked against the figures at the
largest N measured, and say "not measured" rather than guess when that N is not the target's.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench import profiles, stages

Run = tuple[str, dict[str, Any], Path]
TARGET_N = 100_000


def _ms(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.1f}" if abs(v) < 100 else f"{v:,.0f}"


def _pp(summary: dict[str, Any] | None) -> str:
    return "–" if not summary else f"{_ms(summary['p50'])} / {_ms(summary['p99'])}"


def _la(values: list[float] | None) -> str:
    return "–" if not values else f"{values[0]:.1f}"


def command(run: dict[str, Any]) -> str:
    code = run.get("code") or {}
    prefix = (
        f"PYTHONPATH=$(.venv/bin/python -m bench.snapshot {code['commit'][:12]}) "
        if code.get("snapshot")
        else ""
    )
    return prefix + str(run["command"])


Rows = list[tuple[int, tuple[str, dict[str, Any]]]]


def _rows(runs: list[Run]) -> Rows:
    """(N, (tag, result)) of every run that got as far as the activation samples, by N then run; the
    result carries the run's namespace count (runs before the setting existed used one)."""
    out = [
        (int(r["result"]["n"]), (tag, {**r["result"], "namespaces": r["settings"].get("namespaces", 1)}))
        for tag, r, _ in runs
        if "activation" in (r.get("result") or {})
    ]
    return sorted(out, key=lambda x: (x[0], x[1][0]))


def _pick(rows: Rows, n: int | None, phase: str) -> tuple[str, dict[str, Any]] | None:
    """The last run at N that measured `phase`."""
    hits = [tr for m, tr in rows if m == n and phase in tr[1]]
    return hits[-1] if hits else None


def activation_by_n(runs: list[Run]) -> dict[int, dict[str, Any]]:
    """N -> the activation summary (API 201 → first 200) of the last run at that N, for the plot."""
    rows = _rows(runs)
    return {
        n: hit[1]["activation"]["add"] for n in {m for m, _ in rows} if (hit := _pick(rows, n, "activation"))
    }


def mix(phase: dict[str, Any] | None) -> str:
    """A phase's hosts by how they are served; runs from before the TLS mix recorded none: plain HTTP."""
    m = (phase or {}).get("mix")
    if not m:
        return "plain HTTP"
    parts = [(m.get("wildcard_cert", 0), "wildcard cert"), (m.get("own_cert", 0), "own cert"),
             (m.get("plain", 0), "plain HTTP")]  # fmt: skip
    return " + ".join(f"{count:,} {what}" for count, what in parts if count) or "–"


def by_kind(activation: dict[str, Any]) -> str:
    """Activation of platform hosts (wildcard certificate) and of custom domains (own certificate,
    Secret created just before the Ingress), each p50 / p99 (samples)."""
    kinds = activation.get("by_kind") or {}
    cells = [f"{kind} {_pp(s)} ({s['n']})" for kind, s in kinds.items() if s.get("n")]
    return " · ".join(cells) or "–"


def activation_table(by_n: Rows) -> str:
    head = ["N", "activation p50 / p99 ms (samples)", "by kind: p50 / p99 ms (samples)",
            "POST → 201 p50 / p99 ms", "load avg (1 min) after load / after the samples", "run"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, (tag, r) in by_n:
        a = r["activation"]
        lines.append(
            f"| {n:,} | {_pp(a['add'])} ({a['add']['n']}) | {by_kind(a)} | {_pp(a['post_ms'])} | "
            f"{_la(r.get('loadavg_loaded'))} / {_la(r.get('loadavg_activation'))} | [{tag}] |"
        )
    return "\n".join(lines)


def stage_table(by_n: Rows, phase: str) -> str:
    rows = [(n, tag, r[phase]) for n, (tag, r) in by_n if phase in r]
    keys = [k for k in (*stages.STAGES, "to_ack") if any(k in p.get("stages", {}) for _, _, p in rows)]
    head = ["N", *(stages.LABELS[k] for k in keys), "traces", "run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, tag, p in rows:
        if p.get("traced", 0) < 10:
            note = f"only {p.get('traced', 0)} complete traces in the sample: not split (see below)"
            lines.append(
                f"| {n:,} | {note} |" + " |" * (len(keys) - 1) + f" {p.get('traced', 0)} | [{tag}] |"
            )
            continue
        cells = [_pp(p["stages"].get(k)) for k in keys]
        lines.append(f"| {n:,} | " + " | ".join(cells) + f" | {p.get('traced', 0)} | [{tag}] |")
    return "\n".join(lines)


def load_table(by_n: Rows) -> str:
    head = ["N", "namespaces", "hosts served with", "all POSTs accepted", "all fragments in Redis",
            "sample served through Envoy", "domains/s through the pipeline", "load avg (1 min) after",
            "run"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, (tag, r) in by_n:
        ld = r.get("load")
        if not ld:
            continue
        lines.append(
            f"| {n:,} | {r.get('namespaces', 1)} | {mix(ld)} | "
            f"{ld['post_s']:.1f} s ({ld['post_rate']:,}/s) | "
            f"{ld['redis_s']:.1f} s | {ld['served_s']:.1f} s | {n / ld['served_s']:,.0f} | "
            f"{_la(r.get('loadavg_loaded'))} | [{tag}] |"
        )
    return "\n".join(lines)


def tls_checks(by_n: Rows) -> str:
    """What a client of one loaded host of each kind got: the proof that the mix is served as declared."""
    out = []
    for n, (tag, r) in by_n:
        for kind, c in (r.get("tls_check") or {}).items():
            names = ", ".join(f"`{x}`" for x in c.get("cert_names", [])) or "none"
            out.append(
                f"- [{tag}] N = {n:,}, {kind} host `{c['host']}`: HTTPS {c['https_status']} from "
                f"{c.get('backend') or '–'} with a certificate for {names}; plain HTTP {c['http_status']}"
            )
    return "\n".join(out)


def burst_table(by_n: Rows) -> str:
    head = ["N before", "namespaces", "new Ingresses", "served with", "all POSTs accepted",
            "last traced host ACKed by Envoy", "every host ACKed by Envoy", "half served",
            "all served through Envoy",
            "sustained domains/s", "load avg after", "py-spy attached", "run"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, (tag, r) in by_n:
        b = r.get("burst")
        if not b:
            continue
        accepted = f"{b['post_s']:.1f} s ({b['accept_rate']:,}/s)"
        spied = "yes" if b.get("profiles") else "no"
        acked = "–" if b.get("last_ack_s") is None else f"{b['last_ack_s']:.1f} s ({b['traced']} traced)"
        all_acked = "–" if b.get("all_acked_s") is None else f"{b['all_acked_s']:.1f} s"
        deciles = b.get("served_by_decile_s")
        half = f"{deciles[4]:.1f} s" if deciles else "–"
        lines.append(
            f"| {n:,} | {r.get('namespaces', 1)} | {b['count']:,} | {mix(b)} | {accepted} | {acked} | "
            f"{all_acked} | {half} | {b['all_served_s']:.1f} s | "
            f"{b['rate']:,} | {_la(r.get('loadavg_burst'))} | {spied} | [{tag}] |"
        )
    return "\n".join(lines)


def handshake_table(by_n: Rows) -> str:
    """The gateway's HTTPS answer rate with the pipeline at rest: first handshakes for names Envoy holds
    no certificate for (an on-demand SDS round trip each) and the same names again."""
    head = ["N", "hosts", "first handshakes/s", "CPU ms each: driver / Envoy / pusher", "again/s",
            "CPU ms each: driver / Envoy / pusher", "run"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, (tag, r) in by_n:
        h = r.get("handshakes")
        if not h:
            continue
        cells = []
        for label in ("first", "again"):
            cpu = h[label]["cpu_ms_per_handshake"]
            failed = f" ({h[label]['failed']} failed)" if h[label]["failed"] else ""
            cells += [
                f"{h[label]['per_s']:,}{failed}",
                " / ".join(f"{cpu.get(k, 0):.2f}" for k in ("driver", "envoy", "pusher")),
            ]
        lines.append(f"| {n:,} | {h['first']['handshakes']:,} | " + " | ".join(cells) + f" | [{tag}] |")
    return "\n".join(lines) if len(lines) > 2 else ""


CPU_COLUMNS = ("watcher", "compiler-1", "compiler-2", "pusher", "nats", "redis", "envoy", "kubeapi", "otlp",
               "driver")  # fmt: skip


def cpu_table(by_n: Rows) -> str:
    """CPU seconds per process during the load and the burst, and per Ingress: on two cores a phase is
    bounded by the total, however the work is spread."""
    head = ["N", "phase", "Ingresses", *CPU_COLUMNS, "all (ms / Ingress)", "ours (ms / Ingress)", "run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, (tag, r) in by_n:
        for phase, count in (("load", n), ("burst", (r.get("burst") or {}).get("count", 0))):
            cpu = (r.get(phase) or {}).get("cpu")
            if not cpu:
                continue
            secs = cpu["seconds"]
            cells = [f"{secs[c]:.1f}" if c in secs else "–" for c in CPU_COLUMNS]
            lines.append(
                f"| {n:,} | {phase} | {count:,} | " + " | ".join(cells) + f" | {cpu['total_s']:.0f} s "
                f"({cpu['ms_per_ingress']:.1f}) | {cpu['ours_ms_per_ingress']:.1f} | [{tag}] |"
            )
    return "\n".join(lines) if len(lines) > 2 else "Not recorded in the runs on this page."


def cold_table(by_n: Rows, ttl: dict[str, int]) -> str:
    head = [
        "N",
        "new Envoy: sample served",
        "pusher SIGKILL+start: ADS listening / Envoy reconnected / new Ingress served",
        "compiler SIGKILL+start: Ingress on its shard served",
        "lease TTL",
        "run",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, (tag, r) in by_n:
        e, p, c = r.get("cold_envoy"), r.get("restart_pusher"), r.get("restart_compiler")
        if not (e or p or c):
            continue
        ce = f"{e['served_s']:.2f} s ({e['probed']} hosts)" if e else "–"
        cp = "–"
        if p:
            connected = p.get("envoy_connected_s", float("nan"))
            cp = f"{p['listening_s']:.2f} / {connected:.2f} / {p['new_host_served_s']:.2f} s"
        cc = "–" if not c else (f"failed: {c['error']}" if "error" in c else f"{c['served_s']:.2f} s")
        lines.append(f"| {n:,} | {ce} | {cp} | {cc} | {ttl.get(tag, 3000) / 1000:g} s | [{tag}] |")
    return "\n".join(lines)


def memory_table(by_n: Rows) -> str:
    head = ["N", "when", "watcher", "compiler-1", "compiler-2", "pusher", "**ours total**", "Envoy", "NATS",
            "Redis", "API stand-in", "OTLP receiver", "certificates Envoy holds", "run"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, (tag, r) in by_n:
        for key, when in (("memory_loaded", "after the load"), ("memory_burst", "after the burst")):
            m = r.get(key)
            if not m:
                continue
            names = ("watcher", "compiler-1", "compiler-2", "pusher", "ours_total", "envoy", "nats", "redis",
                     "kubeapi", "otlp")  # fmt: skip
            cells = [f"{m.get(k, 0):.0f}" for k in names]
            cells[4] = f"**{cells[4]}**"
            certs = m.get("envoy_certs")
            cells.append("–" if certs is None or math.isnan(certs) else f"{certs:,.0f}")
            lines.append(f"| {n:,} | {when} | " + " | ".join(cells) + f" | [{tag}] |")
    return "\n".join(lines)


def _verdict(ok: bool | None, target: str = "") -> str:
    if target.startswith("(context"):
        return "–"
    return "not measured" if ok is None else ("**met**" if ok else "**not met**")


def _judge(value: float, limit: float, exact: bool) -> bool | None:
    """Met or not at the target's N; below it, only a miss is conclusive (costs grow with N)."""
    return value <= limit if exact or value > limit else None


def targets_table(by_n: Rows, ttl: dict[str, int]) -> str:
    sizes = sorted({n for n, _ in by_n})
    top = sizes[-1] if sizes else None
    exact = top == TARGET_N
    rows: list[tuple[str, str, bool | None]] = []

    def where(tag: str, n: int | None) -> str:
        return f"N = {n:,} [{tag}]"

    act = _pick(by_n, top, "activation")
    if act and exact:
        tag, r = act
        a = r["activation"]["add"]
        rows.append(
            ("activation p50 ≤ 15 ms at 100k", f"{_ms(a['p50'])} ms, {where(tag, top)}", a["p50"] <= 15)
        )
        rows.append(
            ("activation p99 ≤ 50 ms at 100k", f"{_ms(a['p99'])} ms, {where(tag, top)}", a["p99"] <= 50)
        )
    elif act:
        tag, r = act
        a = r["activation"]["add"]
        got = f"100k not measured; largest: {_ms(a['p50'])} / {_ms(a['p99'])} ms at {where(tag, top)}"
        rows.append(("activation p50 ≤ 15 ms / p99 ≤ 50 ms at 100k", got, None))
    low = _pick(by_n, sizes[0], "activation") if sizes and sizes[0] <= 1000 else None
    if act and exact and low:
        ratio = act[1]["activation"]["add"]["p99"] / low[1]["activation"]["add"]["p99"]
        rows.append(("p99(100k) ÷ p99(1k) ≤ 1.5", f"{ratio:.1f}× ([{act[0]}] ÷ [{low[0]}])", ratio <= 1.5))
        p50 = act[1]["activation"]["add"]["p50"] / low[1]["activation"]["add"]["p50"]
        maxes = (
            f"max {_ms(act[1]['activation']['add']['max'])} vs {_ms(low[1]['activation']['add']['max'])} ms"
        )
        rows.append(("(context, not a target) p50(100k) ÷ p50(1k)", f"{p50:.1f}× ({maxes})", None))
    else:
        rows.append(("p99(100k) ÷ p99(1k) ≤ 1.5", "needs both N", None))
    if (hit := _pick(by_n, top, "burst")) is not None:
        tag, b = hit[0], hit[1]["burst"]
        got = f"{b['all_served_s']:.1f} s ({b['rate']:,}/s) at {where(tag, top)}"
        rows.append((f"burst of {b['count']:,} on top of 100k served within 10 s", got,
                     _judge(b["all_served_s"], 10, exact)))  # fmt: skip
    if (hit := _pick(by_n, top, "cold_envoy")) is not None:
        tag, e = hit[0], hit[1]["cold_envoy"]
        got = f"{e['served_s']:.1f} s (a sample of {e['probed']}) at {where(tag, top)}"
        rows.append(("new Envoy serves all within 60 s", got, _judge(e["served_s"], 60, exact)))
    if (hit := _pick(by_n, top, "restart_pusher")) is not None:
        tag, p = hit[0], hit[1]["restart_pusher"]
        got = f"{p['new_host_served_s']:.1f} s until a new Ingress is served, at {where(tag, top)}"
        rows.append(("restarted pusher serving within 10 s", got, _judge(p["new_host_served_s"], 10, exact)))
    for n, (tag, r) in by_n:  # governed by the lease TTL, not by N: every run that measured it
        c = r.get("restart_compiler")
        if c and "error" not in c:
            got = (
                f"{c['served_s']:.1f} s with a lease TTL of {ttl.get(tag, 3000) / 1000:g} s, {where(tag, n)}"
            )
            rows.append(("restarted compiler resumes its shards within 5 s", got, c["served_s"] <= 5))
    if (hit := _pick(by_n, top, "memory_loaded")) is not None:
        tag, r = hit
        m = r.get("memory_burst") or r["memory_loaded"]
        got = f"{m['ours_total']:.0f} MB at {where(tag, top)} (Envoy {m.get('envoy', 0):.0f} MB)"
        rows.append(
            ("watcher + compilers + pusher ≤ 1 GB RSS at 100k", got, _judge(m["ours_total"], 1024, exact))
        )
    lines = ["| issue 3 target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {t} | {v} | {_verdict(ok, t)} |" for t, v, ok in rows]
    return "\n".join(lines)


def profiles_section(runs: list[Run]) -> str:
    out = []
    for tag, run, result_path in runs:
        files = ((run.get("result") or {}).get("burst") or {}).get("profiles") or {}
        if not files:  # a run that failed in its burst still left what py-spy recorded beside its result
            spied = result_path.parent / result_path.stem.replace("pipeline-", "profiles-")
            files = {f.stem: str(f) for f in sorted(spied.glob("*.txt"))}
        for name, path in files.items():
            if not Path(path).exists():
                continue
            s = profiles.summarize(Path(path), top=6)
            top_self = "; ".join(f"`{f}` {pct}%" for f, pct in s["self"])
            top_incl = "; ".join(f"`{f}` {pct}%" for f, pct in s["inclusive"][:8])
            out.append(
                f"- **{name}** [{tag}], N = {run['result']['n']:,}, {s['samples']} samples, idle "
                f"{s['idle_pct']}%. Self: {top_self}. On the stack: {top_incl}."
            )
    return "\n".join(out) if out else "- no profile in these runs"


def failures(runs: list[Run]) -> str:
    out = []
    for tag, run, _ in runs:
        if run.get("error"):
            churn = run.get("lease_churn") or {}
            settings = run["settings"]
            out.append(
                f"- [{tag}] N = {settings['n']:,}, lease TTL {settings.get('lease_ttl_ms', 3000)} ms: "
                f"`{run['error']}`; compiler lease churn (lease lost / worker ended log lines): {churn}"
            )
    return "\n".join(out) if out else "- none"


def pipeline_section(all_runs: list[Run]) -> str:
    runs = [r for r in all_runs if r[1].get("kind") == "pipeline"]
    if not runs:
        return "Not measured in the runs on this page."
    by_n = _rows(runs)
    ttl = {tag: int(run["settings"].get("lease_ttl_ms", 3000)) for tag, run, _ in runs}
    churn = "; ".join(f"[{tag}] {run.get('lease_churn')}" for tag, run, _ in runs if run.get("result"))
    return "\n\n".join(
        [
            "### Targets\n\n" + targets_table(by_n, ttl),
            "### Bulk load through the front door\n\nSeconds from the first POST.\n\n"
            + load_table(by_n)
            + (f"\n\nAfter the load, one host of each kind:\n\n{tls}" if (tls := tls_checks(by_n)) else ""),
            "### A new Ingress, one at a time\n\nMilliseconds from the API stand-in's 201 for the POST to "
            "the first 200 from the echo through Envoy (over HTTPS for a TLS host). By kind: platform hosts "
            "(the wildcard certificate) and custom domains (their own certificate, whose Secret is created "
            "just before the Ingress).\n\n" + activation_table(by_n),
            "Where the time goes (p50 / p99 ms per stage; the stages add up to the activation; a negative "
            "figure means the two instants overlap, e.g. the watch event arrives before the 201 reaches the "
            "client):\n\n" + stage_table(by_n, "activation"),
            "### Burst\n\n" + burst_table(by_n),
            "Where the time goes in the burst (p50 / p99 ms per stage, up to Envoy's ACK, from the traces "
            "of about 100 hosts spread over the burst; `traces` says how many of them were traced, the "
            "others' changes came past the trace rate, ARCHITECTURE.md, Tracing):\n\n"
            + stage_table(by_n, "burst"),
            "CPU seconds each process used from the first POST until every host was served (`driver`: the "
            "benchmark's own POSTs and probes), and per Ingress:\n\n" + cpu_table(by_n),
            "How fast the gateway answers new clients with the pipeline at rest, after the burst: "
            "existing hosts probed once each over HTTPS, 16 at a time, while Envoy holds "
            "none of their certificates (each handshake waits for an on-demand SDS round trip, as a new "
            "host's first client does), then the same hosts again (their certificates held). "
            '"All served" in a burst cannot beat the first rate:\n\n'
            + (handshake_table(by_n) or "Not measured in the runs on this page."),
            "### Cold start\n\n" + cold_table(by_n, ttl),
            "### Memory (VmRSS, MB)\n\n" + memory_table(by_n),
            "### Profiles during the burst (py-spy, share of busy samples)\n\n" + profiles_section(runs),
            "### Failed pipeline runs\n\n"
            + failures(runs)
            + (f"\n\nCompiler lease churn in the complete runs (log lines): {churn}." if churn else ""),
        ]
    )
