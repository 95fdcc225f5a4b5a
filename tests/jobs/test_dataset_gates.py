"""Publish gates: each refuses (or warns) with a message naming the figure and the setting that would allow it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from edgemine.errors import ConfigError, PublishRefusedError
from edgemine.jobs.datasets import dataset_log, read_dataset
from edgemine.jobs.publish import PublishGates, SplitPolicy, publish, training_rows
from edgemine.jobs.publish_gates import check_gates
from tests.support.datasets import confirmed

POLICY = SplitPolicy()  # train=0.8, val=0.2 by drive


def figures(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"dataset": "ds", "splits": {"train": 8, "val": 2}, "expected_splits": ["train", "val"],
                               "train_by_category": {"debris": 8}, "categories": ["debris"],
                               "added_reviews": [2] * 10, "agreement": {"run-1": {"krippendorff_alpha": 0.7}}}
    return base | kw


def test_a_version_that_passes_every_gate_has_no_warnings() -> None:
    gates = PublishGates(min_agreement=0.5, min_reviews=2, category_without_train="refuse")
    assert check_gates(gates, **figures()) == []  # type: ignore[arg-type]


@pytest.mark.parametrize(("gates", "kw", "gate", "message"), [
    (PublishGates(), {"splits": {"train": 3}}, "empty_split",
     r"split 'val' would have 0 rows in ds \(3 rows: train=3\).*--empty-split warn"),
    (PublishGates(min_agreement=0.4), {"agreement": {"run-1": {"krippendorff_alpha": 0.0}}}, "min_agreement",
     r"run 'run-1' has krippendorff_alpha=0.000, below --min-agreement 0.4.*--min-agreement"),
    (PublishGates(min_agreement=0.4, agreement_metric="fleiss_kappa"), {"agreement": {"run-1": {"fleiss_kappa": None}}},
     "min_agreement", r"run 'run-1' has no fleiss_kappa \(no item was reviewed by two or more.*--min-agreement none"),
    (PublishGates(min_agreement=0.4), {"agreement": {}}, "min_agreement",
     r"no agreement figures to check --min-agreement 0.4 against.*--min-agreement none"),
    (PublishGates(min_reviews=2), {"added_reviews": [2, 1, 1, 3]}, "min_reviews",
     r"2 of 4 row\(s\) to add have fewer than --min-reviews 2 reviews \(fewest: 1\).*--min-reviews"),
    (PublishGates(category_without_train="refuse"),
     {"categories": ["debris", "other"], "train_by_category": {"debris": 8}}, "category_without_train",
     r"category \['other'\] would have no rows in train in ds.*--category-without-train warn"),
])
def test_each_gate_refuses_naming_the_figure_and_the_setting(gates: PublishGates, kw: dict, gate: str,
                                                            message: str) -> None:
    with pytest.raises(PublishRefusedError, match=message) as err:
        check_gates(gates, **figures(**kw))  # type: ignore[arg-type]
    assert err.value.gate == gate and str(err.value).startswith("publish refused: ")
    # CLI words only (flags); the PublishGates setting that allows it is an attribute, for library callers
    assert not re.search(r"PublishGates|\b(empty_split|min_agreement|min_reviews|category_without_train)\b",
                         str(err.value)), str(err.value)
    assert gate in err.value.allow
    allowed = dataclasses.replace(gates, **err.value.allow)
    assert check_gates(allowed, **figures(**kw)) is not None  # type: ignore[arg-type]  # no refusal now


def test_one_refusal_lists_every_failing_gate_and_every_run_below_the_floor() -> None:
    gates = PublishGates(min_agreement=0.9, min_reviews=3, category_without_train="refuse")
    kw = figures(splits={"train": 3}, categories=["debris", "other"], added_reviews=[2, 3, 1],
                 agreement={"mined": {"krippendorff_alpha": 0.512}, "ok": {"krippendorff_alpha": 0.95},
                            "random": {"krippendorff_alpha": 0.2157}})
    with pytest.raises(PublishRefusedError) as err:
        check_gates(gates, **kw)  # type: ignore[arg-type]
    text = str(err.value)
    assert text.startswith("publish refused, 5 problems: (1) split 'val' would have 0 rows"), text
    for part in ("--empty-split warn", "2 of 3 row(s) to add have fewer than --min-reviews 3 reviews (fewest: 1)",
                 "--min-reviews 1", "run 'mined' has krippendorff_alpha=0.512", "--min-agreement 0.512",
                 "run 'random' has krippendorff_alpha=0.216", "--min-agreement 0.215",
                 "category ['other'] would have no rows in train", "--category-without-train warn"):
        assert part in text, part
    assert "'ok'" not in text  # above the floor
    assert err.value.gate == "empty_split"
    assert err.value.allow == {"empty_split": "warn", "min_reviews": 1, "min_agreement": 0.2157,
                               "category_without_train": "warn"}
    assert check_gates(dataclasses.replace(gates, **err.value.allow), **kw)  # type: ignore[arg-type]  # warns


def test_warn_and_off_let_the_version_through() -> None:
    kw = figures(splits={"train": 3}, categories=["debris", "other"])
    warned = check_gates(PublishGates(empty_split="warn"), **kw)  # type: ignore[arg-type]
    assert len(warned) == 2 and "split 'val' would have 0 rows" in warned[0] and "['other']" in warned[1]
    assert check_gates(PublishGates(empty_split="off", category_without_train="off"), **kw) == []  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "message"), [
    ({"empty_split": "maybe"}, r"empty_split='maybe' is not one of \['refuse', 'warn', 'off'\]"),
    ({"agreement_metric": "kappa"}, r"agreement_metric='kappa' is not one of"),
    ({"min_agreement": 2.0}, r"min_agreement=2.0 must be between -1 and 1"),
    ({"min_reviews": -1}, r"min_reviews=-1 must be >= 0"),
])
def test_bad_gate_settings_name_the_value(kw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PublishGates(**kw)


def test_a_refused_publish_writes_nothing_and_a_warned_one_logs_why(tmp_path: Path) -> None:
    ds = str(tmp_path / "edge_cases")
    rows = training_rows(confirmed([0, 1, 2]), policy=POLICY)  # one drive, d0: every row in one split
    assert set(rows.column("split").to_pylist()) == {"train"}
    with pytest.raises(PublishRefusedError, match="split 'val' would have 0 rows"):
        publish(rows, ds, lineage={}, frames="reference", gates=PublishGates(), policy=POLICY)
    assert not (tmp_path / "edge_cases").exists()
    r = publish(rows, ds, lineage={}, frames="reference", gates=PublishGates(empty_split="warn"), policy=POLICY)
    assert r.version == 0 and len(r.warnings) == 1
    lineage = dataset_log(ds)[0]["lineage"]
    assert lineage["edgemine.gate_warnings"] == list(r.warnings)
    assert lineage["edgemine.gates"]["empty_split"] == "warn"


def test_gates_judge_the_whole_version_not_just_the_added_rows(tmp_path: Path) -> None:
    ds = str(tmp_path / "edge_cases")
    train_drive = confirmed([0, 1], drives=["d-train", "d-train"])
    val_drive = confirmed([2], drives=["d-val"])
    policy = SplitPolicy(ratios={"train": 0.5, "val": 0.5}, salt=_salt_splitting("d-train", "d-val"))
    publish(training_rows(val_drive, policy=policy), ds, lineage={}, frames="reference",
            gates=PublishGates(empty_split="off"), policy=policy)
    # these rows are all train; with v0's val row the version has both splits, so the gate lets it through
    r = publish(training_rows(train_drive, policy=policy), ds, lineage={}, frames="reference",
                gates=PublishGates(), policy=policy)
    assert r.version == 1 and len(r.warnings) == 1  # f0002 (construction_zone) is v0's val row: no train row
    assert "category ['construction_zone'] would have no rows in train" in r.warnings[0]
    assert read_dataset(ds).column("split").to_pylist() == ["train", "train", "val"]


def _salt_splitting(train: str, val: str) -> str:
    from edgemine.jobs.publish import assign_split

    for k in range(1000):
        salt = f"s{k}"
        if assign_split([train, val], SplitPolicy(ratios={"train": 0.5, "val": 0.5}, salt=salt)).to_pylist() == [
                "train", "val"]:
            return salt
    raise AssertionError("no salt splits the two drives")
