"""What every stage of a mining run shares: the run's state and result, its folder names, small Arrow helpers."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from edgemine.jobs.spec import MineSpec
from edgemine.runtime import atomic_write_bytes

Log = Callable[[str], None]
FRAMES_INDEX, REFERENCE_INDEX = "index/frames", "index/reference"  # inside the run folder


def quiet(_: str) -> None:
    pass


@dataclass
class RunState:
    spec: MineSpec
    run_dir: Path
    work: Path
    log: Log
    run_id: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the run's results may mislead: said first, everywhere
    cleanups: list[Callable[[], None]] = field(default_factory=list)  # run at the end, newest first
    # rows done / rows in the running stage (embed, score, fuse), for a live rows/s + ETA line; None: no one asks
    progress: Callable[[int, int], None] | None = None

    def report(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        self.log(f"[{name}]")
        yield
        self.timings[name] = round(time.perf_counter() - t0, 3)


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    run_id: str
    counts: dict[str, Any]
    timings: dict[str, float]
    warnings: list[str] = field(default_factory=list)  # e.g. the reference does not cover the fleet


def positions(ids: pa.Array | pa.ChunkedArray, value_set: pa.Array) -> np.ndarray:
    """Row of each id in `value_set` (-1 where absent)."""
    pos = pc.index_in(ids, value_set=value_set)
    return np.asarray(pc.fill_null(pos, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def abs_path(path: str | os.PathLike[str]) -> str:
    """An absolute local path (URIs such as s3:// pass through unchanged)."""
    p = str(path)
    return p if "://" in p else str(Path(p).resolve())


def read_as(path: Path, schema: pa.Schema) -> pa.Table:
    """A small Spark output folder as a table of `schema` (an empty result may have no typed file)."""
    files = [str(p) for p in sorted(Path(path).glob("*.parquet"))]
    tables = [pq.read_table(f) for f in files]
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return schema.empty_table()
    t = pa.concat_tables(tables, promote_options="permissive")
    return pa.Table.from_arrays([t.column(f.name).cast(f.type) for f in schema], schema=schema)


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as JSON atomically."""
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=str).encode())
