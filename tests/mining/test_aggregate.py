from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgemine.errors import ConfigError
from edgemine.mining.aggregate import AggregateParams
from tests.support import aggregate_oracle as ref
from tests.support.aggregate_oracle import random_scores, same_tables

S = 1_000_000  # µs


def frames(rows: list[tuple[str, str, float, float]]) -> pd.DataFrame:
    """(frame_id, drive_id, t seconds, score) -> scored frames with signal columns."""
    df = pd.DataFrame(rows, columns=["frame_id", "drive_id", "t", "score"])
    df["ts_us"] = (df["t"] * S).astype("int64")
    df["novelty"] = df["score"]
    df["uncertainty"] = np.nan
    df["rarity"] = 1 - df["score"]
    df["trigger"] = 0.0
    return df.drop(columns="t")


def test_events_split_on_gaps_and_drives_and_dedup_keeps_the_best_per_bucket() -> None:
    df = frames([
        ("a0", "A", 0.0, 0.95), ("a1", "A", 0.1, 0.99), ("a2", "A", 0.2, 0.91), ("a3", "A", 0.3, 0.2),
        ("a4", "A", 0.7, 0.97),  # 0.5 s after a2: same event with max_gap 1 s
        ("a5", "A", 5.0, 0.93),  # a new event
        ("b0", "B", 0.0, 0.96), ("b1", "B", 0.05, 0.96),  # tie: smaller frame_id kept
    ])
    ev = ref.event_frames(df, AggregateParams(threshold=0.9, max_gap_s=1.0, dedup_s=0.5))
    got = dict(zip(ev["frame_id"], ev["event_id"], strict=True))
    assert got == {"a0": "A/e0001", "a1": "A/e0001", "a2": "A/e0001", "a4": "A/e0001", "a5": "A/e0002",
                   "b0": "B/e0001", "b1": "B/e0001"}
    kept = set(ev.loc[ev["keep"], "frame_id"])
    assert kept == {"a1", "a4", "a5", "b0"}  # buckets [0,0.5): a1 beats a0/a2; [0.5,1): a4
    stats = ref.event_stats(ev).set_index("event_id")
    assert stats.loc["A/e0001", "n_frames"] == 4 and stats.loc["A/e0001", "n_kept"] == 2
    assert stats.loc["A/e0001", "peak_frame_id"] == "a1"
    assert stats.loc["A/e0001", "score_max"] == pytest.approx(0.99)
    assert stats.loc["A/e0001", "score_mean"] == pytest.approx((0.95 + 0.99 + 0.91 + 0.97) / 4)
    assert np.isnan(stats.loc["A/e0001", "uncertainty_mean"])
    ev2 = ref.event_frames(df, AggregateParams(threshold=0.9, max_gap_s=0.3, dedup_s=0))
    assert ev2.set_index("frame_id").loc["a4", "event_id"] == "A/e0002" and ev2["keep"].all()


def test_hysteresis_keeps_events_seeded_by_a_strong_frame() -> None:
    df = frames([("a0", "A", 0.0, 0.91), ("a1", "A", 0.1, 0.99), ("a2", "A", 0.2, 0.92),  # peak 0.99, 3 frames
                 ("a3", "A", 5.0, 0.95), ("a4", "A", 5.1, 0.94),  # peaks at 0.95 only
                 ("a5", "A", 9.0, 0.995)])  # a one-frame blip
    ev = ref.event_frames(df, AggregateParams(threshold=0.9, peak_threshold=0.98, dedup_s=0))
    assert ev["frame_id"].tolist() == ["a0", "a1", "a2", "a5"]
    assert set(ev["event_id"]) == {"A/e0001", "A/e0003"}  # numbered before filtering
    ev = ref.event_frames(df, AggregateParams(threshold=0.9, min_frames=2, dedup_s=0))
    assert set(ev["event_id"]) == {"A/e0001", "A/e0002"}
    # a one-frame event is kept when it peaks high enough (a short glimpse of something rare)
    ev = ref.event_frames(df, AggregateParams(threshold=0.9, min_frames=2, dedup_s=0, short_peak=0.99))
    assert set(ev["event_id"]) == {"A/e0001", "A/e0002", "A/e0003"}
    ev = ref.event_frames(df, AggregateParams(threshold=0.9, min_frames=3, dedup_s=0, short_peak=0.999))
    assert set(ev["event_id"]) == {"A/e0001"}
    with pytest.raises(ConfigError, match="min_frames=0"):
        AggregateParams(threshold=0.5, min_frames=0)


