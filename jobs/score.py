"""The score and fuse stages of a mining run: the engines (FAISS, Parquet) feed `edgemine.mining.scoring`.

`score_frames` runs the kNN searches the signals need (`mining.scoring.needs`), aligns logits and logged
probabilities, and streams each batch's raw signal columns to `.work/raw.parquet` while reservoirs keep
a sample of the mined-calibrated signals. `calibrations` gathers every signal's calibration values
(novelty's from the reference: `reference_calibration_knn`). `fuse_scores` streams the raw columns back
through `mining.scoring.score_batch` into `.work/scores.parquet` (`score_batch_by_group` where novelty is
calibrated within a value the reference lacks). `check_coverage`, run between the two, is the guardrail on
the reference's coverage of the fleet and returns those `Conditions`. All the scoring itself is in
`mining/scoring.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from edgemine.contracts import NOVELTY_CALIBRATION, SIGNAL_COLUMNS, open_dataset
from edgemine.errors import ConfigError
from edgemine.jobs.reference_cache import ReferenceIndex
from edgemine.jobs.run_state import RunState, positions
from edgemine.jobs.sources import EmbeddingSource, Manifest
from edgemine.mining.calibration import Reservoir, calibrated
from edgemine.mining.index import VectorIndex
from edgemine.mining.report import calibration_sample_key
from edgemine.mining.scoring import (
    FusionOptions,
    needs,
    raw_columns,
    reference_calibration,
    score_batch,
    score_batch_by_group,
)
from edgemine.mining.signals import Signal, SignalInputs
from edgemine.vectors import list_matrix

MAX_CONDITIONS = 8  # values novelty is calibrated within (memory: 2x this many bool columns over the frames)
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


def fuse_scores(st: RunState, signals: Signals, raw_path: Path, calib: dict[str, np.ndarray],
                conditions: Conditions | None = None) -> tuple[Path, Reservoir, dict[str, np.ndarray]]:
    """Percentiles, fused score and reasons per frame -> .work/scores.parquet (SCORES_SCHEMA + raw columns).

    `conditions`: rows of raw.parquet whose novelty is calibrated within a value the reference lacks.
    Returns the path, a sample of the fused score (for the thresholds) and the report's samples (with the
    novelty percentiles of each `novelty_calibration` apart, `calibration_sample_key`, and its frames counted in
    `counts.novelty_calibrated_on`)."""
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
    # novelty percentiles per `novelty_calibration`: values ranked within a metadata value are not comparable
    # with reference-calibrated ones, so the report plots each on its own
    by_calibration: dict[str, Reservoir] = {}
    n_scored = 0
    raw_rows = pq.ParquetFile(raw_path).metadata.num_rows
    variants = conditions.variants(signals, calib) if conditions is not None else None
    for batch in pq.ParquetFile(raw_path).iter_batches(batch_size=spec.score_batch_rows):
        t = pa.Table.from_batches([batch])
        st.report(n_scored + t.num_rows, raw_rows)
        if variants is None:
            scored = score_batch(t, signals=sigs, weights=weights, calibration=calib, fusion=fusion)
        else:
            assert conditions is not None
            scored = score_batch_by_group(t, groups=conditions.groups[n_scored:n_scored + t.num_rows],
                                          variants=variants, weights=weights, fusion=fusion)
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
        on = out.column(NOVELTY_CALIBRATION)
        for value in pc.unique(on.drop_null()).to_pylist():
            res = by_calibration.setdefault(value, Reservoir(50_000, seed=spec.seed + 1000 + len(by_calibration)))
            res.add(out.column("novelty").filter(pc.fill_null(pc.equal(on, value), False)).to_numpy())
    if writer is None:
        raise ConfigError("no usable frame to score")
    writer.close()
    st.counts["scored_frames"] = n_scored
    st.counts["novelty_calibrated_on"] = {v: by_calibration[v].seen for v in sorted(by_calibration)}
    samples = {k: r.values for k, r in sample_res.items()}
    samples.update({f"calibration_{n}": v for n, v in calib.items()})
    samples.update({calibration_sample_key(v): r.values for v, r in by_calibration.items()})
    return path, fused_res, samples


def coverage_signal(st: RunState, signals: Signals) -> str | None:
    """The weighted signal the coverage guardrail reads (novelty), when calibrated on the reference's other
    drives; None when the guardrail is off."""
    for name, (w, sig) in signals.items():
        if w > 0 and sig.guards_coverage and st.counts.get(f"{name}_calibration") == "other_drives":
            return name
    return None


@dataclass
class Conditions:
    """Novelty calibrated within each metadata value the reference lacks (spec `coverage.novelty`).

    `groups` has one code per row of raw.parquet: 0 = calibrated on the reference as usual, g = among the
    fleet's frames of `labels[g - 1]` (the first uncovered value a frame has, in the guardrail's order)."""

    signal: str
    groups: np.ndarray
    labels: list[str]
    calibration: list[np.ndarray]

    def variants(self, signals: Signals,
                 calib: dict[str, np.ndarray]) -> list[tuple[list[Signal], dict[str, np.ndarray]]]:
        """(signals, calibration) per group code, for `mining.scoring.score_batch_by_group`."""
        base = [s for _, s in signals.values()]
        out = [(base, calib)]
        for label, values in zip(self.labels, self.calibration, strict=True):
            sigs = [s.within(label) if s.name == self.signal else s for s in base]
            out.append((sigs, {**calib, self.signal: values}))
        return out


def check_coverage(st: RunState, raw_path: Path, signals: Signals, calib: dict[str, np.ndarray], man: Manifest, *,
                   signal: str) -> Conditions | None:
    """Warn when the reference does not cover the fleet (mining/coverage.py): streams the manifest's
    metadata columns beside each frame's reference-calibrated percentile of `signal` (novelty).

    With `coverage.novelty: within` (the default), each metadata value the guardrail names gets its own
    calibration, the raw values of the fleet's frames with that value (a sample of `calibration_sample`),
    returned as `Conditions` for the fuse stage: night frames against a day-only reference are all "novel";
    ranked among the night frames, the rare ones may still stand out. Values are taken greedily in the
    guardrail's order (the one explaining the most novel frames first), each on the frames no earlier value
    took, and kept only if those are still mostly novel and span `min_drives` drives; at most
    MAX_CONDITIONS are kept, of the first 2 * MAX_CONDITIONS candidates."""
    from edgemine.mining.coverage import CoverageCheck, Uncovered, metadata_columns

    sig = signals[signal][1]
    raw = pq.read_table(raw_path, columns=["frame_id", sig.raw_column])
    ids = raw.column("frame_id").combine_chunks()
    novelty = raw.column(sig.raw_column).to_numpy(zero_copy_only=False).astype(np.float64)
    del raw
    pct = calibrated(novelty, calib[signal], extrapolate=sig.extrapolate)
    d = open_dataset(st.spec.frames, what="manifest")
    cols = metadata_columns(d.schema)
    check = CoverageCheck()
    seen: list[tuple[tuple[int, object, object], np.ndarray]] = []  # per batch: its key, its positions
    for b in d.to_batches(columns=["frame_id", "drive_id", *cols], batch_size=st.spec.score_batch_rows):
        pos = positions(b.column("frame_id"), ids)
        seen.append((_batch_key(b), pos))
        there = pos >= 0
        check.add(np.where(there, pct[np.maximum(pos, 0)], np.nan), {c: b.column(c) for c in cols},
                  drives=b.column("drive_id").to_numpy(zero_copy_only=False))
    st.counts["coverage"] = check.to_dict()
    for w in check.warnings():
        st.log(f"  WARNING: {w}")
        st.warnings.append(w)
    mode = st.spec.coverage.novelty
    st.counts["coverage"]["novelty"] = mode
    found = check.uncovered()[: 2 * MAX_CONDITIONS]
    if mode == "reference" or not found:
        return None
    member = np.zeros((len(found), len(ids)), dtype=bool)  # frame has found[i]'s value
    drive_of = man.drive_codes[positions(ids, man.ids)]  # every scored frame is a manifest row
    batches = d.to_batches(columns=["frame_id", *sorted({u.column for u in found})],
                           batch_size=st.spec.score_batch_rows)
    for k, b in enumerate(batches):
        # the same scan gives the same batches, so positions are computed once (and again only if not)
        same = k < len(seen) and seen[k][0] == _batch_key(b)
        pos = seen[k][1] if same else positions(b.column("frame_id"), ids)
        there = pos >= 0
        for i, u in enumerate(found):
            col = b.column(u.column)
            if pa.types.is_dictionary(col.type):
                col = col.dictionary_decode()
            hit = pc.fill_null(pc.equal(col, pa.scalar(u.value, col.type)), False).to_numpy(zero_copy_only=False)
            member[i, pos[there & hit]] = True
    del seen
    # Greedy: weather=clear, mostly night frames in a fleet whose night drives are clear, is explained by
    # time_of_day=night, and its day frames stay calibrated on the reference.
    groups = np.zeros(len(ids), dtype=np.int16)
    kept: list[Uncovered] = []
    for i, u in enumerate(found):
        rows = member[i] & (groups == 0) & np.isfinite(pct)
        n = int(rows.sum())
        if (len(kept) < MAX_CONDITIONS and n >= check.min_frames
                and float((pct[rows] >= check.value_percentile).mean()) > check.value_share
                and len(np.unique(drive_of[rows])) >= check.min_drives):
            kept.append(u)
            groups[rows] = len(kept)
    rng = np.random.default_rng(st.spec.seed)
    calibration, conditioned = [], []
    for g, u in enumerate(kept, 1):
        v = novelty[groups == g]
        v = v[np.isfinite(v)]
        if v.size > st.spec.calibration_sample:
            v = rng.choice(v, st.spec.calibration_sample, replace=False)
        calibration.append(v)
        conditioned.append({"value": u.label, "frames": int((groups == g).sum())})
    st.counts["coverage"]["conditioned"] = conditioned
    if not kept:
        st.notes.append(f"{signal} keeps the reference's calibration everywhere: no value the guardrail named "
                        "is still mostly novel, in enough drives, once the values before it are taken")
        return None
    listed = ", ".join(f"{c['value']} ({c['frames']:,} frames)" for c in conditioned)
    st.notes.append(f"{signal} is calibrated within {listed}: the reference lacks them, so those frames are "
                    "ranked among themselves (coverage.novelty: within); their reasons and novelty_calibration say so")
    return Conditions(signal, groups, [u.label for u in kept], calibration)


def _batch_key(b: pa.RecordBatch) -> tuple[int, object, object]:
    """A manifest batch's rows and first and last frame ids: two scans' batch k are the same rows if equal."""
    ids = b.column("frame_id")
    return (b.num_rows, ids[0].as_py() if b.num_rows else None, ids[-1].as_py() if b.num_rows else None)
