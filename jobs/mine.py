"""A mining run, stage by stage: embed -> reference index -> score -> aggregate (Spark) -> select -> outputs.

    from edgemine.jobs.spec import load_spec
    from edgemine.jobs.mine import run_mine
    result = run_mine(load_spec("job.yaml"))

Outputs in `spec.out` (DESIGN.md, "Candidates"): candidates.parquet, scores.parquet, scenarios.parquet,
events.parquet, errors.parquet, run.json, report.html, plus the run's embeddings (or a pointer to them in
run.json) and `index/frames/` (an index over the run's frames, for `edgemine similar`). The reference index
is kept in `index/reference/` (or `spec.index.dir`, reused across runs).

Memory: embeddings stream in batches of `score_batch_rows`. What is held for the whole run is narrow: the
manifest's id/drive/time columns plus the trigger columns, one float per frame per signal while fusing,
and the FAISS indexes (which hold the vectors they index, as any in-process FAISS index does).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from edgemine.contracts import (
    CANDIDATES_CORE_SCHEMA,
    CANDIDATES_EVIDENCE_SCHEMA,
    ERRORS_SCHEMA,
    EVENT_FRAMES_SCHEMA,
    EVENT_STATS_SCHEMA,
    EVENTS_SCHEMA,
    MANIFEST_REQUIRED,
    SCENARIO_STATS_SCHEMA,
    SCENARIOS_SCHEMA,
    SCORES_SCHEMA,
    SIGNAL_COLUMNS,
    TIMESTAMP,
    check_manifest_schema,
    iter_manifest,
    manifest_base_dir,
    normalize_manifest_batch,
    open_dataset,
)
from edgemine.errors import ConfigError, IncompatibleArtifactError, InputNotFoundError, NotFoundError, SchemaError
from edgemine.jobs.spec import MineSpec
from edgemine.mining.calibration import Reservoir, calibrated
from edgemine.mining.index import VectorIndex, build_index, read_sidecar, sidecar_exists
from edgemine.mining.select.base import Caps, Pool
from edgemine.mining.sharded_index import ShardedIndex
from edgemine.mining.signals import Signal, SignalInputs
from edgemine.vectors import list_matrix

ReferenceIndex = VectorIndex | ShardedIndex  # one in-process index, or shards on Ray actors (same search API)

Log = Callable[[str], None]
RUN_FILES = ("candidates.parquet", "scores.parquet", "scenarios.parquet", "events.parquet", "errors.parquet",
             "run.json", "report.html")
FRAMES_INDEX, REFERENCE_INDEX = "index/frames", "index/reference"


def _quiet(_: str) -> None:
    pass


# ================================================================ inputs
@dataclass(frozen=True)
class EmbeddingSource:
    """Where a set of embeddings lives: a manifest with an `embedding` column or an embeddings table."""

    path: Path
    encoder: str
    dim: int
    rows: int
    in_manifest: bool
    has_logits: bool
    errors_path: Path | None = None

    def dataset(self) -> ds.Dataset:
        return ds.dataset(str(self.path), format="parquet")

    def batches(self, *, batch_rows: int, logits: bool = False) -> Iterator[pa.Table]:
        cols = ["frame_id", "embedding"] + (["logits"] if logits and self.has_logits else [])
        for b in self.dataset().to_batches(columns=cols, batch_size=batch_rows):
            if b.num_rows:
                yield pa.Table.from_batches([b])

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "encoder": self.encoder, "dim": self.dim, "rows": self.rows,
                "in_manifest": self.in_manifest, "column": "embedding"}


def table_kind(path: str | os.PathLike[str], *, what: str) -> str:
    """"manifest" (frames manifest), "embeddings" (frame_id + embedding table) or SchemaError."""
    schema = open_dataset(path, what=what).schema
    names = set(schema.names)
    if {"drive_id", "timestamp", "uri"} <= names:
        return "manifest"
    if {"frame_id", "embedding"} <= names:
        return "embeddings"
    raise SchemaError(
        f"{what} {str(path)!r} is neither a frames manifest (frame_id, drive_id, timestamp, uri) nor an "
        f"embeddings table (frame_id, embedding); it has columns {sorted(names)}"
    )


def _embedding_dim(dataset: ds.Dataset, *, what: str) -> int:
    t = dataset.schema.field("embedding").type
    if pa.types.is_fixed_size_list(t):
        return int(t.list_size)
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)) or not pa.types.is_floating(t.value_type):
        raise SchemaError(f"{what}: column 'embedding' has type {t}, expected a list of floats")
    for b in dataset.to_batches(columns=["embedding"], batch_size=4096):
        lengths = pc.list_value_length(b.column(0)).drop_null()
        if len(lengths):
            return int(lengths[0].as_py())
    raise SchemaError(f"{what}: every 'embedding' is null")


def _encoder_of(dataset: ds.Dataset, *, what: str) -> str:
    if "encoder" not in dataset.schema.names:
        return "manifest"
    found: set[str] = set()
    for b in dataset.to_batches(columns=["encoder"], batch_size=65_536):
        found.update(v for v in pc.unique(b.column(0)).to_pylist() if v is not None)
        if len(found) > 1:
            raise IncompatibleArtifactError(f"{what} mixes embeddings of several encoders: {sorted(found)}")
    return found.pop() if found else "manifest"


def source_from_table(path: Path, *, in_manifest: bool, what: str, errors_path: Path | None = None,
                      encoder: str | None = None) -> EmbeddingSource:
    d = open_dataset(path, what=what)
    enc = encoder or ("manifest" if in_manifest else _encoder_of(d, what=what))
    has_logits = "logits" in d.schema.names and not in_manifest
    if has_logits:
        has_logits = any(b.column(0).null_count < b.num_rows for b in d.to_batches(columns=["logits"]))
    return EmbeddingSource(path=path, encoder=enc, dim=_embedding_dim(d, what=what), rows=d.count_rows(),
                           in_manifest=in_manifest, has_logits=has_logits, errors_path=errors_path)


def embed(manifest: Path, *, encoder: str, out: Path, spec: MineSpec, log: Log) -> EmbeddingSource:
    """Embed a manifest (the embedding engineer's Ray pipeline) unless it carries embeddings already."""
    if "embedding" in open_dataset(manifest, what="manifest").schema.names:
        return source_from_table(manifest, in_manifest=True, what=f"manifest {manifest}")
    from edgemine.embeddings.pipeline import embed_manifest

    log(f"  embedding {manifest} with {encoder} -> {out}")
    res = embed_manifest(manifest, encoder=encoder, out=out, input_size=spec.input_size,
                         batch_size=spec.batch_size, actors=spec.actors, device=spec.device, progress=False)
    errors = Path(res.errors_path) if getattr(res, "errors_path", None) else None
    return source_from_table(Path(res.embeddings_path), in_manifest=False, what=f"embeddings of {manifest}",
                             errors_path=errors if errors and errors.exists() else None, encoder=res.encoder_id)


# ================================================================ the run
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


def _manifest_columns(spec: MineSpec, signals: dict[str, tuple[float, Signal]]) -> list[str]:
    schema = open_dataset(spec.frames, what="manifest").schema
    check_manifest_schema(schema, source=str(spec.frames))
    cols = list(MANIFEST_REQUIRED)
    for c in ("label", "probs"):
        if c in schema.names:
            cols.append(c)
    trig = signals.get("trigger")
    if trig is not None:
        t = trig[1]
        t.check_columns(schema.names)  # type: ignore[attr-defined]
        cols += sorted(c for c in t.columns if c not in cols)  # type: ignore[attr-defined]
    return cols


def _positions(ids: pa.Array | pa.ChunkedArray, value_set: pa.Array) -> np.ndarray:
    """Row of each id in `value_set` (-1 where absent)."""
    pos = pc.index_in(ids, value_set=value_set)
    return np.asarray(pc.fill_null(pos, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def run_mine(spec: MineSpec, *, spark: Any = None, log: Log = _quiet) -> RunResult:
    """Run a mining job end to end and write its outputs to `spec.out`."""
    run_dir = Path(spec.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    work = run_dir / ".work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    st = RunState(spec=spec, run_dir=run_dir, work=work, log=log,
                  run_id=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6])
    t_start = time.perf_counter()
    signals = spec.make_signals()
    weights = {n: w for n, (w, _) in signals.items()}
    errors = ErrorLog(run_dir / "errors.parquet")
    own_spark = False
    try:
        # ------------------------------------------------------------ frames and their embeddings
        with st.stage("frames"):
            n_manifest = open_dataset(spec.frames, what="manifest").count_rows()
            if n_manifest == 0:
                raise SchemaError(f"{spec.frames}: the manifest is empty (0 rows)")
            if spec.budget > n_manifest:
                raise ConfigError(f"budget={spec.budget} is larger than the {n_manifest} frames in {spec.frames}")
            cols = _manifest_columns(spec, signals)
            man = pa.concat_tables(iter_manifest(spec.frames, columns=cols))
            st.counts["manifest_frames"] = man.num_rows
            man_ids = man.column("frame_id").combine_chunks()
            drive_codes = np.asarray(
                man.column("drive_id").combine_chunks().dictionary_encode().indices.to_numpy(zero_copy_only=False),
                dtype=np.int64)
        with st.stage("embed"):
            frames_src = embed(spec.frames, encoder=spec.encoder, out=embed_out(st, spec.encoder, "embeddings"),
                               spec=spec, log=log)
            st.counts["encoder"] = frames_src.encoder
            if frames_src.in_manifest and spec.encoder != "builtin":
                st.notes.append(f"the manifest carries embeddings, so encoder {spec.encoder!r} was not run")
            log(f"  frames: {frames_src.rows} embeddings of dim {frames_src.dim} from {frames_src.encoder}")
        # ------------------------------------------------------------ reference index
        with st.stage("reference_index"):
            ref_index, ref_info = reference_index(st, frames_src)
            st.counts["reference"] = ref_info
        # ------------------------------------------------------------ uncertainty models
        with st.stage("models"):
            model_logits = model_logit_tables(st, frames_src)
        # ------------------------------------------------------------ index over the run's frames
        with st.stage("frames_index"):
            frames_index, has_embedding = frames_index_build(st, frames_src, man, man_ids, errors)
            row_pos = _positions(frames_index.ids.column("frame_id"), man_ids)
            row_groups = drive_codes[row_pos]
        missing = np.flatnonzero(~has_embedding)
        _log_missing(st, frames_src, man, missing, errors)
        n_usable = frames_index.count
        st.counts["usable_frames"] = n_usable
        if spec.budget > n_usable:
            raise ConfigError(f"budget={spec.budget} is larger than the {n_usable} usable frames "
                              f"({n_manifest - n_usable} of {n_manifest} could not be used; see errors.parquet)")
        # ------------------------------------------------------------ signals
        with st.stage("score"):
            raw_path, reservoirs = score_frames(st, signals=signals, frames_src=frames_src, man=man,
                                                man_ids=man_ids, drive_codes=drive_codes, ref_index=ref_index,
                                                frames_index=frames_index, row_groups=row_groups,
                                                model_logits=model_logits)
        with st.stage("fuse"):
            calib = calibrations(st, signals, ref_index, reservoirs)
            fused_path, fused_res, samples = fuse_scores(st, signals, weights, raw_path, calib)
            threshold, peak = thresholds(spec, fused_res.values)
            st.counts["threshold"] = round(threshold, 6)
            st.counts["peak_threshold"] = round(peak, 6)
            log(f"  thresholds on the fused score: frames >= {threshold:.4f}, events peaking >= {peak:.4f}")
        if weights.get("novelty", 0) > 0 and st.counts.get("novelty_calibration") == "other_drives":
            with st.stage("coverage"):
                check_coverage(st, fused_path)
        # ------------------------------------------------------------ Spark aggregation
        with st.stage("aggregate"):
            from edgemine.mining.aggregate import AggregateParams
            from edgemine.mining.spark_aggregate import run_events

            if spark is None:
                from edgemine.mining.spark import get_spark

                spark = get_spark(spec.spark.master, conf=spec.spark.conf)
                own_spark = True
            agg = spec.aggregate
            params = AggregateParams(threshold=threshold, max_gap_s=agg.max_gap_s, dedup_s=agg.dedup_s,
                                     peak_threshold=peak, min_frames=agg.min_frames,
                                     short_peak=short_event_peak(spec))
            agg_paths = run_events(spark, scores_path=fused_path, manifest_path=_abs(spec.frames),
                                   out_dir=work / "agg", params=params)
            frames_t = _read_as(agg_paths["event_frames"], EVENT_FRAMES_SCHEMA)
            kept = frames_t.filter(pc.field("keep"))
            event_of = frames_t.select(["frame_id", "event_id"])
            events = _read_as(agg_paths["events"], EVENT_STATS_SCHEMA)
            st.counts.update(high_frames=event_of.num_rows, events=events.num_rows, pool=kept.num_rows)
            log(f"  {event_of.num_rows} frames >= threshold in {events.num_rows} events; {kept.num_rows} after de-dup")
        # ------------------------------------------------------------ scenarios
        with st.stage("scenarios"):
            from edgemine.mining.scenarios import cluster
            from edgemine.mining.spark_aggregate import run_scenarios

            kept = kept.sort_by([("score", "descending"), ("frame_id", "ascending")])
            kept_rows = _positions(kept.column("frame_id"), frames_index.ids.column("frame_id").combine_chunks())
            pool_vecs = frames_index.reconstruct(kept_rows.tolist()) if len(kept_rows) else np.zeros((0, 1))
            scen = cluster(pool_vecs, kept.column("score").to_numpy(), k=spec.scenarios.k, seed=spec.seed,
                           normalize=spec.index.metric == "cosine")
            assign = pa.table({"frame_id": kept.column("frame_id"), "scenario_id": pa.array(list(scen), pa.string())})
            pq.write_table(assign, work / "assignments.parquet")
            scen_path = run_scenarios(spark, event_frames_path=agg_paths["event_frames"],
                                      assignments_path=work / "assignments.parquet",
                                      out_path=work / "agg" / "scenarios")
            scen_stats = _read_as(scen_path, SCENARIO_STATS_SCHEMA)
            st.counts["scenarios"] = scen_stats.num_rows
        # ------------------------------------------------------------ selection
        with st.stage("select"):
            from edgemine.mining.select import make_strategy

            sel = spec.selection
            opts = {"diversity": sel.diversity} if sel.strategy == "kcenter" else (
                {"seed": spec.seed} if sel.strategy == "random" else {})
            pool = Pool(scores=kept.column("score").to_numpy().astype(np.float64), embeddings=pool_vecs,
                        event_ids=np.asarray(kept.column("event_id").to_pylist(), dtype=object),
                        scenario_ids=np.asarray(scen, dtype=object))
            strategy, n_pool = make_strategy(sel.strategy, **opts), kept.num_rows
            caps = Caps(per_event=sel.per_event_cap, per_scenario=sel.per_scenario_cap)
            if sel.fill:  # every event once, then the best frames left, in events or not (mining/select/budget.py)
                once = Caps(per_event=1, per_scenario=caps.per_scenario)
                order = strategy.select(pool, budget=spec.budget, caps=once)
                log(f"  round 1: {len(order)} events, one frame each, with {sel.strategy}")
                if len(order) < spec.budget:
                    kept, order, scen, pool_vecs = fill_budget(
                        st, kept, order, scen, pool_vecs, pool=pool, caps=caps, fused_path=fused_path, man=man,
                        man_ids=man_ids, drive_codes=drive_codes, event_frames=event_of.column("frame_id"),
                        frames_index=frames_index)
            else:
                order = strategy.select(pool, budget=spec.budget, caps=caps)
            n_event = int((order < n_pool).sum())
            st.counts.update(candidates=int(len(order)), budget=spec.budget, above_threshold=n_event,
                             filled=int(len(order)) - n_event)
            if n_event < spec.budget:
                st.notes.append(
                    f"{n_event} of the {spec.budget} candidates are frames of events above the thresholds "
                    f"({n_pool} de-duplicated event frames in {events.num_rows} events); "
                    + (f"{len(order) - n_event} are the best frames outside every event by fused score, one per "
                       f"drive per {sel.fill_nms_s:g} s (selected_by = 'fill')" if sel.fill
                       else "selection.fill is off, so the budget is not filled"))
            log(f"  selected {len(order)} candidates (budget {spec.budget}): {n_event} from events, "
                f"{len(order) - n_event} fill")
        # ------------------------------------------------------------ outputs
        with st.stage("write"):
            cands = write_candidates(st, kept, order, scen, pool_vecs, ref_index, fused_path, n_pool=n_pool)
            write_scores(st, fused_path, event_of)
            write_events_and_scenarios(st, events, scen_stats, cands)
            if not frames_src.in_manifest and frames_src.path != run_dir / "embeddings":
                st.notes.append(f"embeddings live at {frames_src.path}")
        errors.close()
        st.counts["dropped"] = dict(errors.by_stage)
        st.counts["dropped_total"] = errors.total
        st.timings["total"] = round(time.perf_counter() - t_start, 3)
        info = write_run_json(st, frames_src=frames_src, weights=weights, signals=signals, ref_index=ref_index,
                              frames_index=frames_index, errors=errors)
        with st.stage("report"):
            from edgemine.mining.report import write_report

            write_report(run_dir, info=info, samples=samples, errors_by_reason=errors.by_reason)
        st.timings["total"] = round(time.perf_counter() - t_start, 3)
        info["timings"] = st.timings
        _write_json(run_dir / "run.json", info)
    finally:
        for cleanup in reversed(st.cleanups):
            cleanup()
        if errors.writer.is_open:
            errors.writer.close()
        if own_spark and spark is not None:
            spark.stop()
        shutil.rmtree(work, ignore_errors=True)
    log(f"run {st.run_id}: {st.counts['candidates']} candidates in {run_dir} ({st.timings['total']:.1f}s)")
    return RunResult(run_dir=run_dir, run_id=st.run_id, counts=st.counts, timings=st.timings, warnings=st.warnings)


def check_coverage(st: RunState, fused_path: Path) -> None:
    """Warn when the reference does not cover the fleet (mining/coverage.py): streams the manifest's
    metadata columns beside each frame's novelty percentile."""
    from edgemine.mining.coverage import CoverageCheck, metadata_columns

    scored = pq.read_table(fused_path, columns=["frame_id", "novelty"])
    ids = scored.column("frame_id").combine_chunks()
    nov = scored.column("novelty").to_numpy(zero_copy_only=False).astype(np.float64)
    d = open_dataset(st.spec.frames, what="manifest")
    cols = metadata_columns(d.schema)
    check = CoverageCheck()
    for b in d.to_batches(columns=["frame_id", "drive_id", *cols], batch_size=st.spec.score_batch_rows):
        pos = _positions(b.column("frame_id"), ids)
        there = pos >= 0
        check.add(np.where(there, nov[np.maximum(pos, 0)], np.nan), {c: b.column(c) for c in cols},
                  drives=b.column("drive_id").to_numpy(zero_copy_only=False))
    st.counts["coverage"] = check.to_dict()
    for w in check.warnings():
        st.warnings.append(w)
        st.log(f"  WARNING: {w}")


def fill_budget(st: RunState, kept: pa.Table, order: np.ndarray, scen: np.ndarray, pool_vecs: np.ndarray, *,
                pool: Pool, caps: Caps, fused_path: Path, man: pa.Table, man_ids: pa.Array, drive_codes: np.ndarray,
                event_frames: pa.ChunkedArray, frames_index: VectorIndex,
                ) -> tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray]:
    """Round 2 of the selection: the rest of the budget to the best of more event frames and the fill.

    The fill is the best frames outside every event by fused score, one per drive per `fill_nms_s`, none
    that close to a round-1 pick (temporal NMS); frames of events are never fill, so the caps hold.
    `edgemine.mining.select.budget.second_round` merges the two by score. Returns the pool with the fill frames
    appended (event_id and scenario null), the extended order, and the extended scenario ids and vectors.
    Reads one score per frame (as fusing does).
    """
    from edgemine.mining.select.budget import second_round
    from edgemine.mining.select.nms import temporal_nms

    spec = st.spec
    need = spec.budget - len(order)
    scores = pq.read_table(fused_path, columns=["frame_id", "score"])
    ids = scores.column("frame_id").combine_chunks()
    rows = _positions(ids, man_ids)
    drive = drive_codes[rows]
    ts = pc.cast(man.column("timestamp"), pa.int64()).to_numpy()[rows]
    chosen = _positions(kept.column("frame_id").take(pa.array(order.astype(np.int64))), ids)
    free = np.ones(len(ids), dtype=bool)
    in_event = _positions(event_frames, ids)
    free[in_event[in_event >= 0]] = False
    cand = np.flatnonzero(free)
    score = scores.column("score").to_numpy()
    picked = cand[temporal_nms(score[cand], drive[cand], ts[cand], n=need, window_s=spec.selection.fill_nms_s,
                               taken=(drive[chosen], ts[chosen]))]
    more = second_round(pool, order, caps=caps, fill_scores=score[picked], need=need)
    fill_ids = ids.take(pa.array(picked))
    fill = pa.table({"frame_id": fill_ids, "event_id": pa.nulls(len(picked), pa.string())})
    table = pa.concat_tables([kept.select(["frame_id", "event_id"]), fill])  # fill row j is pool row n + j
    vecs = frames_index.reconstruct(_positions(fill_ids, frames_index.ids.column("frame_id").combine_chunks()).tolist())
    vecs = np.vstack([pool_vecs.reshape(-1, vecs.shape[1]), vecs]) if len(picked) else pool_vecs
    order = np.concatenate([order, more]).astype(np.int64)
    scen = np.concatenate([np.asarray(scen, dtype=object), np.full(len(picked), None, dtype=object)])
    return table, order, scen, vecs


def _abs(path: str | os.PathLike[str]) -> str:
    """An absolute local path (URIs such as s3:// pass through unchanged)."""
    p = str(path)
    return p if "://" in p else str(Path(p).resolve())


def thresholds(spec: MineSpec, scores: np.ndarray) -> tuple[float, float]:
    """(frame threshold, event peak threshold) on the fused score, from the spec or its defaults."""
    from edgemine.jobs.spec import FISHER_PEAK_THRESHOLD, FISHER_THRESHOLD

    agg, fisher = spec.aggregate, spec.fusion.mode == "fisher"

    def pick(given: float | None, fisher_default: float, fraction: float) -> float:
        if given is not None:
            return float(given)
        if fisher:
            return fisher_default
        return float(np.quantile(scores, 1.0 - fraction)) if scores.size else 1.0

    threshold = pick(agg.threshold, FISHER_THRESHOLD, agg.pool_fraction)
    return threshold, max(threshold, pick(agg.peak_threshold, FISHER_PEAK_THRESHOLD, agg.peak_fraction))


def short_event_peak(spec: MineSpec) -> float | None:
    """The peak at which an event shorter than min_frames is kept: the spec's, else 3.0 for fisher (p 0.001)."""
    from edgemine.jobs.spec import FISHER_SHORT_PEAK

    given = spec.aggregate.short_event_peak
    return float(given) if given is not None else (FISHER_SHORT_PEAK if spec.fusion.mode == "fisher" else None)


def _read_as(path: Path, schema: pa.Schema) -> pa.Table:
    """A small Spark output folder as a table of `schema` (an empty result may have no typed file)."""
    files = [str(p) for p in sorted(Path(path).glob("*.parquet"))]
    tables = [pq.read_table(f) for f in files]
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return schema.empty_table()
    t = pa.concat_tables(tables, promote_options="permissive")
    return pa.Table.from_arrays([t.column(f.name).cast(f.type) for f in schema], schema=schema)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


# ================================================================ stages
def _slug(text: str) -> str:
    import hashlib
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[-60:] + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def embed_out(st: RunState, encoder: str, default: str) -> Path:
    """Where the embed step writes for `encoder`: the run folder, or a sub-folder of the shared embed_dir."""
    if st.spec.embed_dir is None:
        return st.run_dir / default
    return Path(st.spec.embed_dir) / _slug(encoder)


def _ensure_ray(st: RunState) -> None:
    """A sharded index lives on Ray actors: join the running Ray (or RAY_ADDRESS), else start one for the run."""
    import ray

    from edgemine.runtime import ray_runtime

    if ray.is_initialized():
        return
    ctx = ray_runtime()
    ctx.__enter__()

    def stop_ray() -> None:
        ctx.__exit__(None, None, None)

    st.cleanups.insert(0, stop_ray)  # shut Ray down last


def _saved_reference(st: RunState, folder: Path, source: str) -> ReferenceIndex | None:
    """The index saved in `folder` when it may be reused for reference `source` (sharded or not), else None.

    An index found in the run's own folder is reused only when built from the same reference; one in an
    explicit `index.dir` must have been, or the job fails rather than score against other data."""
    spec = st.spec
    if spec.index.shards > 1:
        info = ShardedIndex.read_info(folder)
        if info is None:
            return None
        saved = info.get("source")
    else:
        if not sidecar_exists(folder):
            return None
        saved = read_sidecar(folder).params.get("source")
    if saved != source and spec.index.dir is None:
        return None
    if saved != source:
        raise IncompatibleArtifactError(
            f"index at {str(folder)!r} was built from reference {saved!r}, but this "
            f"job's reference is {source!r}; use another index.dir")
    if spec.index.shards > 1:
        sidx = ShardedIndex.load(folder)
        st.cleanups.append(sidx.shutdown)
        return sidx
    return VectorIndex.load(folder)


def _index_info(idx: ReferenceIndex) -> dict[str, Any]:
    info: dict[str, Any] = {"usable": idx.count, "kind": idx.meta.kind}
    if isinstance(idx, ShardedIndex):
        info["shards"] = len(idx.actors)
    return info


def reference_index(st: RunState, frames_src: EmbeddingSource) -> tuple[ReferenceIndex, dict[str, Any]]:
    """Load the reference index from its folder when it matches, else embed the reference and build it.

    With `index.shards` > 1 the index lives on Ray actors (mining/sharded_index.py), built and reused the same way.
    """
    spec = st.spec
    folder = Path(spec.index.dir) if spec.index.dir else st.run_dir / REFERENCE_INDEX
    source = _abs(spec.reference)
    params = spec.index.params(seed=spec.seed)
    if spec.index.shards > 1:
        _ensure_ray(st)
    saved = _saved_reference(st, folder, source)
    if saved is not None:
        saved.check_compatible(encoder=frames_src.encoder, dim=frames_src.dim, what="the frames' embeddings")
        if "drive_id" in saved.ids.column_names or "drive_id" not in open_dataset(
                spec.reference, what="reference").schema.names:
            st.log(f"  reusing reference index {folder} ({saved.meta.kind}, {saved.count} vectors)")
            return saved, {"source": source, "index_dir": str(folder), "reused": True, **_index_info(saved)}
        st.log(f"  rebuilding reference index {folder}: saved without drive_id, which novelty's calibration needs")
    kind = table_kind(spec.reference, what="reference")
    ref_path = Path(spec.reference)
    uris: pa.Table | None = None
    if kind == "manifest":
        ref_src = embed(ref_path, encoder=spec.encoder, out=folder / "embeddings", spec=spec, log=st.log)
        uris = pa.concat_tables(iter_manifest(ref_path, columns=["frame_id", "drive_id", "timestamp", "uri"]))
        uris = uris.select(["frame_id", "uri", "drive_id"])
    else:
        ref_src = source_from_table(ref_path, in_manifest=False, what=f"reference {ref_path}")
        d = open_dataset(ref_path, what="reference")
        keep_cols = [c for c in ("uri", "drive_id") if c in d.schema.names]
        if keep_cols:
            uris = d.to_table(columns=["frame_id", *keep_cols])
    if ref_src.dim != frames_src.dim or ref_src.encoder != frames_src.encoder:
        raise IncompatibleArtifactError(
            f"reference embeddings ({ref_src.encoder!r}, dim {ref_src.dim}) and frames' embeddings "
            f"({frames_src.encoder!r}, dim {frames_src.dim}) come from different encoders; embed both with one")
    dropped: dict[str, int] = {}
    uri_ids = uris.column("frame_id").combine_chunks() if uris is not None else None

    def batches() -> Iterator[tuple[pa.Table, np.ndarray]]:
        for b in ref_src.batches(batch_rows=spec.score_batch_rows):
            m = list_matrix(b.column("embedding"), name="embedding", frame_ids=b.column("frame_id"), dim=ref_src.dim)
            for r in m.reasons:
                if r is not None:
                    dropped[r] = dropped.get(r, 0) + 1
            keep = pa.array(m.usable)
            ids = b.select(["frame_id"]).filter(keep)
            if uri_ids is not None and uris is not None:
                pos = _positions(ids.column("frame_id"), uri_ids)
                for c in uris.column_names[1:]:  # uri (evidence) and drive_id (calibration), where known
                    u = uris.column(c).take(pa.array(np.maximum(pos, 0)))
                    ids = ids.append_column(c, pc.if_else(pa.array(pos >= 0), u, pa.scalar(None, u.type)))
            yield ids, m.values[m.usable]

    idx: ReferenceIndex
    if spec.index.shards > 1:
        idx = ShardedIndex.build(batches(), count=ref_src.rows, dim=ref_src.dim, encoder=ref_src.encoder,
                                 shards=spec.index.shards, params=params)
        st.cleanups.append(idx.shutdown)
        idx.save(folder, extra={"source": source})
    else:
        idx = build_index(batches(), count=ref_src.rows, dim=ref_src.dim, encoder=ref_src.encoder, params=params)
        idx.meta.params["source"] = source
        idx.save(folder)
    st.log(f"  built reference index {folder}: {idx.meta.kind}, {idx.count} vectors")
    return idx, {"source": source, "index_dir": str(folder), "reused": False, "rows": ref_src.rows,
                 "dropped": dropped, "embeddings": ref_src.to_dict(), **_index_info(idx)}


def model_logit_tables(st: RunState, frames_src: EmbeddingSource) -> list[tuple[str, pa.Table]]:
    """(model spec, table of frame_id + logits) for each uncertainty model; the encoder's own logits if none."""
    out: list[tuple[str, pa.Table]] = []
    for i, m in enumerate(st.spec.models):
        src = frames_src if m == st.spec.encoder else embed(
            Path(st.spec.frames), encoder=m, out=embed_out(st, m, f"models/m{i}"), spec=st.spec, log=st.log)
        if not src.has_logits:
            st.notes.append(f"model {m!r} gave no logits; it does not contribute to uncertainty")
            continue
        t = src.dataset().to_table(columns=["frame_id", "logits"])
        out.append((m, t))
    if not st.spec.models and frames_src.has_logits:
        out.append((frames_src.encoder, frames_src.dataset().to_table(columns=["frame_id", "logits"])))
    st.counts["uncertainty_models"] = [m for m, _ in out]
    return out


def frames_index_build(st: RunState, src: EmbeddingSource, man: pa.Table, man_ids: pa.Array,
                       errors: ErrorLog) -> tuple[VectorIndex, np.ndarray]:
    """Index every usable frame embedding; unusable ones go to errors.parquet (stage "score")."""
    has = np.zeros(man.num_rows, dtype=bool)
    uris = man.column("uri").combine_chunks()
    extra = {"n": 0}

    def batches() -> Iterator[tuple[pa.Table, np.ndarray]]:
        for b in src.batches(batch_rows=st.spec.score_batch_rows):
            pos = _positions(b.column("frame_id"), man_ids)
            inman = pos >= 0
            extra["n"] += int((~inman).sum())
            m = list_matrix(b.column("embedding"), name="embedding", frame_ids=b.column("frame_id"), dim=src.dim)
            has[pos[inman]] = True
            bad = np.flatnonzero(inman & ~m.usable)
            if bad.size:
                errors.add([b.column("frame_id")[int(i)].as_py() for i in bad],
                           [uris[int(pos[i])].as_py() for i in bad], "score", [str(m.reasons[int(i)]) for i in bad])
            keep = inman & m.usable
            yield b.select(["frame_id"]).filter(pa.array(keep)), m.values[keep]

    idx = build_index(batches(), count=min(src.rows, man.num_rows), dim=src.dim, encoder=src.encoder,
                      params=st.spec.index.params(seed=st.spec.seed))
    idx.save(st.run_dir / FRAMES_INDEX)
    has_usable = has.copy()
    st.counts["embeddings_not_in_manifest"] = extra["n"]
    return idx, has_usable


def _log_missing(st: RunState, src: EmbeddingSource, man: pa.Table, missing: np.ndarray, errors: ErrorLog) -> None:
    """Frames of the manifest without an embedding row: copy the embed step's reasons, or say there was none."""
    if not missing.size:
        return
    ids = man.column("frame_id").take(pa.array(missing))
    uris = man.column("uri").take(pa.array(missing))
    reasons: dict[str, tuple[str, str]] = {}
    if src.errors_path is not None:
        e = pq.read_table(src.errors_path)
        for fid, stage, reason in zip(e.column("frame_id").to_pylist(), e.column("stage").to_pylist(),
                                      e.column("reason").to_pylist(), strict=True):
            if fid is not None:
                reasons[fid] = (stage or "embed", reason or "")
    by_stage: dict[str, tuple[list, list, list]] = {}
    for fid, uri in zip(ids.to_pylist(), uris.to_pylist(), strict=True):
        stage, reason = reasons.get(fid, ("embed", "no embedding was produced for this frame"))
        a = by_stage.setdefault(stage, ([], [], []))
        a[0].append(fid)
        a[1].append(uri)
        a[2].append(reason)
    for stage, (f, u, r) in by_stage.items():
        errors.add(f, u, stage, r)


def _aligned_logits(model_logits: list[tuple[str, pa.Table]], ids: pa.Array) -> list[np.ndarray]:
    out = []
    for _, t in model_logits:
        pos = _positions(ids, t.column("frame_id").combine_chunks())
        col = t.column("logits").take(pa.array(np.maximum(pos, 0)))
        m = list_matrix(col, name="logits")
        vals = m.values.astype(np.float64)
        vals[~(m.usable & (pos >= 0))] = np.nan
        out.append(vals)
    return out


def score_frames(st: RunState, *, signals: dict[str, tuple[float, Signal]], frames_src: EmbeddingSource,
                 man: pa.Table, man_ids: pa.Array, drive_codes: np.ndarray, ref_index: ReferenceIndex,
                 frames_index: VectorIndex, row_groups: np.ndarray,
                 model_logits: list[tuple[str, pa.Table]]) -> tuple[Path, dict[str, Reservoir]]:
    """Raw signal values for every usable frame -> .work/raw.parquet; reservoirs of mined-calibrated signals."""
    objs = {n: s for n, (_, s) in signals.items()}
    k_ref = max([s.neighbours for s in objs.values() if "reference_knn" in s.needs] or [0])
    batch_sigs = [s for s in objs.values() if "batch_knn" in s.needs]
    k_batch = max([s.neighbours for s in batch_sigs] or [0])
    if k_ref and k_ref > ref_index.count:
        raise ConfigError(f"novelty k={k_ref} needs at least {k_ref} reference frames; the reference has "
                          f"{ref_index.count} usable ones")
    if k_batch and k_batch >= frames_index.count:
        raise ConfigError(f"rarity k={k_batch} needs more than {k_batch} usable frames; there are {frames_index.count}")
    exclude_drive = any(getattr(s, "exclude_same_drive", False) for s in batch_sigs)
    frame_ids_all = frames_index.ids.column("frame_id").combine_chunks()
    reservoirs = {n: Reservoir(st.spec.calibration_sample, seed=st.spec.seed) for n, s in objs.items()
                  if s.calibration == "mined"}
    path = st.work / "raw.parquet"
    writer: pq.ParquetWriter | None = None
    probs_col = man.column("probs") if "probs" in man.column_names else None
    for b in frames_src.batches(batch_rows=st.spec.score_batch_rows, logits=False):
        pos = _positions(b.column("frame_id"), man_ids)
        m = list_matrix(b.column("embedding"), name="embedding", dim=frames_src.dim)
        keep = (pos >= 0) & m.usable
        if not keep.any():
            continue
        ids = b.column("frame_id").filter(pa.array(keep))
        ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
        x, p = m.values[keep], pos[keep]
        inputs = SignalInputs(n=len(p), table=man.take(pa.array(p)))
        if k_ref:
            inputs.reference_distances, _ = ref_index.search(x, k_ref)
        if k_batch:
            if exclude_drive:
                inputs.batch_distances, _ = frames_index.search_other_groups(
                    x, k_batch, query_groups=drive_codes[p], row_groups=row_groups)
            else:
                own = _positions(ids, frame_ids_all)
                inputs.batch_distances, _ = frames_index.self_search(own, x, k_batch)
        if model_logits:
            inputs.logits = _aligned_logits(model_logits, ids)
        elif probs_col is not None:
            pm = list_matrix(probs_col.take(pa.array(p)), name="probs")
            pv = pm.values.astype(np.float64)
            pv[~pm.usable] = np.nan
            inputs.probs = pv
        cols: dict[str, pa.Array] = {"frame_id": ids}
        for name, sig in objs.items():
            out = sig.compute(inputs)
            cols[f"{name}_raw"] = pa.array(out.raw, pa.float64())
            for dk, dv in out.detail.items():
                cols[f"{name}__{dk}"] = pa.array(dv, pa.float64())
            if out.fired is not None:
                cols["triggers_fired"] = pa.array(out.fired, pa.list_(pa.string()))
            if name in reservoirs:
                reservoirs[name].add(out.raw)
        table = pa.table(cols)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    if writer is None:
        raise ConfigError("no usable frame to score")
    writer.close()
    return path, reservoirs


def calibrations(st: RunState, signals: dict[str, tuple[float, Signal]], ref_index: ReferenceIndex,
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
            d = reference_calibration_knn(st, ref_index, rows, vecs, sig.neighbours)
            out[name] = sig.compute(SignalInputs(n=n, reference_distances=d)).raw
            st.counts.setdefault("calibration", {})[name] = {"reference_frames": int(n)}
    return out


def reference_calibration_knn(st: RunState, ref_index: ReferenceIndex, rows: np.ndarray, vecs: np.ndarray,
                               k: int) -> np.ndarray:
    """kNN distances of sampled reference frames to the rest of the reference, as a fleet frame sees it.

    A fleet frame's nearest reference frames are always of other drives, so a reference frame is measured
    against other drives too: its own drive's frames (a tenth of a second apart, near-duplicates) would make
    the reference look far tighter than it is to a new drive, and put most of an ordinary fleet above p99.
    Where that cannot be done — an embeddings table without drive_id, a reference of one drive, other
    drives holding fewer than k frames — it falls back to leave-one-out, says so in the run's notes, and
    `counts.novelty_calibration` records which was used (the coverage guardrail needs "other_drives")."""
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
            st.counts["novelty_calibration"] = "other_drives"
            return d
        why = f"some reference frames have fewer than k={k} frames of other drives ({len(np.unique(codes))} drives)"
    st.counts["novelty_calibration"] = "leave_one_out"
    st.notes.append(f"novelty is calibrated leave-one-out: {why}; a reference frame's own drive counts among its "
                    "neighbours, so novelty percentiles run high and the coverage guardrail is off")
    d, _ = ref_index.self_search(rows, vecs, k)
    return d


def fuse_scores(st: RunState, signals: dict[str, tuple[float, Signal]], weights: dict[str, float], raw_path: Path,
                calib: dict[str, np.ndarray]) -> tuple[Path, Reservoir, dict[str, np.ndarray]]:
    """Percentiles, fused score and reasons per frame -> .work/scores.parquet (SCORES_SCHEMA + raw columns)."""
    from edgemine.mining.fusion import build_reasons, contributions, fuse

    spec = st.spec
    path = st.work / "scores.parquet"
    writer: pq.ParquetWriter | None = None
    fused_res = Reservoir(max(spec.calibration_sample, 200_000), seed=spec.seed)
    sample_res = {k: Reservoir(50_000, seed=spec.seed + i) for i, k in enumerate(
        ["score", *SIGNAL_COLUMNS, *[f"{n}_raw" for n in signals], *[f"contrib_{n}" for n in signals]])}
    pf = pq.ParquetFile(raw_path)
    n_scored = 0
    for batch in pf.iter_batches(batch_size=spec.score_batch_rows):
        t = pa.Table.from_batches([batch])
        raw = {n: t.column(f"{n}_raw").to_numpy(zero_copy_only=False).astype(np.float64) for n in signals}
        pct: dict[str, np.ndarray] = {}
        for n, (_, sig) in signals.items():
            pct[n] = raw[n].copy() if sig.calibration == "absolute" else calibrated(
                raw[n], calib[n], extrapolate=sig.extrapolate)
        score = fuse(pct, weights=weights, mode=spec.fusion.mode, max_surprise=spec.fusion.max_surprise)
        contrib = contributions(pct, weights=weights, mode=spec.fusion.mode, max_surprise=spec.fusion.max_surprise)
        fired = t.column("triggers_fired").to_pylist() if "triggers_fired" in t.column_names else None
        objs = {n: s for n, (_, s) in signals.items()}
        details = {n: {c.split("__", 1)[1]: t.column(c).to_numpy(zero_copy_only=False)
                       for c in t.column_names if c.startswith(f"{n}__")} for n in signals}

        reasons = build_reasons(pct, raw, describe={n: _describer(objs[n], details[n]) for n in signals},
                                weights=weights,
                                fired=fired, min_percentile=spec.fusion.reason_percentile)
        cols: dict[str, Any] = {"frame_id": t.column("frame_id"), "score": pa.array(score.astype(np.float32)),
                                "reasons": pa.array(reasons, pa.list_(pa.string()))}
        for s in SIGNAL_COLUMNS:
            v = pct.get(s)
            cols[s] = pa.array(np.zeros(t.num_rows, np.float32) if v is None else v.astype(np.float32),
                               mask=np.ones(t.num_rows, bool) if v is None else np.isnan(v))
        cols["event_id"] = pa.nulls(t.num_rows, pa.string())
        for c in t.column_names:
            if c != "frame_id":
                cols[c] = t.column(c)
        out = pa.table(cols)
        if writer is None:
            writer = pq.ParquetWriter(path, out.schema)
        writer.write_table(out)
        n_scored += t.num_rows
        fused_res.add(score)
        sample_res["score"].add(score)
        for s in SIGNAL_COLUMNS:
            if s in pct:
                sample_res[s].add(pct[s])
        for n in signals:
            sample_res[f"{n}_raw"].add(raw[n])
        for n, c in contrib.items():
            sample_res[f"contrib_{n}"].add(c)
    if writer is None:
        raise ConfigError("no usable frame to score")
    writer.close()
    st.counts["scored_frames"] = n_scored
    samples = {k: r.values for k, r in sample_res.items()}
    samples.update({f"calibration_{n}": v for n, v in calib.items()})
    return path, fused_res, samples


def _describer(sig: Signal, detail: dict[str, np.ndarray]) -> Callable[[float, float, int], str]:
    return lambda r, p, i: sig.reason(r, p, {k: float(v[i]) for k, v in detail.items()})


def _manifest_rows(spec: MineSpec, filt: ds.Expression, columns: list[str] | None = None) -> pa.Table:
    """Manifest rows matching `filt`, normalised (absolute uris, UTC timestamps); streamed through the filter."""
    d = open_dataset(spec.frames, what="manifest")
    base = manifest_base_dir(spec.frames)
    parts = [normalize_manifest_batch(b, base_dir=base, source=str(spec.frames))
             for b in d.to_batches(filter=filt, columns=columns) if b.num_rows]
    if not parts:
        return normalize_manifest_batch(d.schema.empty_table().select(columns) if columns else d.schema.empty_table(),
                                        base_dir=base)
    return pa.concat_tables(parts, promote_options="permissive")


def write_candidates(st: RunState, kept: pa.Table, order: np.ndarray, scen: np.ndarray, pool_vecs: np.ndarray,
                     ref_index: ReferenceIndex, fused_path: Path, *, n_pool: int) -> pa.Table:
    """candidates.parquet: core + evidence + the manifest's columns, rank 1 first; rows of `kept` below
    `n_pool` are event frames, the ones after it fill the budget."""
    import pandas as pd

    from edgemine.mining.evidence import context_uris

    spec = st.spec
    idx = pa.array(order.astype(np.int64))
    ids = kept.column("frame_id").combine_chunks().take(idx)  # an Array keeps its type even when empty
    scores = ds.dataset(str(fused_path), format="parquet").to_table(
        filter=ds.field("frame_id").isin(ids), columns=["frame_id", "score", "reasons", *SIGNAL_COLUMNS,
                                                         *[c for c in pq.read_schema(fused_path).names
                                                           if c.endswith("_raw") or c == "triggers_fired"]])
    spos = _positions(ids, scores.column("frame_id").combine_chunks())
    scores = scores.take(pa.array(spos))
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
    for s in SIGNAL_COLUMNS:
        core[s] = scores.column(s)
    # evidence: nearest reference frames, and frames around the candidate in its drive
    k = spec.evidence.neighbors
    if k and n:
        d, nb = ref_index.search(pool_vecs[order], min(k, ref_index.count))
        ref_ids = ref_index.ids.column("frame_id").to_pylist()
        ref_uris = ref_index.ids.column("uri").to_pylist() if "uri" in ref_index.ids.column_names else None
        nids = [[ref_ids[j] for j in row if j >= 0] for row in nb]
        nuris = [[ref_uris[j] for j in row if j >= 0] if ref_uris else [] for row in nb]
        ndist = [[float(x) for x, j in zip(drow, row, strict=True) if j >= 0] for drow, row in zip(d, nb, strict=True)]
    else:
        nids, nuris, ndist = [[] for _ in range(n)], [[] for _ in range(n)], [[] for _ in range(n)]
    meta = _manifest_rows(spec, ds.field("frame_id").isin(ids))
    mpos = _positions(ids, meta.column("frame_id").combine_chunks())
    meta = meta.take(pa.array(mpos))
    drives = pc.unique(meta.column("drive_id").combine_chunks())
    ctx_rows = _manifest_rows(spec, ds.field("drive_id").isin(drives),
                              columns=["frame_id", "drive_id", "timestamp", "uri"])
    frames_df = pd.DataFrame({"frame_id": ctx_rows.column("frame_id").to_pylist(),
                              "drive_id": ctx_rows.column("drive_id").to_pylist(),
                              "ts_us": pc.cast(ctx_rows.column("timestamp"), pa.int64()).to_numpy(),
                              "uri": ctx_rows.column("uri").to_pylist()})
    cand_df = pd.DataFrame({"frame_id": ids.to_pylist(), "drive_id": meta.column("drive_id").to_pylist(),
                            "ts_us": pc.cast(meta.column("timestamp"), pa.int64()).to_numpy()})
    ctx = context_uris(cand_df, frames_df, offsets_s=spec.evidence.context_offsets_s) if n else []
    evidence = {
        "neighbor_ids": pa.array(nids, pa.list_(pa.string())),
        "neighbor_uris": pa.array(nuris, pa.list_(pa.string())),
        "neighbor_distances": pa.array(ndist, pa.list_(pa.float32())),
        "context_uris": pa.array(ctx, pa.list_(pa.string())),
    }
    fields = list(CANDIDATES_CORE_SCHEMA) + list(CANDIDATES_EVIDENCE_SCHEMA)
    arrays = [pa.array(core[f.name]) if not isinstance(core.get(f.name), (pa.Array, pa.ChunkedArray)) else core[f.name]
              for f in CANDIDATES_CORE_SCHEMA] + [evidence[f.name] for f in CANDIDATES_EVIDENCE_SCHEMA]
    arrays = [a.cast(f.type) for a, f in zip(arrays, fields, strict=True)]
    for name in meta.column_names:
        if name != "frame_id":
            fields.append(meta.schema.field(name))
            arrays.append(meta.column(name))
    for name in scores.column_names:  # raw values and fired rules, after the manifest's columns
        if (name.endswith("_raw") or name == "triggers_fired") and name not in {f.name for f in fields}:
            fields.append(scores.schema.field(name))
            arrays.append(scores.column(name))
    table = pa.Table.from_arrays([a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays],
                                 schema=pa.schema(fields))
    tmp = st.run_dir / "candidates.parquet.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, st.run_dir / "candidates.parquet")
    return table


def write_scores(st: RunState, fused_path: Path, event_of: pa.Table) -> None:
    """scores.parquet: every scored frame, with its event_id when it is part of an event."""
    ev_ids = event_of.column("frame_id").combine_chunks()
    ev_vals = event_of.column("event_id").combine_chunks()
    tmp = st.run_dir / "scores.parquet.tmp"
    writer = None
    for batch in pq.ParquetFile(fused_path).iter_batches(batch_size=st.spec.score_batch_rows):
        t = pa.Table.from_batches([batch])
        pos = _positions(t.column("frame_id"), ev_ids)
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
    ev_counts = pc.value_counts(cands.column("event_id").drop_null()) if cands.num_rows else None
    sc_counts = pc.value_counts(cands.column("scenario_id").drop_null()) if cands.num_rows else None

    def counts_for(keys: pa.ChunkedArray, vc: pa.StructArray | None) -> pa.Array:
        if vc is None or len(vc) == 0:
            return pa.array(np.zeros(len(keys), np.int64))
        pos = _positions(keys, vc.field("values"))
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
        meta = _manifest_rows(st.spec, ds.field("frame_id").isin(scen_stats.column("peak_frame_id")),
                              columns=["frame_id", "drive_id", "timestamp", "uri"])
        pos = _positions(scen_stats.column("peak_frame_id"), meta.column("frame_id").combine_chunks())
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


def write_run_json(st: RunState, *, frames_src: EmbeddingSource, weights: dict[str, float],
                   signals: dict[str, tuple[float, Signal]], ref_index: ReferenceIndex, frames_index: VectorIndex,
                   errors: ErrorLog) -> dict[str, Any]:
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
    _write_json(st.run_dir / "run.json", info)
    return info


# ================================================================ more like this
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
    rows = _positions(pa.array(frame_ids, pa.string()), all_ids)
    unknown = [f for f, r in zip(frame_ids, rows, strict=True) if r < 0]
    if unknown:
        raise NotFoundError(f"frame_id {unknown[0]!r} is not among the run's {idx.count} scored frames "
                            f"({len(unknown)} unknown)")
    if idx.meta.kind == "ivf_pq":  # PQ codes are lossy: query with the stored embeddings instead
        src = info["embeddings"]
        t = ds.dataset(src["path"], format="parquet").to_table(
            filter=ds.field("frame_id").isin(frame_ids), columns=["frame_id", "embedding"])
        t = t.take(pa.array(_positions(pa.array(frame_ids, pa.string()), t.column("frame_id").combine_chunks())))
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
    up = _positions(out.column("frame_id"), man.column("frame_id").combine_chunks())
    sp = _positions(out.column("frame_id"), scores.column("frame_id").combine_chunks())
    sc = scores.column("score").to_numpy()
    out = out.append_column("uri", pa.array([uris[p] if p >= 0 else None for p in up], pa.string()))
    return out.append_column("score", pa.array([float(sc[p]) if p >= 0 else None for p in sp], pa.float32()))
