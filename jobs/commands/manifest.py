"""`edgemine validate`: check a frames manifest against the contract."""

from __future__ import annotations

from pathlib import Path

import typer

from edgemine.jobs.commands import examples


def validate(manifest: Path = typer.Argument(..., help="Frames manifest: a Parquet file or folder.")) -> None:
    """Validate a frames manifest and print its size and metadata columns."""
    from edgemine.contracts import MANIFEST_OPTIONAL, MANIFEST_REQUIRED, iter_manifest

    rows = drives = 0
    seen_drives: set[str] = set()
    meta: list[str] = []
    for batch in iter_manifest(manifest):
        rows += batch.num_rows
        seen_drives.update(batch.column("drive_id").to_pylist())
        meta = [c for c in batch.column_names if c not in MANIFEST_REQUIRED and c not in MANIFEST_OPTIONAL]
    drives = len(seen_drives)
    typer.echo(f"ok: {manifest}: {rows} frames, {drives} drives; metadata columns: {', '.join(meta) or 'none'}")


def register(app: typer.Typer) -> None:
    app.command("validate", epilog=examples("edgemine validate logs/fleet/manifest.parquet",
                                                "edgemine validate s3://bucket/fleet/manifest/"))(validate)
