"""Evidence a reviewer sees beside a candidate: the frames around it in its own drive.

(The nearest reference frames come straight from the FAISS search; see `jobs.outputs`.) Pure numpy/pandas.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

DEFAULT_OFFSETS_S: tuple[float, ...] = (-1.0, -0.5, 0.5, 1.0)


def context_frames(
    candidates: pd.DataFrame,
    frames: pd.DataFrame,
    *,
    offsets_s: Sequence[float] = DEFAULT_OFFSETS_S,
    tolerance_s: float = 0.15,
) -> tuple[list[list[str]], list[list[float]]]:
    """For each candidate (drive_id, ts_us, frame_id), the uris of its drive's frames nearest to each offset,
    and each one's true signed offset from the candidate in seconds (what a reviewer reads as "-0.5 s").

    `frames` has drive_id, ts_us, frame_id, uri for (at least) the candidates' drives. An offset with no
    frame within `tolerance_s` is skipped; the candidate itself is never its own context. Order follows
    `offsets_s`.
    """
    tol = int(round(tolerance_s * 1e6))
    by_drive = {d: g.sort_values("ts_us", kind="mergesort") for d, g in frames.groupby("drive_id", sort=False)}
    out: list[list[str]] = []
    out_offsets: list[list[float]] = []
    for drive, ts, fid in zip(candidates["drive_id"], candidates["ts_us"], candidates["frame_id"], strict=True):
        g = by_drive.get(drive)
        uris: list[str] = []
        offsets: list[float] = []
        if g is not None and len(g):
            t = g["ts_us"].to_numpy(dtype=np.int64)
            for off in offsets_s:
                target = int(ts) + int(round(off * 1e6))
                j = int(np.searchsorted(t, target))
                best = None
                for c in (j - 1, j):
                    if 0 <= c < len(t) and abs(int(t[c]) - target) <= tol and g["frame_id"].iat[c] != fid and (
                            best is None or abs(int(t[c]) - target) < abs(int(t[best]) - target)):
                        best = c
                if best is not None:
                    uri = g["uri"].iat[best]
                    if uri not in uris:
                        uris.append(uri)
                        offsets.append((int(t[best]) - int(ts)) / 1e6)
        out.append(uris)
        out_offsets.append(offsets)
    return out, out_offsets
