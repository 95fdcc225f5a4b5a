"""A mining run, stage by stage: embed -> reference index -> score -> aggregate (Spark) -> select -> outputs.

    from edgemine.jobs.spec import load_spec
    from edgemine.jobs.mine import run_mine
    result = run_mine(load_spec("job.yaml"))

`run_mine` is the list of stages; each lives where its data flows: the manifest, embedding sources and the
index over the run's frames in `jobs/sources.py`, the reference index (built once, reused) in
`jobs/reference_cache.py`, the score and fuse stages in `jobs/score.py` (the scoring itself, a pure
function, in `mining/scoring.py`), the output files in `jobs/outputs.py`; aggregation, scenarios and
selection are here. "More like this" over a finished run is `jobs/similar.py`.

Outputs in `spec.out` (DESIGN.md, "Candidates"): candidates.parquet, scores.parquet, scenarios.parquet,
events.parquet, errors.parquet, run.json, report.html, plus the run's embeddings (or a pointer to them in
run.json) and `index/frames/` (an index over the run's frames, for `edgemine similar`). The reference index
is kept in `index/reference/` (or `spec.index.dir`, reused across runs).

Memory: embeddings stream in batches of `score_batch_rows`. What is held for the whole run is narrow: the
manifest's id/drive/time columns plus the trigger columns, one float per frame per signal while fusing,
and the FAISS indexes (which hold the vectors they index, as any in-process FAISS index does).
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from edgemine.contracts import EVENT_FRAMES_SCHEMA, EVENT_STATS_SCHEMA, SCENARIO_STATS_SCHEMA
from edgemine.errors import ConfigError
from edgemine.jobs.outputs import ErrorLog, write_candidates, write_events_and_scenarios, write_run_json, write_scores
from edgemine.jobs.reference_cache import reference_index
from edgemine.jobs.run_state import Log, RunResult, RunState, abs_path, positions, quiet, read_as, write_json
from edgemine.jobs.score import calibrations, check_coverage, coverage_signal, fuse_scores, score_frames
from edgemine.jobs.sources import (
    Manifest,
    embed_frames,
    frames_index_build,
    load_manifest,
    log_missing,
    model_logit_tables,
)
from edgemine.jobs.spec import MineSpec
from edgemine.mining.index import VectorIndex
from edgemine.mining.scoring import carried_columns
from edgemine.mining.select.base import Caps, Pool

__all__ = ["RUN_FILES", "RunResult", "run_mine"]

RUN_FILES = ("candidates.parquet", "scores.parquet", "scenarios.parquet", "events.parquet", "errors.parquet",
             "run.json", "report.html")


def run_mine(spec: MineSpec, *, spark: Any = None, log: Log = quiet,
             progress: Callable[[int, int], None] | None = None) -> RunResult:
    """Run a mining job end to end and write its outputs to `spec.out`.

    `log` gets the run's lines (each stage starts with "[stage]"); `progress(done, total)` the rows done in the
    long stages (embed, score, fuse) as they go.
    """
    created = not Path(spec.out).exists()
    st = _start(spec, log)
    st.progress = progress
    t_start = time.perf_counter()
    signals = spec.make_signals()
    sigs = [s for _, s in signals.values()]
    errors = ErrorLog(st.run_dir / "errors.parquet")
    finished = wrote_run_json = False
    try:
        with st.stage("frames"):
            man = load_manifest(st, sigs)
        with st.stage("embed"):
            frames_src = embed_frames(st)
        with st.stage("reference_index"):
            ref_index, st.counts["reference"] = reference_index(st, frames_src)
        with st.stage("models"):
            model_logits = model_logit_tables(st, frames_src)
        with st.stage("frames_index"):
            frames_index, has_embedding = frames_index_build(st, frames_src, man, errors)
            row_groups = man.drive_codes[positions(frames_index.ids.column("frame_id"), man.ids)]
        log_missing(st, frames_src, man, np.flatnonzero(~has_embedding), errors)
        _check_usable(st, man, frames_index.count)
        with st.stage("score"):
            raw_path, reservoirs = score_frames(st, signals=signals, frames_src=frames_src, man=man,
                                                ref_index=ref_index, frames_index=frames_index,
                                                row_groups=row_groups, model_logits=model_logits)
        with st.stage("calibrate"):
            calib = calibrations(st, signals, ref_index, reservoirs)
        guard, conditions = coverage_signal(st, signals), None
        if guard is not None:
            with st.stage("coverage"):
                conditions = check_coverage(st, raw_path, signals, calib, man, signal=guard)
        with st.stage("fuse"):
            fused_path, fused_res, samples = fuse_scores(st, signals, raw_path, calib, conditions)
            threshold, peak = pick_thresholds(st, fused_res.values)
        with st.stage("aggregate"):
            if spark is None:
                spark = _own_spark(st)
            events = aggregate_events(st, spark, fused_path, threshold=threshold, peak=peak)
        with st.stage("scenarios"):
            picks, scen_stats = cluster_scenarios(st, spark, events, frames_index)
        with st.stage("select"):
            picks = select_candidates(st, picks, events, fused_path=fused_path, man=man, frames_index=frames_index)
        with st.stage("write"):
            cands = write_candidates(st, picks.frames, picks.order, picks.scenarios, picks.vectors, ref_index,
                                     fused_path, n_pool=picks.n_pool, carried=carried_columns(sigs))
            write_scores(st, fused_path, events.event_of)
            write_events_and_scenarios(st, events.stats, scen_stats, cands)
            if not frames_src.in_manifest and frames_src.path != st.run_dir / "embeddings":
                st.notes.append(f"embeddings live at {frames_src.path}")
        errors.close()
        st.counts["dropped"] = dict(errors.by_stage)
        st.counts["dropped_total"] = errors.total
        st.timings["total"] = round(time.perf_counter() - t_start, 3)
        info = write_run_json(st, frames_src=frames_src, signals=signals, ref_index=ref_index, errors=errors)
        wrote_run_json = True
        with st.stage("report"):
            from edgemine.mining.report import write_report
            from edgemine.mining.report_map import sample_map_vectors

            write_report(st.run_dir, info=info, samples=samples, errors_by_reason=errors.by_reason,
                         vectors=sample_map_vectors(frames_index, ref_index, cands.column("frame_id"),
                                                    seed=st.spec.seed),
                         similar=_more_like_this(st, cands))
        st.timings["total"] = round(time.perf_counter() - t_start, 3)
        info["timings"] = st.timings
        write_json(st.run_dir / "run.json", info)
        finished = True
    finally:
        for cleanup in reversed(st.cleanups):
            cleanup()
        if errors.writer.is_open:
            errors.writer.close()
        shutil.rmtree(st.work, ignore_errors=True)
        if not finished:
            if wrote_run_json:  # a run.json beside outputs of a failed run would make it look importable
                (st.run_dir / "run.json").unlink(missing_ok=True)
            _remove_partial(st, created=created)
    log(f"run {st.run_id}: {st.counts['candidates']} candidates in {st.run_dir} ({st.timings['total']:.1f}s)")
    return RunResult(run_dir=st.run_dir, run_id=st.run_id, counts=st.counts, timings=st.timings,
                     warnings=st.warnings)


def _start(spec: MineSpec, log: Log) -> RunState:
    """The run folder with an empty `.work/` scratch folder, and the run's id."""
    run_dir = Path(spec.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    work = run_dir / ".work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    return RunState(spec=spec, run_dir=run_dir, work=work, log=log,
                    run_id=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6])


