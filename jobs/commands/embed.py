"""`edgemine embed`, `edgemine train-baseline`, `edgemine fit-builtin`: the embedding step and its models."""

from __future__ import annotations

from pathlib import Path

import typer

from edgemine.jobs.commands import examples


def embed(
    frames: str = typer.Option(..., "--frames", help="Frames manifest: Parquet file or folder (path or URI)."),
    out: Path = typer.Option(..., "--out", help="Output folder: embeddings/ shards, errors.parquet, _config.json."),
    encoder: str = typer.Option(
        "builtin", "--encoder",
        help="builtin | builtin:FIT.npz | torchscript:MODEL.pt | torchvision:NAME:WEIGHTS.pth",
    ),
    input_size: int = typer.Option(0, "--input-size", help="Frame size fed to the encoder (0: the encoder's own)."),
    batch_size: int = typer.Option(256, "--batch-size", help="Frames per forward pass."),
    actors: int = typer.Option(0, "--actors", help="Inference actors (0: one per GPU, or cores / threads on CPU)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    shard_rows: int = typer.Option(4096, "--shard-rows", help="Manifest rows per output shard (unit of resume)."),
    decode: str = typer.Option("actor", "--decode", help="Where frames are decoded: actor | tasks."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show rows/s and ETA on stderr."),
) -> None:
    """Embed every frame of a manifest on Ray (resumable: re-run the same command after a crash)."""
    from typing import cast

    from edgemine.embeddings.pipeline import DecodePlacement, embed_manifest

    result = embed_manifest(frames, encoder=encoder, out=out, input_size=input_size or None, batch_size=batch_size,
                            actors=actors or None, device=device, shard_rows=shard_rows, progress=progress,
                            decode=cast(DecodePlacement, decode))  # the value is checked inside
    typer.echo(result.summary())


def train_baseline(
    frames: str = typer.Option(..., "--frames", help="Labelled reference manifest (Parquet file or folder)."),
    out: Path = typer.Option(..., "--out", help="TorchScript model to write (e.g. model.pt)."),
    label_column: str = typer.Option("label", "--label-column", help="Manifest column holding the class."),
    val_frames: str = typer.Option("", "--val-frames", help="Held-out manifest (default: 20% of drives)."),
    epochs: int = typer.Option(8, "--epochs", help="Passes over the training frames."),
    input_size: int = typer.Option(64, "--input-size", help="Square input size in pixels."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    init_from: Path = typer.Option(None, "--init-from", help="Fine-tune from this baseline model."),
) -> None:
    """Train the baseline CNN on labelled frames and export TorchScript (embedding + logits)."""
    from edgemine.contracts import read_manifest
    from edgemine.embeddings.baseline import train_classifier

    rows = read_manifest(frames)
    val = read_manifest(val_frames) if val_frames else None
    result = train_classifier(rows, out=out, label_column=label_column, epochs=epochs, input_size=input_size,
                              seed=seed, val_rows=val, init_from=init_from, progress=True)
    typer.echo(result.summary())
    if result.per_class_accuracy:
        typer.echo("per-class held-out accuracy: " +
                   ", ".join(f"{k} {v:.3f}" for k, v in sorted(result.per_class_accuracy.items())))


def fit_builtin(
    frames: str = typer.Option(..., "--frames", help="Reference manifest: frames of ordinary traffic."),
    out: Path = typer.Option(..., "--out", help="Fit file to write (use as --encoder builtin:OUT)."),
    input_size: int = typer.Option(64, "--input-size", help="Square input size in pixels."),
) -> None:
    """Fit the builtin encoder's standardisation on reference frames (then use --encoder builtin:OUT)."""
    from edgemine.embeddings.encoders.builtin import fit_builtin as fit

    typer.echo(fit(frames, out=out, input_size=input_size, progress=False).summary())


def register(app: typer.Typer) -> None:
    app.command("embed", epilog=examples(
        "edgemine embed --frames logs/fleet/manifest.parquet --out emb/fleet",
        "edgemine embed --frames M --out emb/fleet --encoder torchscript:model.pt --device cuda --batch-size 256",
        "edgemine embed --frames M --out emb/fleet --encoder efficientnet_lite0:224 --actors 4"))(embed)
    app.command("train-baseline", epilog=examples(
        "edgemine train-baseline --frames logs/known/manifest.parquet --label-column label --out model.pt",
        "edgemine train-baseline --frames REF --label-column label --out v1.pt --epochs 5 --init-from model.pt",
    ))(train_baseline)
    app.command("fit-builtin", epilog=examples(
        "edgemine fit-builtin --frames logs/known/manifest.parquet --out fit.npz",
        "edgemine mine --frames M --reference R --encoder builtin:fit.npz --budget 300 --out runs/r1"))(fit_builtin)
