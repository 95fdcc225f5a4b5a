"""The closed loop: its pure pieces, and one small run through every real engine."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from edgemine.errors import ConfigError
from edgemine.jobs.loop import LoopConfig, LoopResult, SimReviewer, make_reviewers, run_loop, same_drive_negatives

CATS = ["debris", "animal_on_road", "other"]


def test_a_simulated_reviewer_errs_at_its_rate_and_otherwise_tells_the_truth() -> None:
    rv = SimReviewer("r", 0.2, 0)
    rng = random.Random(1)
    rare = {"is_rare": True, "category": "debris"}
    normal = {"is_rare": False, "category": "normal"}
    rare_answers = [rv.decide(rare, CATS, rng) for _ in range(4000)]
    normal_answers = [rv.decide(normal, CATS, rng) for _ in range(4000)]
    right = sum(a["verdict"] == "edge_case" and a["category"] == "debris" for a in rare_answers) / 4000
    false_alarm = sum(a["verdict"] == "edge_case" for a in normal_answers) / 4000
    assert abs(right - 0.8) < 0.03 and abs(false_alarm - 0.2) < 0.03
    assert all(a["category"] in CATS for a in rare_answers + normal_answers if a["verdict"] == "edge_case")


def test_reviewers_spread_around_the_mean_error_rate() -> None:
    rates = [r.error_rate for r in make_reviewers(4, 0.1, 0)]
    assert abs(sum(rates) / 4 - 0.1) < 1e-9 and rates == sorted(rates) and len({r.name for r in
                                                                                 make_reviewers(4, 0.1, 0)}) == 4


def test_bad_loop_settings_name_the_value() -> None:
    with pytest.raises(ConfigError, match="budget=0"):
        LoopConfig(budget=0)
    with pytest.raises(ConfigError, match="error_rate=0.7"):
        LoopConfig(error_rate=0.7)
    with pytest.raises(ConfigError, match="class_weight_power=1.5"):
        LoopConfig(class_weight_power=1.5)
    with pytest.raises(ConfigError, match="finetune_trunk_lr=-0.1"):
        LoopConfig(finetune_trunk_lr=-0.1)
    with pytest.raises(ConfigError, match="distill_weight=-1"):
        LoopConfig(distill_weight=-1.0)
    with pytest.raises(ConfigError, match="mine_fill_nms_s=-1"):
        LoopConfig(mine_fill_nms_s=-1)
    with pytest.raises(ConfigError, match="mine_per_event_cap=0"):
        LoopConfig(mine_per_event_cap=0)
    assert LoopConfig(mine_dedup_s=None, mine_fill_nms_s=None, mine_per_event_cap=None).mining_overrides() == {}
    assert LoopConfig(mine_dedup_s=None, mine_fill_nms_s=0.3, mine_per_event_cap=None).mining_overrides() == {
        "selection": {"fill_nms_s": 0.3}}


def test_same_drive_negatives_keep_their_distance_from_every_edge_case_of_the_drive() -> None:
    import pyarrow as pa

    frames = pa.table({"frame_id": [f"{d}-{i}" for d in ("a", "b", "c") for i in range(200)],
                       "drive_id": [d for d in ("a", "b", "c") for _ in range(200)],
                       "frame_index": [i for _ in range(3) for i in range(200)]})
    edge = pa.table({"frame_id": ["a-40", "a-120", "b-10", "gone"], "drive_id": ["a", "a", "b", "z"]})
    neg = same_drive_negatives(frames, edge, stride=5, gap=30)
    ids = neg.column("frame_id").to_pylist()
    brute = [f"{d}-{i}" for d, pub in (("a", [40, 120]), ("b", [10])) for i in range(0, 200, 5)
             if min(abs(i - p) for p in pub) >= 30]
    assert ids == brute and not any(f.startswith("c-") for f in ids)  # drive c gave no edge case
    assert "a-10" in ids and "a-15" not in ids and "a-90" in ids and "a-95" not in ids
    assert same_drive_negatives(frames, edge, stride=0, gap=30).num_rows == 0


def test_the_gain_ratio_reads_as_words_when_random_gained_nothing() -> None:
    def result(v0: float, mined: float, rnd: float) -> LoopResult:
        return LoopResult(out="", config={}, models={"v0": {"rare_acc": v0}, "v1_mined": {"rare_acc": mined},
                                                     "v1_random": {"rare_acc": rnd}})

    assert result(0.1, 0.5, 0.2).gain_ratio_text == "4.0x"
    assert result(0.0, 0.26, 0.0).gain_ratio_text.startswith("unbounded")
    assert result(0.3, 0.2, 0.1).gain_ratio_text.startswith("n/a")


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.ray
@pytest.mark.spark
def test_a_small_loop_runs_end_to_end_through_every_engine(tmp_path: Path) -> None:
    # 4% rare frames in 250-frame drives, as the demo: the budget is always filled now, and in the 12%-rare,
    # 120-frame fleet this test used before, random picked as many rare frames by chance (9 of 60) as mining did
    cfg = LoopConfig(reference_drives=8, fleet_drives=12, eval_drives=3, frames_per_drive=250, fleet_rare_rate=0.04,
                     eval_rare_rate=0.25, budget=60, train_epochs=2, finetune_epochs=1, publish_interval_s=0.5,
                     publish_min_new=3, seed=7)
    res = run_loop(tmp_path, cfg, log=lambda m: None)
    saved = json.loads((tmp_path / "loop.json").read_text())
    assert set(saved["models"]) == {"v0", "v1_mined", "v1_random"} and (tmp_path / "loop.png").stat().st_size > 0
    assert res.models["v0"]["rare_acc"] == 0.0  # v0 has never seen a rare category
    mined, rand = res.selections["mined"], res.selections["random"]
    assert mined["candidates"] == rand["candidates"] > 0  # the same review effort
    spec = json.loads((Path(mined["run_dir"]) / "run.json").read_text())["spec"]  # the loop's selection for training
    assert spec["aggregate"]["dedup_s"] == cfg.mine_dedup_s and spec["selection"]["fill_nms_s"] == cfg.mine_fill_nms_s
    assert spec["selection"]["per_event_cap"] == cfg.mine_per_event_cap
    assert mined["rare"] > rand["rare"]
    # every published row went through review, and the dataset is readable at its version
    assert mined["published"] > 0 and res.datasets["mined"]["version"] is not None
    ids = set(pq.read_table(Path(mined["run_dir"]) / "candidates.parquet").column("frame_id").to_pylist())
    from edgemine.jobs.datasets import read_dataset

    published = read_dataset(res.datasets["mined"]["path"], version=res.datasets["mined"]["version"])
    assert set(published.column("frame_id").to_pylist()) <= ids
    assert res.latency["max_s"] < 10.0
    assert res.review["decisions_mined"] >= mined["candidates"]
    # v1 is replay: v0's own training rows once plus every published train row edge_case_weight times (plus
    # same-drive negatives), and
    # it is held out on v0's held-out drives plus the dataset's val split
    from edgemine.embeddings.baseline import read_model_metadata

    v0 = read_model_metadata(tmp_path / "models" / "v0.pt")["metrics"]
    for name, ds in (("v1_mined", "mined"), ("v1_random", "random")):
        ft, meta = res.finetune[name], read_model_metadata(tmp_path / "models" / f"{name}.pt")
        ref = res.datasets[ds]
        rows = read_dataset(ref["path"], version=ref["version"]) if ref["version"] is not None else None
        splits = rows.column("split").to_pylist() if rows is not None else []
        assert ft["edge_case_rows"] == splits.count("train") and ft["edge_case_val_rows"] == splits.count("val")
        assert ft["replay_rows"] == v0["n_train"]
        assert meta["metrics"]["n_train"] == (v0["n_train"] + cfg.edge_case_weight * ft["edge_case_rows"]
                                              + ft["negative_rows"])
        assert (ft["negative_rows"] > 0) == (ft["edge_case_rows"] > 0)
        assert meta["metrics"]["n_val"] == v0["n_val"] + ft["edge_case_val_rows"]
        assert meta["class_names"][:len(v0["classes"])] == v0["classes"]  # v0's classes keep their indices
    assert 0.0 <= res.models["v1_mined"]["common_as_new"] <= 1.0 and res.models["v0"]["common_as_new"] == 0.0
