"""`edgemine mine`, `edgemine similar`, `edgemine evaluate`: mining runs, "more like this", evaluation."""

from __future__ import annotations

from pathlib import Path

import typer

from edgemine.jobs.commands import examples


class StageClock:
    """The run's log, told as it goes: each `[stage]` line starts a clock that says on stderr how long the stage
    has run (redrawn in place on a terminal, every 10 s otherwise, like the embed progress line), and its
    elapsed time is printed when the next stage starts."""

    def __init__(self, *, period_s: float | None = None) -> None:
        import re
        import sys

        self._stage_re = re.compile(r"^\[([a-z_]+)\]$")
        self._tty = sys.stderr.isatty()
        self.period_s = period_s if period_s is not None else (0.5 if self._tty else 10.0)
        self.timings: dict[str, float] = {}
        self._stage: str | None = None
        self._t0 = 0.0
        self._stop: object = None
        self._thread: object = None
        self._done = self._total = 0

    def __call__(self, line: str) -> None:
        m = self._stage_re.match(line)
        if m is None:
            self._clear()
            typer.echo(line)
            return
        self.end()
        typer.echo(line)
        self._start(m.group(1))

    def _start(self, stage: str) -> None:
        import threading
        import time

        self._stage, self._t0 = stage, time.perf_counter()
        stop = threading.Event()

        self._done = self._total = 0

        def tick() -> None:
            while not stop.wait(self.period_s):
                text = self.status(time.perf_counter() - self._t0)
                typer.echo(f"\r\033[K  {text}" if self._tty else f"  {text}", err=True, nl=not self._tty)

        self._stop, self._thread = stop, threading.Thread(target=tick, name=f"clock-{stage}", daemon=True)
        self._thread.start()  # type: ignore[attr-defined]

    def report(self, done: int, total: int) -> None:
        """Rows done of the running stage (run_mine's `progress`): the clock then shows rows/s and an ETA."""
        self._done, self._total = done, total

    def status(self, elapsed: float) -> str:
        """`stage: 12s elapsed`, or with rows reported `stage: 1,200/5,000 frames (24%) 100 frames/s ETA 0m38s`."""
        if not self._total:
            return f"{self._stage}: {elapsed:.0f}s elapsed"
        rate = self._done / max(elapsed, 1e-9)
        eta = (self._total - self._done) / rate if rate > 0 else None
        eta_s = f"{eta // 60:.0f}m{eta % 60:02.0f}s" if eta is not None else "?"
        pct = 100.0 * self._done / self._total
        return (f"{self._stage}: {self._done:,}/{self._total:,} frames ({pct:.0f}%) {rate:,.0f} frames/s "
                f"ETA {eta_s}, {elapsed:.0f}s elapsed")

    def _clear(self) -> None:
        if self._tty and self._stage is not None:
            typer.echo("\r\033[K", err=True, nl=False)

    def end(self, outcome: str = "done in") -> None:
        """Stop the running stage's clock and print its elapsed time ("done in", "failed after", ...)."""
        import time

        if self._stage is None:
            return
        self._stop.set()  # type: ignore[attr-defined]
        self._thread.join()  # type: ignore[attr-defined]
        self._clear()
        t = time.perf_counter() - self._t0
        self.timings[self._stage] = t
        typer.echo(f"  {self._stage} {outcome} {t:.1f}s")
        self._stage = None


def mine(
    job: Path | None = typer.Argument(None, help="Job spec (YAML). Flags below override its fields."),
    frames: Path | None = typer.Option(None, "--frames", help="Frames manifest to mine (Parquet file or folder)."),
    reference: Path | None = typer.Option(
        None, "--reference", help="Known data: a frames manifest (embedded with the same encoder) or an "
        "embeddings table (frame_id, embedding[, encoder, uri])."),
    budget: int | None = typer.Option(None, "--budget", help="Frames to select for review."),
    out: Path | None = typer.Option(None, "--out", help="Run folder for the outputs."),
    encoder: str | None = typer.Option(
        None, "--encoder", help="builtin | efficientnet_lite0[:SIZE] | torchscript:PATH | torchvision:NAME:PATH"),
    model: list[str] | None = typer.Option(
        None, "--model", help="Model whose logits give uncertainty (repeat for an ensemble)."),
    spark_master: str | None = typer.Option(None, "--spark-master", help="Spark master (default local[*])."),
) -> None:
    """Mine edge cases: score every frame, group events and scenarios, select a diverse budget.

    Prints each stage with its elapsed time, then one summary whose last line names report.html. Ray's and
    Spark's own output goes to RUN/engine.log.
    """
    from edgemine.jobs.mine import run_mine
    from edgemine.jobs.spec import load_spec
    from edgemine.runtime import engine_log

    overrides: dict[str, object] = {"frames": frames, "reference": reference, "budget": budget, "out": out,
                                    "encoder": encoder, "models": model or None}
    spec = load_spec(job, **overrides)
    if spark_master:
        spec = spec.model_copy(update={"spark": spec.spark.model_copy(update={"master": spark_master})})
    run_dir = Path(spec.out)
    created = not run_dir.exists()
    log_path = run_dir / "engine.log"
    clock = StageClock()
    try:
        with engine_log(log_path):
            res = run_mine(spec, log=clock, progress=clock.report)
            clock.end()
    except BaseException as exc:
        clock.end("interrupted after" if isinstance(exc, KeyboardInterrupt) else "failed after")
        if log_path.exists() and log_path.stat().st_size == 0:
            log_path.unlink()
            if created and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()
        elif log_path.exists():
            typer.echo(f"engine log (Ray, Spark): {log_path}", err=True)
        raise
    for w in res.warnings:
        typer.echo(f"WARNING: {w}", err=True)
    c, t = res.counts, res.timings
    slowest = sorted(((v, k) for k, v in t.items() if k != "total"), reverse=True)[:3]
    typer.echo(f"ok: {c['candidates']} candidates (budget {c['budget']}: {c['above_threshold']} above the event "
               f"thresholds, {c['filled']} filling the budget) from {c['scored_frames']} scored frames "
               f"({c['dropped_total']} dropped) in {c['events']} events, {c['scenarios']} scenarios, "
               f"{t.get('total', 0.0):.1f}s (slowest: {', '.join(f'{k} {v:.1f}s' for v, k in slowest)})")
    typer.echo(f"  outputs in {res.run_dir}: candidates.parquet, scores.parquet, events.parquet, "
               f"scenarios.parquet, errors.parquet, run.json")
    if log_path.exists() and log_path.stat().st_size:
        typer.echo(f"  engine log (Ray, Spark): {log_path}")
    typer.echo(f"report: {res.run_dir / 'report.html'}")


