"""The fine-tuning recipe knobs of train_classifier: a frozen trunk, a trunk learning rate, class and row weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from edgemine.contracts import read_manifest
from edgemine.embeddings.baseline import load_baseline, train_classifier
from edgemine.errors import ConfigError


@pytest.fixture(scope="module")
def base(reference_logs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, Path]:
    rows = read_manifest(reference_logs / "manifest.parquet").select(["frame_id", "drive_id", "uri", "label"])
    out = tmp_path_factory.mktemp("recipe") / "v0.pt"
    train_classifier(rows, out=out, epochs=2, seed=1)
    return rows, out


def _trunk(path: Path) -> dict[str, torch.Tensor]:
    model, _ = load_baseline(path)
    return {k: v for k, v in model.state_dict().items() if k.startswith("features.")}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_trunk_frozen_for_every_epoch_keeps_weights_and_batchnorm_statistics(base, tmp_path: Path) -> None:  # noqa: ANN001
    rows, v0 = base
    out = tmp_path / "v1.pt"
    train_classifier(rows, out=out, init_from=v0, epochs=2, freeze_trunk_epochs=2, seed=3)
    assert _same(_trunk(out), _trunk(v0))  # running means/vars included
    old, new = load_baseline(v0)[0], load_baseline(out)[0]
    assert not torch.equal(old.head.weight, new.head.weight)  # the head did train


def test_a_trunk_frozen_for_one_epoch_then_trains(base, tmp_path: Path) -> None:  # noqa: ANN001
    rows, v0 = base
    out = tmp_path / "v1.pt"
    train_classifier(rows, out=out, init_from=v0, epochs=2, freeze_trunk_epochs=1, seed=3)
    old, new = _trunk(v0), _trunk(out)
    assert not torch.equal(old["features.0.weight"], new["features.0.weight"])


def test_trunk_lr_zero_leaves_the_conv_weights_and_trains_the_head(base, tmp_path: Path) -> None:  # noqa: ANN001
    rows, v0 = base
    out = tmp_path / "v1.pt"
    train_classifier(rows, out=out, init_from=v0, epochs=1, trunk_lr=0.0, seed=3)
    old, new = _trunk(v0), _trunk(out)
    convs = [k for k in old if k.endswith(".weight") and old[k].dim() == 4]
    assert convs and all(torch.equal(old[k], new[k]) for k in convs)
    assert not torch.equal(load_baseline(v0)[0].head.weight, load_baseline(out)[0].head.weight)


def test_a_row_weighing_zero_does_not_move_the_model(base, tmp_path: Path) -> None:  # noqa: ANN001
    # With the trunk frozen (BatchNorm in eval mode) a zero-weight row touches neither the gradients nor the
    # statistics, so relabelling it must give the very same model.
    rows, v0 = base
    n = rows.num_rows
    labels = rows.column("label").to_pylist()
    other = sorted(set(labels))
    flipped = [other[(other.index(lab) + 1) % len(other)] for lab in labels]
    weights = np.ones(n)
    weights[:40] = 0.0
    a = rows.set_column(rows.schema.get_field_index("label"), "label", pa.array(flipped[:40] + labels[40:]))
    outs = []
    for i, table in enumerate((rows, a)):
        out = tmp_path / f"m{i}.pt"
        train_classifier(table, out=out, init_from=v0, epochs=1, freeze_trunk_epochs=1, sample_weights=weights,
                         seed=4)
        outs.append(load_baseline(out)[0].head)
    assert torch.equal(outs[0].weight, outs[1].weight) and torch.equal(outs[0].bias, outs[1].bias)
    # ... and with its weight back to 1 the relabelled rows do change it
    out = tmp_path / "m2.pt"
    train_classifier(a, out=out, init_from=v0, epochs=1, freeze_trunk_epochs=1, seed=4)
    assert not torch.equal(load_baseline(out)[0].head.weight, outs[0].weight)


def test_bad_recipe_settings_name_the_value(base, tmp_path: Path) -> None:  # noqa: ANN001
    rows, v0 = base
    out = tmp_path / "m.pt"
    with pytest.raises(ConfigError, match="freeze_trunk_epochs=3 must be between 0 and epochs=2"):
        train_classifier(rows, out=out, epochs=2, freeze_trunk_epochs=3)
    with pytest.raises(ConfigError, match="trunk_lr=-1"):
        train_classifier(rows, out=out, trunk_lr=-1.0)
    with pytest.raises(ConfigError, match="class_weight_power=2"):
        train_classifier(rows, out=out, class_weight_power=2.0)
    with pytest.raises(ConfigError, match=rf"sample_weights must be {rows.num_rows} finite non-negative"):
        train_classifier(rows, out=out, sample_weights=np.ones(3))
    with pytest.raises(ConfigError, match="sample_weights"):
        train_classifier(rows, out=out, sample_weights=np.full(rows.num_rows, -1.0))
