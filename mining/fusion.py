"""Fusion: calibrated per-signal percentiles in, one score and human-readable reasons per frame out.

Each signal arrives as a percentile in [0, 1] (1 - its tail p-value; NaN where it has no value for a
frame). Modes:

- `fisher` (default): the weighted mean of the signals' surprises, -log10(1 - percentile), i.e. Fisher's way
  of combining p-values. One signal deep in its tail (novelty p99.99 = 4) lifts a frame even when the others
  are ordinary, and a useless signal adds little. The score is in log10 units: 2 means the weighted
  geometric mean of the p-values is 0.01. Surprises are capped at `max_surprise`.
- `weighted_mean`: the weighted mean of the percentiles (score in [0, 1]).
- `weighted_max`: the largest weighted percentile (score in [0, 1]).

A signal that has no value for a frame is left out of that frame's mean. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Literal

import numpy as np

from edgemine.errors import ConfigError
from edgemine.mining.signals.base import check_choice

FusionMode = Literal["fisher", "weighted_mean", "weighted_max"]
DEFAULT_MAX_SURPRISE = 50.0


def check_weights(weights: Mapping[str, float], *, known: Sequence[str]) -> None:
    for name, w in weights.items():
        if name not in known:
            raise ConfigError(f"unknown signal {name!r} in weights; known signals: {', '.join(sorted(known))}")
        if not np.isfinite(w) or w < 0:
            raise ConfigError(f"weight of signal {name!r} = {w} must be a finite number >= 0")
    if not any(w > 0 for w in weights.values()):
        raise ConfigError(f"at least one signal weight must be > 0, got {dict(weights)}")


def surprise(percentile: np.ndarray, *, cap: float = DEFAULT_MAX_SURPRISE) -> np.ndarray:
    """-log10 of the tail p-value (1 - percentile), capped; NaN stays NaN."""
    p = 1.0 - np.asarray(percentile, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = -np.log10(np.clip(p, 10.0**-cap, 1.0))
    return np.where(np.isnan(p), np.nan, s)


def _terms(percentiles: Mapping[str, np.ndarray], weights: Mapping[str, float], mode: FusionMode,
           cap: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-signal weighted terms (0 where missing) and the per-frame sum of weights present."""
    used = {k: float(w) for k, w in weights.items() if w > 0 and k in percentiles}
    if not used:
        raise ConfigError(f"none of the weighted signals {sorted(weights)} has scores; have {sorted(percentiles)}")
    n = len(next(iter(percentiles.values())))
    den = np.zeros(n)
    terms = {}
    for k, w in used.items():
        p = np.asarray(percentiles[k], dtype=np.float64)
        v = surprise(p, cap=cap) if mode == "fisher" else p
        ok = ~np.isnan(v)
        terms[k] = np.where(ok, w * v, 0.0)
        den += np.where(ok, w, 0.0)
    return terms, den


def fuse(
    percentiles: Mapping[str, np.ndarray], *, weights: Mapping[str, float], mode: FusionMode = "fisher",
    max_surprise: float = DEFAULT_MAX_SURPRISE,
) -> np.ndarray:
    """One score per frame. Signals missing from `weights` or with weight 0 do not count."""
    check_choice("fusion.mode", mode, FusionMode)
    check_weights(weights, known=list(weights))
    terms, den = _terms(percentiles, weights, mode, max_surprise)
    if mode == "weighted_max":
        top = max(float(w) for k, w in weights.items() if k in terms)
        return np.max(np.stack(list(terms.values())), axis=0) / top
    total = np.sum(np.stack(list(terms.values())), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, total / np.where(den > 0, den, 1.0), 0.0)


def contributions(percentiles: Mapping[str, np.ndarray], *, weights: Mapping[str, float],
                  mode: FusionMode = "fisher", max_surprise: float = DEFAULT_MAX_SURPRISE) -> dict[str, np.ndarray]:
    """Each signal's share of the score per frame (they sum to the score for the mean-type modes)."""
    terms, den = _terms(percentiles, weights, mode, max_surprise)
    den = np.where(den > 0, den, 1.0)
    return {k: t / den for k, t in terms.items()}


def build_reasons(
    percentiles: Mapping[str, np.ndarray],
    raw: Mapping[str, np.ndarray],
    *,
    describe: Mapping[str, Callable[[float, float, int], str]],
    weights: Mapping[str, float],
    fired: Sequence[Sequence[str]] | None = None,
    min_percentile: float = 0.95,
    rule_signals: Collection[str] | None = None,
    fired_reason: Callable[[str], str] | None = None,
) -> list[list[str]]:
    """Reasons per frame: every weighted signal at or above `min_percentile`, then every fired rule.

    A frame with no strong signal still gets one reason naming its top signal, so every row explains itself.
    `describe[name](raw, pct, row)` formats one reason. The signals in `rule_signals` explain themselves by
    the rules that fired (`fired[i]`, each formatted by `fired_reason`), never by their percentile; by
    default they are the registry's signals with a `fired_column` (trigger), formatted as it formats them.
    """
    if rule_signals is None or fired_reason is None:
        from edgemine.mining.signals import SIGNALS

        firing = [cls for cls in SIGNALS.values() if cls.fired_column is not None]
        rule_signals = {cls.name for cls in firing} if rule_signals is None else rule_signals
        fired_reason = firing[0].fired_reason if fired_reason is None and firing else fired_reason
    by_rule, say_fired = set(rule_signals), fired_reason or str
    names = [k for k, w in weights.items() if w > 0 and k in percentiles]
    n = len(next(iter(percentiles.values()))) if percentiles else 0
    out: list[list[str]] = []
    mat = np.stack([np.nan_to_num(np.asarray(percentiles[k], dtype=np.float64), nan=-1.0) for k in names], axis=1) \
        if names else np.zeros((n, 0))
    for i in range(n):
        rs: list[str] = []
        order: list[int] = np.argsort(-mat[i], kind="stable").tolist() if names else []
        for j in order:
            name = names[int(j)]
            if name in by_rule:
                continue
            p = mat[i, j]
            if p >= min_percentile:
                rs.append(describe[name](float(raw[name][i]), float(p), i))
        if fired is not None:
            rs.extend(say_fired(r) for r in fired[i])
        if not rs:
            top = [int(j) for j in order if mat[i, j] >= 0 and names[int(j)] not in by_rule]
            if top:
                j = top[0]
                rs.append("no strong signal; top: " + describe[names[j]](float(raw[names[j]][i]), float(mat[i, j]), i))
            else:
                rs.append("no signal available")
        out.append(rs)
    return out
