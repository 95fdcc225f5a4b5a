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
    run: Path = typer.Option(..., "--run", help="A mining run folder."),
    frame_id: list[str] = typer.Option(..., "--frame-id", help="Frame to expand (repeat for several)."),
    k: int = typer.Option(50, "--k", help="Neighbours per frame."),
    out: Path | None = typer.Option(None, "--out", help="Also write the neighbours to this Parquet file."),
) -> None:
    """More like this: the nearest frames of a run to one or more confirmed frames."""
    from edgemine.jobs.similar import similar_frames

    table = similar_frames(run, list(frame_id), k=k)
    if out is not None:
        import pyarrow.parquet as pq

        pq.write_table(table, out)
    typer.echo("query_frame_id\trank\tframe_id\tdistance\tscore\turi")
    for r in table.to_pylist():
        typer.echo(f"{r['query_frame_id']}\t{r['rank']}\t{r['frame_id']}\t{r['distance']:.4f}\t"
                   f"{r['score'] if r['score'] is None else round(r['score'], 4)}\t{r['uri']}")


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
