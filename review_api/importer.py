"""Import a mining run's candidates into the review store: idempotent per run, streamed in batches.

Only `candidates.parquet` is read (plus `run.json` for the run id), never the full scores. Per run, the
import fixes the policy: the category taxonomy, root-cause tags, which items get overlapping reviews
(a stable hash sample of `overlap_fraction`), and which items are gold (items whose answer a ground-truth
file knows, sampled to `gold_fraction` of the run). Rows that cannot be reviewed (no frame id, no uri,
no timestamp, ...) are skipped, counted and listed with the reason; nothing is dropped silently.
A re-import of a finished run changes nothing; a re-import of an interrupted one completes it.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session

from edgemine.contracts import NOVELTY_CALIBRATION, SIGNAL_COLUMNS, novelty_calibration_before_column
from edgemine.errors import ConfigError, InputNotFoundError, SchemaError
from edgemine.limits import quote
from edgemine.review_api.db import Database, Item, Run
from edgemine.review_api.settings import Settings
from edgemine.review_api.storage import EDGE, NOT_EDGE, unit_hash

REQUIRED = ("frame_id", "rank", "uri", "drive_id", "timestamp")
KNOWN = {
    *REQUIRED, "score", "reasons", "scenario_id", "event_id", "selected_by", "label", *SIGNAL_COLUMNS,
    NOVELTY_CALIBRATION, "neighbor_ids", "neighbor_uris", "neighbor_distances", "context_uris", "context_offsets_s",
}
NOT_METADATA = {"probs", "embedding", "logits"}  # per-frame arrays, not reviewer-facing metadata
MAX_LISTED_SKIPS = 1000
# A run id is a path segment of /runs/{run_id}: letters, digits, '.', '_', '-', at most 128, no leading dot
# (mining writes e.g. 20260301T090000Z-1a2b3c). A '/' in it would make every run route 404.
RUN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


@dataclass
class ImportReport:
    run_id: str
    items: int  # items of the run in the store after this import
    inserted: int
    already_present: int
    gold: int
    overlap: int
    skipped: int
    skipped_rows: list[dict[str, str | None]] = field(default_factory=list)  # the first MAX_LISTED_SKIPS
    ignored_columns: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    root_causes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Policy:
    categories: tuple[str, ...]
    root_causes: tuple[str, ...]
    overlap_fraction: float
    overlap_reviews: int
    gold_fraction: float
    gold_rate: float
    lease_seconds: int
    min_agreement: float
    ds_min_confidence: float
    amend_window_seconds: int = 600

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Policy:
        values: dict[str, Any] = {
            "categories": settings.categories, "root_causes": settings.root_causes,
            "overlap_fraction": settings.overlap_fraction, "overlap_reviews": settings.overlap_reviews,
            "gold_fraction": settings.gold_fraction, "gold_rate": settings.gold_rate,
            "lease_seconds": settings.lease_seconds, "min_agreement": settings.min_agreement,
            "ds_min_confidence": settings.ds_min_confidence,
            "amend_window_seconds": settings.amend_window_seconds,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        policy = cls(**values)
        policy.check()
        return policy

    def check(self) -> None:
        for name in ("categories", "root_causes"):
            tags = getattr(self, name)
            if not tags or any(not t or not isinstance(t, str) or len(t) > 200 for t in tags):
                raise ConfigError(f"{name}={list(tags)} must be a non-empty list of names (1-200 characters)")
            if len(set(tags)) != len(tags):
                raise ConfigError(f"{name}={list(tags)} repeats a name")
        reserved = {NOT_EDGE, EDGE, "unsure"} & set(self.categories)
        if reserved:
            raise ConfigError(f"categories may not use the verdict name(s) {sorted(reserved)}")
        ranges = {"overlap_fraction": (0, 1), "gold_fraction": (0, 1), "gold_rate": (0, 0.5),
                  "min_agreement": (0, 1), "ds_min_confidence": (0, 1), "overlap_reviews": (2, 3),
                  "lease_seconds": (10, 86_400), "amend_window_seconds": (0, 86_400)}
        for name, (lo, hi) in ranges.items():
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ConfigError(f"{name}={value} must be between {lo} and {hi}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _resolve(uri: str, base: Path) -> str:
    if "://" in uri or os.path.isabs(uri):
        return uri
    return str((base / uri).resolve())


def _read_run_json(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    if not path.exists():
        raise InputNotFoundError(f"run dir {str(run_dir)!r} has no run.json")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise SchemaError(f"{path}: not valid UTF-8 JSON ({quote(str(exc))})") from None
    run_id = info.get("run_id") if isinstance(info, dict) else None
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise SchemaError(f"{path}: run_id={quote(run_id)} must be 1-128 characters of A-Z a-z 0-9 . _ - not "
                          "starting with a dot (it is part of the /runs/{run_id} URLs)")
    return info


Answer = tuple[str, str | None]  # (verdict, category)


def _known_answers(ground_truth: Path, frame_ids: set[str], categories: tuple[str, ...]) -> dict[str, Answer]:
    """Stream the ground-truth file, keeping the answers of this run's frames only."""
    if not ground_truth.exists():
        raise InputNotFoundError(f"ground truth {str(ground_truth)!r} does not exist")
    pf = _parquet(ground_truth, what="ground truth")
    missing = [c for c in ("frame_id", "category", "is_rare") if c not in pf.schema_arrow.names]
    if missing:
        raise SchemaError(f"ground truth {str(ground_truth)!r} lacks column(s) {missing}")
    answers: dict[str, Answer] = {}
    for batch in _batches(pf, ground_truth, what="ground truth", columns=["frame_id", "category", "is_rare"],
                          batch_size=65_536):
        for fid, cat, rare in zip(*(batch.column(i).to_pylist() for i in range(3)), strict=True):
            if fid not in frame_ids:
                continue
            if rare:
                answer = cat if cat in categories else "other" if "other" in categories else None
                if answer is None:
                    raise SchemaError(f"ground truth category {cat!r} (frame_id={fid!r}) is not in the taxonomy "
                                      f"{list(categories)} and it has no 'other'")
                answers[fid] = (EDGE, answer)
            else:
                answers[fid] = (NOT_EDGE, None)
    return answers


