"""`edgemine train-baseline`, `edgemine embed` and `edgemine fit-builtin` end to end in subprocesses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest

EDGEMINE = [sys.executable, "-m", "edgemine"]


@pytest.mark.integration
@pytest.mark.ray
def test_train_baseline_then_embed_with_it(reference_logs: Path, synth_logs: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    out = subprocess.run([*EDGEMINE, "train-baseline", "--frames", str(reference_logs / "manifest.parquet"),
                          "--label-column", "label", "--out", str(model), "--epochs", "2"],
                         capture_output=True, text=True, check=True)
    assert "held-out accuracy" in out.stdout and model.exists()
    emb_out = tmp_path / "emb"
    out = subprocess.run([*EDGEMINE, "embed", "--frames", str(synth_logs / "manifest.parquet"), "--encoder",
                          f"torchscript:{model}", "--out", str(emb_out), "--shard-rows", "200"],
                         capture_output=True, text=True, check=True)
    assert "embedded 360 of 360 frames with torchscript:sha256-" in out.stdout and "2 shard(s) written" in out.stdout
    assert "frames/s" in out.stderr  # the progress line
    table = ds.dataset(str(emb_out / "embeddings"), format="parquet").to_table()
    assert table.num_rows == 360 and table.column("logits").null_count == 0


@pytest.mark.integration
def test_fit_builtin_writes_a_usable_fit(reference_logs: Path, tmp_path: Path) -> None:
    out = subprocess.run([*EDGEMINE, "fit-builtin", "--frames", str(reference_logs / "manifest.parquet"), "--out",
                          str(tmp_path / "fit.npz")], capture_output=True, text=True, check=True)
    assert "fitted builtin encoder on 240 reference frames" in out.stdout
    from edgemine.embeddings.encoders import load_encoder

    assert "+fit-" in load_encoder(f"builtin:{tmp_path / 'fit.npz'}").encoder_id


def test_embed_errors_are_one_line(synth_logs: Path, tmp_path: Path) -> None:
    out = subprocess.run([*EDGEMINE, "embed", "--frames", str(synth_logs / "manifest.parquet"), "--encoder",
                          "onnx:m.onnx", "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert ("unknown kind 'onnx'; valid kinds are ['builtin', 'efficientnet_lite0', 'torchscript', 'torchvision']"
            in out.stderr)
    out = subprocess.run([*EDGEMINE, "embed", "--frames", str(tmp_path / "none.parquet"), "--out",
                          str(tmp_path / "o")], capture_output=True, text=True)
    assert out.returncode == 1 and "does not exist" in out.stderr and "Traceback" not in out.stderr
