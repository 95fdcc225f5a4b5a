"""`make demo`: the whole story on embedded defaults, ending with where everything is.

The demo is the closed loop (jobs/loop.py) at its default sizes: synthetic drives, a baseline model,
a mining run on Ray + FAISS + Spark, simulated reviewers through the real review API, continuous
publishing to Delta Lake, fine-tuning, and the measured performance delta and latency.
"""

from __future__ import annotations

from pathlib import Path

import typer

from edgemine.jobs.loop import LoopConfig, LoopResult, run_loop


def run_demo(out: Path, cfg: LoopConfig = LoopConfig()) -> LoopResult:
    out = Path(out).resolve()
    if (out / "review.db").exists():
        raise_fresh(out)
    res = run_loop(out, cfg, log=typer.echo)
    mined = res.selections["mined"]
    ds = res.datasets["mined"]
    typer.echo("")
    typer.echo(f"demo finished in {res.timings['total']:.0f}s. Where things are:")
    typer.echo(f"  mining report      {mined['run_dir']}/report.html")
    typer.echo(f"  candidates         {mined['run_dir']}/candidates.parquet")
    typer.echo(f"  training set       {ds['path']}@v{ds['version']}   (edgemine datasets log {ds['path']})")
    typer.echo(f"  random control     {res.datasets['random']['path']}")
    typer.echo(f"  loop figures       {out}/loop.json, plot {out}/loop.png")
    db = f"sqlite:///{out}/review.db"  # the demo's store: a token made in any other store is refused
    typer.echo(f"  review page        .venv/bin/edgemine reviewers add NAME --role lead --db {db}   (prints a token)")
    typer.echo(f"                     .venv/bin/edgemine serve --db {db}   (open http://127.0.0.1:8000/; the"
               " simulated reviewers decided the run: a lead sees its escalations, item browser and agreement)")
    typer.echo(f"headline: rare-slice accuracy {res.models['v0']['rare_acc']:.2f} -> "
               f"{res.models['v1_mined']['rare_acc']:.2f} with mined review (random control: "
               f"{res.models['v1_random']['rare_acc']:.2f}); gain ratio {res.gain_ratio_text}; common accuracy "
               f"{res.models['v0']['common_acc']:.2f} -> {res.models['v1_mined']['common_acc']:.2f}; "
               f"decision->dataset median {res.latency.get('median_s', float('nan')):.1f}s")
    return res


def raise_fresh(out: Path) -> None:
    from edgemine.errors import ConfigError

    raise ConfigError(f"{out} holds an earlier demo (review.db exists); remove it or pass --out NEW_DIR")