def _parquet(path: Path, *, what: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise SchemaError(f"{what} {quote(str(path))}: not readable as Parquet ({quote(str(exc))})") from None


def _batches(pf: pq.ParquetFile, path: Path, *, what: str, **kwargs: Any) -> Iterator[pa.RecordBatch]:
    """pf.iter_batches, with a damaged file's error naming the file (a SchemaError, not a crash mid-import)."""
    try:
        yield from pf.iter_batches(**kwargs)
    except (pa.ArrowException, OSError) as exc:
        raise SchemaError(f"{what} {quote(str(path))}: not readable as Parquet ({quote(str(exc))})") from None


def import_run(
    db: Database,
    run_dir: str | os.PathLike[str],
    *,
    policy: Policy,
    now: datetime | None = None,
    ground_truth: str | os.PathLike[str] | None = None,
    batch_size: int = 5_000,
) -> ImportReport:
    """Load `run_dir/candidates.parquet` into the store under `run.json`'s run_id (see module docstring)."""
    now = now or datetime.now(UTC)
    for name, value in (("run_dir", run_dir), ("ground_truth", ground_truth)):
        if value is not None and "\x00" in str(value):
            raise ConfigError(f"{name}={str(value)!r} contains a NUL byte; it cannot be a path")
    base = Path(run_dir).resolve()
    if not base.is_dir():
        raise InputNotFoundError(f"run dir {str(run_dir)!r} does not exist")
    info = _read_run_json(base)
    run_id: str = info["run_id"]
    cand_path = base / "candidates.parquet"
    if not cand_path.exists():
        raise InputNotFoundError(f"run dir {str(base)!r} has no candidates.parquet")
    pf = _parquet(cand_path, what="candidates")
    names = pf.schema_arrow.names
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise SchemaError(f"{cand_path}: missing required column(s) {missing}; required are {list(REQUIRED)}")
    metadata_cols = [c for c in names if c not in KNOWN and c not in NOT_METADATA]
    # candidates written before the column: what their novelty was calibrated on, from run.json's counts
    calibration_before = (novelty_calibration_before_column(info.get("counts"))
                          if NOVELTY_CALIBRATION not in names else None)
    ignored = [c for c in names if c in NOT_METADATA]

    with db.write() as s:
        run = s.get(Run, run_id)
        if run is not None and run.active:
            return _report_existing(s, run, ignored)
        if run is None:
            small_info = {k: v for k, v in info.items() if isinstance(v, str | int | float | bool) or v is None}
            run = Run(run_id=run_id, source=str(base), imported_at=now, active=False, n_items=0, n_gold=0,
                      categories=list(policy.categories), root_causes=list(policy.root_causes),
                      overlap_fraction=policy.overlap_fraction, overlap_reviews=policy.overlap_reviews,
                      gold_rate=policy.gold_rate, lease_seconds=policy.lease_seconds,
                      min_agreement=policy.min_agreement, ds_min_confidence=policy.ds_min_confidence,
                      amend_window_seconds=policy.amend_window_seconds, info=_jsonable(small_info))
            s.add(run)
        categories = tuple(run.categories)
        overlap_fraction, overlap_reviews = run.overlap_fraction, run.overlap_reviews

    answers: dict[str, tuple[str, str | None]] = {}
    gold_p = 0.0
    if ground_truth is not None and policy.gold_fraction > 0:
        frame_ids = {f for b in _batches(pf, cand_path, what="candidates", columns=["frame_id"])
                     for f in b.column(0).drop_null().to_pylist()}
        answers = _known_answers(Path(ground_truth), frame_ids, categories)
        if answers:
            gold_p = min(1.0, policy.gold_fraction * len(frame_ids) / len(answers))

    inserted = present = skipped = 0
    skipped_rows: list[dict[str, str | None]] = []
    for batch in _batches(pf, cand_path, what="candidates", batch_size=batch_size):
        rows, problems = _rows(batch, run_id=run_id, base=base, metadata_cols=metadata_cols, now=now,
                               answers=answers, gold_p=gold_p, overlap_fraction=overlap_fraction,
                               overlap_reviews=overlap_reviews, calibration_before=calibration_before)
        skipped += len(problems)
        skipped_rows.extend(problems[: max(0, MAX_LISTED_SKIPS - len(skipped_rows))])
        if not rows:
            continue
        with db.write() as s:
            n = _insert_ignoring_duplicates(s, rows)
        inserted += n
        present += len(rows) - n
    with db.write() as s:
        run = s.get(Run, run_id)
        if run is None:  # deleted by someone else while we were importing
            raise SchemaError(f"run {run_id!r} disappeared during its import")
        run.n_items = s.scalar(select(func.count()).where(Item.run_id == run_id)) or 0
        run.n_gold = s.scalar(select(func.count()).where(Item.run_id == run_id, Item.is_gold)) or 0
        run.active = True
        report = _report_existing(s, run, ignored)
    report.inserted, report.already_present = inserted, present
    report.skipped, report.skipped_rows = skipped, skipped_rows
    return report


def _report_existing(s: Session, run: Run, ignored: list[str]) -> ImportReport:
    overlap = s.scalar(select(func.count()).where(Item.run_id == run.run_id, Item.required_reviews > 1)) or 0
    return ImportReport(run_id=run.run_id, items=run.n_items, inserted=0, already_present=run.n_items,
                        gold=run.n_gold, overlap=int(overlap), skipped=0, ignored_columns=ignored,
                        categories=list(run.categories), root_causes=list(run.root_causes))


def _insert_ignoring_duplicates(s: Session, rows: list[dict[str, Any]]) -> int:
    """Insert rows, skipping (run_id, frame_id) pairs already there; returns how many were new."""
    table = cast(Table, Item.__table__)
    dialect = s.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert  # type: ignore[assignment]
    else:  # pragma: no cover - normalize_url admits only these two
        stmt = insert(table)
        s.execute(stmt, rows)
        return len(rows)
    stmt = dialect_insert(table).on_conflict_do_nothing(index_elements=["run_id", "frame_id"]).returning(table.c.id)
    return len(s.execute(stmt, rows).all())  # RETURNING yields only the rows that were inserted


def _list_col(batch: pa.RecordBatch, name: str) -> list[Any]:
    return batch.column(name).to_pylist() if name in batch.schema.names else [None] * batch.num_rows


def _rows(
    batch: pa.RecordBatch,
    *,
    run_id: str,
    base: Path,
    metadata_cols: list[str],
    now: datetime,
    answers: dict[str, tuple[str, str | None]],
    gold_p: float,
    overlap_fraction: float,
    overlap_reviews: int,
    calibration_before: str | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, str | None]]]:
    cols = {name: _list_col(batch, name) for name in KNOWN}
    if NOVELTY_CALIBRATION not in batch.schema.names:
        cols[NOVELTY_CALIBRATION] = [None if _jsonable(v) is None else calibration_before for v in cols["novelty"]]
    ts = batch.column("timestamp")
    if pa.types.is_integer(ts.type):
        ts = ts.cast(pa.timestamp("us", tz="UTC"))
    elif pa.types.is_timestamp(ts.type) and ts.type.tz is None:
        ts = ts.cast(pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))
    elif not pa.types.is_timestamp(ts.type):
        raise SchemaError(f"candidates column 'timestamp' has type {ts.type}; expected timestamp or int64 µs")
    cols["timestamp"] = ts.to_pylist()
    meta_lists = {c: batch.column(c).to_pylist() for c in metadata_cols}
    rows: list[dict[str, Any]] = []
    problems: list[dict[str, str | None]] = []
    for i in range(batch.num_rows):
        fid = cols["frame_id"][i]
        problem = None
        for name in REQUIRED:
            value = cols[name][i]
            if value is None or (isinstance(value, str) and not value.strip()):
                problem = f"{name} is empty"
                break
        if problem is None and not isinstance(fid, str):
            problem = f"frame_id {fid!r} is not a string"
        if problem is None and len(str(fid)) > 300:
            problem = "frame_id is longer than 300 characters"
        if problem is not None:
            problems.append({"frame_id": None if fid is None else str(fid), "reason": problem})
            continue
        stamp = cols["timestamp"][i]
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        gold = answers.get(fid) if answers and unit_hash("gold", run_id, fid) < gold_p else None
        overlap = gold is None and unit_hash("overlap", run_id, fid) < overlap_fraction
        required = 0 if gold else overlap_reviews if overlap else 1
        evidence = {
            "neighbor_ids": cols["neighbor_ids"][i] or [],
            "neighbor_uris": [_resolve(u, base) if u else u for u in (cols["neighbor_uris"][i] or [])],
            "neighbor_distances": _jsonable(cols["neighbor_distances"][i] or []),
            "context_uris": [_resolve(u, base) if u else u for u in (cols["context_uris"][i] or [])],
        }
        if cols[NOVELTY_CALIBRATION][i] is not None:  # "reference" or the value it was calibrated within
            evidence[NOVELTY_CALIBRATION] = str(cols[NOVELTY_CALIBRATION][i])
        if cols["context_offsets_s"][i] is not None:  # signed seconds from the candidate, as context_uris
            evidence["context_offsets_s"] = _jsonable([float(x) if x is not None else None
                                                       for x in cols["context_offsets_s"][i]])
        rows.append({
            "run_id": run_id, "frame_id": fid, "rank": int(cols["rank"][i]),
            "score": _jsonable(cols["score"][i]),
            **{s: _jsonable(cols[s][i]) for s in SIGNAL_COLUMNS},
            "reasons": list(cols["reasons"][i] or []),
            "scenario_id": cols["scenario_id"][i], "event_id": cols["event_id"][i],
            "uri": _resolve(cols["uri"][i], base), "drive_id": str(cols["drive_id"][i]), "timestamp": stamp,
            "label": cols["label"][i],
            "meta": {c: _jsonable(meta_lists[c][i]) for c in metadata_cols},
            "evidence": evidence, "created_at": now,
            "required_reviews": required, "slots_free": required, "n_decisions": 0,
            "is_gold": gold is not None, "gold_verdict": gold[0] if gold else None,
            "gold_category": gold[1] if gold else None,
            "status": "gold" if gold else "queued",
            "consensus_verdict": gold[0] if gold else None, "consensus_category": gold[1] if gold else None,
            "confidence": 1.0 if gold else None, "consensus_method": "gold" if gold else None,
            "consensus_at": now if gold else None,
        })
    return rows, problems
