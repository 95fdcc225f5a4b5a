"""Publish confirmed edge cases as a new version of a Delta Lake training set, with lineage.

One publish = one Delta commit whose commit metadata is the lineage (mining runs, encoder/model ids, review
policy, reviewer counts, agreement, code version). Rows are keyed by `frame_id`: publishing the same
decisions again adds nothing and makes no commit. Concurrent publishers are safe: the write is a Delta MERGE
(insert when not matched), and a commit conflict is retried against the new table state, so no row is lost
or duplicated. New metadata columns merge into the schema (older versions read them as null).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgemine.contracts import SPLITS, TRAINING_SCHEMA, cast_to
from edgemine.errors import ConfigError, SchemaError

DEFAULT_SPLITS: dict[str, float] = {"train": 0.8, "val": 0.2}


@dataclass(frozen=True)
class SplitPolicy:
    """Deterministic split by drive: a drive's frames all land in one split, whatever else is published."""

    ratios: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SPLITS))
    salt: str = "edgemine-split-v1"

    def __post_init__(self) -> None:
        if not self.ratios:
            raise ConfigError("split ratios are empty; give e.g. train=0.8,val=0.2")
        for name, r in self.ratios.items():
            if name not in (*SPLITS, "test"):
                raise ConfigError(f"split name {name!r} is not one of {[*SPLITS, 'test']}")
            if not 0 <= r <= 1:
                raise ConfigError(f"split ratio {name}={r} must be between 0 and 1")
        total = sum(self.ratios.values())
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"split ratios {dict(self.ratios)} sum to {total:g}, not 1")

    @classmethod
    def parse(cls, text: str) -> SplitPolicy:
        """`train=0.8,val=0.2` -> SplitPolicy."""
        ratios: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = part.partition("=")
            try:
                ratios[name.strip()] = float(value)
            except ValueError:
                raise ConfigError(f"split {part!r} is not NAME=RATIO (e.g. train=0.8,val=0.2)") from None
            if not sep:
                raise ConfigError(f"split {part!r} is not NAME=RATIO (e.g. train=0.8,val=0.2)")
        return cls(ratios=ratios)

    def to_json(self) -> str:
        return json.dumps({"ratios": dict(self.ratios), "salt": self.salt}, sort_keys=True)


def assign_split(drive_ids: list[str] | pa.Array | pa.ChunkedArray, policy: SplitPolicy) -> pa.Array:
    """The split of each row, a pure function of (drive_id, policy)."""
    ids = drive_ids.to_pylist() if isinstance(drive_ids, pa.Array | pa.ChunkedArray) else list(drive_ids)
    names = list(policy.ratios)
    cum, acc = [], 0.0
    for n in names:
        acc += policy.ratios[n]
        cum.append(acc)
    out = []
    for d in ids:
        h = hashlib.sha256(f"{policy.salt}:{d}".encode()).digest()
        u = int.from_bytes(h[:8], "big") / 2**64
        out.append(next((n for n, c in zip(names, cum, strict=True) if u < c), names[-1]))
    return pa.array(out, pa.string())


def training_rows(confirmed: pa.Table, *, policy: SplitPolicy) -> pa.Table:
    """Turn confirmed review items into training rows (TRAINING_SCHEMA first, then metadata columns).

    `confirmed` carries the TRAINING_SCHEMA columns except `split`, and optionally a `metadata` column of
    JSON objects (the manifest's extra columns); each metadata key becomes a column.
    """
    if confirmed.num_rows == 0:
        return TRAINING_SCHEMA.empty_table()
    table = confirmed
    if "split" in table.column_names:
        table = table.drop(["split"])
    table = table.append_column("split", assign_split(table.column("drive_id"), policy))
    meta_cols: dict[str, list[Any]] = {}
    if "metadata" in table.column_names:
        raw = table.column("metadata").to_pylist()
        table = table.drop(["metadata"])
        parsed = [json.loads(m) if isinstance(m, str) else (m or {}) for m in raw]
        keys = sorted({k for m in parsed for k in m} - set(table.column_names))
        for k in keys:
            meta_cols[k] = [m.get(k) for m in parsed]
    out = cast_to(table, TRAINING_SCHEMA)
    for k, values in meta_cols.items():
        out = out.append_column(k, _metadata_array(k, values))
    return out


