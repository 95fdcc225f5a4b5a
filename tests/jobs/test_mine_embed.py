"""Synthetic frames -> the Ray embedding step (built-in encoder) + a baseline model's logits -> mine -> candidates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgemine.jobs.mine import run_mine
from edgemine.jobs.similar import similar_frames
from edgemine.jobs.spec import build_spec

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.spark, pytest.mark.slow]


def test_frames_are_embedded_scored_and_selected(synth_logs: Path, reference_logs: Path, tmp_path: Path,
                                                  spark: Any) -> None:
    from edgemine.contracts import read_manifest
    from edgemine.embeddings.baseline import train_classifier

    model = tmp_path / "model.pt"
    train_classifier(read_manifest(reference_logs / "manifest.parquet"), out=model, epochs=1, seed=0)
    # one manifest row whose image does not exist: the embed step must report it, and the run must list it
    man = pq.read_table(synth_logs / "manifest.parquet")
    broken = man.slice(0, 1).to_pylist()[0] | {"frame_id": "broken-0", "uri": "frames/missing.png"}
    man = pa.concat_tables([man, pa.Table.from_pylist([broken], schema=man.schema)])
    pq.write_table(man, synth_logs / "manifest_broken.parquet")
    spec = build_spec({
        "frames": str(synth_logs / "manifest_broken.parquet"), "reference": str(reference_logs / "manifest.parquet"),
        "out": str(tmp_path / "run"), "budget": 30, "encoder": "builtin", "models": [f"torchscript:{model}"],
        "aggregate": {"threshold": 1.0, "peak_threshold": 1.3, "min_frames": 2},
        "signals": {"uncertainty": {"weight": 1.0}},
    })
    res = run_mine(spec, spark=spark)
    info = json.loads((res.run_dir / "run.json").read_text())
    assert info["encoder"].startswith("builtin:") and info["dim"] > 100
    assert info["counts"]["manifest_frames"] == 361 and info["counts"]["scored_frames"] == 360
    assert info["counts"]["uncertainty_models"] == [f"torchscript:{model}"]
    errors = pq.read_table(res.run_dir / "errors.parquet").to_pylist()
    assert [e["frame_id"] for e in errors] == ["broken-0"] and errors[0]["stage"] != "score"
    assert "missing.png" in errors[0]["uri"]
    cands = pq.read_table(res.run_dir / "candidates.parquet")
    assert 0 < cands.num_rows <= 30 and cands.column("rank").to_pylist() == list(range(1, cands.num_rows + 1))
    scores = pq.read_table(res.run_dir / "scores.parquet")
    assert scores.column("uncertainty").null_count == 0  # the model's logits reached every scored frame
    assert any("entropy" in r for rs in scores.column("reasons").to_pylist() for r in rs)
    assert (res.run_dir / "embeddings" / "embeddings").is_dir()  # the run keeps its embeddings for `similar`
    near = similar_frames(res.run_dir, [cands.column("frame_id")[0].as_py()], k=3)
    assert near.num_rows == 3
    # re-running into the same folder reuses the finished embedding shards and the reference index
    again = run_mine(spec.model_copy(update={"budget": 10}), spark=spark)
    assert again.counts["reference"]["reused"] is True
    assert again.timings["embed"] < res.timings["embed"]