def test_event_and_scenario_stats_list_the_sorted_distinct_calibrations_of_their_frames() -> None:
    df = frames([("a0", "A", 0.0, 0.95), ("a1", "A", 0.1, 0.99), ("a2", "A", 0.2, 0.91),
                 ("a3", "A", 5.0, 0.93), ("b0", "B", 0.0, 0.96), ("b1", "B", 0.1, 0.97)])
    df["novelty_calibration"] = ["time_of_day=night", "reference", "time_of_day=night", "reference", None, None]
    df.loc[df["novelty_calibration"].isna(), "novelty"] = np.nan  # null exactly where novelty is
    ev = ref.event_frames(df, AggregateParams(threshold=0.9, dedup_s=0))
    stats = ref.event_stats(ev).set_index("event_id")["novelty_calibrations"].to_dict()
    assert stats == {"A/e0001": ["reference", "time_of_day=night"], "A/e0002": ["reference"], "B/e0001": []}
    assign = pd.DataFrame({"frame_id": ["a0", "a3", "b0", "a1"], "scenario_id": ["s0", "s0", "s1", "s2"]})
    scen = ref.scenario_stats(ev, assign).set_index("scenario_id")["novelty_calibrations"].to_dict()
    assert scen == {"s0": ["reference", "time_of_day=night"], "s1": [], "s2": ["reference"]}


def test_bad_parameters_name_the_value() -> None:
    with pytest.raises(ConfigError, match="max_gap_s=-1"):
        AggregateParams(threshold=0.5, max_gap_s=-1)
    with pytest.raises(ConfigError, match="threshold=nan"):
        AggregateParams(threshold=float("nan"))


@pytest.mark.spark
@pytest.mark.integration
@pytest.mark.parametrize("seed, threshold, gap, dedup, peak, min_frames", [
    (0, 0.3, 1.0, 0.5, None, 1), (1, 0.1, 0.25, 0.0, 0.6, 1), (2, 0.5, 3.0, 1.0, 0.8, 3), (3, 0.5, 1.0, 0.5, 0.6, 4)])
def test_spark_aggregation_equals_the_pandas_reference(spark: Any, tmp_path: Path, seed: int, threshold: float,
                                                       gap: float, dedup: float, peak: float | None,
                                                       min_frames: int) -> None:
    from edgemine.mining.spark_aggregate import run_events, run_scenarios

    df, scores, manifest = random_scores(seed)
    pq.write_table(scores, tmp_path / "scores.parquet")
    pq.write_table(manifest, tmp_path / "manifest.parquet")
    params = AggregateParams(threshold=threshold, max_gap_s=gap, dedup_s=dedup, peak_threshold=peak,
                             min_frames=min_frames, short_peak=0.9 if min_frames > 3 else None)
    paths = run_events(spark, scores_path=tmp_path / "scores.parquet", manifest_path=tmp_path / "manifest.parquet",
                       out_dir=tmp_path / "agg", params=params)
    spark_frames = pq.read_table(paths["event_frames"]).to_pandas()
    pandas_frames = ref.event_frames(df, params)
    same_tables(spark_frames, pandas_frames, "frame_id")
    same_tables(pq.read_table(paths["events"]).to_pandas(), ref.event_stats(pandas_frames), "event_id")
    kept = pandas_frames[pandas_frames["keep"]]
    assign = pd.DataFrame({"frame_id": kept["frame_id"],
                           "scenario_id": [f"s{i % 3:03d}" for i in range(len(kept))]})
    pq.write_table(pa.Table.from_pandas(assign, preserve_index=False), tmp_path / "assign.parquet")
    out = run_scenarios(spark, event_frames_path=paths["event_frames"], assignments_path=tmp_path / "assign.parquet",
                        out_path=tmp_path / "agg" / "scenarios")
    same_tables(pq.read_table(out).to_pandas(), ref.scenario_stats(kept, assign), "scenario_id")
    # novelty_calibrations (compared above with the oracle's): events of one calibration and of both are here
    lists = {tuple(v) for v in ref.event_stats(pandas_frames)["novelty_calibrations"]}
    assert ("reference",) in lists and ("reference", "time_of_day=night") in lists, lists


@pytest.mark.spark
@pytest.mark.integration
def test_spark_reads_int64_and_naive_timestamps(spark: Any, tmp_path: Path) -> None:
    from edgemine.mining.spark_aggregate import run_events

    df, scores, manifest = random_scores(5, n_drives=2, n=40)
    ts = manifest.column("timestamp").cast(pa.int64())
    manifest = manifest.set_column(2, "timestamp", ts)
    pq.write_table(scores, tmp_path / "s.parquet")
    pq.write_table(manifest, tmp_path / "m.parquet")
    params = AggregateParams(threshold=0.2)
    paths = run_events(spark, scores_path=tmp_path / "s.parquet", manifest_path=tmp_path / "m.parquet",
                       out_dir=tmp_path / "agg", params=params)
    same_tables(pq.read_table(paths["event_frames"]).to_pandas(), ref.event_frames(df, params), "frame_id")
