"""Fleet-scale synthetic manifests with precomputed embeddings (no images), for scale benchmarks.

Real fleets bring their own embeddings at this scale (the embed step is skipped when a manifest has an
`embedding` column). Embeddings here are drawn from a mixture of "known scene" clusters on the unit
sphere; fleet manifests add a `rare_rate` fraction of frames from clusters the reference never saw, in
short temporal runs (events), so novelty has something real to find. Written in streamed Arrow batches:
memory stays flat whatever `frames` is.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from edgemine.contracts import TIMESTAMP
from edgemine.errors import ConfigError

BASE_US = 1_767_225_600_000_000
N_KNOWN = 256
N_NOVEL = 24
FRAMES_PER_DRIVE = 3000  # 5 min at 10 Hz


def _centroids(dim: int, seed: int, known: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 99])
    c = rng.normal(size=(known + N_NOVEL, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    return c[:known], c[known:]


def fleet_schema(dim: int) -> pa.Schema:
    return pa.schema([
        pa.field("frame_id", pa.string(), nullable=False),
        pa.field("drive_id", pa.string(), nullable=False),
        pa.field("timestamp", TIMESTAMP, nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False),
        pa.field("probs", pa.list_(pa.float32())),
        pa.field("speed_mps", pa.float32()),
        pa.field("accel_mps2", pa.float32()),
        pa.field("weather", pa.string()),
        pa.field("is_rare", pa.bool_()),  # ground truth, kept in the manifest for benchmark scoring
    ])


def generate_fleet(
    out: str | os.PathLike[str],
    *,
    frames: int,
    dim: int = 128,
    rare_rate: float = 0.005,
    reference: bool = False,
    seed: int = 0,
    batch_rows: int = 100_000,
    spread: float = 0.35,
    clusters: int = N_KNOWN,
) -> dict[str, object]:
    """Write `out/manifest.parquet` with `frames` rows (streamed in batches of `batch_rows`)."""
    if frames < 1:
        raise ConfigError(f"frames={frames} must be >= 1")
    if dim < 2:
        raise ConfigError(f"dim={dim} must be >= 2")
    if not 0 <= rare_rate <= 0.5:
        raise ConfigError(f"rare_rate={rare_rate} must be between 0 and 0.5")
    t0 = time.perf_counter()
    if clusters < 1:
        raise ConfigError(f"clusters={clusters} must be >= 1")
    known, novel = _centroids(dim, seed, clusters)
    rng = np.random.default_rng([seed, int(reference), 1])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prefix = "ref" if reference else "flt"
    schema = fleet_schema(dim)
    tmp = out / "manifest.parquet.tmp"
    n_rare = 0
    weathers = np.array(["clear", "rain", "fog"])
    with pq.ParquetWriter(tmp, schema) as w:
        for start in range(0, frames, batch_rows):
            n = min(batch_rows, frames - start)
            idx = np.arange(start, start + n)
            drive = idx // FRAMES_PER_DRIVE
            # scene cluster changes every ~20 s within a drive: consecutive frames are near-duplicates
            seg = idx // 200
            cluster = (seg * 97 + int(reference) * 13) % clusters  # every known scene recurs
            emb = known[cluster] + rng.normal(scale=spread / np.sqrt(dim), size=(n, dim)).astype(np.float32)
            rare = np.zeros(n, bool)
            if not reference and rare_rate > 0:
                # rare events: runs of 10-50 frames from unseen clusters
                n_events = rng.binomial(n, rare_rate / 30.0)
                for s in rng.integers(0, max(1, n - 50), size=n_events):
                    length = int(rng.integers(10, 51))
                    rare[s : s + length] = True
                    emb[s : s + length] = novel[int(rng.integers(N_NOVEL))] + rng.normal(
                        scale=spread / np.sqrt(dim), size=(min(length, n - s), dim))
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
            n_rare += int(rare.sum())
            logits = rng.normal(size=(n, 5)).astype(np.float32) * np.where(rare, 0.5, 3.0)[:, None]
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            ids = [f"{prefix}-{seed:03d}-{d:06d}-{i % FRAMES_PER_DRIVE:05d}" for d, i in zip(drive, idx, strict=True)]
            drives = [f"{prefix}-{seed:03d}-{d:06d}" for d in drive]
            batch = pa.table({
                "frame_id": pa.array(ids, pa.string()),
                "drive_id": pa.array(drives, pa.string()),
                "timestamp": pa.array(BASE_US + drive * 3_600_000_000 + (idx % FRAMES_PER_DRIVE) * 100_000,
                                      pa.int64()).cast(TIMESTAMP),
                "uri": pa.array([f"s3://edgemine-synthetic/{d}/{i}.png" for d, i in zip(drives, ids, strict=True)]),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), dim),
                "probs": pa.ListArray.from_arrays(pa.array(np.arange(0, n * 5 + 1, 5, dtype=np.int32)),
                                                  pa.array(probs.reshape(-1), pa.float32())),
                "speed_mps": pa.array(rng.uniform(0, 30, n).astype(np.float32)),
                "accel_mps2": pa.array(rng.normal(0, 1, n).astype(np.float32)),
                "weather": pa.array(weathers[rng.integers(0, 3, n)]),
                "is_rare": pa.array(rare),
            }, schema=schema)
            w.write_table(batch)
    os.replace(tmp, out / "manifest.parquet")
    return {"frames": frames, "rare_frames": n_rare, "dim": dim, "seconds": round(time.perf_counter() - t0, 2),
            "path": str(out / "manifest.parquet")}
