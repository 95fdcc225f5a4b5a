"""Shared by the fleet-scale benchmarks: cached synthetic data, peak RSS of a process tree, load average.

Peak RSS is sampled by a thread with psutil every `interval` seconds over a root process and all of its
descendants (Python, the Spark JVM, Ray's raylet/GCS/workers), summing their resident sets. Shared pages
(Ray's object store, copy-on-write after fork) are counted once per process that maps them, so the sum is an
upper bound on what the tree needs; the largest single process is reported beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

WORK = Path("/tmp/edgemine-fleet")
GIB = 1024**3


def load_avg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict[str, Any]:
    import platform

    import psutil

    return {"cpus": os.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / GIB, 1),
            "platform": platform.platform(), "python": platform.python_version()}


def fleet_manifest(*, frames: int, reference: bool, dim: int = 128, seed: int = 0, work: Path = WORK) -> Path:
    """`edgemine synth-fleet` output for these parameters, generated once under `work`."""
    from edgemine.jobs.synth.fleet import generate_fleet

    name = f"{'ref' if reference else 'fleet'}-{frames}-d{dim}-s{seed}"
    out = work / name
    path = out / "manifest.parquet"
    if not path.exists():
        t = time.perf_counter()
        info = generate_fleet(out, frames=frames, dim=dim, reference=reference, seed=seed)
        print(f"generated {path}: {info['frames']} rows ({info['rare_frames']} rare) in "
              f"{time.perf_counter() - t:.1f}s", flush=True)
    return path


def iter_vectors(path: Path, *, batch_rows: int = 65_536, ids: bool = False) -> Iterator[Any]:
    """(frame_id table, float32 matrix) batches (ids=True) or float32 matrices of a manifest's embeddings."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    d = ds.dataset(str(path), format="parquet")
    dim = d.schema.field("embedding").type.list_size
    cols = ["frame_id", "embedding"] if ids else ["embedding"]
    for b in d.to_batches(columns=cols, batch_size=batch_rows):
        if not b.num_rows:
            continue
        emb = b.column(b.schema.get_field_index("embedding"))
        # flatten(), not .values: a sliced FixedSizeListArray's .values is the whole unsliced child array
        v = emb.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)
        yield (pa.table({"frame_id": b.column(0)}), v) if ids else v


def load_vectors(path: Path) -> np.ndarray:
    """Every embedding of a manifest as one float32 matrix (raw-engine side of a benchmark only)."""
    import pyarrow.dataset as ds

    d = ds.dataset(str(path), format="parquet")
    n, dim = d.count_rows(), d.schema.field("embedding").type.list_size
    out = np.empty((n, dim), np.float32)
    r = 0
    for v in iter_vectors(path):
        out[r : r + len(v)] = v
        r += len(v)
    return out


@dataclass
class TreeRSS:
    """Peak of the summed RSS of `pid` and its descendants, sampled in a daemon thread."""

    pid: int = field(default_factory=os.getpid)
    interval: float = 0.25
    peak_bytes: int = 0
    peak_single_bytes: int = 0
    peak_processes: int = 0
    samples: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        total, biggest = 0, 0
        for p in procs:
            try:
                rss = p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += rss
            biggest = max(biggest, rss)
        self.samples += 1
        self.peak_bytes = max(self.peak_bytes, total)
        self.peak_single_bytes = max(self.peak_single_bytes, biggest)
        self.peak_processes = max(self.peak_processes, len(procs))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def to_dict(self) -> dict[str, Any]:
        return {"peak_rss_gib": round(self.peak_bytes / GIB, 3),
                "peak_single_process_gib": round(self.peak_single_bytes / GIB, 3),
                "peak_processes": self.peak_processes, "samples": self.samples}


def run_measured(cmd: Sequence[str], *, env: dict[str, str] | None = None, log: Path | None = None,
                 interval: float = 0.25) -> dict[str, Any]:
    """Run `cmd` as a child, sampling its process tree's RSS; wall time, exit code, load average around it."""
    before = load_avg()
    t = time.perf_counter()
    out = open(log, "w") if log else None  # noqa: SIM115 - closed below, after the child exits
    try:
        proc = subprocess.Popen(list(cmd), env={**os.environ, **(env or {})}, stdout=out or None,
                                stderr=subprocess.STDOUT if out else None, cwd=str(ROOT))
        with TreeRSS(proc.pid, interval=interval) as rss:
            rc = proc.wait()
    finally:
        if out:
            out.close()
    return {"cmd": list(cmd), "returncode": rc, "wall_s": round(time.perf_counter() - t, 1),
            "load_avg_before": before, "load_avg_after": load_avg(), **rss.to_dict()}


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |found ∩ exact| / k (ids; -1 never matches)."""
    k = exact.shape[1]
    hits = [len(set(a[a >= 0].tolist()) & set(b.tolist())) for a, b in zip(found[:, :k], exact, strict=True)]
    return float(np.mean(hits) / k)