def latest_per_frame(confirmed: pa.Table) -> tuple[pa.Table, int]:
    """One confirmed row per frame: the latest consensus wins (`decided_at`; ties: the larger run_id, item_id).

    Re-mining overlapping data is normal, so two runs may both confirm a frame. Returns the rows kept (in
    their original order) and how many were superseded; the publish lineage still lists every run.
    """
    if confirmed.num_rows == 0 or "frame_id" not in confirmed.column_names:
        return confirmed, 0
    keys = [("frame_id", "ascending")] + [(c, "descending") for c in ("decided_at", "run_id", "item_id")
                                         if c in confirmed.column_names]
    order = pc.sort_indices(confirmed, sort_keys=keys).to_numpy()
    ids = confirmed.column("frame_id").take(pa.array(order)).to_numpy(zero_copy_only=False)
    first = np.ones(len(ids), bool)
    first[1:] = ids[1:] != ids[:-1]
    kept = np.sort(order[first])
    return confirmed.take(pa.array(kept)), int(confirmed.num_rows - len(kept))


def _metadata_array(name: str, values: list[Any]) -> pa.Array:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.array(values, pa.bool_())
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array([None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in values],
                    pa.string())


@dataclass(frozen=True)
class PublishResult:
    dataset: str
    version: int | None  # the new version, or None when nothing was new
    added: int
    already_present: int
    attempts: int
    seconds: float
    lineage: dict[str, str]
    added_ids: tuple[str, ...] = ()


def _table_exists(path: str) -> bool:
    from deltalake import DeltaTable

    try:
        DeltaTable(path)
        return True
    except Exception as exc:  # deltalake raises TableNotFoundError (and OSError-like errors on some stores)
        if type(exc).__name__ == "TableNotFoundError":
            return False
        raise


def _existing_ids(path: str) -> set[str]:
    from deltalake import DeltaTable

    from edgemine.jobs.datasets import arrow_dataset

    return set(arrow_dataset(DeltaTable(path)).to_table(columns=["frame_id"]).column("frame_id").to_pylist())


def _lineage_strings(lineage: Mapping[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str) for k, v in lineage.items()}


def publish(
    rows: pa.Table,
    dataset: str,
    *,
    lineage: Mapping[str, Any],
    max_attempts: int = 20,
    storage_options: dict[str, str] | None = None,
) -> PublishResult:
    """Add `rows` (from `training_rows`) not yet in `dataset` as one new Delta version.

    Returns the new version, or version=None when every row was already there (no empty commits).
    """
    from deltalake import CommitProperties, write_deltalake
    from deltalake.exceptions import CommitFailedError

    t0 = time.perf_counter()
    missing = [f.name for f in TRAINING_SCHEMA if f.name not in rows.column_names]
    if missing:
        raise SchemaError(f"rows to publish lack column(s) {missing}; build them with training_rows()")
    if rows.num_rows:
        counts = pc.value_counts(rows.column("frame_id"))
        repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
        if len(repeated):
            raise SchemaError(f"rows to publish repeat frame_id {repeated[0].as_py()!r}")
    meta = _lineage_strings({**lineage, "edgemine.rows": rows.num_rows})
    attempts = 0
    while True:
        attempts += 1
        try:
            if not _table_exists(dataset):
                if rows.num_rows == 0:
                    return PublishResult(dataset, None, 0, 0, attempts, time.perf_counter() - t0, meta)
                meta["edgemine.added"] = str(rows.num_rows)
                # max_commit_retries=0: a creator that loses the race for version 0 must not retry its
                # commit as version 1 (delta-rs would: a blind append does not conflict), which would add
                # every row a second time; it fails here and retries below as a MERGE into the winner's table.
                write_deltalake(dataset, rows, mode="error", storage_options=storage_options,
                                name="edge_cases", description="edge cases confirmed by edgemine review",
                                commit_properties=CommitProperties(custom_metadata=meta, max_commit_retries=0))
                return PublishResult(dataset, _version(dataset), rows.num_rows, 0, attempts,
                                     time.perf_counter() - t0, meta, tuple(rows.column("frame_id").to_pylist()))
            existing = _existing_ids(dataset)
            keep = pa.array([fid not in existing for fid in rows.column("frame_id").to_pylist()], pa.bool_())
            new = rows.filter(keep)
            if new.num_rows == 0:
                return PublishResult(dataset, None, 0, rows.num_rows, attempts, time.perf_counter() - t0, meta)
            meta["edgemine.added"] = str(new.num_rows)
            from deltalake import DeltaTable

            dt = DeltaTable(dataset, storage_options=storage_options)
            metrics = (
                dt.merge(new, predicate="t.frame_id = s.frame_id", source_alias="s", target_alias="t",
                         merge_schema=True, commit_properties=CommitProperties(custom_metadata=meta))
                .when_not_matched_insert_all()
                .execute()
            )
            added = int(metrics.get("num_target_rows_inserted", new.num_rows))
            return PublishResult(dataset, dt.version(), added, rows.num_rows - new.num_rows, attempts,
                                 time.perf_counter() - t0, meta, tuple(new.column("frame_id").to_pylist()))
        except CommitFailedError:
            if attempts >= max_attempts:
                raise
            time.sleep(random.uniform(0.01, 0.05) * attempts)  # another publisher won; re-read and retry
        except Exception as exc:
            # Two publishers creating the table at once: the loser sees "already exists"; retry as a merge.
            if "already exists" in str(exc).lower() and attempts < max_attempts:
                continue
            raise


