"""Synthetic drive logs: the project's own data source for the demo, tests and benchmarks.

`generate()` writes PNG frames, `manifest.parquet` (the frames-manifest contract plus metadata columns)
and `ground_truth.parquet` (`frame_id`, `event_id`, `category`, `is_rare`). Output depends only on the
arguments: each drive draws from its own seeded generator, so drives render in parallel processes and the
bytes are the same for any number of workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from edgemine.contracts import GROUND_TRUTH_SCHEMA, TIMESTAMP
from edgemine.errors import ConfigError
from edgemine.jobs.synth.schedule import FPS, RARE_CATEGORIES, Event, check_recurrence, event_frames, plan_events
from edgemine.jobs.synth.world import (
    CONDITIONS,
    LABELS,
    ConditionProbs,
    common_label,
    condition_probs,
    make_drive_config,
    simulate_drive,
)

__all__ = ["CONDITIONS", "RARE_CATEGORIES", "LABELS", "SynthSummary", "generate", "MANIFEST_METADATA_SCHEMA"]

BASE_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
DEFAULT_RARE_RATE = 0.005

MANIFEST_METADATA_SCHEMA = pa.schema(
    [
        pa.field("frame_id", pa.string(), nullable=False),
        pa.field("drive_id", pa.string(), nullable=False),
        pa.field("timestamp", TIMESTAMP, nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("frame_index", pa.int32()),
        pa.field("camera", pa.string()),
        pa.field("vehicle_id", pa.string()),
        pa.field("road_type", pa.string()),
        pa.field("time_of_day", pa.string()),
        pa.field("weather", pa.string()),
        pa.field("traffic_density", pa.string()),
        pa.field("speed_mps", pa.float32()),
        pa.field("accel_mps2", pa.float32()),
        pa.field("yaw_rate", pa.float32()),
        pa.field("lat", pa.float64()),
        pa.field("lon", pa.float64()),
    ]
)


@dataclass(frozen=True)
class SynthSummary:
    out: str
    frames: int
    drives: int
    rare_frames: int
    events: int
    categories: dict[str, int]
    seconds: float
    events_per_category: dict[str, int] = field(default_factory=dict)

    @property
    def rare_rate(self) -> float:
        return self.rare_frames / self.frames if self.frames else 0.0

    def to_dict(self) -> dict[str, object]:
        return {**self.__dict__, "rare_rate": self.rare_rate}


@dataclass(frozen=True)
class _DriveJob:
    out: str
    index: int
    drive_id: str
    frames: int
    size: int
    seed: int
    reference: bool
    events: tuple[Event, ...]
    conditions: ConditionProbs = ()


def _render_drive(job: _DriveJob) -> tuple[dict[str, list], dict[str, list]]:
    from edgemine.jobs.synth.render import render_frame

    rng = np.random.default_rng([job.seed, int(job.reference), job.index])
    cfg = make_drive_config(job.drive_id, job.index, rng, base_us=BASE_US, conditions=job.conditions)
    folder = Path(job.out, "frames", job.drive_id)
    folder.mkdir(parents=True, exist_ok=True)
    man: dict[str, list] = {f.name: [] for f in MANIFEST_METADATA_SCHEMA}
    gt: dict[str, list] = {f.name: [] for f in GROUND_TRUTH_SCHEMA}
    for st in simulate_drive(cfg, job.frames, list(job.events), rng):
        fid = f"{job.drive_id}-{st.index:05d}"
        rel = f"frames/{job.drive_id}/{st.index:05d}.png"
        render_frame(cfg, st, job.size).save(Path(job.out, rel), compress_level=1)
        man["frame_id"].append(fid)
        man["drive_id"].append(job.drive_id)
        man["timestamp"].append(cfg.start_us + st.index * (1_000_000 // FPS))
        man["uri"].append(rel)
        man["label"].append(common_label(cfg, st))
        man["frame_index"].append(st.index)
        man["camera"].append("front")
        man["vehicle_id"].append(cfg.vehicle_id)
        man["road_type"].append(cfg.road_type)
        man["time_of_day"].append(cfg.time_of_day)
        man["weather"].append(cfg.weather)
        man["traffic_density"].append(cfg.traffic)
        man["speed_mps"].append(st.speed)
        man["accel_mps2"].append(st.accel)
        man["yaw_rate"].append(st.yaw_rate)
        man["lat"].append(st.lat)
        man["lon"].append(st.lon)
        gt["frame_id"].append(fid)
        gt["event_id"].append(st.event.event_id if st.event else None)
        gt["category"].append(st.event.category if st.event else "normal")
        gt["is_rare"].append(st.event is not None)
    return man, gt


def _to_table(cols: dict[str, list], schema: pa.Schema) -> pa.Table:
    arrays = []
    for f in schema:
        if f.type == TIMESTAMP:
            arrays.append(pa.array(cols[f.name], pa.int64()).cast(TIMESTAMP))
        else:
            arrays.append(pa.array(cols[f.name], f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def generate(
    out: str | os.PathLike[str],
    *,
    drives: int,
    frames_per_drive: int,
    rare_rate: float = DEFAULT_RARE_RATE,
    size: int = 96,
    seed: int = 0,
    reference: bool = False,
    workers: int | None = None,
    conditions: Mapping[str, Sequence[str] | Mapping[str, float]] | None = None,
    recurrence: tuple[int, int] = (1, 1),
    event_seconds: tuple[float, float] = (1.0, 5.0),
) -> SynthSummary:
    """Write a synthetic drive-log dataset to `out`. `reference=True` writes known drives with no rare events.

    The defaults give the same bytes as before these knobs existed. Knobs for robustness experiments:

    - `conditions`: restrict the drive conditions. Keys are `CONDITIONS` fields (road_type, time_of_day,
      weather, traffic). A list of values allows only those, keeping their default probabilities
      renormalised (`{"time_of_day": ["day", "dusk"]}`: no night drives); a value -> weight mapping also
      sets the probabilities (`{"time_of_day": {"day": 1, "night": 1}}`: half the drives at night). Fields
      not named draw as usual.
    - `recurrence=(lo, hi)`: each rare category appears in lo..hi events, each in a different drive, using
      as many categories as the event count allows (up to 9). (1, 1) keeps the old rule: categories cycle,
      so at most 9 events are all unique. Caveats (see `schedule.group_sizes`): fewer than lo events share
      one category; more than 9 * hi events reuse categories; hi is capped at `drives`.
    - `event_seconds=(shortest, longest)`: event lengths, rounded to frames at 10 FPS (>= 0.1 s). The
      rare-frame total stays round(rare_rate * frames) exactly once one event fits.
    """
    if drives < 1:
        raise ConfigError(f"drives={drives} must be >= 1")
    if frames_per_drive < 1:
        raise ConfigError(f"frames_per_drive={frames_per_drive} must be >= 1")
    if not 32 <= size <= 1024:
        raise ConfigError(f"size={size} must be between 32 and 1024 pixels")
    probs = condition_probs(conditions)
    event_frames(event_seconds)
    lo_rec, hi_rec = check_recurrence(recurrence)
    if reference:
        rare_rate = 0.0
    t0 = time.perf_counter()
    events = plan_events(drives, frames_per_drive, rare_rate, rng=np.random.default_rng([seed, 7_777]),
                         event_seconds=event_seconds, recurrence=(lo_rec, hi_rec))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prefix = "ref" if reference else "drv"
    by_drive: dict[int, list[Event]] = {}
    for e in events:
        by_drive.setdefault(e.drive, []).append(e)
    jobs = [
        _DriveJob(str(out), i, f"{prefix}-{seed:03d}-{i:04d}", frames_per_drive, size, seed, reference,
                  tuple(by_drive.get(i, [])), probs)
        for i in range(drives)
    ]
    n_workers = workers or min(os.cpu_count() or 1, drives)
    man_tmp, gt_tmp = out / "manifest.parquet.tmp", out / "ground_truth.parquet.tmp"
    cats: dict[str, int] = {}
    total = rare = 0
    with contextlib.ExitStack() as stack:
        mw = stack.enter_context(pq.ParquetWriter(man_tmp, MANIFEST_METADATA_SCHEMA))
        gw = stack.enter_context(pq.ParquetWriter(gt_tmp, GROUND_TRUTH_SCHEMA))
        if n_workers > 1 and drives * frames_per_drive >= 400:
            pool = stack.enter_context(ProcessPoolExecutor(n_workers))
            results = pool.map(_render_drive, jobs, chunksize=1)
        else:
            results = map(_render_drive, jobs)
        for man, gt in results:  # drive order, whatever the worker count
            mw.write_table(_to_table(man, MANIFEST_METADATA_SCHEMA))
            gw.write_table(_to_table(gt, GROUND_TRUTH_SCHEMA))
            total, rare = total + len(gt["frame_id"]), rare + sum(gt["is_rare"])
            for c in gt["category"]:
                cats[c] = cats.get(c, 0) + 1
    os.replace(man_tmp, out / "manifest.parquet")
    os.replace(gt_tmp, out / "ground_truth.parquet")
    per_cat: dict[str, int] = {}
    for e in events:
        per_cat[e.category] = per_cat.get(e.category, 0) + 1
    summary = SynthSummary(str(out), total, drives, rare, len(events), dict(sorted(cats.items())),
                           round(time.perf_counter() - t0, 3), dict(sorted(per_cat.items())))
    params = {"drives": drives, "frames_per_drive": frames_per_drive, "rare_rate": rare_rate, "size": size,
              "seed": seed, "reference": reference,
              # as drawn: field -> value -> probability, for the restricted fields only
              "conditions": {k: dict(zip(CONDITIONS[k], p, strict=True)) for k, p in probs},
              "recurrence": [lo_rec, hi_rec], "event_seconds": [float(x) for x in event_seconds]}
    (out / "synth.json").write_text(json.dumps({"params": params, "summary": summary.to_dict()}, indent=2))
    return summary
