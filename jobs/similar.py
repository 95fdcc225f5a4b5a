"""More like this: the nearest frames of a finished mining run to frames a reviewer confirmed.

    from edgemine.jobs.similar import similar_frames
    table = similar_frames("runs/r1", ["drv-003-0000-00042"], k=20)

Reads the run's `index/frames/` (written by `edgemine.jobs.mine.run_mine`), its scores.parquet and manifest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from edgemine.contracts import manifest_base_dir
from edgemine.errors import ConfigError, InputNotFoundError, NotFoundError
from edgemine.jobs.run_state import FRAMES_INDEX, positions
from edgemine.mining.index import VectorIndex
from edgemine.vectors import list_matrix


def similar_frames(run_dir: str | os.PathLike[str], frame_ids: list[str], *, k: int = 50) -> pa.Table:
    """The k nearest frames of the run to each given frame (itself excluded), closest first.

    Columns: query_frame_id, rank, frame_id, distance, uri, score (the neighbour's fused score).
    """
    run = Path(run_dir)
    if not (run / "run.json").exists():
        raise InputNotFoundError(f"{str(run)!r} is not a mining run (no run.json)")
    if k < 1:
        raise ConfigError(f"k={k} must be >= 1")
    if not frame_ids:
        raise ConfigError("give at least one --frame-id")
    info = json.loads((run / "run.json").read_text())
    idx = VectorIndex.load(run / FRAMES_INDEX)
    all_ids = idx.ids.column("frame_id").combine_chunks()
    rows = positions(pa.array(frame_ids, pa.string()), all_ids)
    unknown = [f for f, r in zip(frame_ids, rows, strict=True) if r < 0]
    if unknown:
        raise NotFoundError(f"frame_id {unknown[0]!r} is not among the run's {idx.count} scored frames "
                            f"({len(unknown)} unknown)")
    if idx.meta.kind == "ivf_pq":  # PQ codes are lossy: query with the stored embeddings instead
        src = info["embeddings"]
        t = ds.dataset(src["path"], format="parquet").to_table(
            filter=ds.field("frame_id").isin(frame_ids), columns=["frame_id", "embedding"])
        t = t.take(pa.array(positions(pa.array(frame_ids, pa.string()), t.column("frame_id").combine_chunks())))
        q = list_matrix(t.column("embedding"), name="embedding", dim=idx.meta.dim).values
    else:
        q = idx.reconstruct(rows.tolist())
    d, nb = idx.self_search(rows, q, min(k, idx.count - 1)) if idx.count > 1 else (
        np.zeros((len(rows), 0), np.float32), np.zeros((len(rows), 0), np.int64))
    qid, rank, fid, dist = [], [], [], []
    for qi, f in enumerate(frame_ids):
        r = 0
        for dd, j in zip(d[qi], nb[qi], strict=True):
            if j < 0 or j == rows[qi]:
                continue
            r += 1
            qid.append(f)
            rank.append(r)
            fid.append(all_ids[int(j)].as_py())
            dist.append(float(dd))
    out = pa.table({"query_frame_id": pa.array(qid, pa.string()), "rank": pa.array(rank, pa.int32()),
                    "frame_id": pa.array(fid, pa.string()), "distance": pa.array(dist, pa.float32())})
    scores = ds.dataset(str(run / "scores.parquet"), format="parquet").to_table(
        filter=ds.field("frame_id").isin(out.column("frame_id")), columns=["frame_id", "score"])
    frames = Path(info["spec"]["frames"])
    man = ds.dataset(str(frames), format="parquet").to_table(
        filter=ds.field("frame_id").isin(out.column("frame_id")), columns=["frame_id", "uri"])
    base = manifest_base_dir(frames)
    uris = [u if ("://" in u or os.path.isabs(u)) else os.path.normpath(os.path.join(base, u))
            for u in man.column("uri").to_pylist()]
    up = positions(out.column("frame_id"), man.column("frame_id").combine_chunks())
    sp = positions(out.column("frame_id"), scores.column("frame_id").combine_chunks())
    sc = scores.column("score").to_numpy()
    out = out.append_column("uri", pa.array([uris[p] if p >= 0 else None for p in up], pa.string()))
    return out.append_column("score", pa.array([float(sc[p]) if p >= 0 else None for p in sp], pa.float32()))
