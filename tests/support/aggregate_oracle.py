"""The pandas oracle of the aggregation (`edgemine.mining.aggregate` defines it, `edgemine.mining.spark_aggregate`
runs it): small, obviously-correct numpy/pandas code the Spark tables are checked against. Tests only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from edgemine.contracts import EVENT_FRAME_COLUMNS, NOVELTY_CALIBRATION, NOVELTY_CALIBRATIONS, SIGNAL_COLUMNS
from edgemine.mining.aggregate import AggregateParams


def _ts_us(col: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(col):
        return col.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[us]").astype("int64") \
            if getattr(col.dt, "tz", None) is not None else col.astype("datetime64[us]").astype("int64")
    return col.astype("int64")


def event_frames(scored: pd.DataFrame, params: AggregateParams, *,
                 signals: Sequence[str] = SIGNAL_COLUMNS) -> pd.DataFrame:
    """High-scoring frames with their event id and de-dup flag (columns EVENT_FRAME_COLUMNS).

    `scored` has frame_id, drive_id, timestamp (datetime or int µs) or ts_us, score and the signal columns.
    """
    df = scored.copy()
    if "ts_us" not in df:
        df["ts_us"] = _ts_us(df["timestamp"])
    for s in signals:
        if s not in df:
            df[s] = np.nan
    if NOVELTY_CALIBRATION not in df:
        df[NOVELTY_CALIBRATION] = None
    df = df[df["score"].astype("float64") >= params.threshold]
    cols = ["frame_id", "drive_id", "ts_us", "score", *signals, NOVELTY_CALIBRATION]
    if df.empty:
        out = pd.DataFrame({c: pd.Series(dtype="object") for c in EVENT_FRAME_COLUMNS})
        return out
    df = df[cols].sort_values(["drive_id", "ts_us", "frame_id"], kind="mergesort").reset_index(drop=True)
    prev = df.groupby("drive_id", sort=False)["ts_us"].shift(1)
    new = prev.isna() | ((df["ts_us"] - prev) > params.gap_us)
    idx = new.astype("int64").groupby(df["drive_id"], sort=False).cumsum()
    df["event_id"] = [f"{d}/e{i:04d}" for d, i in zip(df["drive_id"], idx, strict=True)]
    g = df.groupby("event_id", sort=False)["score"]
    top = g.transform("max").astype("float64")
    long_enough = g.transform("count") >= params.min_frames
    if params.short_peak is not None:
        long_enough |= top >= params.short_peak
    df = df[(top >= params.peak) & long_enough]
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in EVENT_FRAME_COLUMNS})
    df = df.reset_index(drop=True)
    if params.dedup_us > 0:
        start = df.groupby("event_id", sort=False)["ts_us"].transform("min")
        df["_bucket"] = (df["ts_us"] - start) // params.dedup_us
        order = df.sort_values(["event_id", "_bucket", "score", "frame_id"], ascending=[True, True, False, True],
                               kind="mergesort")
        first = ~order.duplicated(["event_id", "_bucket"], keep="first")
        df["keep"] = False
        df.loc[order.index[first.to_numpy()], "keep"] = True
        df = df.drop(columns="_bucket")
    else:
        df["keep"] = True
    return df[list(EVENT_FRAME_COLUMNS)].reset_index(drop=True)


def _peak(df: pd.DataFrame, key: str) -> pd.Series:
    """frame_id with the highest score per group (ties: the largest frame_id, as Spark's max(struct))."""
    o = df.sort_values([key, "score", "frame_id"], ascending=[True, False, False], kind="mergesort")
    return o.drop_duplicates(key, keep="first").set_index(key)["frame_id"]


def _signal_stats(g: pd.core.groupby.DataFrameGroupBy, signals: Sequence[str]) -> pd.DataFrame:
    parts = {}
    for s in ("score", *signals):
        parts[f"{s}_max"] = g[s].max()
        parts[f"{s}_mean"] = g[s].mean()
    parts[NOVELTY_CALIBRATIONS] = g[NOVELTY_CALIBRATION].apply(lambda v: sorted(set(v.dropna())))
    return pd.DataFrame(parts)


def event_stats(frames: pd.DataFrame, *, signals: Sequence[str] = SIGNAL_COLUMNS) -> pd.DataFrame:
    """One row per event: drive, start/end (µs), frames, kept frames, peak frame, max/mean of each signal."""
    cols = ["event_id", "drive_id", "start_us", "end_us", "n_frames", "n_kept", "peak_frame_id"] + [
        f"{s}_{a}" for s in ("score", *signals) for a in ("max", "mean")] + [NOVELTY_CALIBRATIONS]
    if frames.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    f = frames.copy()
    for s in ("score", *signals):
        f[s] = f[s].astype("float64")
    g = f.groupby("event_id", sort=True)
    out = pd.DataFrame({
        "drive_id": g["drive_id"].first(),
        "start_us": g["ts_us"].min().astype("int64"),
        "end_us": g["ts_us"].max().astype("int64"),
        "n_frames": g["frame_id"].count().astype("int64"),
        "n_kept": g["keep"].sum().astype("int64"),
        "peak_frame_id": _peak(f, "event_id"),
    }).join(_signal_stats(g, signals))
    return out.reset_index()[cols]


def scenario_stats(frames: pd.DataFrame, assignments: pd.DataFrame, *,
                   signals: Sequence[str] = SIGNAL_COLUMNS) -> pd.DataFrame:
    """One row per scenario from kept event frames joined with (frame_id, scenario_id) assignments."""
    cols = ["scenario_id", "n_frames", "n_drives", "n_events", "peak_frame_id"] + [
        f"{s}_{a}" for s in ("score", *signals) for a in ("max", "mean")] + [NOVELTY_CALIBRATIONS]
    f = frames.merge(assignments[["frame_id", "scenario_id"]], on="frame_id", how="inner")
    if f.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    for s in ("score", *signals):
        f[s] = f[s].astype("float64")
    g = f.groupby("scenario_id", sort=True)
    out = pd.DataFrame({
        "n_frames": g["frame_id"].count().astype("int64"),
        "n_drives": g["drive_id"].nunique().astype("int64"),
        "n_events": g["event_id"].nunique().astype("int64"),
        "peak_frame_id": _peak(f, "scenario_id"),
    }).join(_signal_stats(g, signals))
    return out.reset_index()[cols]


# ---------------------------------------------------------------- fixtures for the Spark-vs-oracle checks
S = 1_000_000  # µs


def random_scores(seed: int, n_drives: int = 6, n: int = 120) -> tuple[pd.DataFrame, pa.Table, pa.Table]:
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(n_drives):
        t0 = 1_767_225_600 * S + d * 3600 * S
        ts = t0 + np.cumsum(rng.choice([100_000, 100_000, 100_000, 300_000, 2_000_000], size=n))
        # bursts of high scores, float32-exact, with ties
        base = np.round(rng.uniform(0, 1, n) ** 3, 2).astype(np.float32)
        for i in range(n):
            rows.append((f"d{d}-{i:04d}", f"drive{d}", int(ts[i]), float(base[i])))
    df = pd.DataFrame(rows, columns=["frame_id", "drive_id", "ts_us", "score"])
    df["score"] = df["score"].astype(np.float32)
    for s, f in (("novelty", 1.0), ("rarity", 0.5)):
        df[s] = (df["score"] * f).astype(np.float32)
    df["uncertainty"] = np.where(rng.random(len(df)) < 0.3, np.nan, rng.random(len(df))).astype(np.float32)
    df["trigger"] = (rng.random(len(df)) < 0.05).astype(np.float32)
    # novelty calibrated on the reference, or (night frames, a run of them per drive) within time_of_day=night;
    # a few frames without novelty have none (null exactly where novelty is)
    pick = rng.random(len(df))
    night = (df["frame_id"].str[-4:].astype(int) // 20 % 3 == 1).to_numpy()
    df[NOVELTY_CALIBRATION] = np.where(night, "time_of_day=night", "reference").astype(object)
    df.loc[pick < 0.05, "novelty"] = np.nan
    df.loc[pick < 0.05, NOVELTY_CALIBRATION] = None
    scores = pa.table({
        "frame_id": df["frame_id"], "score": pa.array(df["score"], pa.float32()),
        **{s: pa.array(df[s].to_numpy(), pa.float32(), mask=np.isnan(df[s].to_numpy()))
           for s in ("novelty", "uncertainty", "rarity", "trigger")},
        NOVELTY_CALIBRATION: pa.array(df[NOVELTY_CALIBRATION].tolist(), pa.string()),
    })
    manifest = pa.table({"frame_id": df["frame_id"], "drive_id": df["drive_id"],
                         "timestamp": pa.array(df["ts_us"], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                         "uri": [f"{f}.png" for f in df["frame_id"]]})
    return df, scores, manifest


def same_tables(spark_df: pd.DataFrame, pandas_df: pd.DataFrame, key: str) -> None:
    a = spark_df.sort_values(key).reset_index(drop=True)
    b = pandas_df.sort_values(key).reset_index(drop=True)
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b) > 0
    for c in a.columns:
        if c == NOVELTY_CALIBRATIONS:  # lists (Spark's come back as numpy arrays)
            assert [list(v) for v in a[c]] == [list(v) for v in b[c]], c
        elif pd.api.types.is_float_dtype(b[c]) or pd.api.types.is_float_dtype(a[c]):
            np.testing.assert_allclose(a[c].astype(float), b[c].astype(float), rtol=1e-6, atol=1e-9, err_msg=c)
        else:
            assert a[c].astype(str).tolist() == b[c].astype(str).tolist(), c
