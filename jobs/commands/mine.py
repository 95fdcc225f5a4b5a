"""`edgemine mine`, `edgemine similar`, `edgemine evaluate`: mining runs, "more like this", evaluation."""

from __future__ import annotations

from pathlib import Path

import typer


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
    """Mine edge cases: score every frame, group events and scenarios, select a diverse budget."""
    from edgemine.jobs.mine import run_mine
    from edgemine.jobs.spec import load_spec

    overrides: dict[str, object] = {"frames": frames, "reference": reference, "budget": budget, "out": out,
                                    "encoder": encoder, "models": model or None}
    spec = load_spec(job, **overrides)
    if spark_master:
        spec = spec.model_copy(update={"spark": spec.spark.model_copy(update={"master": spark_master})})
    res = run_mine(spec, log=typer.echo)
    c = res.counts
    typer.echo(f"ok: {c['candidates']} candidates (budget {c['budget']}: {c['above_threshold']} above the event "
               f"thresholds, {c['filled']} filling the budget) from {c['scored_frames']} scored frames "
               f"({c['dropped_total']} dropped) in {c['events']} events, {c['scenarios']} scenarios -> {res.run_dir}")
    for w in res.warnings:
        typer.echo(f"WARNING: {w}", err=True)


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

    Examples:

        edgemine similar runs/r1 drv-003-0000-00042 --k 20

        edgemine similar runs/r1 drv-003-0000-00042 --exclude-same-drive --sheet near.png

        edgemine similar runs/r1 ID1 ID2 --exclude-same-event --out neighbours.parquet
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
    typer.echo("query_frame_id\trank\tframe_id\tdrive_id\tdistance\tscore\turi")
    for r in table.to_pylist():
        typer.echo(f"{r['query_frame_id']}\t{r['rank']}\t{r['frame_id']}\t{r['drive_id']}\t{r['distance']:.4f}\t"
                   f"{r['score'] if r['score'] is None else round(r['score'], 4)}\t{r['uri']}")
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
    app.command("mine")(mine)
    app.command("similar")(similar)
    app.command("evaluate")(evaluate)