def _more_like_this(st: RunState, cands: pa.Table, *, k: int = 6) -> dict[str, list[Any]]:
    """Each shown candidate's k nearest fleet frames from other drives, for the report's "more like this"."""
    from edgemine.jobs.similar import similar_frames
    from edgemine.mining.report import MAX_CARDS
    from edgemine.mining.report_grid import Similar

    ids = cands.sort_by("rank").column("frame_id").to_pylist()[:MAX_CARDS]
    if not ids:
        return {}
    t = similar_frames(st.run_dir, ids, k=k, exclude_same_drive=True)
    out: dict[str, list[Any]] = {}
    for r in t.select(["query_frame_id", "uri", "frame_id", "drive_id", "distance"]).to_pylist():
        out.setdefault(r["query_frame_id"], []).append(
            Similar(r["uri"], r["frame_id"], r["drive_id"] or "", float(r["distance"])))
    return out


def _remove_partial(st: RunState, *, created: bool) -> None:
    """After a failed or interrupted run: remove half-written files (*.tmp), and the run folder if this run
    created it and nothing else is left. What a re-run resumes from (embeddings/, the saved indexes) stays."""
    for tmp in [*st.run_dir.glob("*.tmp"), *st.run_dir.glob(".*.tmp")]:
        tmp.unlink(missing_ok=True)
    if created and st.run_dir.is_dir() and not any(st.run_dir.iterdir()):
        st.run_dir.rmdir()


