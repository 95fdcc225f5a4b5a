"""Fixtures for the embedding tests: tiny models and frames (Ray comes from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def baseline_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained baseline CNN exported like `train-baseline` does (weights from a fixed seed)."""
    import torch

    from edgemine.embeddings.baseline import MODEL_KIND, BaselineCNN, export_model

    torch.manual_seed(3)
    model = BaselineCNN(5, width=8)
    path = tmp_path_factory.mktemp("models") / "baseline.pt"
    meta = {"kind": MODEL_KIND, "class_names": ["car", "cyclist", "none", "pedestrian", "truck"], "input_size": 64,
            "width": 8, "embedding_dim": 64}
    return export_model(model, path, meta=meta)


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