def _version(dataset: str) -> int:
    from deltalake import DeltaTable

    return DeltaTable(dataset).version()


# ================================================================ from the review store
def code_version() -> str:
    """edgemine's version plus the git commit when run from a checkout."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    try:
        v = version("edgemine")
    except PackageNotFoundError:
        v = "0+unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, text=True,
                             capture_output=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{v}+g{sha}" if sha else v


def review_lineage(session: Any, *, run_ids: list[str]) -> dict[str, Any]:
    """Lineage of a publish from the review store: runs, encoders, policies, reviewers, agreement."""
    from sqlalchemy import func, select

    from edgemine.review_api import storage
    from edgemine.review_api.db import Decision

    runs: dict[str, Any] = {}
    for rid in run_ids:
        run = storage.get_run(session, run_id=rid)
        agreement = storage.agreement_metrics(session, run_id=rid)
        runs[rid] = {
            "source": run.source,
            "encoder": run.info.get("encoder_id") or run.info.get("encoder"),
            "models": run.info.get("models"),
            "policy": {"overlap_fraction": run.overlap_fraction, "overlap_reviews": run.overlap_reviews,
                       "gold_rate": run.gold_rate, "min_agreement": run.min_agreement,
                       "ds_min_confidence": run.ds_min_confidence},
            "agreement": {k: agreement.get(k) for k in ("items", "cohen_kappa_mean", "fleiss_kappa",
                                                        "krippendorff_alpha")},
        }
    n_reviewers = session.scalar(select(func.count(func.distinct(Decision.reviewer_id)))
                                 .where(Decision.run_id.in_(run_ids))) if run_ids else 0
    n_decisions = session.scalar(select(func.count()).select_from(Decision).where(Decision.run_id.in_(run_ids))
                                 ) if run_ids else 0
    return {
        "mining_runs": run_ids,
        "encoders": sorted({str(r["encoder"]) for r in runs.values() if r["encoder"]}),
        "review_policy": {rid: r["policy"] for rid, r in runs.items()},
        "agreement": {rid: r["agreement"] for rid, r in runs.items()},
        "reviewers": int(n_reviewers or 0),
        "decisions": int(n_decisions or 0),
        "runs": {rid: {"source": r["source"], "models": r["models"]} for rid, r in runs.items()},
        "code_version": code_version(),
    }


@dataclass(frozen=True)
class ReviewPublish:
    result: PublishResult
    latencies_s: list[float]  # per added row: readable in the dataset minus its consensus time


def publish_from_review(
    db: Any,
    dataset: str,
    *,
    run_id: str | None = None,
    policy: SplitPolicy | None = None,
    since: Any = None,
) -> ReviewPublish:
    """Publish every confirmed edge case in the review store (`db`: a URL or review_api.db.Database).

    A frame confirmed in several runs is published once, from its latest consensus (`latest_per_frame`);
    the lineage lists every run and how many confirmations were superseded. A frame already in the dataset
    keeps its published row (rows are keyed by frame_id).
    """
    from datetime import UTC, datetime

    from edgemine.review_api import storage
    from edgemine.review_api.db import Database

    database = Database(db) if isinstance(db, str) else db
    with database.read() as s:
        confirmed = storage.confirmed_items(s, run_id=run_id, since=since)
        run_ids = sorted(set(confirmed.column("run_id").to_pylist()))
        lineage = review_lineage(s, run_ids=run_ids) if run_ids else {"mining_runs": []}
    confirmed, superseded = latest_per_frame(confirmed)
    lineage["superseded_confirmations"] = superseded  # frames confirmed by several runs: the latest won
    rows = training_rows(confirmed.drop(["item_id", "consensus_method"]), policy=policy or SplitPolicy())
    lineage["splits"] = json.loads((policy or SplitPolicy()).to_json())
    result = publish(rows, dataset, lineage=lineage)
    latencies: list[float] = []
    if result.added:
        readable = datetime.now(UTC)  # publish returned: the new version is committed and readable
        added = set(result.added_ids)
        for fid, decided in zip(rows.column("frame_id").to_pylist(), rows.column("decided_at").to_pylist(),
                                strict=True):
            if fid in added and decided is not None:
                decided = decided if decided.tzinfo else decided.replace(tzinfo=UTC)
                latencies.append((readable - decided).total_seconds())
    if isinstance(db, str):
        database.dispose()
    return ReviewPublish(result, latencies)


def watch_and_publish(
    db: Any,
    dataset: str,
    *,
    interval_s: float = 5.0,
    min_new: int = 1,
    run_id: str | None = None,
    policy: SplitPolicy | None = None,
    stop: Any = None,
    on_publish: Any = None,
    poll_s: float = 0.5,
) -> list[ReviewPublish]:
    """Continuous publishing: publish when `min_new` new confirmations are waiting, or every `interval_s`.

    Runs until `stop` (a threading.Event) is set; returns every publish that added rows. Each one's
    `latencies_s` is the time from consensus to readable row.
    """
    import threading
    from datetime import timedelta

    from edgemine.review_api import storage
    from edgemine.review_api.db import Database

    if interval_s <= 0 or min_new < 1:
        raise ConfigError(f"interval_s={interval_s} must be > 0 and min_new={min_new} >= 1")
    stop = stop or threading.Event()
    database = Database(db) if isinstance(db, str) else db
    published: list[ReviewPublish] = []
    last = time.monotonic()
    done: set[str] = set()
    watermark = None  # consensus time of the newest confirmation seen; the scan starts a little before it
    try:
        while True:
            stopping = stop.is_set()
            since = watermark - timedelta(seconds=5) if watermark is not None else None
            with database.read() as s:
                fresh = storage.confirmed_items(s, run_id=run_id, since=since)
            ids = fresh.column("frame_id").to_pylist()
            waiting = [f for f in ids if f not in done]
            if fresh.num_rows:
                newest = max(d for d in fresh.column("decided_at").to_pylist() if d is not None)
                watermark = newest if watermark is None else max(watermark, newest)
            elapsed = time.monotonic() - last
            if waiting and (len(waiting) >= min_new or elapsed >= interval_s or stopping):
                out = publish_from_review(database, dataset, run_id=run_id, policy=policy, since=since)
                done.update(waiting)
                last = time.monotonic()
                if out.result.added:
                    published.append(out)
                    if on_publish is not None:
                        on_publish(out)
            if stopping:
                return published
            stop.wait(poll_s)
    finally:
        if isinstance(db, str):
            database.dispose()
