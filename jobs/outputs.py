"""A mining run's output files (DESIGN.md, "Candidates"): errors.parquet as frames are dropped, then
candidates.parquet, scores.parquet, events.parquet, scenarios.parquet and run.json.

Each file is written under a temporary name and moved into place, or written whole at the end.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from edgemine.contracts import (
    CANDIDATES_CORE_SCHEMA,
    CANDIDATES_EVIDENCE_SCHEMA,
    ERRORS_SCHEMA,
    EVENTS_SCHEMA,
    NOVELTY_CALIBRATION,
    SCENARIOS_SCHEMA,
    SCORES_SCHEMA,
    SIGNAL_COLUMNS,
    TIMESTAMP,
    manifest_base_dir,
    normalize_manifest_batch,
    open_dataset,
)
from edgemine.jobs.run_state import FRAMES_INDEX, RunState, positions, write_json
from edgemine.jobs.spec import MineSpec
from edgemine.mining.signals import Signal
from edgemine.runtime import atomic_write_table

if TYPE_CHECKING:
    from edgemine.jobs.reference_cache import ReferenceIndex
    from edgemine.jobs.sources import EmbeddingSource


class ErrorLog:
    """errors.parquet, written as frames are found unusable (never held whole in memory)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_suffix(".parquet.tmp")
        self.writer = pq.ParquetWriter(self.tmp, ERRORS_SCHEMA)
        self.by_stage: dict[str, int] = {}
        self.by_reason: dict[str, int] = {}

    def add(self, frame_ids: list[str | None], uris: list[str | None], stage: str, reasons: list[str]) -> None:
        if not frame_ids:
            return
        self.writer.write_table(pa.table({"frame_id": frame_ids, "uri": uris, "stage": [stage] * len(frame_ids),
                                          "reason": reasons}, schema=ERRORS_SCHEMA))
        self.by_stage[stage] = self.by_stage.get(stage, 0) + len(frame_ids)
        for r in reasons:
            key = f"{stage}: {r}"
            self.by_reason[key] = self.by_reason.get(key, 0) + 1

    def close(self) -> None:
        self.writer.close()
        os.replace(self.tmp, self.path)

    @property
    def total(self) -> int:
        return sum(self.by_stage.values())


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("edgemine", "numpy", "pyarrow", "pandas", "faiss-cpu", "pyspark", "torch", "ray", "pydantic"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def manifest_rows(spec: MineSpec, filt: ds.Expression, columns: list[str] | None = None) -> pa.Table:
    """Manifest rows matching `filt`, normalised (absolute uris, UTC timestamps); streamed through the filter."""
    d = open_dataset(spec.frames, what="manifest")
    base = manifest_base_dir(spec.frames)
    parts = [normalize_manifest_batch(b, base_dir=base, source=str(spec.frames))
             for b in d.to_batches(filter=filt, columns=columns) if b.num_rows]
    if not parts:
        return normalize_manifest_batch(d.schema.empty_table().select(columns) if columns else d.schema.empty_table(),
                                        base_dir=base)
    return pa.concat_tables(parts, promote_options="permissive")


def _evidence(st: RunState, ids: pa.Array, vecs: np.ndarray, ref_index: ReferenceIndex,
              meta: pa.Table) -> dict[str, pa.Array]:
    """The nearest reference frames of each candidate, and the frames around it in its drive."""
    import pandas as pd

    from edgemine.mining.evidence import context_frames

    spec, n = st.spec, len(ids)
    k = spec.evidence.neighbors
    if k and n:
        d, nb = ref_index.search(vecs, min(k, ref_index.count))
        ref_ids = ref_index.ids.column("frame_id").to_pylist()
        ref_uris = ref_index.ids.column("uri").to_pylist() if "uri" in ref_index.ids.column_names else None
        nids = [[ref_ids[j] for j in row if j >= 0] for row in nb]
        nuris = [[ref_uris[j] for j in row if j >= 0] if ref_uris else [] for row in nb]
        ndist = [[float(x) for x, j in zip(drow, row, strict=True) if j >= 0] for drow, row in zip(d, nb, strict=True)]
    else:
        nids, nuris, ndist = [[] for _ in range(n)], [[] for _ in range(n)], [[] for _ in range(n)]
    drives = pc.unique(meta.column("drive_id").combine_chunks())
    ctx_rows = manifest_rows(spec, ds.field("drive_id").isin(drives),
                             columns=["frame_id", "drive_id", "timestamp", "uri"])
    frames_df = pd.DataFrame({"frame_id": ctx_rows.column("frame_id").to_pylist(),
                              "drive_id": ctx_rows.column("drive_id").to_pylist(),
                              "ts_us": pc.cast(ctx_rows.column("timestamp"), pa.int64()).to_numpy(),
                              "uri": ctx_rows.column("uri").to_pylist()})
    cand_df = pd.DataFrame({"frame_id": ids.to_pylist(), "drive_id": meta.column("drive_id").to_pylist(),
                            "ts_us": pc.cast(meta.column("timestamp"), pa.int64()).to_numpy()})
    ctx, ctx_offsets = (context_frames(cand_df, frames_df, offsets_s=spec.evidence.context_offsets_s) if n
                        else ([], []))
    return {
        "neighbor_ids": pa.array(nids, pa.list_(pa.string())),
        "neighbor_uris": pa.array(nuris, pa.list_(pa.string())),
        "neighbor_distances": pa.array(ndist, pa.list_(pa.float32())),
        "context_uris": pa.array(ctx, pa.list_(pa.string())),
        "context_offsets_s": pa.array(ctx_offsets, pa.list_(pa.float32())),
    }


def write_candidates(st: RunState, kept: pa.Table, order: np.ndarray, scen: np.ndarray, pool_vecs: np.ndarray,
                     ref_index: ReferenceIndex, fused_path: Path, *, n_pool: int, carried: list[str]) -> pa.Table:
    """candidates.parquet: core + evidence + the manifest's columns + the signal columns in `carried`
    (`mining.scoring.carried_columns`), rank 1 first; rows of `kept` below `n_pool` are event frames, the
    ones after it fill the budget."""
    idx = pa.array(order.astype(np.int64))
    ids = kept.column("frame_id").combine_chunks().take(idx)  # an Array keeps its type even when empty
    have = set(pq.read_schema(fused_path).names)
    scores = ds.dataset(str(fused_path), format="parquet").to_table(
        filter=ds.field("frame_id").isin(ids),
        columns=["frame_id", "score", "reasons", *SIGNAL_COLUMNS, NOVELTY_CALIBRATION,
                 *[c for c in carried if c in have]])
    scores = scores.take(pa.array(positions(ids, scores.column("frame_id").combine_chunks())))
    n = len(order)
    core = {
        "frame_id": ids,
        "rank": pa.array(np.arange(1, n + 1, dtype=np.int32)),
        "score": scores.column("score"),
        "reasons": scores.column("reasons"),
        "scenario_id": pa.array([scen[int(i)] for i in order], pa.string()),
        "event_id": kept.column("event_id").take(idx),
        "selected_by": pa.array(["event" if i < n_pool else "fill" for i in order.tolist()], pa.string()),
    }
    for s in (*SIGNAL_COLUMNS, NOVELTY_CALIBRATION):
        core[s] = scores.column(s)
    meta = manifest_rows(st.spec, ds.field("frame_id").isin(ids))
    meta = meta.take(pa.array(positions(ids, meta.column("frame_id").combine_chunks())))
    evidence = _evidence(st, ids, pool_vecs[order], ref_index, meta)
    fields = list(CANDIDATES_CORE_SCHEMA) + list(CANDIDATES_EVIDENCE_SCHEMA)
    arrays = [pa.array(core[f.name]) if not isinstance(core.get(f.name), (pa.Array, pa.ChunkedArray)) else core[f.name]
              for f in CANDIDATES_CORE_SCHEMA] + [evidence[f.name] for f in CANDIDATES_EVIDENCE_SCHEMA]
    arrays = [a.cast(f.type) for a, f in zip(arrays, fields, strict=True)]
    for name in meta.column_names:
        if name != "frame_id":
            fields.append(meta.schema.field(name))
            arrays.append(meta.column(name))
    for name in scores.column_names:  # raw values and fired rules, after the manifest's columns
        if name in carried and name not in {f.name for f in fields}:
            fields.append(scores.schema.field(name))
            arrays.append(scores.column(name))
    table = pa.Table.from_arrays([a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays],
                                 schema=pa.schema(fields))
    atomic_write_table(st.run_dir / "candidates.parquet", table)
    return table


def write_scores(st: RunState, fused_path: Path, event_of: pa.Table) -> None:
    """scores.parquet: every scored frame, with its event_id when it is part of an event."""
    ev_ids = event_of.column("frame_id").combine_chunks()
    ev_vals = event_of.column("event_id").combine_chunks()
    tmp = st.run_dir / "scores.parquet.tmp"
    writer = None
    for batch in pq.ParquetFile(fused_path).iter_batches(batch_size=st.spec.score_batch_rows):
        t = pa.Table.from_batches([batch])
        pos = positions(t.column("frame_id"), ev_ids)
        ev = ev_vals.take(pa.array(np.maximum(pos, 0))) if len(ev_vals) else pa.nulls(t.num_rows, pa.string())
        ev = pc.if_else(pa.array(pos >= 0), ev, pa.scalar(None, pa.string()))
        t = t.set_column(t.column_names.index("event_id"), "event_id", ev)
        fields = list(SCORES_SCHEMA) + [t.schema.field(c) for c in t.column_names if c not in SCORES_SCHEMA.names]
        t = pa.Table.from_arrays([t.column(f.name).cast(f.type) for f in fields], schema=pa.schema(fields))
        if writer is None:
            writer = pq.ParquetWriter(tmp, t.schema)
        writer.write_table(t)
    if writer is not None:
        writer.close()
        os.replace(tmp, st.run_dir / "scores.parquet")


def write_events_and_scenarios(st: RunState, events: pa.Table, scen_stats: pa.Table, cands: pa.Table) -> None:
    """events.parquet and scenarios.parquet: Spark's statistics, with how many candidates each holds."""
    ev_counts = pc.value_counts(cands.column("event_id").drop_null()) if cands.num_rows else None
    sc_counts = pc.value_counts(cands.column("scenario_id").drop_null()) if cands.num_rows else None

    def counts_for(keys: pa.ChunkedArray, vc: pa.StructArray | None) -> pa.Array:
        if vc is None or len(vc) == 0:
            return pa.array(np.zeros(len(keys), np.int64))
        pos = positions(keys, vc.field("values"))
        c = np.asarray(vc.field("counts").to_numpy(), dtype=np.int64)
        return pa.array(np.where(pos >= 0, c[np.maximum(pos, 0)], 0))

    ev = {
        "event_id": events.column("event_id"),
        "drive_id": events.column("drive_id"),
        "start": pc.cast(events.column("start_us"), pa.int64()).cast(TIMESTAMP),
        "end": pc.cast(events.column("end_us"), pa.int64()).cast(TIMESTAMP),
        "n_frames": events.column("n_frames"),
        "n_kept": events.column("n_kept"),
        "n_candidates": counts_for(events.column("event_id"), ev_counts),
        "peak_frame_id": events.column("peak_frame_id"),
    }
    for f in EVENTS_SCHEMA:
        if f.name not in ev:
            ev[f.name] = events.column(f.name)
    ev_t = pa.Table.from_arrays([pa.array(ev[f.name]).cast(f.type) if not isinstance(ev[f.name], pa.ChunkedArray)
                                 else ev[f.name].cast(f.type) for f in EVENTS_SCHEMA], schema=EVENTS_SCHEMA)
    pq.write_table(ev_t.sort_by("event_id"), st.run_dir / "events.parquet")
    peak_uri: list[str | None] = [None] * scen_stats.num_rows
    if scen_stats.num_rows:
        meta = manifest_rows(st.spec, ds.field("frame_id").isin(scen_stats.column("peak_frame_id")),
                             columns=["frame_id", "drive_id", "timestamp", "uri"])
        pos = positions(scen_stats.column("peak_frame_id"), meta.column("frame_id").combine_chunks())
        uris = meta.column("uri").to_pylist()
        peak_uri = [uris[p] if p >= 0 else None for p in pos]
    sc = {"scenario_id": scen_stats.column("scenario_id"), "n_frames": scen_stats.column("n_frames"),
          "n_drives": scen_stats.column("n_drives"), "n_events": scen_stats.column("n_events"),
          "n_candidates": counts_for(scen_stats.column("scenario_id"), sc_counts),
          "peak_frame_id": scen_stats.column("peak_frame_id"), "peak_uri": pa.array(peak_uri, pa.string())}
    for f in SCENARIOS_SCHEMA:
        if f.name not in sc:
            sc[f.name] = scen_stats.column(f.name)
    sc_t = pa.Table.from_arrays([sc[f.name].cast(f.type) for f in SCENARIOS_SCHEMA], schema=SCENARIOS_SCHEMA)
    pq.write_table(sc_t.sort_by("scenario_id"), st.run_dir / "scenarios.parquet")


def write_run_json(st: RunState, *, frames_src: EmbeddingSource, signals: dict[str, tuple[float, Signal]],
                   ref_index: ReferenceIndex, errors: ErrorLog) -> dict[str, Any]:
    """run.json (without the report's timing, which the job adds when the report is written)."""
    spec = st.spec
    info = {
        "run_id": st.run_id,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "spec": json.loads(spec.model_dump_json()),
        "encoder": frames_src.encoder,
        "dim": frames_src.dim,
        "embeddings": frames_src.to_dict(),
        "frames_index": str(st.run_dir / FRAMES_INDEX),
        "reference_index": {"dir": st.counts.get("reference", {}).get("index_dir"), "kind": ref_index.meta.kind,
                            "count": ref_index.count, "metric": ref_index.meta.metric},
        "signals": {n: {"weight": w, "calibration": s.calibration, "options": s.options()}
                    for n, (w, s) in signals.items()},
        "counts": st.counts,
        "dropped_by_reason": errors.by_reason,
        "timings": st.timings,
        "versions": _versions(),
        "warnings": st.warnings,
        "notes": st.notes,
        "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    write_json(st.run_dir / "run.json", info)
    return info
