"""Test helpers: the shared Spark session, and bring-your-own embeddings computed from the synthetic frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

SPARK_MASTER = "local[2]"


def shared_spark() -> Any:
    """The test session's one local Spark session (`get_spark` returns the active one after the first call)."""
    from edgemine.mining.spark import get_spark

    return get_spark(SPARK_MASTER, app_name="edgemine-tests", conf={"spark.sql.shuffle.partitions": "4"})


def pixel_embedding(path: str | Path, *, side: int = 8) -> np.ndarray:
    """A tiny real image embedding: the frame downsampled to side x side RGB, in [0, 1]."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((side, side), Image.BILINEAR), np.float32).ravel() / 255.0


def fixed_list(x: np.ndarray) -> pa.FixedSizeListArray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.ravel(), pa.float32()), x.shape[1])


def with_embeddings(logs: Path, out: Path, *, side: int = 8) -> Path:
    """Copy `logs/manifest.parquet` to `out` with an `embedding` column (uris made absolute)."""
    t = pq.read_table(logs / "manifest.parquet")
    uris = [str((logs / u).resolve()) for u in t.column("uri").to_pylist()]
    emb = np.stack([pixel_embedding(u, side=side) for u in uris])
    t = t.set_column(t.column_names.index("uri"), "uri", pa.array(uris, pa.string()))
    t = t.append_column("embedding", fixed_list(emb))
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, out)
    return out
