"""The mining job spec: one validated object, loaded from YAML and/or CLI flags.

    frames: fleet/manifest.parquet          # frames manifest (relative paths: from this file's folder)
    reference: known/manifest.parquet       # frames manifest or embeddings table of known data
    out: runs/2026-01-05
    budget: 500
    encoder: builtin                        # builtin | torchscript:PATH | torchvision:NAME:PATH
    models: [torchscript:model.pt]          # their logits give uncertainty (several: ensemble disagreement)
    signals:                                # merged over the defaults; weight 0 turns one off
      novelty: {weight: 1.0, k: 10}
      uncertainty: {weight: 0.25, measure: entropy}
      rarity: {weight: 1.0, k: 10}
      trigger:
        weight: 0.5
        rules:
          - {name: hard_brake_pedestrian, expr: 'accel_mps2 < -4 and label == "pedestrian"'}
    selection: {strategy: kcenter, per_event_cap: 10, per_drive_cap: null}   # null: no cap

Every section and option is documented on its field below. Errors name the field ("selection.budget: …").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgemine.errors import ConfigError, InputNotFoundError
from edgemine.limits import MAX_QUOTED_CHARS, MAX_SPEC_BYTES, load_yaml, quote

# Default weights: novelty and rarity carry the score; uncertainty and triggers add evidence. On the synthetic
# benchmark (docs/BENCHMARKS.md) the baseline model's entropy alone finds no rare event and a hard-braking
# rule fires on ordinary braking too, so they weigh less; raise them for a model or rules you trust.
DEFAULT_SIGNALS: dict[str, dict[str, Any]] = {
    "novelty": {"weight": 1.0, "k": 10},
    "uncertainty": {"weight": 0.25, "measure": "entropy"},
    "rarity": {"weight": 1.0, "k": 10},
    "trigger": {"weight": 0.5, "rules": []},
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IndexSpec(_Section):
    """The reference FAISS index (see mining.index.IndexParams for each parameter's meaning)."""

    kind: Literal["auto", "flat", "ivf_flat", "ivf_pq", "hnsw"] = "auto"
    metric: Literal["l2", "cosine"] = "l2"
    exact_below: int = Field(200_000, ge=1, description="auto: exact search below this many reference frames")
    approx: Literal["ivf_flat", "ivf_pq", "hnsw"] = "ivf_flat"
    nlist: int | None = Field(None, ge=1)
    nprobe: int = Field(32, ge=1)
    pq_m: int | None = Field(None, ge=1)
    pq_nbits: int = Field(8, ge=1, le=16)
    refine: Literal["none", "sq8", "flat"] = "sq8"
    k_factor: int = Field(4, ge=1)
    hnsw_m: int = Field(32, ge=2)
    ef_construction: int = Field(200, ge=1)
    ef_search: int = Field(256, ge=1)
    train_size: int = Field(100_000, ge=1)
    dir: Path | None = Field(None, description="reusable reference index folder (built there when absent)")
    shards: int = Field(1, ge=1, le=1024, description="split the reference index over this many Ray actors "
                        "(mining/sharded_index.py); 1 = one in-process index")

    def params(self, *, seed: int = 0) -> Any:
        from edgemine.mining.index import IndexParams

        return IndexParams(**self.model_dump(exclude={"dir", "shards"}), seed=seed)


class FusionSpec(_Section):
    mode: Literal["fisher", "weighted_mean", "weighted_max"] = Field(
        "fisher", description="fisher: weighted mean of -log10 tail p-values (see mining.fusion)")
    max_surprise: float = Field(50.0, gt=0.0, description="fisher: cap on one signal's -log10 p-value")
    reason_percentile: float = Field(0.95, ge=0.0, le=1.0, description="signals at/above this become reasons")


FISHER_THRESHOLD, FISHER_PEAK_THRESHOLD, FISHER_SHORT_PEAK = 1.5, 2.0, 3.0


class AggregateSpec(_Section):
    """Events and de-duplication (see mining.aggregate). The candidate pool is the de-duplicated frames of the
    events: runs of frames scoring >= threshold that peak at or above peak_threshold, in the fusion mode's
    units. Unset, they are 1.5 and 2.0 for `fisher` (weighted geometric-mean p-value 0.03 and 0.01: about the
    top 1% and 0.3% of ordinary frames on the synthetic benchmark, whatever the rare share), and quantiles
    of the run's own scores (the *_fraction fields) for the other fusion modes."""

    threshold: float | None = Field(None, ge=0.0, description="frame threshold (absolute)")
    pool_fraction: float = Field(0.01, gt=0.0, le=1.0, description="non-fisher default: top fraction of frames")
    peak_threshold: float | None = Field(None, ge=0.0, description="an event must peak at or above this")
    peak_fraction: float = Field(0.005, gt=0.0, le=1.0, description="non-fisher default: top fraction")
    min_frames: int = Field(3, ge=1, description="an event needs at least this many frames >= threshold "
                            "(3 = 0.3 s at 10 Hz: shorter runs are mostly noise)")
    short_event_peak: float | None = Field(None, ge=0.0, description="an event shorter than min_frames is kept "
                                           "when it peaks at or above this (fisher default 3.0: p 0.001)")
    max_gap_s: float = Field(1.0, ge=0.0, description="frames >= threshold this close in time join one event")
    dedup_s: float = Field(0.5, ge=0.0, description="keep the best frame per this many seconds of an event")


class ScenarioSpec(_Section):
    k: int | None = Field(None, ge=1, description="number of scenarios (default ~sqrt(pool/2), at most 50)")


class SelectionSpec(_Section):
    strategy: str = "kcenter"
    diversity: float = Field(1.0, ge=0.0, le=4.0, description="kcenter: 0 = by score only")
    per_event_cap: int | None = Field(10, ge=1)
    per_scenario_cap: int | None = Field(None, ge=1)
    per_drive_cap: int | None = Field(
        None, ge=1, description="at most this many candidates of one drive, event and fill frames alike (a long "
        "drive through one unusual place can otherwise take the whole budget); the budget is still filled from "
        "other drives where they have frames. Default null (no cap): how many frames one drive deserves depends "
        "on the fleet, and a cap moves budget away from the highest scores")
    fill: bool = Field(True, description="the budget is what reviewers will see: when the events' frames run "
                       "out first, fill it with the best remaining frames by fused score (one per drive per "
                       "fill_nms_s, none within fill_nms_s of a candidate)")
    fill_nms_s: float = Field(1.0, ge=0.0, description="fill: at most one frame per drive per this many seconds")

    @field_validator("strategy")
    @classmethod
    def _known(cls, v: str) -> str:
        from edgemine.mining.select import STRATEGIES

        if v not in STRATEGIES:
            raise ValueError(f"unknown strategy {v!r}; known strategies: {', '.join(sorted(STRATEGIES))}")
        return v


class CoverageSpec(_Section):
    """What the run does when the reference lacks a condition the fleet has (mining/coverage.py)."""

    novelty: Literal["within", "reference"] = Field(
        "within", description="novelty of the frames of each metadata value the coverage guardrail names (e.g. "
        "time_of_day=night against a day-only reference; at most 8 values, each spanning 5+ drives): within = "
        "calibrated among the fleet's frames of that value, so they are ranked among themselves instead of all "
        "being novel; reference = calibrated on the reference like every other frame (warn only)")


class EvidenceSpec(_Section):
    neighbors: int = Field(5, ge=0, le=100, description="nearest reference frames stored per candidate")
    context_offsets_s: list[float] = Field(default_factory=lambda: [-1.0, -0.5, 0.5, 1.0])


class SparkSpec(_Section):
    master: str = "local[*]"
    conf: dict[str, str] = Field(default_factory=dict)


class MineSpec(_Section):
    """A mining job. `frames`, `reference`, `out` and `budget` are required (in YAML or as flags)."""

    frames: Path
    reference: Path
    out: Path
    budget: int = Field(..., ge=1, description="frames to select (at most the usable frames)")
    encoder: str = "builtin"
    models: list[str] = Field(default_factory=list, description="encoders whose logits give uncertainty")
    input_size: int | None = Field(None, ge=8)
    batch_size: int = Field(256, ge=1)
    actors: int | None = Field(None, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    embed_dir: Path | None = Field(None, description="reusable folder for embedding outputs (default: the run "
                                   "folder); one sub-folder per encoder, resumed when it matches")
    index: IndexSpec = Field(default_factory=lambda: IndexSpec.model_validate({}))
    signals: dict[str, dict[str, Any]] = Field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_SIGNALS.items()})
    fusion: FusionSpec = Field(default_factory=lambda: FusionSpec.model_validate({}))
    aggregate: AggregateSpec = Field(default_factory=lambda: AggregateSpec.model_validate({}))
    scenarios: ScenarioSpec = Field(default_factory=lambda: ScenarioSpec.model_validate({}))
    selection: SelectionSpec = Field(default_factory=lambda: SelectionSpec.model_validate({}))
    coverage: CoverageSpec = Field(default_factory=lambda: CoverageSpec.model_validate({}))
    evidence: EvidenceSpec = Field(default_factory=lambda: EvidenceSpec.model_validate({}))
    spark: SparkSpec = Field(default_factory=lambda: SparkSpec.model_validate({}))
    calibration_sample: int = Field(100_000, ge=100, description="frames sampled to calibrate percentiles")
    score_batch_rows: int = Field(16_384, ge=1)
    seed: int = 0

    @field_validator("signals")
    @classmethod
    def _signals(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from edgemine.mining.signals import ALIASES, SIGNALS, make_signal

        out: dict[str, dict[str, Any]] = {k: dict(o) for k, o in DEFAULT_SIGNALS.items()}
        for name, given in v.items():
            key = ALIASES.get(name, name)
            if key not in SIGNALS:
                raise ValueError(f"unknown signal {name!r}; known signals: {', '.join(sorted(SIGNALS))}")
            if given is not None and not isinstance(given, dict):
                raise ValueError(f"{name}: expected a mapping of options, got {given!r}")
            opts = {**out.get(key, {}), **(given or {})}
            w = opts.get("weight", 1.0)
            if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0:
                raise ValueError(f"{name}.weight={w!r} must be a number >= 0")
            o = {k: x for k, x in opts.items() if k != "weight"}
            make_signal(key, **o)  # unknown options and malformed trigger rules fail here, naming them
            out[key] = opts
        if not any(float(o.get("weight", 1.0)) > 0 for o in out.values()):
            raise ValueError("at least one signal needs a weight > 0")
        return out

    def make_signals(self) -> dict[str, tuple[float, Any]]:
        """name -> (weight, Signal instance)."""
        from edgemine.mining.signals import make_signal

        out = {}
        for name, opts in self.signals.items():
            o = dict(opts)
            w = float(o.pop("weight", 1.0))
            out[name] = (w, make_signal(name, **o))
        return out


def _format_validation(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(spec)"
        msg = err["msg"].removeprefix("Value error, ")[:MAX_QUOTED_CHARS * 2]
        got = err.get("input")
        shown = "" if isinstance(got, dict) or got is None or err["type"] == "missing" else f" (got {quote(got)})"
        parts.append(f"{loc}: {msg}{shown}")
    return f"{source}: " + "; ".join(parts)


def build_spec(data: dict[str, Any], *, source: str = "job spec") -> MineSpec:
    """Validate a dict as a MineSpec; ConfigError names every bad field."""
    try:
        return MineSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source)) from None


