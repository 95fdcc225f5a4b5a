"""Tiny images and manifests on disk for the embedding and decode tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return str(path)


def manifest_table(uris: list[str], *, prefix: str = "f") -> pa.Table:
    n = len(uris)
    return pa.table({
        "frame_id": [f"{prefix}-{i:04d}" for i in range(n)],
        "drive_id": ["d0"] * n,
        "timestamp": pa.array(np.arange(n, dtype=np.int64) * 100_000).cast(pa.timestamp("us", tz="UTC")),
        "uri": uris,
    })


def write_manifest(path: Path, uris: list[str], **extra: list) -> Path:
    table = manifest_table(uris)
    for name, values in extra.items():
        table = table.append_column(name, pa.array(values))
    pq.write_table(table, path)
    return path
