from __future__ import annotations

import numpy as np
import pytest

from edgemine.errors import ConfigError
from edgemine.mining.select.base import Caps, Pool
from edgemine.mining.select.budget import second_round


def pool() -> Pool:
    #                 e1 peak  e1   e1   e2 peak  e2   e3 peak
    return Pool(scores=np.array([5.0, 4.0, 3.5, 4.5, 1.0, 2.0]),
                event_ids=np.array(["e1", "e1", "e1", "e2", "e2", "e3"], dtype=object),
                scenario_ids=np.array(["s0", "s0", "s1", "s1", "s1", "s0"], dtype=object))


def test_the_rest_of_the_budget_goes_to_the_best_scores_events_or_fill() -> None:
    first = np.array([0, 3, 5])  # one frame per event
    fill = np.array([3.8, 1.5, np.nan])  # fill candidates, rows 6, 7, 8 of the extended pool
    got = second_round(pool(), first, caps=Caps(per_event=10), fill_scores=fill, need=4)
    assert got.tolist() == [1, 6, 2, 7]  # 4.0 (e1), 3.8 (fill), 3.5 (e1), 1.5 (fill) — e2's 1.0 is worse
    assert second_round(pool(), first, caps=Caps(per_event=10), fill_scores=fill, need=0).tolist() == []


def test_caps_count_the_first_round() -> None:
    first = np.array([0, 3, 5])
    fill = np.array([0.5])
    assert second_round(pool(), first, caps=Caps(per_event=2), fill_scores=fill, need=5).tolist() == [1, 4, 6]
    # per scenario: s0 holds rows 0 and 5 already, s1 row 3; row 2 fills s1, so row 4 is capped too
    assert second_round(pool(), first, caps=Caps(per_scenario=2), fill_scores=fill, need=5).tolist() == [2, 6]
    with pytest.raises(ConfigError, match="need=-1"):
        second_round(pool(), first, caps=Caps(), fill_scores=fill, need=-1)
