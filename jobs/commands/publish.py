"""`edgemine publish`: confirmed edge cases from the review store -> a new Delta version (or continuously)."""

from __future__ import annotations

import typer

from edgemine.jobs.commands import examples


def publish(
    db: str = typer.Option(..., "--db", help="Review store URL: sqlite:///review.db or postgresql://..."),
    dataset: str = typer.Option(..., "--dataset", help="Delta table path (created on first publish)."),
    run: str = typer.Option(None, "--run", help="Only this mining run's confirmations."),
    splits: str = typer.Option("train=0.8,val=0.2", "--splits", help="Split ratios, by drive."),
    watch: bool = typer.Option(False, "--watch", help="Keep publishing as confirmations arrive (Ctrl-C stops)."),
    interval: float = typer.Option(5.0, "--interval", help="--watch: publish at least this often (s)."),
    min_new: int = typer.Option(20, "--min-new", help="--watch: publish as soon as this many are waiting."),
) -> None:
    """Publish consensus-confirmed edge cases as one new dataset version, with lineage."""
    import statistics
    import threading

    from edgemine.jobs.publish import SplitPolicy, publish_from_review, watch_and_publish

    policy = SplitPolicy.parse(splits)
    if not watch:
        out = publish_from_review(db, dataset, run_id=run, policy=policy)
        r = out.result
        if r.version is None:
            typer.echo(f"nothing new: {r.already_present} confirmed edge case(s) already in {dataset}")
        else:
            typer.echo(f"published {dataset}@v{r.version}: +{r.added} rows ({r.already_present} already present)")
        return

    def report(p) -> None:  # noqa: ANN001 - ReviewPublish
        lat = p.latencies_s
        med = statistics.median(lat) if lat else float("nan")
        typer.echo(f"published {dataset}@v{p.result.version}: +{p.result.added} rows; "
                   f"decision->dataset median {med:.1f}s, max {max(lat, default=float('nan')):.1f}s")

    stop = threading.Event()
    typer.echo(f"watching {db} -> {dataset} (every {interval:g}s or {min_new} new); Ctrl-C stops")
    try:
        watch_and_publish(db, dataset, interval_s=interval, min_new=min_new, policy=policy, stop=stop,
                          on_publish=report)
    except KeyboardInterrupt:
        stop.set()


def register(app: typer.Typer) -> None:
    app.command("publish", epilog=examples(
        "edgemine publish --db sqlite:///review.db --dataset data/edge_cases --run RUN_ID",
        "edgemine publish --db sqlite:///review.db --dataset data/edge_cases --splits train=0.8,val=0.2",
        "edgemine publish --db sqlite:///review.db --dataset data/edge_cases --watch --interval 30 --min-new 10",
    ))(publish)
