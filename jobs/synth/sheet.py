"""A contact sheet of sample frames per category, so a person can see what the synthetic data looks like."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from edgemine.contracts import read_manifest
from edgemine.errors import InputNotFoundError


def contact_sheet(logs: str | os.PathLike[str], out: str | os.PathLike[str], *, per_row: int = 6,
                  scale: int = 2) -> Path:
    """Write a PNG with one row per category (normal first): `per_row` frames spread across its events."""
    logs = Path(logs)
    gt_path = logs / "ground_truth.parquet"
    if not gt_path.exists():
        raise InputNotFoundError(f"{gt_path} does not exist; point --logs at an `edgemine synth` output folder")
    man = read_manifest(logs / "manifest.parquet")
    gt = pq.read_table(gt_path)
    uri_of = dict(zip(man.column("frame_id").to_pylist(), man.column("uri").to_pylist(), strict=True))
    cats = sorted(set(gt.column("category").to_pylist()) - {"normal"})
    rows: list[tuple[str, list[str]]] = []
    for cat in ["normal", *cats]:
        ids = gt.filter(pc.equal(gt.column("category"), cat)).column("frame_id").to_pylist()
        step = max(1, len(ids) // per_row)
        rows.append((cat, ids[step // 2 :: step][:per_row]))
    first = Image.open(uri_of[rows[0][1][0]])
    tile = first.width * scale
    label_w = 150
    sheet = Image.new("RGB", (label_w + per_row * tile, len(rows) * tile), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    for r, (cat, ids) in enumerate(rows):
        draw.text((6, r * tile + tile // 2 - 6), cat.replace("_", " "), fill=(20, 20, 20))
        for c, fid in enumerate(ids):
            with Image.open(uri_of[fid]) as im:
                thumb = im.convert("RGB").resize((tile, tile), Image.Resampling.NEAREST)
                sheet.paste(thumb, (label_w + c * tile, r * tile))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
