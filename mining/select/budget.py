"""How a review budget is spent: every event once, then the best remaining frames, in events or not.

Round 1 is the selection strategy over the events' de-duplicated frames with a cap of one frame per event,
so the budget reaches as many events as it can. Round 2 (`second_round`) spends the rest on the highest
fused scores among (a) more frames of those events, within `per_event_cap` / `per_scenario_cap`, and (b)
the fill: frames outside every event, one per drive per second (`edgemine.mining.select.nms`). Spending the whole
budget on a few events' frames before any other moment is looked at loses to the plain baseline (kNN +
temporal NMS) when the events above the thresholds are many ordinary ones. Pure numpy.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from edgemine.errors import ConfigError
from edgemine.mining.select.base import Caps, Pool


def second_round(pool: Pool, first: np.ndarray, *, caps: Caps, fill_scores: np.ndarray, need: int) -> np.ndarray:
    """Up to `need` more picks, best score first: pool rows as themselves, fill rows as `pool.n + j`.

    `first` are the pool rows already picked; `fill_scores` the scores of the fill candidates (already
    temporally suppressed, best first or not). Pool rows respect the caps, counting the first round's picks.
    """
    if need < 0:
        raise ConfigError(f"need={need} must be >= 0")
    taken = set(np.asarray(first, dtype=np.int64).tolist())
    per_event: Counter[object] = Counter()
    per_scen: Counter[object] = Counter()
    for i in taken:
        per_event[pool.event_ids[i] if pool.event_ids is not None else None] += 1
        per_scen[pool.scenario_ids[i] if pool.scenario_ids is not None else None] += 1
    scores = np.asarray(pool.scores, dtype=np.float64)
    fill = np.asarray(fill_scores, dtype=np.float64)
    cand = np.r_[scores, np.nan_to_num(fill, nan=-np.inf)]
    order = np.lexsort((np.arange(len(cand)), -cand))
    out: list[int] = []
    for i in order:
        if len(out) >= need:
            break
        i = int(i)
        if i >= pool.n:
            out.append(i)
            continue
        if i in taken:
            continue
        ev = pool.event_ids[i] if pool.event_ids is not None else None
        sc = pool.scenario_ids[i] if pool.scenario_ids is not None else None
        if caps.per_event is not None and ev is not None and per_event[ev] >= caps.per_event:
            continue
        if caps.per_scenario is not None and sc is not None and per_scen[sc] >= caps.per_scenario:
            continue
        per_event[ev] += 1
        per_scen[sc] += 1
        out.append(i)
    return np.asarray(out, dtype=np.int64)
