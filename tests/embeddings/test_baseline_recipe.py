"""The fine-tuning recipe knobs of train_classifier: a frozen trunk, a trunk learning rate, class and row weights,
distillation from init_from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from edgemine.contracts import read_manifest
from edgemine.embeddings.baseline import _distill_loss, _Teacher, load_baseline, predict, train_classifier
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


def test_the_distillation_term_is_lwf_kl_against_brute_force() -> None:
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 6, 3, generator=gen)  # 6 frames, 3 old classes, as is / flipped
    t = _Teacher(teacher, torch.tensor([True, True, False, True, True, True]), torch.tensor([2, 0, 1]))
    logits = torch.randn(4, 5, generator=gen)  # a batch of 4 rows, 5 classes now (old ones at columns 2, 0, 1)
    sel, flipped, row_w, temp = np.array([1, 2, 4, 5]), torch.tensor([False, True, True, False]), \
        torch.tensor([1.0, 1.0, 0.5, 2.0]), 3.0
    got = _distill_loss(logits, t, sel, flipped, row_w, temperature=temp)
    want = 0.0
    for i, f in enumerate(sel):
        if not t.distilled[f]:
            continue
        q = torch.softmax(teacher[int(flipped[i]), f] / temp, 0)
        p = torch.softmax(logits[i, [2, 0, 1]] / temp, 0)
        want += float(row_w[i]) * float((q * (q / p).log()).sum())
    assert float(got) == pytest.approx(temp ** 2 * want / float(row_w.sum()), rel=1e-5)
    same = torch.zeros(1, 5)
    same[0, [2, 0, 1]] = teacher[0, 0]
    assert float(_distill_loss(same, t, np.array([0]), torch.tensor([False]), torch.ones(1), temperature=2.0)) \
        == pytest.approx(0.0, abs=1e-6)  # a student that matches its teacher pays nothing


def test_distillation_on_no_row_trains_the_same_model_as_none(base, tmp_path: Path) -> None:  # noqa: ANN001
    rows, v0 = base
    heads = []
    for i, kw in enumerate(({}, {"distill_weight": 5.0, "distill_rows": np.zeros(rows.num_rows, bool)})):
        out = tmp_path / f"m{i}.pt"
        train_classifier(rows, out=out, init_from=v0, epochs=1, seed=6, **kw)
        heads.append(load_baseline(out)[0].state_dict())
    assert heads[0].keys() == heads[1].keys() and all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])


def test_distillation_keeps_v1_agreeing_with_v0_where_the_labels_pull_away(base, tmp_path: Path) -> None:  # noqa: ANN001
    # Every label shifted to another class: plain fine-tuning follows the labels, distillation from v0 on the
    # same rows holds v1's predictions close to v0's.
    rows, v0 = base
    labels = rows.column("label").to_pylist()
    other = sorted(set(labels))
    shifted = rows.set_column(rows.schema.get_field_index("label"), "label",
                              pa.array([other[(other.index(lab) + 1) % len(other)] for lab in labels]))
    ref = predict(v0, rows).labels
    agree = {}
    for lam in (0.0, 20.0):
        out = tmp_path / f"lam{lam}.pt"
        train_classifier(shifted, out=out, init_from=v0, epochs=2, seed=7, distill_weight=lam, class_weight_power=0)
        agree[lam] = np.mean(np.array(predict(out, rows).labels) == np.array(ref))
    assert agree[20.0] > agree[0.0] + 0.3, agree


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
    with pytest.raises(ConfigError, match="distill_weight=-1"):
        train_classifier(rows, out=out, init_from=v0, distill_weight=-1.0)
    with pytest.raises(ConfigError, match="distill_temperature=0"):
        train_classifier(rows, out=out, init_from=v0, distill_weight=1.0, distill_temperature=0.0)
    with pytest.raises(ConfigError, match="distill_weight=1.0 needs init_from"):
        train_classifier(rows, out=out, distill_weight=1.0)
    with pytest.raises(ConfigError, match=rf"distill_rows must be {rows.num_rows} bools"):
        train_classifier(rows, out=out, init_from=v0, distill_weight=1.0, distill_rows=np.ones(rows.num_rows))
    with pytest.raises(ConfigError, match="distill_weight=0"):
        train_classifier(rows, out=out, init_from=v0, distill_rows=np.ones(rows.num_rows, bool))
