"""Does the reference cover the fleet? Guardrails from the frames' novelty percentiles, streamed by batch.

Novelty is calibrated on the reference frames' kNN distances to its other drives, so on a fleet that looks
like the reference about 1% of frames sit above its p99 (the job runs this check only with that calibration).
Far more than that means the reference lacks something the fleet has, and "novel" then means "unlike the
reference", not "rare". Two checks, each one line naming what it found:

- the whole fleet: more than `max_share` (20%) of frames above novelty p99 (1% expected);
- a metadata value (e.g. `time_of_day=night`): at least `min_frames` frames in at least `min_drives` drives
  (a value of one or two drives, such as a vehicle id, names a drive, not a condition), and more than `value_share`
  (50%, five times the 10% expected) of them above novelty p90. p90, not p99: a reference's spread between
  its own drives has a long tail, so frames of a condition it lacks sit far above its median (night against a
  day/dusk reference: all of them above p90) but not all above p99 (14% on the robustness matrix's F3).

`CoverageCheck.add(novelty_percentiles, columns)` per batch; `warnings()` at the end; `uncovered()` the
values themselves (the job then calibrates novelty within each: `edgemine.jobs.score.check_coverage`).
Only low-cardinality string columns are tracked (at most `max_values` distinct values; wider columns are
dropped on the fly). Pure numpy/pyarrow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgemine.errors import ConfigError

NOT_METADATA = frozenset({"frame_id", "drive_id", "uri", "timestamp", "embedding", "probs"})


def metadata_columns(schema: pa.Schema) -> list[str]:
    """The manifest's string (or dictionary-of-string) columns that may name a condition."""
    out = []
    for f in schema:
        t = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        if f.name not in NOT_METADATA and (pa.types.is_string(t) or pa.types.is_large_string(t)):
            out.append(f.name)
    return out


@dataclass(frozen=True)
class Uncovered:
    """A metadata value most of whose frames are above the reference's novelty p90."""

    column: str
    value: str
    frames: int
    share: float  # of its frames above the value percentile

    @property
    def label(self) -> str:
        return f"{self.column}={self.value}"


@dataclass
class CoverageCheck:
    percentile: float = 0.99
    value_percentile: float = 0.90
    max_share: float = 0.20
    value_share: float = 0.50
    min_frames: int = 50
    min_drives: int = 5
    max_values: int = 50
    max_warnings: int = 5  # value lines; the rest are named in one more line
    frames: int = 0
    novel: int = 0
    by_value: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # column -> value -> [frames, > p90]
    wide: set[str] = field(default_factory=set)  # columns dropped for having too many values
    drives_of: dict[str, dict[str, set[object]]] = field(default_factory=dict)  # column -> value -> drives seen

    def __post_init__(self) -> None:
        for name in ("percentile", "value_percentile", "max_share", "value_share"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise ConfigError(f"coverage {name}={v} must be between 0 and 1")
        if self.min_frames < 1 or self.min_drives < 1:
            raise ConfigError(f"coverage min_frames={self.min_frames} and min_drives={self.min_drives} must be >= 1")

    def add(self, novelty: np.ndarray, columns: Mapping[str, pa.Array | pa.ChunkedArray],
            drives: np.ndarray | None = None) -> None:
        """One batch: novelty percentiles (NaN where unknown, not counted), its metadata columns and drive ids,
        by row. Without drive ids every value counts as seen in enough drives."""
        pct = np.asarray(novelty, dtype=np.float64)
        ok = ~np.isnan(pct)
        hit = ok & (pct >= self.percentile)
        value_hit = ok & (pct >= self.value_percentile)
        self.frames += int(ok.sum())
        self.novel += int(hit.sum())
        for name, col in columns.items():
            if name in self.wide:
                continue
            if len(col) != len(pct):
                raise ConfigError(f"coverage: column {name!r} has {len(col)} rows for {len(pct)} percentiles")
            codes = pc.dictionary_encode(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
            values = codes.dictionary.to_pylist()
            idx = np.asarray(pc.fill_null(codes.indices, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
            seen = self.by_value.setdefault(name, {})
            n = np.bincount(idx[ok & (idx >= 0)], minlength=len(values))
            h = np.bincount(idx[value_hit & (idx >= 0)], minlength=len(values))
            for j, (v, a, b) in enumerate(zip(values, n.tolist(), h.tolist(), strict=True)):
                if a:
                    c = seen.setdefault(str(v), [0, 0])
                    c[0] += a
                    c[1] += b
                    if drives is None:
                        continue
                    known = self.drives_of.setdefault(name, {}).setdefault(str(v), set())
                    if len(known) < self.min_drives:  # enough to know it is a condition, not a drive
                        known.update(np.unique(drives[ok & (idx == j)]).tolist())
            if len(seen) > self.max_values:
                self.wide.add(name)
                del self.by_value[name]
                self.drives_of.pop(name, None)

    def uncovered(self) -> list[Uncovered]:
        """The metadata values the reference lacks, the one that explains the most novel frames first."""
        found = []
        for col, vals in self.by_value.items():
            if len(vals) < 2:  # one value everywhere names no condition
                continue
            for v, (n, h) in vals.items():
                enough = col not in self.drives_of or len(self.drives_of[col].get(v, ())) >= self.min_drives
                if n >= self.min_frames and h / n > self.value_share and enough:
                    found.append(Uncovered(col, v, n, h / n))
        found.sort(key=lambda u: (-u.share * u.frames, u.column, u.value))
        return found

    def warnings(self) -> list[str]:
        """One line per finding: the whole fleet first, then values by the novel frames they explain (most first)."""
        out: list[str] = []
        p, vp = f"p{100 * self.percentile:g}", f"p{100 * self.value_percentile:g}"
        expected, v_expected = 1.0 - self.percentile, 1.0 - self.value_percentile
        if self.frames and self.novel / self.frames > self.max_share:
            out.append(f"the reference does not cover this fleet: {self.novel / self.frames:.0%} of its "
                       f"{self.frames:,} frames are above the reference's novelty {p} (expected {expected:.0%}); "
                       "novelty then means 'unlike the reference', not 'rare' — add such drives to the reference")
        found = [(u.share, u.column, u.value, u.frames) for u in self.uncovered()]
        for share, col, v, n in found[: self.max_warnings]:
            out.append(f"the reference does not cover {col}={v}: {share:.0%} of its {n:,} frames are above the "
                       f"reference's novelty {vp} (expected {v_expected:.0%}); add {col}={v} drives to the reference")
        if len(found) > self.max_warnings:
            out.append(f"{len(found) - self.max_warnings} more metadata values are mostly novel: "
                       + ", ".join(f"{c}={v}" for _, c, v, _ in found[self.max_warnings:][:20]))
        return out

    def to_dict(self) -> dict[str, object]:
        return {"frames": self.frames, "above_percentile": self.novel, "percentile": self.percentile,
                "share": round(self.novel / self.frames, 4) if self.frames else None}
