"""Training-set test helpers: confirmed edge cases as the review store hands them to publish, and real frames."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
from PIL import Image

from edgemine.contracts import TIMESTAMP

CATS = ("debris", "animal_on_road", "construction_zone")


def confirmed(ids: list[int], *, run: str = "run-1", extra_meta: dict | None = None, uri_dir: Path | None = None,
              meta: list[dict[str, Any]] | None = None, categories: list[str] | None = None,
              drives: list[str] | None = None, n_reviews: int = 2) -> pa.Table:
    """Confirmed items f<id> (drive d<id // 5>, category CATS[id % 3]) with JSON metadata, as publish reads them."""
    n = len(ids)
    rows_meta = meta if meta is not None else [
        {"weather": "rain" if i % 2 else "clear", "speed_mps": 10.0 + i, **(extra_meta or {})} for i in ids]
    return pa.table({
        "frame_id": [f"f{i:04d}" for i in ids],
        "uri": [str(uri_dir / f"{i}.png") if uri_dir else f"/data/{i}.png" for i in ids],
        "drive_id": drives if drives is not None else [f"d{i // 5}" for i in ids],
        "timestamp": pa.array([1_700_000_000_000_000 + i for i in ids], pa.int64()).cast(TIMESTAMP),
        "category": categories if categories is not None else [CATS[i % 3] for i in ids],
        "root_cause": ["novel scene"] * n,
        "confidence": [0.9] * n,
        "n_reviews": [n_reviews] * n,
        "run_id": [run] * n,
        "score": [0.5] * n,
        "novelty": [0.7] * n,
        "uncertainty": [0.1] * n,
        "rarity": [0.2] * n,
        "trigger": [0.0] * n,
        "metadata": [json.dumps(m) for m in rows_meta],
    })


def write_frames(folder: Path, ids: list[int]) -> dict[int, tuple[int, int, int]]:
    """One small PNG per id, `<folder>/<id>.png`, each its own colour; returns id -> colour."""
    folder.mkdir(parents=True, exist_ok=True)
    colours = {i: (i * 37 % 256, 10, 200 - i) for i in ids}
    for i, c in colours.items():
        Image.new("RGB", (20, 20), c).save(folder / f"{i}.png")
    return colours