def _check_usable(st: RunState, man: Manifest, n_usable: int) -> None:
    st.counts["usable_frames"] = n_usable
    if st.spec.budget > n_usable:
        raise ConfigError(f"budget={st.spec.budget} is larger than the {n_usable} usable frames "
                          f"({man.num_rows - n_usable} of {man.num_rows} could not be used; see errors.parquet)")


def _own_spark(st: RunState) -> Any:
    """A Spark session for this run only, stopped when the run ends (after Ray)."""
    from edgemine.mining.spark import get_spark

    spark = get_spark(st.spec.spark.master, conf=st.spec.spark.conf)
    st.cleanups.insert(0, spark.stop)
    return spark


# ================================================================ thresholds and Spark aggregation
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


def pick_thresholds(st: RunState, scores: np.ndarray) -> tuple[float, float]:
    """`thresholds`, recorded in the run's counts and log."""
    threshold, peak = thresholds(st.spec, scores)
    st.counts["threshold"] = round(threshold, 6)
    st.counts["peak_threshold"] = round(peak, 6)
    st.log(f"  thresholds on the fused score: frames >= {threshold:.4f}, events peaking >= {peak:.4f}")
    return threshold, peak


def short_event_peak(spec: MineSpec) -> float | None:
    """The peak at which an event shorter than min_frames is kept: the spec's, else 3.0 for fisher (p 0.001)."""
    from edgemine.jobs.spec import FISHER_SHORT_PEAK

    given = spec.aggregate.short_event_peak
    return float(given) if given is not None else (FISHER_SHORT_PEAK if spec.fusion.mode == "fisher" else None)


@dataclass(frozen=True)
class Events:
    """Spark's events: every frame at or above the threshold (`event_of`: frame_id, event_id), the
    de-duplicated ones the selection picks from (`kept`, with their scores), and each event's statistics."""

    paths: dict[str, Path]
    event_of: pa.Table
    kept: pa.Table
    stats: pa.Table


def aggregate_events(st: RunState, spark: Any, fused_path: Path, *, threshold: float, peak: float) -> Events:
    from edgemine.mining.aggregate import AggregateParams
    from edgemine.mining.spark_aggregate import run_events

    spec = st.spec
    agg = spec.aggregate
    params = AggregateParams(threshold=threshold, max_gap_s=agg.max_gap_s, dedup_s=agg.dedup_s,
                             peak_threshold=peak, min_frames=agg.min_frames, short_peak=short_event_peak(spec))
    paths = run_events(spark, scores_path=fused_path, manifest_path=abs_path(spec.frames), out_dir=st.work / "agg",
                       params=params)
    frames_t = read_as(paths["event_frames"], EVENT_FRAMES_SCHEMA)
    ev = Events(paths=paths, event_of=frames_t.select(["frame_id", "event_id"]),
                kept=frames_t.filter(pc.field("keep")), stats=read_as(paths["events"], EVENT_STATS_SCHEMA))
    st.counts.update(high_frames=ev.event_of.num_rows, events=ev.stats.num_rows, pool=ev.kept.num_rows)
    st.log(f"  {ev.event_of.num_rows} frames >= threshold in {ev.stats.num_rows} events; "
           f"{ev.kept.num_rows} after de-dup")
    return ev


