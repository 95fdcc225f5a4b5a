"""Evaluation against ground truth: event recall, frame precision, per-category coverage, and baselines.

An event counts as found when any of its frames is selected. Frame precision is the fraction of selected
frames that are rare. Baselines get the same number of frames as the run selected:

- `plain kNN + NMS` — the strongest simple baseline (DESIGN.md, "Mining quality"): the frames' kNN distance
  to the reference (the run's own `novelty_raw`: same embeddings, same k), taken highest first with temporal
  non-maximum suppression — at most one frame per drive per `nms_s` seconds — until the budget is filled.
- `random` — the mean over seeded draws.

Threshold-free quality of a whole score column: AUROC and average precision of rare vs ordinary frames,
for the run's fused score and for the baseline's kNN distance. Pure pandas/numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from edgemine.errors import ConfigError, SchemaError
from edgemine.mining.select.nms import temporal_nms

GT_COLUMNS = ("frame_id", "event_id", "category", "is_rare")
PLAIN = "plain kNN + NMS"


@dataclass(frozen=True)
class Metrics:
    method: str
    n_selected: int
    event_recall: float
    frame_precision: float
    events_found: int
    events_total: int
    categories_found: int
    categories_total: int
    coverage: dict[str, float] = field(default_factory=dict)  # category -> fraction of its events found
    auroc: float = float("nan")  # of the method's score over all frames (rare vs ordinary); NaN: no score
    average_precision: float = float("nan")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def check_ground_truth(gt: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in GT_COLUMNS if c not in gt.columns]
    if missing:
        raise SchemaError(f"ground truth is missing column(s) {missing}; required are {list(GT_COLUMNS)}")
    if gt.empty:
        raise SchemaError("ground truth is empty (0 rows)")
    dup = gt["frame_id"][gt["frame_id"].duplicated()]
    if len(dup):
        raise SchemaError(f"ground truth has duplicate frame_id {dup.iloc[0]!r} ({len(dup)} duplicates)")
    return gt


def evaluate_selection(selected: Sequence[str], gt: pd.DataFrame, *, method: str = "run") -> Metrics:
    """Metrics of one selection (frame ids) against ground truth (GT_COLUMNS)."""
    check_ground_truth(gt)
    sel = pd.Index(pd.unique(pd.Series(list(selected), dtype="object")))
    g = gt.set_index("frame_id")
    known = sel[sel.isin(g.index)]
    rare_sel = int(g.loc[known, "is_rare"].astype(bool).sum()) if len(known) else 0
    events = gt[gt["is_rare"].astype(bool) & gt["event_id"].notna()][["event_id", "category", "frame_id"]]
    ev_cat = events.drop_duplicates("event_id").set_index("event_id")["category"]
    found_events = set(events.loc[events["frame_id"].isin(sel), "event_id"])
    coverage: dict[str, float] = {}
    for cat, ids in ev_cat.groupby(ev_cat).groups.items():
        ids = list(ids)
        coverage[str(cat)] = sum(e in found_events for e in ids) / len(ids)
    total = len(ev_cat)
    return Metrics(
        method=method,
        n_selected=len(sel),
        event_recall=len(found_events) / total if total else float("nan"),
        frame_precision=rare_sel / len(sel) if len(sel) else float("nan"),
        events_found=len(found_events),
        events_total=total,
        categories_found=sum(v > 0 for v in coverage.values()),
        categories_total=len(coverage),
        coverage=dict(sorted(coverage.items())),
    )


def _labels_scores(is_rare: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(is_rare, dtype=bool)
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)  # no score = least suspicious
    if len(y) != len(s):
        raise ConfigError(f"is_rare has {len(y)} entries but scores has {len(s)}")
    return y, s


def auroc(is_rare: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for rare vs ordinary frames (ties count half); NaN if one class."""
    y, s = _labels_scores(is_rare, scores)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = pd.Series(s).rank(method="average").to_numpy()
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def average_precision(is_rare: np.ndarray, scores: np.ndarray) -> float:
    """Average precision (area under precision-recall, step-wise, ties as one threshold); NaN if no rare frame."""
    y, s = _labels_scores(is_rare, scores)
    pos = int(y.sum())
    if pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # the last row of each distinct score
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_metrics(runs: Sequence[Metrics], *, method: str) -> Metrics:
    cats = sorted({c for m in runs for c in m.coverage})
    return Metrics(
        method=method,
        n_selected=int(round(np.mean([m.n_selected for m in runs]))),
        event_recall=float(np.mean([m.event_recall for m in runs])),
        frame_precision=float(np.mean([m.frame_precision for m in runs])),
        events_found=int(round(np.mean([m.events_found for m in runs]))),
        events_total=runs[0].events_total,
        categories_found=int(round(np.mean([m.categories_found for m in runs]))),
        categories_total=runs[0].categories_total,
        coverage={c: float(np.mean([m.coverage.get(c, 0.0) for m in runs])) for c in cats},
    )


