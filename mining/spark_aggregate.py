"""The aggregation in Spark DataFrame code: the same tables as `mining.aggregate`, for fleet-sized inputs.

Scores and the manifest are read from Parquet and joined in Spark; results are written as Parquet and only
the small ones (kept event frames, events, scenarios) are read back by the caller. Nothing here collects
per-frame data to the driver.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgemine.contracts import EVENT_FRAME_COLUMNS, NOVELTY_CALIBRATION, NOVELTY_CALIBRATIONS, SIGNAL_COLUMNS
from edgemine.mining.aggregate import AggregateParams


def _ts_us_col(df: Any, name: str = "timestamp") -> Any:
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, TimestampNTZType, TimestampType

    dtype = df.schema[name].dataType
    if isinstance(dtype, (TimestampType, TimestampNTZType)):
        return F.unix_micros(F.col(name).cast(TimestampType()))
    if isinstance(dtype, LongType):
        return F.col(name)
    return F.col(name).cast("long")


def scored_frames(spark: Any, *, scores_path: str, manifest_path: str, signals: Sequence[str] = SIGNAL_COLUMNS) -> Any:
    """Scores joined with the manifest's drive_id and timestamp (as ts_us); `novelty_calibration` null where the
    scores have none."""
    from pyspark.sql import functions as F

    scores = spark.read.parquet(str(scores_path))
    manifest = spark.read.parquet(str(manifest_path))
    man = manifest.select("frame_id", "drive_id", _ts_us_col(manifest).alias("ts_us"))
    cols = [F.col("frame_id"), F.col("score").cast("double").alias("score")] + [
        (F.col(s).cast("double") if s in scores.columns else F.lit(None).cast("double")).alias(s) for s in signals]
    cols.append((F.col(NOVELTY_CALIBRATION) if NOVELTY_CALIBRATION in scores.columns else F.lit(None))
                .cast("string").alias(NOVELTY_CALIBRATION))
    return scores.select(*cols).join(man, on="frame_id", how="inner")


def event_frames(df: Any, params: AggregateParams, *, signals: Sequence[str] = SIGNAL_COLUMNS) -> Any:
    """Spark version of `tests/support/aggregate_oracle.event_frames` over a DataFrame of scored frames."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    high = df.filter(F.col("score") >= F.lit(float(params.threshold)))
    by_drive = Window.partitionBy("drive_id").orderBy("ts_us", "frame_id")
    high = high.withColumn("_prev", F.lag("ts_us").over(by_drive))
    high = high.withColumn(
        "_new", F.when(F.col("_prev").isNull() | ((F.col("ts_us") - F.col("_prev")) > params.gap_us), 1).otherwise(0))
    high = high.withColumn(
        "_idx", F.sum("_new").over(by_drive.rowsBetween(Window.unboundedPreceding, Window.currentRow)))
    high = high.withColumn("event_id", F.format_string("%s/e%04d", F.col("drive_id"), F.col("_idx").cast("int")))
    by_event = Window.partitionBy("event_id")
    high = high.withColumn("_peak", F.max("score").over(by_event)).withColumn("_n", F.count("frame_id").over(by_event))
    long_enough = F.col("_n") >= F.lit(params.min_frames)
    if params.short_peak is not None:
        long_enough = long_enough | (F.col("_peak") >= F.lit(float(params.short_peak)))
    high = high.filter((F.col("_peak") >= F.lit(float(params.peak))) & long_enough)
    if params.dedup_us > 0:
        start = F.min("ts_us").over(by_event)
        high = high.withColumn("_bucket", F.floor((F.col("ts_us") - start) / F.lit(params.dedup_us)))
        rank = F.row_number().over(
            Window.partitionBy("event_id", "_bucket").orderBy(F.col("score").desc(), F.col("frame_id").asc()))
        high = high.withColumn("keep", rank == 1)
    else:
        high = high.withColumn("keep", F.lit(True))
    return high.select(*EVENT_FRAME_COLUMNS[:4], *signals, NOVELTY_CALIBRATION, "event_id", "keep")


def _signal_aggs(signals: Sequence[str]) -> list[Any]:
    from pyspark.sql import functions as F

    out = []
    for s in ("score", *signals):
        out += [F.max(s).alias(f"{s}_max"), F.avg(s).alias(f"{s}_mean")]
    # which calibrations those novelty stats mix (collect_set leaves nulls out)
    out.append(F.array_sort(F.collect_set(NOVELTY_CALIBRATION)).alias(NOVELTY_CALIBRATIONS))
    return out


def event_stats(frames: Any, *, signals: Sequence[str] = SIGNAL_COLUMNS) -> Any:
    from pyspark.sql import functions as F

    return frames.groupBy("event_id").agg(
        F.first("drive_id").alias("drive_id"),
        F.min("ts_us").alias("start_us"),
        F.max("ts_us").alias("end_us"),
        F.count("frame_id").alias("n_frames"),
        F.sum(F.col("keep").cast("long")).alias("n_kept"),
        F.max(F.struct("score", "frame_id")).getField("frame_id").alias("peak_frame_id"),
        *_signal_aggs(signals),
    ).orderBy("event_id")


def scenario_stats(frames: Any, assignments: Any, *, signals: Sequence[str] = SIGNAL_COLUMNS) -> Any:
    from pyspark.sql import functions as F

    f = frames.join(assignments.select("frame_id", "scenario_id"), on="frame_id", how="inner")
    return f.groupBy("scenario_id").agg(
        F.count("frame_id").alias("n_frames"),
        F.countDistinct("drive_id").alias("n_drives"),
        F.countDistinct("event_id").alias("n_events"),
        F.max(F.struct("score", "frame_id")).getField("frame_id").alias("peak_frame_id"),
        *_signal_aggs(signals),
    ).orderBy("scenario_id")


def run_events(spark: Any, *, scores_path: str | Path, manifest_path: str | Path, out_dir: str | Path,
               params: AggregateParams, signals: Sequence[str] = SIGNAL_COLUMNS) -> dict[str, Path]:
    """Write event_frames/ (every high frame), kept/ (de-duplicated frames) and events/ under `out_dir`."""
    out = Path(out_dir)
    df = scored_frames(spark, scores_path=str(scores_path), manifest_path=str(manifest_path), signals=signals)
    frames = event_frames(df, params, signals=signals)
    paths = {"event_frames": out / "event_frames", "events": out / "events"}
    frames.write.mode("overwrite").parquet(str(paths["event_frames"]))
    written = spark.read.parquet(str(paths["event_frames"]))  # compute the windows once, reuse from disk
    event_stats(written, signals=signals).coalesce(1).write.mode("overwrite").parquet(str(paths["events"]))
    return paths


def run_scenarios(spark: Any, *, event_frames_path: str | Path, assignments_path: str | Path, out_path: str | Path,
                  signals: Sequence[str] = SIGNAL_COLUMNS) -> Path:
    """Write per-scenario statistics of the kept frames to `out_path` (a Parquet folder)."""
    from pyspark.sql import functions as F

    frames = spark.read.parquet(str(event_frames_path)).filter(F.col("keep"))
    assignments = spark.read.parquet(str(assignments_path))
    scenario_stats(frames, assignments, signals=signals).coalesce(1).write.mode("overwrite").parquet(str(out_path))
    return Path(out_path)
