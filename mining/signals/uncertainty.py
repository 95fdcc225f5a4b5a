"""Uncertainty: how unsure the perception model is about a frame, from its logits or probabilities.

Measures: `entropy` (nats), `margin` (1 - (p1 - p2)), `least_confidence` (1 - p1), and, when several
models are given, `disagreement` (mutual information: entropy of the mean prediction minus the mean
entropy, the part of the uncertainty that comes from the models disagreeing). With several models the
first three are computed on the mean of their probabilities. Calibrated against the mined frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np

from edgemine.errors import ConfigError
from edgemine.mining.calibration import format_percentile
from edgemine.mining.signals.base import Need, Signal, SignalInputs, SignalOutput, check_choice

Measure = Literal["entropy", "margin", "least_confidence", "disagreement"]
MEASURES: tuple[str, ...] = ("entropy", "margin", "least_confidence", "disagreement")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - np.nanmax(z, axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def normalize_probs(probs: np.ndarray) -> np.ndarray:
    """Clip to >= 0 and renormalise rows to sum to 1 (logged probabilities are often slightly off)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, None)
    s = p.sum(axis=1, keepdims=True)
    return np.where(s > 0, p / np.where(s > 0, s, 1.0), np.nan)


def entropy(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1) + np.where(np.isnan(p).any(axis=1), np.nan, 0.0)


def _top2(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if p.shape[1] == 1:
        return p[:, 0], np.zeros(len(p))
    s = -np.sort(-p, axis=1)
    return s[:, 0], s[:, 1]


def uncertainty(
    scores: np.ndarray | Sequence[np.ndarray], *, measure: Measure = "entropy", from_logits: bool = True
) -> np.ndarray:
    """Raw uncertainty per frame (higher = less sure). `scores` is one (n, C) array or one per model.

    Rows with NaN (a model had no output for that frame) give NaN.
    """
    check_choice("measure", measure, Measure)
    arrays = [scores] if isinstance(scores, np.ndarray) else list(scores)
    if not arrays:
        raise ConfigError("uncertainty needs at least one (n, C) array of logits or probabilities")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or len(arrays[0].shape) != 2:
        raise ConfigError(f"uncertainty: every model must give an (n, C) array of one shape, got {sorted(shapes)}")
    probs = [softmax(a) if from_logits else normalize_probs(a) for a in arrays]
    mean = np.mean(probs, axis=0)
    if measure == "entropy":
        return entropy(mean)
    if measure == "least_confidence":
        p1, _ = _top2(mean)
        return 1.0 - p1
    if measure == "margin":
        p1, p2 = _top2(mean)
        return 1.0 - (p1 - p2)
    if len(probs) < 2:
        raise ConfigError("uncertainty measure 'disagreement' needs at least two models")
    return entropy(mean) - np.mean([entropy(p) for p in probs], axis=0)


class Uncertainty(Signal):
    name: ClassVar[str] = "uncertainty"
    calibration = "mined"
    needs: ClassVar[frozenset[Need]] = frozenset({"logits"})

    def __init__(self, *, measure: Measure = "entropy") -> None:
        check_choice("signals.uncertainty.measure", measure, Measure)
        self.measure = measure

    def compute(self, inputs: SignalInputs) -> SignalOutput:
        if inputs.logits:
            arrays, from_logits = list(inputs.logits), True
        elif inputs.probs is not None:
            arrays, from_logits = [inputs.probs], False
        else:
            return SignalOutput(np.full(inputs.n, np.nan))
        detail = {m: uncertainty(arrays, measure=m, from_logits=from_logits)  # type: ignore[arg-type]
                  for m in MEASURES if m != "disagreement" or len(arrays) > 1}
        if self.measure not in detail:
            raise ConfigError(
                f"signals.uncertainty.measure={self.measure!r} needs at least two models, got {len(arrays)}"
            )
        return SignalOutput(detail[self.measure], detail=detail)

    def reason(self, raw: float, pct: float, detail: dict[str, float]) -> str:
        p = format_percentile(pct)
        if self.measure == "entropy":
            return f"entropy {raw:.2f} nats {p}"
        if self.measure == "disagreement":
            return f"model disagreement {raw:.2f} nats {p}"
        return f"{self.measure.replace('_', ' ')} {raw:.2f} {p}"
