"""The one rich console setup the commands share."""

from __future__ import annotations

from rich.console import Console


def make_console() -> Console:
    """The terminal's width, or 120 columns when writing to a pipe or a file (rich would use 80)."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 120))
    return console
