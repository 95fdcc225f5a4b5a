"""The aggregation's definitions: events, temporal de-duplication, per-event and per-scenario statistics.

This is the reference implementation: `mining.spark_aggregate` does the same in Spark DataFrame code for
fleet-sized inputs, and tests check that both give the same tables on small data. Keep the two in step.

- An *event* is a run of frames of one drive whose fused score is >= `threshold`, consecutive high
  frames being at most `max_gap_s` apart. Its id is "<drive_id>/e<NNNN>", numbered from 1 in time order.
  Hysteresis: an event is kept only if it peaks at or above `peak_threshold` and has at least
  `min_frames` frames, so a run is seeded by a strong frame and extended by weaker ones, and one-frame
  blips can be ignored — unless it peaks at or above `short_peak`: a rare thing seen for a moment (a
  glimpse of debris) can be one frame long, and a frame that far in the tail is no blip. (Ids are
  numbered before this filter, so kept ids may skip numbers.)
- *Temporal de-duplication*: an event's time is cut into `dedup_s` buckets from its first frame; in each
  bucket only the highest-scoring frame is kept (ties: smallest frame_id).
- *Scenarios* are clusters of the kept frames (see `mining.scenarios`); their statistics are computed here.
- *Statistics* of an event (all its frames) or a scenario (its kept frames): counts, the peak frame, max and mean
  of the score and each signal, and `novelty_calibrations`, the sorted distinct `novelty_calibration`s of those
  frames (nulls left out): the novelty max/mean mix percentiles calibrated differently when it holds several.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgemine.errors import ConfigError


@dataclass(frozen=True)
class AggregateParams:
    threshold: float  # fused score at or above which a frame is "high"
    max_gap_s: float = 1.0  # high frames of one drive at most this far apart belong to one event
    dedup_s: float = 0.5  # keep one frame per this many seconds of an event (0: keep all)
    peak_threshold: float | None = None  # an event must peak at or above this (None: threshold)
    min_frames: int = 1  # an event needs at least this many high frames
    short_peak: float | None = None  # ... unless it peaks at or above this (None: min_frames always applies)

    def __post_init__(self) -> None:
        if not np.isfinite(self.threshold):
            raise ConfigError(f"aggregate.threshold={self.threshold} must be a finite number")
        if self.max_gap_s < 0:
            raise ConfigError(f"aggregate.max_gap_s={self.max_gap_s} must be >= 0")
        if self.dedup_s < 0:
            raise ConfigError(f"aggregate.dedup_s={self.dedup_s} must be >= 0")
        if self.peak_threshold is not None and not np.isfinite(self.peak_threshold):
            raise ConfigError(f"aggregate.peak_threshold={self.peak_threshold} must be a finite number")
        if self.short_peak is not None and not np.isfinite(self.short_peak):
            raise ConfigError(f"aggregate.short_event_peak={self.short_peak} must be a finite number")
        if self.min_frames < 1:
            raise ConfigError(f"aggregate.min_frames={self.min_frames} must be >= 1")

    @property
    def peak(self) -> float:
        return self.threshold if self.peak_threshold is None else max(self.threshold, self.peak_threshold)

    @property
    def gap_us(self) -> int:
        return int(round(self.max_gap_s * 1e6))

    @property
    def dedup_us(self) -> int:
        return int(round(self.dedup_s * 1e6))
