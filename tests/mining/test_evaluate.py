from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edgemine.errors import SchemaError
from edgemine.mining.evaluate import auroc, average_precision, evaluate, evaluate_selection, format_table


def gt() -> pd.DataFrame:
    rows = [("n0", None, "normal", False), ("n1", None, "normal", False), ("n2", None, "normal", False),
            ("a0", "e1", "animal", True), ("a1", "e1", "animal", True),
            ("b0", "e2", "debris", True), ("c0", "e3", "animal", True)]
    return pd.DataFrame(rows, columns=["frame_id", "event_id", "category", "is_rare"])


def test_event_recall_precision_and_coverage() -> None:
    m = evaluate_selection(["a1", "n0", "b0", "b0"], gt())
    assert m.n_selected == 3 and m.events_found == 2 and m.events_total == 3
    assert m.event_recall == pytest.approx(2 / 3) and m.frame_precision == pytest.approx(2 / 3)
    assert m.coverage == {"animal": 0.5, "debris": 1.0} and m.categories_found == 2


def scored() -> pd.DataFrame:
    """The gt() frames as a run scored them: a0/a1 are one event 0.2 s apart in drive A."""
    return pd.DataFrame({"frame_id": ["n0", "n1", "n2", "a0", "a1", "b0", "c0"],
                         "drive_id": ["A", "B", "C", "A", "A", "B", "C"],
                         "ts_us": [0, 0, 0, 5_000_000, 5_200_000, 9_000_000, 9_000_000],
                         "score": [0.1, 0.2, 0.3, 0.9, 0.8, 0.95, 0.05],
                         "novelty_raw": [0.1, 0.2, 0.3, 0.9, 0.8, 0.7, float("nan")]})


def test_baselines_use_the_same_number_of_frames() -> None:
    rows = evaluate(["a0", "b0"], scored(), gt(), random_repeats=5)
    names = [m.method for m in rows]
    assert names == ["edgemine", "plain kNN + NMS", "random (mean of 5)"]
    assert all(m.n_selected == 2 for m in rows)
    # the plain baseline skips a1 (0.2 s after a0 in drive A) and takes b0: two events, not one
    assert rows[1].events_found == 2 and rows[1].frame_precision == 1.0
    assert "| edgemine | 2 | 0.667 | 1.000 | 2/3 | 2/2 |" in format_table(rows)


def test_auroc_and_average_precision_match_scikit_learn() -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.random(300) < 0.1
    s = np.round(rng.random(300) + y * 0.5, 1)  # many ties
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s))
    assert auroc(y, np.where(y, np.nan, s)) == 0.0  # a frame without a score ranks last
    assert np.isnan(auroc(np.zeros(4, bool), np.arange(4.0)))


def test_ground_truth_must_have_its_columns() -> None:
    with pytest.raises(SchemaError, match=r"missing column\(s\) \['is_rare'\]"):
        evaluate_selection(["a"], gt().drop(columns="is_rare"))


def test_duplicate_ground_truth_ids_are_named() -> None:
    g = pd.concat([gt(), gt().iloc[[3]]])
    with pytest.raises(SchemaError, match="duplicate frame_id 'a0'"):
        evaluate_selection(["a0"], g)


def test_the_plain_baseline_needs_drives_and_times() -> None:
    with pytest.raises(SchemaError, match=r"needs \['drive_id', 'ts_us'\]"):
        evaluate(["a0"], scored().drop(columns=["drive_id", "ts_us"]), gt(), random_repeats=1)