def similar(
    run_dir: Path | None = typer.Argument(None, metavar="RUN_DIR", help="A mining run folder.", show_default=False),
    frame_ids: list[str] | None = typer.Argument(None, metavar="FRAME_ID...", help="Frames to expand.",
                                                 show_default=False),
    run: Path | None = typer.Option(None, "--run", help="A mining run folder (same as RUN_DIR).", hidden=True),
    frame_id: list[str] | None = typer.Option(None, "--frame-id", help="Frame to expand (repeatable; same as "
                                              "FRAME_ID).", hidden=True),
    k: int = typer.Option(50, "--k", help="Neighbours per frame."),
    exclude_same_drive: bool = typer.Option(False, "--exclude-same-drive",
                                            help="No neighbours from the query's drive: the same moment elsewhere."),
    exclude_same_event: bool = typer.Option(False, "--exclude-same-event",
                                            help="No neighbours from the query's event (scores.parquet event_id)."),
    out: Path | None = typer.Option(None, "--out", help="Also write the neighbours to this Parquet file."),
    sheet: Path | None = typer.Option(None, "--sheet", help="Also draw a contact sheet (PNG): each query and its "
                                      "neighbours with drive and distance."),
) -> None:
    """More like this: the nearest frames of a run to one or more confirmed frames.

    A frame's nearest neighbours are mostly the frames around it; --exclude-same-drive or --exclude-same-event
    ask for the same kind of moment in other drives or events.
    """
    from edgemine.errors import ConfigError
    from edgemine.jobs.similar import similar_frames, write_sheet

    if run_dir is not None and run is not None:
        raise ConfigError("give the run once: RUN_DIR or --run")
    run_dir = run_dir if run_dir is not None else run
    if run_dir is None:
        raise ConfigError("give a run folder: edgemine similar RUN_DIR FRAME_ID...")
    ids = [*(frame_ids or []), *(frame_id or [])]
    table = similar_frames(run_dir, ids, k=k, exclude_same_drive=exclude_same_drive,
                           exclude_same_event=exclude_same_event)
    if out is not None:
        import pyarrow.parquet as pq

        pq.write_table(table, out)
    # drive_id last: the first six columns keep the positions they had before it was added
    typer.echo("query_frame_id\trank\tframe_id\tdistance\tscore\turi\tdrive_id")
    for r in table.to_pylist():
        typer.echo(f"{r['query_frame_id']}\t{r['rank']}\t{r['frame_id']}\t{r['distance']:.4f}\t"
                   f"{r['score'] if r['score'] is None else round(r['score'], 4)}\t{r['uri']}\t{r['drive_id']}")
    if sheet is not None:
        typer.echo(f"contact sheet: {write_sheet(table, sheet)}", err=True)


def evaluate(
    run: Path = typer.Option(..., "--run", help="A mining run folder."),
    ground_truth: Path = typer.Option(..., "--ground-truth", help="ground_truth.parquet (frame_id, event_id, "
                                      "category, is_rare)."),
    repeats: int = typer.Option(20, "--random-repeats", help="Random-baseline draws to average."),
    nms_s: float = typer.Option(1.0, "--nms-s", help="Plain baseline: at most one frame per drive per this many s."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of Markdown tables."),
) -> None:
    """Event recall, frame precision, coverage, AUROC/AP, beside the plain kNN + temporal-NMS baseline and random."""
    from edgemine.mining.evaluate import evaluate_run, format_table

    rows = evaluate_run(str(run), str(ground_truth), random_repeats=repeats, nms_s=nms_s)
    if as_json:
        import json

        typer.echo(json.dumps([m.to_dict() for m in rows], indent=2))
    else:
        typer.echo(format_table(rows))


def register(app: typer.Typer) -> None:
    app.command("mine", epilog=examples(
        "edgemine mine --frames fleet/manifest.parquet --reference known/manifest.parquet --budget 500 --out runs/r1",
        "edgemine mine jobs/specs/example.yaml --budget 200",
        "edgemine mine job.yaml --model torchscript:model.pt --spark-master spark://host:7077"))(mine)
    app.command("similar", epilog=examples(
        "edgemine similar runs/r1 drv-003-0000-00042 --k 20",
        "edgemine similar runs/r1 drv-003-0000-00042 --exclude-same-drive --sheet near.png",
        "edgemine similar runs/r1 ID1 ID2 --exclude-same-event --out neighbours.parquet"))(similar)
    app.command("evaluate", epilog=examples(
        "edgemine evaluate --run runs/r1 --ground-truth logs/fleet/ground_truth.parquet",
        "edgemine evaluate --run runs/r1 --ground-truth GT.parquet --random-repeats 50 --json"))(evaluate)
