"""Spark aggregation at 1M and 10M frames, with DuckDB running the same query on the same files.

    .venv/bin/python benchmarks/spark_aggregation.py                     # 1M and 10M rows
    .venv/bin/python benchmarks/spark_aggregation.py --rows 200000       # a quick small run

What is measured: `edgemine.mining.spark_aggregate.run_events` (what `edgemine mine` runs in its aggregate stage) on
`local[*]` with the product's session settings (`edgemine.mining.spark.get_spark`): read scores.parquet and
manifest.parquet, join on frame_id, events = runs of frames >= threshold at most max_gap apart per drive,
hysteresis (peak >= peak_threshold, >= min_frames frames), de-dup buckets (best frame per dedup_s of an
event), write event_frames/, re-read it and write per-event stats to events/. The Spark session's start is
timed apart. DuckDB runs the same two statements in SQL window functions (`DUCKDB_FRAMES_SQL`,
`DUCKDB_EVENTS_SQL`), reading the same Parquet files and writing Parquet, with as many threads as Spark
has cores. The parent checks that both engines produce the same tables (every event frame's event id and
de-dup flag, every event's counts, times, peak frame and statistics), so the ratio compares equal work.

Each engine runs in its own child process; the parent samples the child's process tree RSS (Python plus
the Spark JVM) and records the load average around each run.

Input (generated once under /tmp/edgemine-fleet/agg/, streamed in whole-drive batches with numpy and
pyarrow): drives of 3,000 frames at 10 Hz; manifest.parquet (frame_id, drive_id, timestamp, uri),
scores.parquet (frame_id, score, novelty, uncertainty, rarity, trigger as the run's scores.parquet has them).
Scores: exponential background (~1.4% of frames >= 1.5 as isolated blips) plus about one real event per
drive (5-80 frames, peak 1.8-8).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_common import WORK, load_avg, machine, run_measured, write_json  # noqa: E402

FRAMES_PER_DRIVE = 3000
BASE_US = 1_767_225_600_000_000
SIGNALS = ("novelty", "uncertainty", "rarity", "trigger")
# The run's defaults for the fisher fusion (jobs/spec.py): frames >= 1.5, events peaking >= 2.0, >= 3 frames.
PARAMS: dict[str, Any] = {"threshold": 1.5, "peak_threshold": 2.0, "min_frames": 3, "max_gap_s": 1.0, "dedup_s": 0.5}


# ------------------------------------------------------------------ data
def generate(out: Path, rows: int, *, seed: int = 0, batch_drives: int = 33) -> dict[str, Any]:
    """scores.parquet + manifest.parquet with `rows` frames, streamed `batch_drives` drives at a time."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from edgemine.contracts import TIMESTAMP

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    man_schema = pa.schema([("frame_id", pa.string()), ("drive_id", pa.string()), ("timestamp", TIMESTAMP),
                            ("uri", pa.string())])
    sc_schema = pa.schema([("frame_id", pa.string()), ("score", pa.float32())]
                          + [(s, pa.float32()) for s in SIGNALS])
    t = time.perf_counter()
    n_events = 0
    with pq.ParquetWriter(out / "manifest.parquet.tmp", man_schema) as mw, \
            pq.ParquetWriter(out / "scores.parquet.tmp", sc_schema) as sw:
        for start in range(0, rows, batch_drives * FRAMES_PER_DRIVE):
            n = min(batch_drives * FRAMES_PER_DRIVE, rows - start)
            idx = np.arange(start, start + n)
            drive, frame = idx // FRAMES_PER_DRIVE, idx % FRAMES_PER_DRIVE
            score = rng.exponential(0.35, n)
            # about one real event per drive: a bump of 5-80 frames peaking at 1.8-8
            for d in np.unique(drive):
                for _ in range(rng.poisson(1.0)):
                    length, peak = int(rng.integers(5, 81)), rng.uniform(1.8, 8.0)
                    s0 = int(rng.integers(0, FRAMES_PER_DRIVE - length))
                    rows_d = np.flatnonzero(drive == d)
                    seg = rows_d[(frame[rows_d] >= s0) & (frame[rows_d] < s0 + length)]
                    shape = np.sin(np.linspace(0.15, np.pi - 0.15, len(seg)))
                    score[seg] = np.maximum(score[seg], peak * shape)
                    n_events += 1
            d_str = pc.utf8_lpad(pc.cast(pa.array(drive), pa.string()), 7, "0")
            f_str = pc.utf8_lpad(pc.cast(pa.array(frame), pa.string()), 5, "0")
            drive_id = pc.binary_join_element_wise("agg", d_str, "-")
            frame_id = pc.binary_join_element_wise(drive_id, f_str, "-")
            uri = pc.binary_join_element_wise("s3://edgemine-synthetic", frame_id, "/")
            ts = pa.array(BASE_US + drive * 3_600_000_000 + frame * 100_000, pa.int64()).cast(TIMESTAMP)
            mw.write_table(pa.table({"frame_id": frame_id, "drive_id": drive_id, "timestamp": ts,
                                     "uri": pc.binary_join_element_wise(uri, ".png", "")}, schema=man_schema))
            pct = 1.0 - np.exp(-score)
            cols: dict[str, Any] = {"frame_id": frame_id, "score": pa.array(score.astype(np.float32))}
            for i, s in enumerate(SIGNALS):
                v = np.clip(pct + rng.normal(0, 0.05 * (i + 1), n), 0, 1).astype(np.float32)
                cols[s] = pa.array(v, mask=rng.random(n) < (0.1 if s == "uncertainty" else 0.0))
            sw.write_table(pa.table(cols, schema=sc_schema))
    for name in ("manifest.parquet", "scores.parquet"):
        os.replace(out / f"{name}.tmp", out / name)
    info = {"rows": rows, "drives": -(-rows // FRAMES_PER_DRIVE), "planted_events": n_events,
            "seconds": round(time.perf_counter() - t, 1)}
    write_json(out / "data.json", info)
    return info


def dataset(rows: int, work: Path) -> Path:
    d = work / "agg" / f"rows-{rows}"
    if not (d / "data.json").exists():
        info = generate(d, rows)
        print(f"generated {d}: {json.dumps(info)}", flush=True)
    return d


# ------------------------------------------------------------------ engines
def child_spark(a: argparse.Namespace) -> dict[str, Any]:
    from edgemine.mining.aggregate import AggregateParams
    from edgemine.mining.spark import get_spark
    from edgemine.mining.spark_aggregate import run_events

    data, out = Path(a.data), Path(a.out)
    t = time.perf_counter()
    spark = get_spark(a.master)
    t_start = time.perf_counter() - t
    cores = spark.sparkContext.defaultParallelism
    times = []
    for _ in range(a.in_session):  # the first run pays the JVM's class loading and JIT; later ones do not
        t = time.perf_counter()
        run_events(spark, scores_path=data / "scores.parquet", manifest_path=data / "manifest.parquet",
                   out_dir=out, params=AggregateParams(**PARAMS))
        times.append(round(time.perf_counter() - t, 2))
    spark.stop()
    return {"engine": "spark", "master": a.master, "cores": cores, "session_start_s": round(t_start, 1),
            "run_s": times[0], "warm_run_s": min(times[1:]) if len(times) > 1 else None, "runs_s": times}


def _sql_params() -> dict[str, Any]:
    from edgemine.mining.aggregate import AggregateParams

    p = AggregateParams(**PARAMS)
    return {"threshold": p.threshold, "peak": p.peak, "min_frames": p.min_frames, "gap_us": p.gap_us,
            "dedup_us": p.dedup_us}


# The same computation as edgemine.mining.spark_aggregate.event_frames (and tests/support/aggregate_oracle.py), in SQL.
DUCKDB_FRAMES_SQL = """
WITH scored AS (
    SELECT s.frame_id, m.drive_id, epoch_us(m."timestamp") AS ts_us, CAST(s.score AS DOUBLE) AS score,
           CAST(s.novelty AS DOUBLE) AS novelty, CAST(s.uncertainty AS DOUBLE) AS uncertainty,
           CAST(s.rarity AS DOUBLE) AS rarity, CAST(s.trigger AS DOUBLE) AS "trigger"
    FROM read_parquet('{scores}') s JOIN read_parquet('{manifest}') m ON s.frame_id = m.frame_id
),
high AS (SELECT * FROM scored WHERE score >= {threshold}),
marked AS (
    SELECT *, CASE WHEN lag(ts_us) OVER w IS NULL OR ts_us - lag(ts_us) OVER w > {gap_us} THEN 1 ELSE 0 END AS _new
    FROM high WINDOW w AS (PARTITION BY drive_id ORDER BY ts_us, frame_id)
),
numbered AS (
    SELECT *, printf('%s/e%04d', drive_id, CAST(sum(_new) OVER (PARTITION BY drive_id ORDER BY ts_us, frame_id
                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS INTEGER)) AS event_id
    FROM marked
),
kept_events AS (
    SELECT * FROM (
        SELECT *, max(score) OVER (PARTITION BY event_id) AS _peak, count(frame_id) OVER (PARTITION BY event_id) AS _n
        FROM numbered)
    WHERE _peak >= {peak} AND _n >= {min_frames}
),
bucketed AS (
    SELECT *, floor((ts_us - min(ts_us) OVER (PARTITION BY event_id)) / {dedup_us}) AS _bucket FROM kept_events
)
SELECT frame_id, drive_id, ts_us, score, novelty, uncertainty, rarity, "trigger", event_id,
       row_number() OVER (PARTITION BY event_id, _bucket ORDER BY score DESC, frame_id ASC) = 1 AS keep
FROM bucketed
"""

DUCKDB_EVENTS_SQL = """
SELECT event_id, first(drive_id) AS drive_id, min(ts_us) AS start_us, max(ts_us) AS end_us,
       count(frame_id) AS n_frames, sum(CAST(keep AS BIGINT)) AS n_kept,
       max(struct_pack(s := score, f := frame_id)).f AS peak_frame_id,
       {stats}
FROM read_parquet('{frames}')
GROUP BY event_id ORDER BY event_id
"""


def child_duckdb(a: argparse.Namespace) -> dict[str, Any]:
    import duckdb

    data, out = Path(a.data), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET threads = {a.threads}")
    con.execute(f"SET temp_directory = '{out / 'tmp'}'")
    stats = ", ".join(f'max("{s}") AS {s}_max, avg("{s}") AS {s}_mean' for s in ("score", *SIGNALS))
    frames_sql = DUCKDB_FRAMES_SQL.format(scores=data / "scores.parquet", manifest=data / "manifest.parquet",
                                          **_sql_params())
    t = time.perf_counter()
    con.execute(f"COPY ({frames_sql}) TO '{out / 'event_frames.parquet'}' (FORMAT parquet)")
    con.execute(f"COPY ({DUCKDB_EVENTS_SQL.format(frames=out / 'event_frames.parquet', stats=stats)}) "
                f"TO '{out / 'events.parquet'}' (FORMAT parquet)")
    t_run = time.perf_counter() - t
    return {"engine": "duckdb", "threads": a.threads, "version": duckdb.__version__, "run_s": round(t_run, 2)}


CHILDREN = {"spark": child_spark, "duckdb": child_duckdb}


# ------------------------------------------------------------------ comparison
def compare(spark_out: Path, duck_out: Path) -> dict[str, Any]:
    """Both engines' outputs side by side: counts, and whether every frame and event agrees."""
    import pandas as pd
    import pyarrow.dataset as ds

    def read(path: Path) -> pd.DataFrame:
        return ds.dataset(str(path), format="parquet").to_table().to_pandas()

    sf, df = read(spark_out / "event_frames"), read(duck_out / "event_frames.parquet")
    se, de = read(spark_out / "events"), read(duck_out / "events.parquet")
    res: dict[str, Any] = {
        "event_frames": [len(sf), len(df)], "kept": [int(sf["keep"].sum()), int(df["keep"].sum())],
        "events": [len(se), len(de)]}
    f = sf.merge(df, on="frame_id", how="outer", suffixes=("_spark", "_duckdb"), indicator=True)
    both = f[f["_merge"] == "both"]
    bad_f = f[(f["_merge"] != "both")]
    bad_f = pd.concat([bad_f, both[(both["event_id_spark"] != both["event_id_duckdb"])
                                   | (both["keep_spark"] != both["keep_duckdb"])]])
    e = se.merge(de, on="event_id", how="outer", suffixes=("_spark", "_duckdb"), indicator=True)
    exact_cols = ["drive_id", "start_us", "end_us", "n_frames", "n_kept", "peak_frame_id"]
    mism = e["_merge"] != "both"
    for c in exact_cols:
        mism |= e[f"{c}_spark"] != e[f"{c}_duckdb"]
    for s in ("score", *SIGNALS):
        for agg in ("max", "mean"):
            x, y = e[f"{s}_{agg}_spark"].astype(float), e[f"{s}_{agg}_duckdb"].astype(float)
            mism |= ~(np.isclose(x, y, rtol=1e-9, atol=1e-12) | (x.isna() & y.isna()))
    res["frames_mismatched"] = int(len(bad_f))
    res["events_mismatched"] = int(mism.sum())
    res["identical"] = res["frames_mismatched"] == 0 and res["events_mismatched"] == 0
    sample = se.sort_values("event_id").head(3)
    res["sample_events"] = sample[["event_id", "n_frames", "n_kept", "peak_frame_id", "score_max"]].to_dict("records")
    if not res["identical"]:
        res["first_mismatch"] = (bad_f.head(3).to_dict("records") if len(bad_f)
                                 else e[mism].head(3).to_dict("records"))
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="1000000,10000000", help="comma-separated row counts")
    ap.add_argument("--engines", default="spark,duckdb")
    ap.add_argument("--master", default="local[*]")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="DuckDB threads (= Spark's cores)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per engine and size (each reported)")
    ap.add_argument("--in-session", type=int, default=2,
                    help="Spark: run_events this many times in one session (first = cold JVM, rest = warm)")
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--out-json", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        write_json(Path(a.out_json), CHILDREN[a.child](a))
        return 0

    results: list[dict[str, Any]] = []
    me = [sys.executable, str(Path(__file__).resolve())]
    for rows in [int(r) for r in a.rows.split(",")]:
        data = dataset(rows, a.work)
        info = json.loads((data / "data.json").read_text())
        for rep in range(a.repeat):
            outs: dict[str, Path] = {}
            for engine in a.engines.split(","):
                out = data / f"out-{engine}"
                js = data / f"{engine}.json"
                cmd = [*me, "--child", engine, "--data", str(data), "--out", str(out), "--out-json", str(js),
                       "--master", a.master, "--threads", str(a.threads), "--in-session", str(a.in_session)]
                print(f"[{time.strftime('%H:%M:%S')}] {engine} {rows} rows, run {rep + 1} (load {load_avg()})",
                      flush=True)
                m = run_measured(cmd, log=data / f"{engine}.log")
                if m["returncode"]:
                    print(f"  FAILED rc={m['returncode']}: see {data / f'{engine}.log'}", flush=True)
                    continue
                r = {"rows": rows, "run": rep + 1, **info, **json.loads(js.read_text()), **m}
                results.append(r)
                outs[engine] = out
                print(f"  {json.dumps({k: v for k, v in r.items() if k != 'cmd'})}", flush=True)
            if {"spark", "duckdb"} <= set(outs):
                cmp = compare(outs["spark"], outs["duckdb"])
                print(f"  compare: {json.dumps(cmp, default=str)}", flush=True)
                results.append({"rows": rows, "run": rep + 1, "engine": "compare", **cmp})
            write_json(a.work / "agg" / "results.json", {"machine": machine(), "params": PARAMS, "results": results})
    print("\n| rows | engine | run s (cold) | warm run s | rows/s (warm) | rows/s/core (warm) | peak RSS GiB | "
          "load avg |")
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    for r in results:
        if r["engine"] in ("spark", "duckdb"):
            cores = r.get("cores") or r.get("threads")
            warm = r.get("warm_run_s") or r["run_s"]
            rate = r["rows"] / warm
            print(f"| {r['rows']:,} | {r['engine']} | {r['run_s']:.1f} | {warm:.1f} | {rate:,.0f} | "
                  f"{rate / cores:,.0f} | {r['peak_rss_gib']:.2f} | "
                  f"{r['load_avg_before'][0]:.1f} → {r['load_avg_after'][0]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
