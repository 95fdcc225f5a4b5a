"""Mining-job fixtures: a fleet and reference with bring-your-own embeddings (two frames unusable)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.support.frames import fixed_list, with_embeddings


@pytest.fixture(scope="session")
def byo(synth_logs: Path, reference_logs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("byo")
    frames = with_embeddings(synth_logs, out / "frames.parquet")
    t = pq.read_table(frames)
    emb = np.stack(t.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    emb[3, 0] = np.nan  # unusable frames are listed, never silently dropped
    emb[7, 5] = np.inf
    col = fixed_list(emb)
    t = t.set_column(t.column_names.index("embedding"), "embedding", col)
    pq.write_table(t, frames)
    ref = with_embeddings(reference_logs, out / "reference.parquet")
    return {"frames": frames, "reference": ref, "root": out, "gt": synth_logs / "ground_truth.parquet"}


@pytest.fixture()
def deltalake_storage_options(monkeypatch: pytest.MonkeyPatch) -> list:
    """The `storage_options` of every deltalake.DeltaTable opened while the test runs, in order (the real
    table underneath: it really opens)."""
    from typing import Any

    import deltalake

    seen: list[Any] = []

    class Recording(deltalake.DeltaTable):
        def __init__(self, table_uri: str, version: int | None = None, storage_options: Any = None,
                     **kw: Any) -> None:
            seen.append(storage_options)
            super().__init__(table_uri, version=version, storage_options=storage_options, **kw)

    monkeypatch.setattr(deltalake, "DeltaTable", Recording)
    return seen
