"""The score and fuse stages of a mining run: the engines (FAISS, Parquet) feed `edgemine.mining.scoring`.

`score_frames` runs the kNN searches the signals need (`mining.scoring.needs`), aligns logits and logged
probabilities, and streams each batch's raw signal columns to `.work/raw.parquet` while reservoirs keep
a sample of the mined-calibrated signals. `calibrations` gathers every signal's calibration values
(novelty's from the reference: `reference_calibration_knn`). `fuse_scores` streams the raw columns back
through `mining.scoring.score_batch` into `.work/scores.parquet`. `check_coverage` is the guardrail on
the reference's coverage of the fleet. All the scoring itself is in `mining/scoring.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from edgemine.contracts import SIGNAL_COLUMNS, open_dataset
from edgemine.errors import ConfigError
from edgemine.jobs.reference_cache import ReferenceIndex
from edgemine.jobs.run_state import RunState, positions
from edgemine.jobs.sources import EmbeddingSource, Manifest
from edgemine.mining.calibration import Reservoir
from edgemine.mining.index import VectorIndex
from edgemine.mining.scoring import FusionOptions, needs, raw_columns, reference_calibration, score_batch
from edgemine.mining.signals import Signal, SignalInputs
from edgemine.vectors import list_matrix

Signals = dict[str, tuple[float, Signal]]  # name -> (weight, signal), as `MineSpec.make_signals` gives them


def _aligned_logits(model_logits: list[tuple[str, pa.Table]], ids: pa.Array) -> list[np.ndarray]:
    out = []
    for _, t in model_logits:
        pos = positions(ids, t.column("frame_id").combine_chunks())
        col = t.column("logits").take(pa.array(np.maximum(pos, 0)))
        m = list_matrix(col, name="logits")
        vals = m.values.astype(np.float64)
        vals[~(m.usable & (pos >= 0))] = np.nan
        out.append(vals)
    return out


def score_frames(st: RunState, *, signals: Signals, frames_src: EmbeddingSource, man: Manifest,
                 ref_index: ReferenceIndex, frames_index: VectorIndex, row_groups: np.ndarray,
                 model_logits: list[tuple[str, pa.Table]]) -> tuple[Path, dict[str, Reservoir]]:
    """Raw signal values for every usable frame -> .work/raw.parquet; reservoirs of mined-calibrated signals.

    `row_groups` is the drive code of each row of `frames_index`."""
    sigs = [s for _, s in signals.values()]
    need = needs(sigs)
    k_ref, k_batch = need.reference_k, need.batch_k
    if k_ref and k_ref > ref_index.count:
        raise ConfigError(f"{need.reference_signal} k={k_ref} needs at least {k_ref} reference frames; the "
                          f"reference has {ref_index.count} usable ones")
    if k_batch and k_batch >= frames_index.count:
        raise ConfigError(f"{need.batch_signal} k={k_batch} needs more than {k_batch} usable frames; there are "
                          f"{frames_index.count}")
    frame_ids_all = frames_index.ids.column("frame_id").combine_chunks()
    reservoirs = {s.name: Reservoir(st.spec.calibration_sample, seed=st.spec.seed) for s in sigs
                  if s.calibration == "mined"}
    path = st.work / "raw.parquet"
    writer: pq.ParquetWriter | None = None
    probs_col = man.table.column("probs") if "probs" in man.table.column_names else None
    done = 0
    for b in frames_src.batches(batch_rows=st.spec.score_batch_rows, logits=False):
        done += b.num_rows
        st.report(done, frames_src.rows)
        pos = positions(b.column("frame_id"), man.ids)
        m = list_matrix(b.column("embedding"), name="embedding", dim=frames_src.dim)
        keep = (pos >= 0) & m.usable
        if not keep.any():
            continue
        ids = b.column("frame_id").filter(pa.array(keep))
        ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
        x, p = m.values[keep], pos[keep]
        inputs = SignalInputs(n=len(p), table=man.table.take(pa.array(p)))
        if k_ref:
            inputs.reference_distances, _ = ref_index.search(x, k_ref)
        if k_batch:
            if need.exclude_same_drive:
                inputs.batch_distances, _ = frames_index.search_other_groups(
                    x, k_batch, query_groups=man.drive_codes[p], row_groups=row_groups)
            else:
                inputs.batch_distances, _ = frames_index.self_search(positions(ids, frame_ids_all), x, k_batch)
        if model_logits:
            inputs.logits = _aligned_logits(model_logits, ids)
        elif probs_col is not None:
            pm = list_matrix(probs_col.take(pa.array(p)), name="probs")
            pv = pm.values.astype(np.float64)
            pv[~pm.usable] = np.nan
            inputs.probs = pv
        table = pa.table({"frame_id": ids, **raw_columns(inputs, signals=sigs)})
        for s in sigs:
            if s.name in reservoirs:
                reservoirs[s.name].add(table.column(s.raw_column).to_numpy())
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    if writer is None:
        raise ConfigError("no usable frame to score")
    writer.close()
    return path, reservoirs


def calibrations(st: RunState, signals: Signals, ref_index: ReferenceIndex,
                 reservoirs: dict[str, Reservoir]) -> dict[str, np.ndarray]:
    """Calibration values per signal: the reference's kNN values to its other drives, or the mined sample."""
    out: dict[str, np.ndarray] = {}
    for name, (_, sig) in signals.items():
        if sig.calibration == "mined":
            out[name] = reservoirs[name].values
        elif sig.calibration == "reference":
            n = min(ref_index.count, st.spec.calibration_sample)
            if sig.neighbours + 1 > ref_index.count:
                raise ConfigError(f"{name}: k={sig.neighbours} needs at least {sig.neighbours + 1} reference "
                                  f"frames for calibration; the reference has {ref_index.count}")
            rows = np.sort(np.random.default_rng(st.spec.seed).choice(ref_index.count, n, replace=False))
            vecs = ref_index.reconstruct(rows.tolist())
            d = reference_calibration_knn(st, ref_index, rows, vecs, sig.neighbours, name=name)
            out[name] = reference_calibration(sig, d)
            st.counts.setdefault("calibration", {})[name] = {"reference_frames": int(n)}
    return out


