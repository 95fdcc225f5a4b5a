"""Fusion: calibrated per-signal percentiles in, one score and human-readable reasons per frame out.

Each signal arrives as a percentile in [0, 1] (NaN where it has no value for a frame). The fused score is
the weighted mean of the available percentiles (`weighted_mean`) or their weighted maximum
(`weighted_max`), so one unavailable signal does not pull a frame down. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np

from jobs.errors import ConfigError
from mining.signals.base import check_choice

FusionMode = Literal["weighted_mean", "weighted_max"]


def check_weights(weights: Mapping[str, float], *, known: Sequence[str]) -> None:
    for name, w in weights.items():
        if name not in known:
            raise ConfigError(f"unknown signal {name!r} in weights; known signals: {', '.join(sorted(known))}")
        if not np.isfinite(w) or w < 0:
            raise ConfigError(f"weight of signal {name!r} = {w} must be a finite number >= 0")
    if not any(w > 0 for w in weights.values()):
        raise ConfigError(f"at least one signal weight must be > 0, got {dict(weights)}")


def fuse(
    percentiles: Mapping[str, np.ndarray], *, weights: Mapping[str, float], mode: FusionMode = "weighted_mean"
) -> np.ndarray:
    """One score in [0, 1] per frame. Signals missing from `weights` or with weight 0 do not count."""
    check_choice("fusion.mode", mode, FusionMode)
    check_weights(weights, known=list(weights))
    used = [(name, float(w)) for name, w in weights.items() if w > 0 and name in percentiles]
    if not used:
        raise ConfigError(f"none of the weighted signals {sorted(weights)} has scores; have {sorted(percentiles)}")
    n = len(next(iter(percentiles.values())))
    num = np.zeros(n)
    den = np.zeros(n)
    best = np.zeros(n)
    for name, w in used:
        p = np.asarray(percentiles[name], dtype=np.float64)
        ok = ~np.isnan(p)
        num += np.where(ok, w * p, 0.0)
        den += np.where(ok, w, 0.0)
        best = np.maximum(best, np.where(ok, w * p, 0.0))
    if mode == "weighted_max":
        top = max(w for _, w in used)
        return best / top
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def contributions(percentiles: Mapping[str, np.ndarray], *, weights: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Each signal's share of the weighted-mean score per frame (sums to the score where signals exist)."""
    used = {k: float(w) for k, w in weights.items() if w > 0 and k in percentiles}
    n = len(next(iter(percentiles.values()))) if percentiles else 0
    den = np.zeros(n)
    for k, w in used.items():
        den += np.where(np.isnan(percentiles[k]), 0.0, w)
    den = np.where(den > 0, den, 1.0)
    return {k: np.where(np.isnan(percentiles[k]), 0.0, w * np.asarray(percentiles[k])) / den for k, w in used.items()}


def build_reasons(
    percentiles: Mapping[str, np.ndarray],
    raw: Mapping[str, np.ndarray],
    *,
    describe: Mapping[str, Callable[[float, float, int], str]],
    weights: Mapping[str, float],
    fired: Sequence[Sequence[str]] | None = None,
    min_percentile: float = 0.95,
) -> list[list[str]]:
    """Reasons per frame: every weighted signal at or above `min_percentile`, then every fired trigger.

    A frame with no strong signal still gets one reason naming its top signal, so every row explains itself.
    `describe[name](raw, pct, row)` formats one reason.
    """
    names = [k for k, w in weights.items() if w > 0 and k in percentiles]
    n = len(next(iter(percentiles.values()))) if percentiles else 0
    out: list[list[str]] = []
    mat = np.stack([np.nan_to_num(np.asarray(percentiles[k], dtype=np.float64), nan=-1.0) for k in names], axis=1) \
        if names else np.zeros((n, 0))
    for i in range(n):
        rs: list[str] = []
        order = np.argsort(-mat[i], kind="stable") if names else []
        for j in order:
            name = names[int(j)]
            if name == "trigger":
                continue
            p = mat[i, j]
            if p >= min_percentile:
                rs.append(describe[name](float(raw[name][i]), float(p), i))
        if fired is not None:
            rs.extend(f"trigger {r}" for r in fired[i])
        if not rs:
            top = [int(j) for j in order if mat[i, j] >= 0 and names[int(j)] != "trigger"]
            if top:
                j = top[0]
                rs.append("no strong signal; top: " + describe[names[j]](float(raw[names[j]][i]), float(mat[i, j]), i))
            else:
                rs.append("no signal available")
        out.append(rs)
    return out