PATH_FIELDS = ("frames", "reference", "out", "embed_dir")


def load_spec(path: str | os.PathLike[str] | None = None, **overrides: Any) -> MineSpec:
    """Read a YAML job spec (paths relative to its folder), apply non-None `overrides`, validate."""
    data: dict[str, Any] = {}
    source = "flags"
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise InputNotFoundError(f"job spec {str(p)!r} does not exist")
        source = str(p)
        size = p.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise ConfigError(f"{p}: {size:,} bytes is more than the {MAX_SPEC_BYTES:,} a job spec may have")
        loaded = load_yaml(p.read_text(), source=str(p)) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: a job spec is a mapping of fields, got {type(loaded).__name__}")
        data = loaded
        base = p.resolve().parent
        for f in PATH_FIELDS:
            if isinstance(data.get(f), str) and "://" not in data[f] and not os.path.isabs(data[f]):
                data[f] = os.path.normpath(base / data[f])
        idx = data.get("index")
        if isinstance(idx, dict) and isinstance(idx.get("dir"), str) and not os.path.isabs(idx["dir"]):
            idx["dir"] = os.path.normpath(base / idx["dir"])
    for k, v in overrides.items():
        if v is not None:  # a path given as a flag is relative to where the command runs: kept absolute
            local = k in PATH_FIELDS and isinstance(v, (str, os.PathLike)) and "://" not in str(v)
            data[k] = os.path.abspath(v) if local else v
    return build_spec(data, source=source)