def reference_calibration_knn(st: RunState, ref_index: ReferenceIndex, rows: np.ndarray, vecs: np.ndarray,
                              k: int, *, name: str) -> np.ndarray:
    """kNN distances of sampled reference frames to the rest of the reference, as a fleet frame sees it.

    A fleet frame's nearest reference frames are always of other drives, so a reference frame is measured
    against other drives too: its own drive's frames (a tenth of a second apart, near-duplicates) would make
    the reference look far tighter than it is to a new drive, and put most of an ordinary fleet above p99.
    Where that cannot be done — an embeddings table without drive_id, a reference of one drive, other
    drives holding fewer than k frames — it falls back to leave-one-out, says so in the run's notes, and
    `counts.<name>_calibration` (`novelty_calibration`) records which was used (the coverage guardrail
    needs "other_drives")."""
    names = ref_index.ids.column_names
    drives = ref_index.ids.column("drive_id") if "drive_id" in names else None
    why = None
    if drives is None or drives.null_count:
        why = "the reference has no drive_id for every frame"
    else:
        codes = np.asarray(drives.combine_chunks().dictionary_encode().indices.to_numpy(zero_copy_only=False),
                           dtype=np.int64)
        d, _ = ref_index.search_other_groups(vecs, k, query_groups=codes[rows], row_groups=codes)
        if np.isfinite(d).all():
            st.counts[f"{name}_calibration"] = "other_drives"
            return d
        why = f"some reference frames have fewer than k={k} frames of other drives ({len(np.unique(codes))} drives)"
    st.counts[f"{name}_calibration"] = "leave_one_out"
    st.notes.append(f"{name} is calibrated leave-one-out: {why}; a reference frame's own drive counts among its "
                    f"neighbours, so {name} percentiles run high and the coverage guardrail is off")
    d, _ = ref_index.self_search(rows, vecs, k)
    return d


