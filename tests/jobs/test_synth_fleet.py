from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq

from edgemine.contracts import read_manifest
from edgemine.jobs.synth.fleet import generate_fleet


def test_fleet_manifest_follows_the_contract_and_rare_frames_are_far_from_the_reference(tmp_path: Path) -> None:
    generate_fleet(tmp_path / "ref", frames=6000, dim=16, reference=True, seed=3, batch_rows=2500, clusters=8)
    s = generate_fleet(tmp_path / "fleet", frames=6000, dim=16, rare_rate=0.05, seed=3, batch_rows=2500, clusters=8)
    man = read_manifest(tmp_path / "fleet" / "manifest.parquet")  # contract-valid, ids unique across batches
    assert man.num_rows == 6000 and man.schema.field("embedding").type.list_size == 16
    rare = np.asarray(man.column("is_rare").to_pylist())
    assert rare.sum() == s["rare_frames"] and 0.02 < rare.mean() < 0.1
    ref = np.stack(pq.read_table(tmp_path / "ref" / "manifest.parquet").column("embedding").to_numpy(
        zero_copy_only=False)).astype(np.float32)
    emb = np.stack(man.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    index = faiss.IndexFlatL2(16)
    index.add(ref)
    d, _ = index.search(emb, 5)
    assert np.median(d[rare, -1]) > 3 * np.median(d[~rare, -1])


def test_fleet_generation_is_deterministic(tmp_path: Path) -> None:
    generate_fleet(tmp_path / "a", frames=3000, dim=8, seed=1, batch_rows=1000)
    generate_fleet(tmp_path / "b", frames=3000, dim=8, seed=1, batch_rows=1000)
    a = pq.read_table(tmp_path / "a" / "manifest.parquet")
    b = pq.read_table(tmp_path / "b" / "manifest.parquet")
    assert a.equals(b)
