"""Evaluation against ground truth: event recall, frame precision, per-category coverage, and baselines.

An event counts as found when any of its frames is selected. Frame precision is the fraction of selected
frames that are rare. Baselines get the same number of frames as the run selected: `random` (mean over
seeds), `novelty-only` and `uncertainty-only` (the top frames by that one signal). Pure pandas/numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from jobs.errors import SchemaError

GT_COLUMNS = ("frame_id", "event_id", "category", "is_rare")


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

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def check_ground_truth(gt: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in GT_COLUMNS if c not in gt.columns]
    if missing:
        raise SchemaError(f"ground truth is missing column(s) {missing}; required are {list(GT_COLUMNS)}")
    if gt.empty:
        raise SchemaError("ground truth is empty (0 rows)")
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


def top_by(scores: pd.DataFrame, column: str, n: int) -> list[str]:
    """Frame ids of the n highest values of `column` (ties by frame_id); NaN values come last."""
    s = scores[["frame_id", column]].copy()
    s["_v"] = s[column].astype("float64").fillna(-np.inf)
    s = s.sort_values(["_v", "frame_id"], ascending=[False, True], kind="mergesort")
    return s["frame_id"].head(n).tolist()


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
    signals: Sequence[str] = ("novelty", "uncertainty"),
) -> list[Metrics]:
    """The run's metrics followed by the baselines at the same number of frames."""
    n = len(set(candidates))
    out = [evaluate_selection(candidates, gt, method="edgemine")]
    ids = scores["frame_id"].to_numpy()
    rng = np.random.default_rng(seed)
    rand = [evaluate_selection(list(rng.choice(ids, size=min(n, len(ids)), replace=False)), gt, method="random")
            for _ in range(max(1, random_repeats))]
    out.append(mean_metrics(rand, method=f"random (mean of {len(rand)})"))
    for s in signals:
        if s in scores.columns and scores[s].notna().any():
            out.append(evaluate_selection(top_by(scores, s, n), gt, method=f"{s}-only"))
    return out


def format_table(rows: Sequence[Metrics]) -> str:
    """A Markdown table: one row per method, then per-category coverage."""
    head = "| method | frames | event recall | frame precision | events found | categories found |"
    lines = [head, "|---|---:|---:|---:|---:|---:|"]
    for m in rows:
        lines.append(f"| {m.method} | {m.n_selected} | {m.event_recall:.3f} | {m.frame_precision:.3f} | "
                     f"{m.events_found}/{m.events_total} | {m.categories_found}/{m.categories_total} |")
    cats = sorted({c for m in rows for c in m.coverage})
    if cats:
        lines += ["", "| category | " + " | ".join(m.method for m in rows) + " |",
                  "|---|" + "---:|" * len(rows)]
        for c in cats:
            lines.append(f"| {c} | " + " | ".join(f"{m.coverage.get(c, 0.0):.2f}" for m in rows) + " |")
    return "\n".join(lines)


def evaluate_run(run_dir: str, ground_truth: str, *, random_repeats: int = 20, seed: int = 0) -> list[Metrics]:
    """Read a run's candidates.parquet and scores.parquet and evaluate them against ground truth."""
    import os

    import pyarrow.parquet as pq

    from jobs.errors import InputNotFoundError

    for p in (os.path.join(run_dir, "candidates.parquet"), os.path.join(run_dir, "scores.parquet"), ground_truth):
        if not os.path.exists(p):
            raise InputNotFoundError(f"{p!r} does not exist")
    cands = pq.read_table(os.path.join(run_dir, "candidates.parquet"), columns=["frame_id"]).column(0).to_pylist()
    cols = ["frame_id", "novelty", "uncertainty", "rarity", "trigger"]
    scores = pq.read_table(os.path.join(run_dir, "scores.parquet"), columns=cols).to_pandas()
    gt = check_ground_truth(pq.read_table(ground_truth).to_pandas())
    return evaluate(cands, scores, gt, random_repeats=random_repeats, seed=seed)
