"""How a review budget is spent: every event once, then the best remaining frames, in events or not.

Round 1 is the selection strategy over the events' de-duplicated frames with a cap of one frame per event,
so the budget reaches as many events as it can. Round 2 (`second_round`) spends the rest on the highest
fused scores among (a) more frames of those events, within `per_event_cap` / `per_scenario_cap`, and (b)
the fill: frames outside every event, one per drive per second (`edgemine.mining.select.nms`); both within
`per_drive_cap`, which counts event and fill frames alike. Spending the whole
budget on a few events' frames before any other moment is looked at loses to the plain baseline (kNN +
temporal NMS) when the events above the thresholds are many ordinary ones. Pure numpy.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from edgemine.errors import ConfigError
from edgemine.mining.select.base import Caps, Pool
from edgemine.mining.select.nms import temporal_nms


def second_round(pool: Pool, first: np.ndarray, *, caps: Caps, fill_scores: np.ndarray, need: int,
                 fill_drives: np.ndarray | None = None) -> np.ndarray:
    """Up to `need` more picks, best score first: pool rows as themselves, fill rows as `pool.n + j`.

    `first` are the pool rows already picked; `fill_scores` the scores of the fill candidates (already
    temporally suppressed, best first or not), `fill_drives` their drives (needed for `caps.per_drive`). Pool
    rows respect the caps, counting the first round's picks; fill rows respect the per-drive cap, so a capped
    drive's place goes to the next best frame of another drive.
    """
    if need < 0:
        raise ConfigError(f"need={need} must be >= 0")
    fill = np.asarray(fill_scores, dtype=np.float64)
    drive_cap = caps.per_drive
    if drive_cap is not None and ((pool.n and pool.drive_ids is None) or (len(fill) and fill_drives is None)):
        raise ConfigError("selection.per_drive_cap needs the drive of every pool and fill frame")
    if fill_drives is not None and len(fill_drives) != len(fill):
        raise ConfigError(f"fill_drives has {len(fill_drives)} entries for {len(fill)} fill scores")
    taken = set(np.asarray(first, dtype=np.int64).tolist())
    per_event: Counter[object] = Counter()
    per_scen: Counter[object] = Counter()
    per_drive: Counter[object] = Counter()

    def drive_of(i: int) -> object:
        if i >= pool.n:
            return fill_drives[i - pool.n] if fill_drives is not None else None
        return pool.drive_ids[i] if pool.drive_ids is not None else None

    for i in taken:
        per_event[pool.event_ids[i] if pool.event_ids is not None else None] += 1
        per_scen[pool.scenario_ids[i] if pool.scenario_ids is not None else None] += 1
        per_drive[drive_of(i)] += 1
    scores = np.asarray(pool.scores, dtype=np.float64)
    cand = np.r_[scores, np.nan_to_num(fill, nan=-np.inf)]
    order = np.lexsort((np.arange(len(cand)), -cand))
    out: list[int] = []
    for i in order:
        if len(out) >= need:
            break
        i = int(i)
        if i in taken:
            continue
        dv = drive_of(i)
        if drive_cap is not None and dv is not None and per_drive[dv] >= drive_cap:
            continue
        if i >= pool.n:
            per_drive[dv] += 1
            out.append(i)
            continue
        ev = pool.event_ids[i] if pool.event_ids is not None else None
        sc = pool.scenario_ids[i] if pool.scenario_ids is not None else None
        if caps.per_event is not None and ev is not None and per_event[ev] >= caps.per_event:
            continue
        if caps.per_scenario is not None and sc is not None and per_scen[sc] >= caps.per_scenario:
            continue
        per_event[ev] += 1
        per_scen[sc] += 1
        per_drive[dv] += 1
        out.append(i)
    return np.asarray(out, dtype=np.int64)


def spend_rest(pool: Pool, first: np.ndarray, *, caps: Caps, need: int, fill_scores: np.ndarray,
               fill_drives: np.ndarray, fill_ts_us: np.ndarray, taken: tuple[np.ndarray, np.ndarray],
               window_s: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Round 2 with its fill: temporal NMS over the fill frames, then `second_round`.

    `fill_*` describe every frame outside the events; `taken` (drives, µs) the round-1 picks, which suppress
    fill frames near them and count towards the per-drive cap. Returns (fill frames that are candidates,
    as rows of `fill_*`; the picks, pool rows as themselves and candidate j as `pool.n + j`).
    """
    # `need` candidates are enough: the NMS keeps each drive within its cap counting round 1, and a round-2
    # event frame that then takes a drive's last place costs one fill candidate but spends one slot itself
    rows = temporal_nms(fill_scores, fill_drives, fill_ts_us, n=need, window_s=window_s, taken=taken,
                        per_drive=caps.per_drive)
    more = second_round(pool, first, caps=caps, fill_scores=np.asarray(fill_scores)[rows], need=need,
                        fill_drives=np.asarray(fill_drives)[rows])
    return rows, more
