"""`edgemine synth`: write synthetic drive logs with ground truth."""

from __future__ import annotations

from pathlib import Path

import typer

from edgemine.jobs.commands import examples


def synth(
    out: Path = typer.Option(..., "--out", help="Output folder (frames/, manifest.parquet, ground_truth.parquet)."),
    drives: int = typer.Option(10, "--drives", help="Number of drives."),
    frames_per_drive: int = typer.Option(300, "--frames-per-drive", help="Frames per drive (10 Hz)."),
    rare_rate: float = typer.Option(0.005, "--rare-rate", help="Fraction of frames inside rare events."),
    size: int = typer.Option(96, "--size", help="Frame width and height in pixels."),
    seed: int = typer.Option(0, "--seed", help="Random seed; output is a pure function of the arguments."),
    reference: bool = typer.Option(False, "--reference", help="Known drives: no rare events (training data)."),
    workers: int = typer.Option(0, "--workers", help="Processes (0: one per core)."),
    condition: list[str] = typer.Option(
        [], "--condition",
        help="Allowed drive conditions, FIELD=VALUE[,VALUE...] or FIELD=VALUE:WEIGHT[,...], e.g. "
             "time_of_day=day,dusk or time_of_day=day:1,night:1 (repeat for several fields)."),
    recurrence: tuple[int, int] = typer.Option(
        (1, 1), "--recurrence", help="LO HI: each rare category appears in LO..HI events in different drives."),
    event_seconds: tuple[float, float] = typer.Option(
        (1.0, 5.0), "--event-seconds", help="SHORTEST LONGEST rare-event length in seconds."),
) -> None:
    """Write synthetic drive logs: PNG frames, manifest.parquet and ground_truth.parquet."""
    from edgemine.jobs.synth import generate

    s = generate(out, drives=drives, frames_per_drive=frames_per_drive, rare_rate=rare_rate, size=size,
                 seed=seed, reference=reference, workers=workers or None,
                 conditions=parse_conditions(condition) or None, recurrence=recurrence,
                 event_seconds=event_seconds)
    cats = ", ".join(f"{k}={v}" for k, v in s.categories.items() if k != "normal") or "none"
    typer.echo(
        f"wrote {s.frames} frames in {s.drives} drives to {s.out} in {s.seconds:.1f}s; "
        f"rare frames {s.rare_frames} ({s.rare_rate:.2%}) in {s.events} events [{cats}]"
    )


def parse_conditions(specs: list[str]) -> dict[str, list[str] | dict[str, float]]:
    """`--condition` strings to `generate(conditions=...)`: values, or value -> weight when weights are given."""
    from edgemine.errors import ConfigError

    out: dict[str, list[str] | dict[str, float]] = {}
    for spec in specs:
        key, sep, rest = spec.partition("=")
        items = [v.strip() for v in rest.split(",") if v.strip()]
        if not sep or not key.strip():
            raise ConfigError(f"--condition {spec!r} must be FIELD=VALUE[,VALUE...] or FIELD=VALUE:WEIGHT[,...]")
        if any(":" in v for v in items):
            weights: dict[str, float] = {}
            for v in items:
                name, _, w = v.partition(":")
                try:
                    weights[name.strip()] = float(w)
                except ValueError:
                    raise ConfigError(f"--condition {spec!r}: weight {w!r} of {name!r} is not a number") from None
            out[key.strip()] = weights
        else:
            out[key.strip()] = items
    return out


def synth_sheet(
    logs: Path = typer.Option(..., "--logs", help="An `edgemine synth` output folder."),
    out: Path = typer.Option(Path("contact_sheet.png"), "--out", help="PNG to write."),
    per_row: int = typer.Option(6, "--per-row", help="Frames per category."),
) -> None:
    """Write a contact sheet: sample frames of every category, one row each."""
    from edgemine.jobs.synth.sheet import contact_sheet

    typer.echo(f"wrote {contact_sheet(logs, out, per_row=per_row)}")


def synth_fleet(
    out: Path = typer.Option(..., "--out", help="Output folder (manifest.parquet)."),
    frames: int = typer.Option(1_000_000, "--frames", help="Rows to write."),
    dim: int = typer.Option(128, "--dim", help="Embedding dimension."),
    rare_rate: float = typer.Option(0.005, "--rare-rate", help="Fraction of frames from unseen scene clusters."),
    reference: bool = typer.Option(False, "--reference", help="Known data: no unseen clusters."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Write a fleet-scale manifest with precomputed embeddings (no images), for scale benchmarks."""
    from edgemine.jobs.synth.fleet import generate_fleet

    s = generate_fleet(out, frames=frames, dim=dim, rare_rate=rare_rate, reference=reference, seed=seed)
    typer.echo(f"wrote {s['frames']} frames ({s['rare_frames']} rare, D={s['dim']}) to {s['path']} "
               f"in {s['seconds']}s")


def register(app: typer.Typer) -> None:
    app.command("synth", epilog=examples(
        "edgemine synth --drives 20 --frames-per-drive 300 --out logs/fleet",
        "edgemine synth --drives 8 --frames-per-drive 300 --out logs/known --reference",
        "edgemine synth --drives 4 --frames-per-drive 100 --rare-rate 0.1 --size 128 --seed 7 --out logs/small"))(synth)
    app.command("synth-sheet", epilog=examples("edgemine synth-sheet --logs logs/fleet --out sheet.png"))(synth_sheet)
    app.command("synth-fleet", epilog=examples(
        "edgemine synth-fleet --frames 1000000 --dim 128 --out fleet1m",
        "edgemine synth-fleet --frames 1000000 --dim 128 --out known1m --reference"))(synth_fleet)