# ================================================================ scenarios and selection
@dataclass(frozen=True)
class Picks:
    """What selection picks from and what it picked. Rows of `frames` (frame_id, event_id) below `n_pool`
    are the de-duplicated event frames, best first; rows after it are frames that fill the budget."""

    frames: pa.Table
    vectors: np.ndarray  # embedding of each row of `frames`
    scenarios: np.ndarray  # scenario id of each row (None for fill frames)
    n_pool: int
    order: np.ndarray  # rows of `frames` picked, rank 1 first


def cluster_scenarios(st: RunState, spark: Any, events: Events,
                      frames_index: VectorIndex) -> tuple[Picks, pa.Table]:
    """Scenarios over the event frames' embeddings (FAISS k-means), their statistics (Spark)."""
    from edgemine.mining.scenarios import cluster
    from edgemine.mining.spark_aggregate import run_scenarios

    spec = st.spec
    kept = events.kept.sort_by([("score", "descending"), ("frame_id", "ascending")])
    rows = positions(kept.column("frame_id"), frames_index.ids.column("frame_id").combine_chunks())
    vecs = frames_index.reconstruct(rows.tolist()) if len(rows) else np.zeros((0, 1))
    scen = cluster(vecs, kept.column("score").to_numpy(), k=spec.scenarios.k, seed=spec.seed,
                   normalize=spec.index.metric == "cosine")
    assign = pa.table({"frame_id": kept.column("frame_id"), "scenario_id": pa.array(list(scen), pa.string())})
    pq.write_table(assign, st.work / "assignments.parquet")
    scen_path = run_scenarios(spark, event_frames_path=events.paths["event_frames"],
                              assignments_path=st.work / "assignments.parquet", out_path=st.work / "agg" / "scenarios")
    scen_stats = read_as(scen_path, SCENARIO_STATS_SCHEMA)
    st.counts["scenarios"] = scen_stats.num_rows
    picks = Picks(frames=kept, vectors=vecs, scenarios=np.asarray(scen, dtype=object), n_pool=kept.num_rows,
                  order=np.zeros(0, np.int64))
    return picks, scen_stats


def select_candidates(st: RunState, picks: Picks, events: Events, *, fused_path: Path, man: Manifest,
                      frames_index: VectorIndex) -> Picks:
    """The budget: every event once, then the best frames left, in events or not (mining/select/budget.py);
    with `selection.fill` off, the events only."""
    from edgemine.mining.select import make_strategy

    spec, sel, kept = st.spec, st.spec.selection, picks.frames
    opts = {"diversity": sel.diversity} if sel.strategy == "kcenter" else (
        {"seed": spec.seed} if sel.strategy == "random" else {})
    pool = Pool(scores=kept.column("score").to_numpy().astype(np.float64), embeddings=picks.vectors,
                event_ids=np.asarray(kept.column("event_id").to_pylist(), dtype=object), scenario_ids=picks.scenarios,
                drive_ids=man.drive_codes[positions(kept.column("frame_id"), man.ids)])
    strategy, n_pool = make_strategy(sel.strategy, **opts), picks.n_pool
    caps = Caps(per_event=sel.per_event_cap, per_scenario=sel.per_scenario_cap, per_drive=sel.per_drive_cap)
    if sel.fill:
        order = strategy.select(pool, budget=spec.budget,
                                caps=Caps(per_event=1, per_scenario=caps.per_scenario, per_drive=caps.per_drive))
        st.log(f"  round 1: {len(order)} events, one frame each, with {sel.strategy}")
        picks = Picks(frames=kept, vectors=picks.vectors, scenarios=picks.scenarios, n_pool=n_pool, order=order)
        if len(order) < spec.budget:
            picks = fill_budget(st, picks, pool=pool, caps=caps, fused_path=fused_path, man=man,
                                event_frames=events.event_of.column("frame_id"), frames_index=frames_index)
    else:
        order = strategy.select(pool, budget=spec.budget, caps=caps)
        picks = Picks(frames=kept, vectors=picks.vectors, scenarios=picks.scenarios, n_pool=n_pool, order=order)
    order = picks.order
    n_event = int((order < n_pool).sum())
    st.counts.update(candidates=int(len(order)), budget=spec.budget, above_threshold=n_event,
                     filled=int(len(order)) - n_event)
    if n_event < spec.budget:
        st.notes.append(
            f"{n_event} of the {spec.budget} candidates are frames of events above the thresholds "
            f"({n_pool} de-duplicated event frames in {events.stats.num_rows} events); "
            + (f"{len(order) - n_event} are the best frames outside every event by fused score, one per "
               f"drive per {sel.fill_nms_s:g} s (selected_by = 'fill')" if sel.fill
               else "selection.fill is off, so the budget is not filled"))
    st.log(f"  selected {len(order)} candidates (budget {spec.budget}): {n_event} from events, "
           f"{len(order) - n_event} fill")
    return picks


