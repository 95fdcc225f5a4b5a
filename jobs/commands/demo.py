"""`edgemine demo`: run the end-to-end story on embedded defaults."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(out: Path = typer.Option(Path("demo_out"), "--out", help="Where the demo writes everything.")) -> None:
    """Run the whole loop on synthetic drive logs with embedded engines."""
    from jobs.demo import run_demo

    run_demo(out)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
