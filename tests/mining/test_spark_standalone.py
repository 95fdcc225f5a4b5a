"""The aggregation on a real Spark standalone cluster (master + worker on 127.0.0.1) equals local mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from edgemine.mining.aggregate import AggregateParams
from tests.support import aggregate_oracle as ref
from tests.support.aggregate_oracle import random_scores, same_tables
from tests.support.spark_cluster import spark_standalone

pytestmark = [pytest.mark.spark, pytest.mark.integration, pytest.mark.slow]

# Each master runs in its own process: a Python process holds one SparkContext at a time.
RUN = """
import json, sys
from edgemine.mining.aggregate import AggregateParams
from edgemine.mining.spark import get_spark
from edgemine.mining.spark_aggregate import run_events
master, base, out = sys.argv[1], sys.argv[2], sys.argv[3]
spark = get_spark(master, app_name="edgemine-standalone-test", conf={"spark.executor.memory": "512m",
                                                                      "spark.cores.max": "1"})
paths = run_events(spark, scores_path=f"{base}/scores.parquet", manifest_path=f"{base}/manifest.parquet",
                   out_dir=out, params=AggregateParams(threshold=0.3, max_gap_s=1.0, dedup_s=0.5))
print(json.dumps({"master": spark.sparkContext.master, "executors":
                  spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size()}))
spark.stop()
"""


def _run(master: str, base: Path, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", RUN, master, str(base), str(out)], capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "PYSPARK_PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_standalone_cluster_equals_local_mode_and_the_pandas_reference(tmp_path: Path) -> None:
    df, scores, manifest = random_scores(3, n_drives=5, n=150)
    pq.write_table(scores, tmp_path / "scores.parquet")
    pq.write_table(manifest, tmp_path / "manifest.parquet")
    with spark_standalone(cores=1) as cluster:
        info = _run(cluster.master_url, tmp_path, tmp_path / "standalone")
    assert info["master"] == cluster.master_url and info["executors"] >= 2  # the driver + >= 1 executor
    _run("local[1]", tmp_path, tmp_path / "local")
    for part, key in (("event_frames", "frame_id"), ("events", "event_id")):
        a = pq.read_table(tmp_path / "standalone" / part).to_pandas()
        b = pq.read_table(tmp_path / "local" / part).to_pandas()
        same_tables(a, b, key)
    pandas_frames = ref.event_frames(df, AggregateParams(threshold=0.3, max_gap_s=1.0, dedup_s=0.5))
    same_tables(pq.read_table(tmp_path / "standalone" / "event_frames").to_pandas(), pandas_frames, "frame_id")