def fill_budget(st: RunState, picks: Picks, *, pool: Pool, caps: Caps, fused_path: Path, man: Manifest,
                event_frames: pa.ChunkedArray, frames_index: VectorIndex) -> Picks:
    """Round 2 of the selection: the rest of the budget to the best of more event frames and the fill.

    The fill is the best frames outside every event by fused score, one per drive per `fill_nms_s`, none
    that close to a round-1 pick (temporal NMS); frames of events are never fill, so the event and scenario
    caps hold; `per_drive_cap` counts both kinds.
    `edgemine.mining.select.budget.spend_rest` merges the two by score. Returns the picks with the fill
    frames appended (event_id and scenario null) and the extended order. Reads one score per frame (as
    fusing does).
    """
    from edgemine.mining.select.budget import spend_rest

    spec, order = st.spec, picks.order
    need = spec.budget - len(order)
    scores = pq.read_table(fused_path, columns=["frame_id", "score"])
    ids = scores.column("frame_id").combine_chunks()
    rows = positions(ids, man.ids)
    drive = man.drive_codes[rows]
    ts = pc.cast(man.table.column("timestamp"), pa.int64()).to_numpy()[rows]
    chosen = positions(picks.frames.column("frame_id").take(pa.array(order.astype(np.int64))), ids)
    free = np.ones(len(ids), dtype=bool)
    in_event = positions(event_frames, ids)
    free[in_event[in_event >= 0]] = False
    cand = np.flatnonzero(free)
    score = scores.column("score").to_numpy()
    fill_rows, more = spend_rest(pool, order, caps=caps, need=need, fill_scores=score[cand], fill_drives=drive[cand],
                                 fill_ts_us=ts[cand], taken=(drive[chosen], ts[chosen]),
                                 window_s=spec.selection.fill_nms_s)
    picked = cand[fill_rows]
    fill_ids = ids.take(pa.array(picked))
    fill = pa.table({"frame_id": fill_ids, "event_id": pa.nulls(len(picked), pa.string())})
    table = pa.concat_tables([picks.frames.select(["frame_id", "event_id"]), fill])  # fill row j is pool row n + j
    vecs = frames_index.reconstruct(positions(fill_ids, frames_index.ids.column("frame_id").combine_chunks()).tolist())
    vecs = np.vstack([picks.vectors.reshape(-1, vecs.shape[1]), vecs]) if len(picked) else picks.vectors
    scen = np.concatenate([picks.scenarios, np.full(len(picked), None, dtype=object)])
    return Picks(frames=table, vectors=vecs, scenarios=scen, n_pool=picks.n_pool,
                 order=np.concatenate([order, more]).astype(np.int64))