def evaluate(
    candidates: Sequence[str],
    scores: pd.DataFrame,
    gt: pd.DataFrame,
    *,
    random_repeats: int = 20,
    seed: int = 0,
    nms_s: float = 1.0,
) -> list[Metrics]:
    """The run's metrics, then the plain baseline and random at the same number of frames.

    `scores` has one row per scored frame: frame_id, score (the fused score), and for the plain baseline
    novelty_raw (kNN distance to the reference), drive_id and ts_us (µs). Without novelty_raw (novelty
    turned off) the plain baseline is left out.
    """
    check_ground_truth(gt)
    n = len(set(candidates))
    rare = scores["frame_id"].map(gt.set_index("frame_id")["is_rare"].astype(bool)).fillna(False).to_numpy(bool)
    out = [evaluate_selection(candidates, gt, method="edgemine")]
    if "score" in scores:
        fused = scores["score"].to_numpy()
        out[0] = replace(out[0], auroc=auroc(rare, fused), average_precision=average_precision(rare, fused))
    if "novelty_raw" in scores and scores["novelty_raw"].notna().any():
        missing = [c for c in ("drive_id", "ts_us") if c not in scores]
        if missing:
            raise SchemaError(f"the plain baseline needs {missing} beside novelty_raw in the scores")
        knn = scores["novelty_raw"].to_numpy(np.float64)
        rows = temporal_nms(knn, scores["drive_id"].to_numpy(), scores["ts_us"].to_numpy(), n=n, window_s=nms_s)
        m = evaluate_selection(scores["frame_id"].to_numpy()[rows].tolist(), gt, method=PLAIN)
        out.append(replace(m, auroc=auroc(rare, knn), average_precision=average_precision(rare, knn)))
    ids = scores["frame_id"].to_numpy()
    rng = np.random.default_rng(seed)
    rand = [evaluate_selection(list(rng.choice(ids, size=min(n, len(ids)), replace=False)), gt, method="random")
            for _ in range(max(1, random_repeats))]
    out.append(mean_metrics(rand, method=f"random (mean of {len(rand)})"))
    return out


def format_table(rows: Sequence[Metrics]) -> str:
    """A Markdown table: one row per method, then per-category coverage."""
    head = ("| method | frames | event recall | frame precision | events found | categories found | AUROC "
            "| AP |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def num(x: float) -> str:
        return "—" if np.isnan(x) else f"{x:.3f}"

    for m in rows:
        lines.append(f"| {m.method} | {m.n_selected} | {m.event_recall:.3f} | {m.frame_precision:.3f} | "
                     f"{m.events_found}/{m.events_total} | {m.categories_found}/{m.categories_total} | "
                     f"{num(m.auroc)} | {num(m.average_precision)} |")
    cats = sorted({c for m in rows for c in m.coverage})
    if cats:
        lines += ["", "| category | " + " | ".join(m.method for m in rows) + " |",
                  "|---|" + "---:|" * len(rows)]
        for c in cats:
            lines.append(f"| {c} | " + " | ".join(f"{m.coverage.get(c, 0.0):.2f}" for m in rows) + " |")
    return "\n".join(lines)


def evaluate_run(run_dir: str, ground_truth: str, *, random_repeats: int = 20, seed: int = 0,
                 nms_s: float = 1.0) -> list[Metrics]:
    """Read a run's candidates.parquet and scores.parquet (+ its manifest's drive and time columns) and
    evaluate them against ground truth."""
    import json
    import os
    from pathlib import Path

    import pyarrow.parquet as pq

    from edgemine.errors import InputNotFoundError

    for p in (os.path.join(run_dir, "candidates.parquet"), os.path.join(run_dir, "scores.parquet"),
              os.path.join(run_dir, "run.json"), ground_truth):
        if not os.path.exists(p):
            raise InputNotFoundError(f"{p!r} does not exist")
    cands = pq.read_table(os.path.join(run_dir, "candidates.parquet"), columns=["frame_id"]).column(0).to_pylist()
    names = set(pq.read_schema(os.path.join(run_dir, "scores.parquet")).names)
    cols = [c for c in ("frame_id", "score", "novelty_raw") if c in names]
    scores = pq.read_table(os.path.join(run_dir, "scores.parquet"), columns=cols).to_pandas()
    frames = json.loads(Path(run_dir, "run.json").read_text())["spec"]["frames"]
    if not os.path.exists(frames):
        raise InputNotFoundError(f"the run's manifest {frames!r} (run.json spec.frames) does not exist")
    scores = scores.merge(manifest_times(frames), on="frame_id", how="inner")  # every scored frame is in it
    gt = check_ground_truth(pq.read_table(ground_truth).to_pandas())
    return evaluate(cands, scores, gt, random_repeats=random_repeats, seed=seed, nms_s=nms_s)


def manifest_times(frames: str) -> pd.DataFrame:
    """frame_id, drive_id, ts_us (int64 µs) of a frames manifest, streamed and validated."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from edgemine.contracts import iter_manifest

    parts = [pd.DataFrame({"frame_id": t.column("frame_id").to_numpy(), "drive_id": t.column("drive_id").to_numpy(),
                           "ts_us": pc.cast(t.column("timestamp"), pa.int64()).to_numpy()})
             for t in iter_manifest(frames, columns=["frame_id", "drive_id", "timestamp", "uri"])]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["frame_id", "drive_id", "ts_us"])
