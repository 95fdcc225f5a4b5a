"""A mining run with the reference index sharded over Ray actors equals the single-index run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from edgemine.jobs.mine import run_mine
from tests.support.mine_spec import make_spec

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.spark]


def test_sharded_reference_index_gives_the_same_run(byo: dict[str, Path], spark: Any,  # noqa: F811
                                                    tmp_path: Path, ray_local: str) -> None:
    flat = {"kind": "flat"}
    one = run_mine(make_spec(byo, tmp_path / "one", index=flat), spark=spark)
    sharded = run_mine(make_spec(byo, tmp_path / "sharded", index={**flat, "shards": 3}), spark=spark)
    assert sharded.counts["reference"]["shards"] == 3
    assert sharded.counts["reference"]["kind"].startswith("sharded-3x")
    # a second run reuses the saved shards
    saved = str(tmp_path / "sharded" / "index" / "reference")
    again = run_mine(make_spec(byo, tmp_path / "again", index={**flat, "shards": 3, "dir": saved}), spark=spark)
    assert again.counts["reference"]["reused"] is True
    for name in ("scores.parquet", "candidates.parquet"):
        a = pq.read_table(Path(one.run_dir) / name).sort_by("frame_id")
        b = pq.read_table(Path(sharded.run_dir) / name).sort_by("frame_id")
        assert a.column("frame_id").equals(b.column("frame_id")), name
        for col in ("score", "novelty"):
            assert a.column(col).to_pylist() == pytest.approx(b.column(col).to_pylist(), rel=1e-5, abs=1e-6), name
    ca = pq.read_table(Path(one.run_dir) / "candidates.parquet").sort_by("frame_id")
    cb = pq.read_table(Path(sharded.run_dir) / "candidates.parquet").sort_by("frame_id")
    assert ca.column("neighbor_ids").to_pylist() == cb.column("neighbor_ids").to_pylist()
