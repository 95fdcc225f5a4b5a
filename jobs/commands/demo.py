"""`edgemine demo` and `edgemine loop`: the closed loop on synthetic drives with embedded engines."""

from __future__ import annotations

from pathlib import Path

import typer

from edgemine.jobs.commands import examples


def demo(out: Path = typer.Option(Path("demo_out"), "--out", help="Where the demo writes everything (fresh).")
         ) -> None:
    """Run the whole loop on synthetic drive logs with embedded engines (2–7 minutes on a 2-core machine)."""
    from edgemine.jobs.demo import run_demo

    run_demo(out)


def loop(
    out: Path = typer.Option(..., "--out", help="A fresh folder for everything the loop writes."),
    budget: int = typer.Option(300, "--budget", help="Review budget (frames), mined and random alike."),
    fleet_drives: int = typer.Option(40, "--fleet-drives", help="Drives to mine."),
    reference_drives: int = typer.Option(24, "--reference-drives", help="Known drives (v0's training data)."),
    eval_drives: int = typer.Option(16, "--eval-drives", help="Held-out drives for the rare/common slices."),
    frames_per_drive: int = typer.Option(250, "--frames-per-drive", help="Frames per drive (10 Hz)."),
    fleet_rare_rate: float = typer.Option(0.04, "--rare-rate", help="Rare-frame rate of the mined drives."),
    reviewers: int = typer.Option(4, "--reviewers", help="Simulated reviewers."),
    error_rate: float = typer.Option(0.1, "--error-rate", help="Mean reviewer error rate."),
    seed: int = typer.Option(2026, "--seed", help="Random seed."),
) -> None:
    """The closed loop with its knobs: mine -> review -> publish -> fine-tune -> measure vs random."""
    from edgemine.jobs.loop import LoopConfig, run_loop

    cfg = LoopConfig(budget=budget, fleet_drives=fleet_drives, reference_drives=reference_drives,
                     eval_drives=eval_drives, frames_per_drive=frames_per_drive, fleet_rare_rate=fleet_rare_rate,
                     reviewers=reviewers, error_rate=error_rate, seed=seed)
    run_loop(out, cfg, log=typer.echo)


def register(app: typer.Typer) -> None:
    app.command("demo", epilog=examples("edgemine demo", "edgemine demo --out /tmp/demo"))(demo)
    app.command("loop", epilog=examples(
        "edgemine loop --out loop_out",
        "edgemine loop --out loop_out --budget 200 --error-rate 0.1 --reviewers 4"))(loop)
