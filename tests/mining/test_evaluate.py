from __future__ import annotations

import pandas as pd
import pytest

from jobs.errors import SchemaError
from mining.evaluate import evaluate, evaluate_selection, format_table


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


def test_baselines_use_the_same_number_of_frames() -> None:
    scores = pd.DataFrame({"frame_id": ["n0", "n1", "n2", "a0", "a1", "b0", "c0"],
                           "novelty": [0.1, 0.2, 0.3, 0.9, 0.8, 0.95, 0.1],
                           "uncertainty": [0.9, 0.8, 0.1, 0.1, 0.1, 0.1, float("nan")]})
    rows = evaluate(["a0", "b0"], scores, gt(), random_repeats=5)
    names = [m.method for m in rows]
    assert names == ["edgemine", "random (mean of 5)", "novelty-only", "uncertainty-only"]
    assert all(m.n_selected == 2 for m in rows)
    assert rows[2].frame_precision == 1.0 and rows[3].frame_precision == 0.0
    assert "| edgemine | 2 | 0.667 | 1.000 | 2/3 | 2/2 |" in format_table(rows)


def test_ground_truth_must_have_its_columns() -> None:
    with pytest.raises(SchemaError, match=r"missing column\(s\) \['is_rare'\]"):
        evaluate_selection(["a"], gt().drop(columns="is_rare"))
