"""The baseline perception model: training, TorchScript export per the contract, prediction, fine-tuning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from edgemine.contracts import read_manifest
from edgemine.embeddings.baseline import load_baseline, predict, read_model_metadata, split_by_drive, train_classifier
from edgemine.embeddings.encoders import load_encoder
from edgemine.errors import ConfigError, IncompatibleArtifactError, SchemaError


@pytest.fixture(scope="module")
def trained(reference_logs: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    rows = read_manifest(reference_logs / "manifest.parquet")
    out = tmp_path_factory.mktemp("baseline") / "model.pt"
    return rows, train_classifier(rows, out=out, epochs=3, seed=1)


def test_training_reports_held_out_accuracy(trained) -> None:  # noqa: ANN001
    rows, res = trained
    labels = set(rows.column("label").to_pylist())
    assert res.classes == sorted(labels) and res.n_train + res.n_val == rows.num_rows and res.n_val > 0
    assert 0.0 <= res.val_accuracy <= 1.0 and res.majority_accuracy is not None
    assert set(res.per_class_accuracy) <= labels and res.skipped == []
    assert "held-out accuracy" in res.summary() and Path(res.model_path).exists()


def test_export_follows_the_encoder_contract(trained) -> None:  # noqa: ANN001
    _, res = trained
    enc = load_encoder(f"torchscript:{res.model_path}")
    assert enc.dim == 128 and enc.n_classes == len(res.classes) and enc.input_size == 64
    assert enc.class_names == tuple(res.classes)
    emb, logits = enc.embed(np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32))
    assert emb.shape == (2, 128) and logits.shape == (2, len(res.classes))
    meta = read_model_metadata(res.model_path)
    assert meta["kind"] == "edgemine-baseline" and meta["metrics"]["n_val"] == res.n_val


def test_predict_gives_probabilities_over_the_classes(trained) -> None:  # noqa: ANN001
    rows, res = trained
    sub = rows.slice(0, 40)
    pred = predict(res.model_path, sub)
    assert pred.frame_ids == sub.column("frame_id").to_pylist() and pred.class_names == res.classes
    assert pred.probs.shape == (40, len(res.classes)) and np.allclose(pred.probs.sum(axis=1), 1.0, atol=1e-5)
    assert pred.labels == [res.classes[i] for i in pred.probs.argmax(axis=1)]


def test_training_beats_the_majority_class_on_its_own_frames(trained) -> None:  # noqa: ANN001
    rows, res = trained
    pred = predict(res.model_path, rows)
    truth = rows.column("label").to_pylist()
    acc = np.mean([p == t for p, t in zip(pred.labels, truth, strict=True)])
    majority = max(truth.count(c) for c in set(truth)) / len(truth)
    assert acc > majority


def test_fine_tuning_adds_new_classes_and_keeps_the_old_weights(trained, synth_logs: Path, tmp_path: Path) -> None:  # noqa: ANN001
    rows, res = trained
    gt = pq.read_table(synth_logs / "ground_truth.parquet")
    rare = read_manifest(synth_logs / "manifest.parquet").join(gt, "frame_id").filter(pa.compute.field("is_rare"))
    rare = rare.drop_columns(["label"]).rename_columns(
        [("label" if c == "category" else c) for c in rare.drop_columns(["label"]).column_names])
    extra = pa.concat_tables([rows.select(["frame_id", "drive_id", "uri", "label"]),
                              rare.select(["frame_id", "drive_id", "uri", "label"])])
    new = sorted(set(rare.column("label").to_pylist()))
    out = tmp_path / "v2.pt"
    res2 = train_classifier(extra, out=out, init_from=res.model_path, epochs=1, lr=1e-12, seed=2)
    assert res2.classes == res.classes + new and res2.init_from == res.model_path
    old_model, _ = load_baseline(res.model_path)
    new_model, meta = load_baseline(out)
    assert meta["class_names"] == res2.classes
    k = len(res.classes)
    with torch.no_grad():
        assert torch.allclose(new_model.head.weight[:k], old_model.head.weight, atol=1e-6)
        assert torch.allclose(new_model.features[0].weight, old_model.features[0].weight, atol=1e-6)
    assert load_encoder(f"torchscript:{out}").n_classes == k + len(new)


def test_labels_outside_explicit_classes_are_refused(trained, tmp_path: Path) -> None:  # noqa: ANN001
    rows, _ = trained
    with pytest.raises(ConfigError, match=r"labels \[.*'truck'.*\] are not in classes=\['car'\]"):
        train_classifier(rows.slice(0, 60), out=tmp_path / "m.pt", classes=["car"], epochs=1)


def test_unusable_rows_are_skipped_and_listed(trained, tmp_path: Path) -> None:  # noqa: ANN001
    rows, _ = trained
    sub = rows.slice(0, 40).select(["frame_id", "drive_id", "uri", "label"])
    bad = pa.table({"frame_id": ["gone", "unlabelled"], "drive_id": ["x", "x"],
                    "uri": [str(tmp_path / "gone.png"), sub.column("uri")[0].as_py()], "label": ["car", None]})
    res = train_classifier(pa.concat_tables([sub, bad]), out=tmp_path / "m.pt", epochs=1)
    assert sorted(res.skipped) == [("gone", "decode", f"file not found: {tmp_path / 'gone.png'}"),
                                   ("unlabelled", "validate", "no 'label' label")]
    assert res.n_train + res.n_val == 40


def test_bad_inputs_name_the_problem(trained, tmp_path: Path) -> None:  # noqa: ANN001
    rows, _ = trained
    with pytest.raises(SchemaError, match="label column 'class' is missing"):
        train_classifier(rows, out=tmp_path / "m.pt", label_column="class")
    with pytest.raises(ConfigError, match="epochs=0"):
        train_classifier(rows, out=tmp_path / "m.pt", epochs=0)
    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(plain))
    with pytest.raises(IncompatibleArtifactError, match="not an edgemine baseline model"):
        train_classifier(rows, out=tmp_path / "m.pt", init_from=plain)


def test_split_keeps_drives_whole() -> None:
    drives = [f"d{i // 10}" for i in range(200)]
    mask = split_by_drive(drives, [str(i) for i in range(200)])
    for d in set(drives):
        assert len({bool(mask[i]) for i in range(200) if drives[i] == d}) == 1
    assert 0 < mask.sum() < 200
