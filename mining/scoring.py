"""Scoring a batch of frames: signal inputs in; raw values, percentiles, fused score and reasons out. Pure.

Scoring takes two steps, because a signal calibrated on the mined frames needs a sample of every frame's
raw value before any frame gets a percentile:

1. `raw_columns(inputs, signals=...)`: each signal's raw value, detail values and fired rules for one
   batch, as the columns the signal names (`Signal.output_columns`: `<name>_raw`, `<name>__<detail>`,
   `triggers_fired`). A job streams these to disk while its calibration reservoirs fill.
2. `score_batch(raw, signals=..., weights=..., calibration=...)`: each signal's percentile against its
   calibration values (`mining.calibration`), the fused score and each signal's share of it
   (`mining.fusion`), the reasons, and what each percentile was calibrated on, as a `Scored`
   (`Scored.columns()` gives the output columns).

`score(inputs, ...)` runs both on one batch, calibrating the mined-calibrated signals on that batch: the
whole algorithm on small numpy arrays, with no index, Parquet, Spark or Ray. `needs(signals)` says what
a job must search or read to fill `SignalInputs`; `reference_calibration` turns the reference frames'
kNN distances into calibration values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from edgemine.contracts import NOVELTY_CALIBRATION, SIGNAL_COLUMNS
from edgemine.errors import ConfigError
from edgemine.mining.calibration import calibrated
from edgemine.mining.fusion import DEFAULT_MAX_SURPRISE, FusionMode, build_reasons, check_weights, contributions, fuse
from edgemine.mining.signals.base import Signal, SignalInputs, SignalOutput, check_choice


@dataclass(frozen=True)
class FusionOptions:
    """How percentiles become one score and reasons (the job spec's `fusion` section)."""

    mode: FusionMode = "fisher"
    max_surprise: float = DEFAULT_MAX_SURPRISE
    reason_percentile: float = 0.95  # signals at or above this percentile become reasons

    def __post_init__(self) -> None:
        check_choice("fusion.mode", self.mode, FusionMode)
        if not self.max_surprise > 0:
            raise ConfigError(f"fusion.max_surprise={self.max_surprise} must be > 0")
        if not 0.0 <= self.reason_percentile <= 1.0:
            raise ConfigError(f"fusion.reason_percentile={self.reason_percentile} must be in [0, 1]")


@dataclass(frozen=True)
class Needs:
    """What the signals read, so a job knows which kNN searches to run and how deep."""

    reference_k: int = 0  # depth of the search in the reference index (0: none)
    batch_k: int = 0  # depth of the search among the mined frames (0: none)
    exclude_same_drive: bool = False  # the batch search skips the frame's own drive
    reference_signal: str | None = None  # the signal that needs `reference_k` (for error messages)
    batch_signal: str | None = None


def needs(signals: Sequence[Signal]) -> Needs:
    ref = [s for s in signals if "reference_knn" in s.needs]
    batch = [s for s in signals if "batch_knn" in s.needs]
    top_ref = max(ref, key=lambda s: s.neighbours, default=None)
    top_batch = max(batch, key=lambda s: s.neighbours, default=None)
    return Needs(reference_k=top_ref.neighbours if top_ref else 0, batch_k=top_batch.neighbours if top_batch else 0,
                 exclude_same_drive=any(s.exclude_same_drive for s in batch),
                 reference_signal=top_ref.name if top_ref else None,
                 batch_signal=top_batch.name if top_batch else None)


def raw_columns(inputs: SignalInputs, *, signals: Sequence[Signal]) -> dict[str, pa.Array]:
    """Every signal's output for one batch, as the columns it names (in signal order)."""
    cols: dict[str, pa.Array] = {}
    for sig in signals:
        out = sig.compute(inputs)
        if len(out.raw) != inputs.n:
            raise ConfigError(f"signal {sig.name!r} gave {len(out.raw)} values for {inputs.n} frames")
        cols.update(sig.output_columns(out))
    return cols


def reference_calibration(signal: Signal, distances: np.ndarray) -> np.ndarray:
    """Calibration values of a reference-calibrated signal from reference frames' kNN distances (n, >=k)."""
    d = np.asarray(distances)
    return signal.compute(SignalInputs(n=len(d), reference_distances=d)).raw


@dataclass
class Scored:
    """One scored batch, row-aligned with its input."""

    raw: dict[str, np.ndarray]  # signal -> raw value (NaN where it has none)
    percentiles: dict[str, np.ndarray]  # signal -> percentile in [0, 1] (NaN where it has none)
    score: np.ndarray  # fused score, in the fusion mode's units
    contributions: dict[str, np.ndarray]  # weighted signal -> its share of the score
    reasons: list[list[str]] = field(default_factory=list)
    # signal -> what each row's percentile was calibrated on (object array): its `calibration` ("reference",
    # "mined", "absolute"), or the metadata value it was calibrated within ("time_of_day=night", `Signal.within`)
    calibrated_on: dict[str, np.ndarray] = field(default_factory=dict)

    def columns(self) -> dict[str, pa.Array]:
        """score (float32), reasons, one percentile column per contract signal (null where none), and
        `novelty_calibration` (null where novelty is)."""
        n = len(self.score)
        cols: dict[str, pa.Array] = {"score": pa.array(self.score.astype(np.float32)),
                                     "reasons": pa.array(self.reasons, pa.list_(pa.string()))}
        for s in SIGNAL_COLUMNS:
            v = self.percentiles.get(s)
            cols[s] = pa.array(np.zeros(n, np.float32) if v is None else v.astype(np.float32),
                               mask=np.ones(n, bool) if v is None else np.isnan(v))
        on, pct = self.calibrated_on.get("novelty"), self.percentiles.get("novelty")
        cols[NOVELTY_CALIBRATION] = (pa.nulls(n, pa.string()) if on is None or pct is None
                                     else pa.array(on, pa.string(), mask=np.isnan(pct)))
        return cols


def percentiles(outputs: Mapping[str, SignalOutput], *, signals: Sequence[Signal],
                calibration: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each signal's raw values as percentiles of its calibration values ("absolute" ones as they are)."""
    out: dict[str, np.ndarray] = {}
    for sig in signals:
        raw = outputs[sig.name].raw
        if sig.calibration == "absolute":
            out[sig.name] = raw.copy()
            continue
        if sig.name not in calibration:
            raise ConfigError(f"signal {sig.name!r} is calibrated on {sig.calibration!r} values, but none were "
                              f"given; have calibration for {sorted(calibration)}")
        out[sig.name] = calibrated(raw, calibration[sig.name], extrapolate=sig.extrapolate)
    return out


def score_outputs(outputs: Mapping[str, SignalOutput], *, signals: Sequence[Signal], weights: Mapping[str, float],
                  calibration: Mapping[str, np.ndarray], fusion: FusionOptions = FusionOptions()) -> Scored:
    """Percentiles, fused score, contributions and reasons from each signal's output on one batch."""
    names = [s.name for s in signals]
    check_weights(weights, known=names)
    pct = percentiles(outputs, signals=signals, calibration=calibration)
    score = fuse(pct, weights=weights, mode=fusion.mode, max_surprise=fusion.max_surprise)
    contrib = contributions(pct, weights=weights, mode=fusion.mode, max_surprise=fusion.max_surprise)
    firing = [s for s in signals if s.fired_column is not None]
    if len(firing) > 1:
        raise ConfigError(f"at most one signal may fire rules, got {[s.name for s in firing]}")
    rule = firing[0] if firing else None
    raw = {n: outputs[n].raw for n in names}
    describe = {s.name: _describer(s, outputs[s.name].detail) for s in signals}
    reasons = build_reasons(pct, raw, describe=describe, weights=weights,
                            fired=outputs[rule.name].fired if rule is not None else None,
                            min_percentile=fusion.reason_percentile,
                            rule_signals={rule.name} if rule is not None else set(),
                            fired_reason=rule.fired_reason if rule is not None else str)
    n = len(score)
    on = {s.name: np.full(n, s.condition or s.calibration, dtype=object) for s in signals}
    return Scored(raw=raw, percentiles=pct, score=score, contributions=contrib, reasons=reasons, calibrated_on=on)


def score_batch(raw: pa.Table, *, signals: Sequence[Signal], weights: Mapping[str, float],
                calibration: Mapping[str, np.ndarray], fusion: FusionOptions = FusionOptions()) -> Scored:
    """`score_outputs` on a table of the signals' raw columns (as `raw_columns` wrote them)."""
    outputs = {s.name: s.read_output(raw) for s in signals}
    return score_outputs(outputs, signals=signals, weights=weights, calibration=calibration, fusion=fusion)


def score_batch_by_group(raw: pa.Table, *, groups: np.ndarray,
                         variants: Sequence[tuple[Sequence[Signal], Mapping[str, np.ndarray]]],
                         weights: Mapping[str, float], fusion: FusionOptions = FusionOptions()) -> Scored:
    """`score_batch` with a calibration per row group: rows where `groups == g` are scored with
    `variants[g]` = (signals, calibration) — novelty calibrated within a condition the reference lacks
    (`edgemine.jobs.score.Conditions`). Row order is kept; `Scored.calibrated_on` (the `novelty_calibration`
    column) says which calibration each row got."""
    g = np.asarray(groups)
    if len(g) != raw.num_rows:
        raise ConfigError(f"{len(g)} group codes for {raw.num_rows} rows")
    present = np.unique(g)
    if len(present) and (present.min() < 0 or present.max() >= len(variants)):
        raise ConfigError(f"group codes {present.tolist()} outside the {len(variants)} variants")
    if len(present) <= 1:
        sigs, cal = variants[int(present[0]) if len(present) else 0]
        return score_batch(raw, signals=sigs, weights=weights, calibration=cal, fusion=fusion)
    n = raw.num_rows
    out: Scored | None = None
    reasons: list[list[str]] = [[] for _ in range(n)]
    for code in present.tolist():
        rows = np.flatnonzero(g == code)
        sigs, cal = variants[code]
        part = score_batch(raw.take(pa.array(rows)), signals=sigs, weights=weights, calibration=cal, fusion=fusion)
        if out is None:
            out = Scored(raw={k: np.full(n, np.nan) for k in part.raw},
                         percentiles={k: np.full(n, np.nan) for k in part.percentiles},
                         score=np.zeros(n, dtype=part.score.dtype),
                         contributions={k: np.zeros(n, dtype=v.dtype) for k, v in part.contributions.items()},
                         calibrated_on={k: np.empty(n, dtype=object) for k in part.calibrated_on})
        for k, v in part.raw.items():
            out.raw[k][rows] = v
        for k, v in part.percentiles.items():
            out.percentiles[k][rows] = v
        for k, v in part.calibrated_on.items():
            out.calibrated_on[k][rows] = v
        out.score[rows] = part.score
        for k, v in part.contributions.items():
            out.contributions[k][rows] = v
        for i, r in zip(rows.tolist(), part.reasons, strict=True):
            reasons[i] = r
    assert out is not None
    out.reasons = reasons
    return out


def score(inputs: SignalInputs, *, signals: Sequence[Signal], weights: Mapping[str, float],
          calibration: Mapping[str, np.ndarray] | None = None, fusion: FusionOptions = FusionOptions()) -> Scored:
    """Both steps on one batch. Signals calibrated on the mined frames use this batch's raw values unless
    `calibration` has theirs; reference-calibrated ones need theirs in `calibration`."""
    outputs = {s.name: s.compute(inputs) for s in signals}
    cal = dict(calibration or {})
    for s in signals:
        if s.calibration == "mined" and s.name not in cal:
            cal[s.name] = outputs[s.name].raw
    return score_outputs(outputs, signals=signals, weights=weights, calibration=cal, fusion=fusion)


def _describer(sig: Signal, detail: Mapping[str, np.ndarray]) -> Callable[[float, float, int], str]:
    return lambda r, p, i: sig.reason(r, p, {k: float(v[i]) for k, v in detail.items()})


def carried_columns(signals: Sequence[Signal]) -> list[str]:
    """The signal columns candidates carry after the manifest's: each raw value, and the rules that fired."""
    return [c for s in signals for c in (s.raw_column, s.fired_column) if c is not None]
