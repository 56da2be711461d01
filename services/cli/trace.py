"""`shardgate trace HOST`: where the time of the newest change to a host went, as a timeline.

The spans come from the local stack's OTLP receiver (its HTTP API, found in `state.json` or given with
`--otlp-http`); when the receiver is not running, from the span file it leaves in the stack directory,
so a trace can still be read after `local down`.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from shardgate.cli.console import make_console
from shardgate.local.spans import SPANS_FILE, SpanStore, TraceView
from shardgate.local.state import read_state, stack_dir
from shardgate.local.timeline import ACK_SPAN, Timeline, build_timeline

BAR_WIDTH = 40
SERVICE_STYLES = ("cyan", "magenta", "green", "yellow", "blue", "red")


class TraceSourceError(RuntimeError):
    """Neither the receiver nor its span file could be read."""


def fetch_trace(host: str, otlp_http: str | None, directory: Path, timeout: float = 5.0) -> TraceView | None:
    """The newest trace naming `host`: from the receiver's HTTP API, else from the span file."""
    url = otlp_http
    state = read_state(directory)
    if url is None and state is not None and state.get("status") == "ready":
        url = (state.get("otlp") or {}).get("http")
    if url:
        query = urllib.parse.urlencode({"host": host})
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/traces?{query}", timeout=timeout) as response:
                return TraceView.from_json(json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise TraceSourceError(f"{url} answered {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            if otlp_http is not None:  # asked for explicitly: no silent fallback
                raise TraceSourceError(f"cannot reach the OTLP receiver at {url}: {exc}") from exc
    recorded = (state or {}).get("otlp", {}).get("spans")
    spans_file = Path(recorded) if recorded else directory / "otlp" / SPANS_FILE
    if spans_file.name != SPANS_FILE:  # a state.json that still names the JSONL file the receiver once kept
        spans_file = spans_file.with_name(SPANS_FILE)
    if not spans_file.exists():
        raise TraceSourceError(f"no running receiver and no span file at {spans_file}")
    return SpanStore.from_file(spans_file).newest_for_host(host)


def _ms(value: float) -> str:
    return f"{value:,.1f} ms" if value < 10_000 else f"{value / 1000:,.2f} s"


def render_timeline(console: Console, host: str, timeline: Timeline) -> None:
    scale = max([timeline.total_ms, *(r.end_ms for r in timeline.rows)]) or 1.0
    styles: dict[str, str] = {}
    table = Table(title=f"newest change to {host}  (trace {timeline.trace_id})", title_justify="left")
    table.add_column("service", no_wrap=True)
    table.add_column("span", no_wrap=True)
    table.add_column("start", justify="right", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column(f"0 … {_ms(scale)}", no_wrap=True, min_width=BAR_WIDTH)
    table.add_column("shard/rev", no_wrap=True)
    table.add_column("note")
    for row in timeline.rows:
        service = row.service.removeprefix("shardgate-")
        style = styles.setdefault(service, SERVICE_STYLES[len(styles) % len(SERVICE_STYLES)])
        begin = min(BAR_WIDTH - 1, int(row.offset_ms / scale * BAR_WIDTH))
        length = max(1, min(BAR_WIDTH - begin, round(row.duration_ms / scale * BAR_WIDTH)))
        bar = Text(" " * begin) + Text("█" * length, style="red" if row.error else style)
        name = Text(row.name, style="bold red" if row.error else "bold" if row.name == ACK_SPAN else "")
        if row.linked:
            name = Text("↳ ", style="dim") + name
        where = "/".join(str(row.attributes[k]) for k in ("shard", "revision") if k in row.attributes)
        note = Text(row.error or "", style="red")
        if row.linked:
            note = Text("linked batch ", style="dim") + note
        table.add_row(
            Text(service, style=style), name, f"+{_ms(row.offset_ms)}", _ms(row.duration_ms), bar, where, note
        )
    console.print(table)
    ended = (
        f"first span → end of {ACK_SPAN}" if timeline.acked else f"first span → last span; no {ACK_SPAN} yet"
    )
    console.print(f"[bold]activation {_ms(timeline.total_ms)}[/bold]  ({ended}, {len(timeline.rows)} spans)")


def run(args: argparse.Namespace) -> int:
    console = make_console()
    try:
        view = fetch_trace(args.host, args.otlp_http, stack_dir(args.dir))
    except TraceSourceError as exc:
        console.print(f"[red]{exc}[/red]")
        return 1
    if view is None:
        console.print(f"[yellow]no trace names host {args.host!r}[/yellow]")
        return 1
    timeline = build_timeline(view)
    if args.json:
        print(
            json.dumps(
                {"host": args.host, **view.to_json(), "total_ms": timeline.total_ms, "acked": timeline.acked}
            )
        )
        return 0
    render_timeline(console, args.host, timeline)
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("trace", help="timeline of the newest change to a host (or unit)")
    parser.add_argument("host", help="a host (shop.example.com) or a unit key (h:shop.example.com, s:ns/svc)")
    parser.add_argument(
        "--otlp-http", help="the OTLP receiver's HTTP API (default: from the stack's state.json)"
    )
    parser.add_argument("--dir", help="the stack directory (default: $SHARDGATE_STACK_DIR or .local/stack)")
    parser.add_argument("--json", action="store_true", help="print the spans and the total as JSON")
    parser.set_defaults(func=run)