def fuse_scores(st: RunState, signals: Signals, raw_path: Path,
                calib: dict[str, np.ndarray]) -> tuple[Path, Reservoir, dict[str, np.ndarray]]:
    """Percentiles, fused score and reasons per frame -> .work/scores.parquet (SCORES_SCHEMA + raw columns).

    Returns the path, a sample of the fused score (for the thresholds) and the report's samples."""
    spec = st.spec
    sigs = [s for _, s in signals.values()]
    weights = {n: w for n, (w, _) in signals.items()}
    fusion = FusionOptions(mode=spec.fusion.mode, max_surprise=spec.fusion.max_surprise,
                           reason_percentile=spec.fusion.reason_percentile)
    path = st.work / "scores.parquet"
    writer: pq.ParquetWriter | None = None
    fused_res = Reservoir(max(spec.calibration_sample, 200_000), seed=spec.seed)
    sample_res = {k: Reservoir(50_000, seed=spec.seed + i) for i, k in enumerate(
        ["score", *SIGNAL_COLUMNS, *[f"{n}_raw" for n in signals], *[f"contrib_{n}" for n in signals]])}
    n_scored = 0
    raw_rows = pq.ParquetFile(raw_path).metadata.num_rows
    for batch in pq.ParquetFile(raw_path).iter_batches(batch_size=spec.score_batch_rows):
        t = pa.Table.from_batches([batch])
        st.report(n_scored + t.num_rows, raw_rows)
        scored = score_batch(t, signals=sigs, weights=weights, calibration=calib, fusion=fusion)
        out = pa.table({"frame_id": t.column("frame_id"), **scored.columns(),
                        "event_id": pa.nulls(t.num_rows, pa.string()),
                        **{c: t.column(c) for c in t.column_names if c != "frame_id"}})
        if writer is None:
            writer = pq.ParquetWriter(path, out.schema)
        writer.write_table(out)
        n_scored += t.num_rows
        fused_res.add(scored.score)
        sample_res["score"].add(scored.score)
        for s in SIGNAL_COLUMNS:
            if s in scored.percentiles:
                sample_res[s].add(scored.percentiles[s])
        for n in signals:
            sample_res[f"{n}_raw"].add(scored.raw[n])
        for n, c in scored.contributions.items():
            sample_res[f"contrib_{n}"].add(c)
    if writer is None:
        raise ConfigError("no usable frame to score")
    writer.close()
    st.counts["scored_frames"] = n_scored
    samples = {k: r.values for k, r in sample_res.items()}
    samples.update({f"calibration_{n}": v for n, v in calib.items()})
    return path, fused_res, samples


def coverage_signal(st: RunState, signals: Signals) -> str | None:
    """The weighted signal the coverage guardrail reads (novelty), when calibrated on the reference's other
    drives; None when the guardrail is off."""
    for name, (w, sig) in signals.items():
        if w > 0 and sig.guards_coverage and st.counts.get(f"{name}_calibration") == "other_drives":
            return name
    return None


def check_coverage(st: RunState, fused_path: Path, *, signal: str) -> None:
    """Warn when the reference does not cover the fleet (mining/coverage.py): streams the manifest's
    metadata columns beside each frame's percentile of `signal` (novelty)."""
    from edgemine.mining.coverage import CoverageCheck, metadata_columns

    scored = pq.read_table(fused_path, columns=["frame_id", signal])
    ids = scored.column("frame_id").combine_chunks()
    pct = scored.column(signal).to_numpy(zero_copy_only=False).astype(np.float64)
    d = open_dataset(st.spec.frames, what="manifest")
    cols = metadata_columns(d.schema)
    check = CoverageCheck()
    for b in d.to_batches(columns=["frame_id", "drive_id", *cols], batch_size=st.spec.score_batch_rows):
        pos = positions(b.column("frame_id"), ids)
        there = pos >= 0
        check.add(np.where(there, pct[np.maximum(pos, 0)], np.nan), {c: b.column(c) for c in cols},
                  drives=b.column("drive_id").to_numpy(zero_copy_only=False))
    st.counts["coverage"] = check.to_dict()
    for w in check.warnings():
        st.log(f"  WARNING: {w}")
        st.warnings.append(w)
