"""Temporal non-maximum suppression: the best frames, at most one per drive per time window.

The plain baseline (`mining.evaluate`) and the job's budget fill (`jobs.mine`) both take frames this way,
so neither spends a reviewer's budget on consecutive, near-identical frames of one moment.
"""

from __future__ import annotations

import bisect

import numpy as np

from edgemine.errors import ConfigError


def temporal_nms(scores: np.ndarray, drive_ids: np.ndarray, ts_us: np.ndarray, *, n: int,
                 window_s: float = 1.0, taken: tuple[np.ndarray, np.ndarray] | None = None,
                 per_drive: int | None = None) -> np.ndarray:
    """Rows of the n best frames, highest score first, never two of one drive less than `window_s` apart.

    Greedy non-maximum suppression in time: a frame is skipped when an already chosen frame of its drive
    lies within `window_s` of it (so any `window_s` of a drive holds at most one chosen frame). `taken`
    (drive ids, µs) are frames chosen before, which suppress like chosen ones and count towards `per_drive`
    (at most that many chosen frames per drive). NaN scores come last; ties go to the earlier row. Fewer
    than n rows come back only when every frame left is suppressed.
    """
    if n < 0:
        raise ConfigError(f"n={n} must be >= 0")
    if window_s < 0:
        raise ConfigError(f"window_s={window_s} must be >= 0")
    if per_drive is not None and per_drive < 1:
        raise ConfigError(f"per_drive={per_drive} must be >= 1 (or None for no cap)")
    v = np.asarray(scores, dtype=np.float64)
    if np.asarray(ts_us).dtype.kind == "f" and np.isnan(np.asarray(ts_us)).any():
        raise ConfigError("ts_us has NaN values: every frame needs a timestamp")
    drives, ts = np.asarray(drive_ids), np.asarray(ts_us, dtype=np.int64)
    if not len(v) == len(drives) == len(ts):
        raise ConfigError(f"scores, drive_ids and ts_us differ in length: {len(v)}, {len(drives)}, {len(ts)}")
    order = np.lexsort((np.arange(len(v)), -np.nan_to_num(v, nan=-np.inf)))
    window = int(round(window_s * 1e6))
    chosen: dict[object, list[int]] = {}
    if taken is not None:
        for d, t in zip(*taken, strict=True):
            bisect.insort(chosen.setdefault(d, []), int(t))
    out: list[int] = []
    for i in order:
        if len(out) >= n:
            break
        times = chosen.setdefault(drives[i], [])
        if per_drive is not None and len(times) >= per_drive:
            continue
        j = bisect.bisect_left(times, ts[i])
        if (j < len(times) and times[j] - ts[i] < window) or (j > 0 and ts[i] - times[j - 1] < window):
            continue
        times.insert(j, int(ts[i]))
        out.append(int(i))
    return np.asarray(out, dtype=np.int64)
