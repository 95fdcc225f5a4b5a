"""Publish confirmed edge cases as a new version of a Delta Lake training set, with lineage.

One publish = one Delta commit whose commit metadata is the lineage (mining runs, encoder/model ids, review
policy, reviewer counts, agreement, code version) plus the dataset's class list (`edgemine.classes`, only
ever extended). Rows are keyed by `frame_id`: publishing the same decisions again adds nothing and makes no
commit. Concurrent publishers are safe: the write is a Delta MERGE (insert when not matched), and a commit
conflict is retried against the new table state, so no row is lost or duplicated. Columns are typed (lists,
int64, float64, bool) and follow the evolution rules of `contracts.evolve_training_schema`; frames are copied,
linked or referenced (`dataset_frames`); the version must pass the publish gates (`publish_gates`).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgemine.contracts import (
    CLASSES_ADDED_KEY,
    CLASSES_KEY,
    SPLITS,
    TRAINING_SCHEMA,
    canonical_schema,
    cast_to,
    evolve_training_schema,
)
from edgemine.errors import ConfigError, PublishRefusedError, SchemaError
from edgemine.jobs.dataset_frames import FrameMode, place_frames
from edgemine.jobs.publish_gates import PublishGates, check_gates

__all__ = ["DEFAULT_FRAMES", "PublishGates", "PublishRefusedError", "PublishResult", "ReviewPublish", "SplitPolicy",
           "assign_split", "latest_per_frame", "publish", "publish_from_review", "training_rows",
           "watch_and_publish"]
# A training engineer wants a dataset that still opens when the mining machine's scratch space is gone:
# frames are copied under the dataset root unless told otherwise.
DEFAULT_FRAMES: FrameMode = "copy"

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
    if "source_uri" not in table.column_names:
        table = table.append_column("source_uri", pa.nulls(table.num_rows, pa.string()))
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
    """A metadata column at its own type: bool, int64, float64 (ints and floats mixed), string, list<string>,
    list<int64>/list<float64>; objects, mixed lists and mixed scalars as JSON text. All-null: the null type
    (the dataset's own type, or left out - see contracts.evolve_training_schema)."""
    present = [v for v in values if v is not None]
    if not present:
        return pa.nulls(len(values))
    if all(isinstance(v, bool) for v in present):
        return pa.array(values, pa.bool_())
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.array(values, pa.int64())
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    if all(isinstance(v, str) for v in present):
        return pa.array(values, pa.string())
    if all(isinstance(v, list) for v in present):
        items = [x for v in present for x in v]
        if all(x is not None for x in items):
            value_type = _metadata_array(name, items).type if items else pa.string()
            if pa.types.is_string(value_type) or pa.types.is_int64(value_type) or pa.types.is_float64(value_type):
                conv = float if pa.types.is_float64(value_type) else (lambda x: x)
                return pa.array([None if v is None else [conv(x) for x in v] for v in values],
                                pa.list_(value_type))
    return pa.array([None if v is None else (v if isinstance(v, str) else json.dumps(v, sort_keys=True))
                     for v in values], pa.string())


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
    classes: tuple[str, ...] = ()  # the dataset's class list after this publish (index = class index)
    classes_added: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # publish gates that warned
    frames: dict[str, Any] = field(default_factory=dict)  # mode, files placed, identical files kept


@dataclass(frozen=True)
class _TableState:
    schema: pa.Schema  # canonical types
    keys: pa.Table  # frame_id, split, category of every row of the latest version
    classes: list[str]


def _table_exists(path: str, storage_options: dict[str, str] | None = None) -> bool:
    from deltalake import DeltaTable

    try:
        DeltaTable(path, storage_options=storage_options)
        return True
    except Exception as exc:  # deltalake raises TableNotFoundError (and OSError-like errors on some stores)
        if type(exc).__name__ == "TableNotFoundError":
            return False
        raise


def _table_state(path: str, storage_options: dict[str, str] | None) -> _TableState | None:
    from deltalake import DeltaTable

    from edgemine.jobs.datasets import arrow_dataset, classes_of

    if not _table_exists(path, storage_options):
        return None
    dt = DeltaTable(path, storage_options=storage_options)
    keys = arrow_dataset(dt).to_table(columns=["frame_id", "split", "category"])
    keys = pa.table({c: keys.column(c).cast(pa.string()) for c in keys.column_names})
    schema = canonical_schema(pa.schema(dt.schema().to_arrow()))
    return _TableState(schema, keys, classes_of(dt, keys.column("category").to_pylist()))


def _lineage_strings(lineage: Mapping[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str) for k, v in lineage.items()}


def extend_classes(current: Sequence[str], *additions: Sequence[str]) -> list[str]:
    """`current` then every class of `additions` not in it, in order: a class list is only ever extended."""
    out = list(current)
    for group in additions:
        for c in group:
            if c not in out:
                out.append(c)
    return out


def _conform(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays([rows.column(f.name).cast(f.type) for f in schema], schema=schema)


def _gate_figures(state: _TableState | None, new: pa.Table) -> dict[str, Any]:
    parts = [new.select(["split", "category"]).cast(pa.schema([("split", pa.string()), ("category", pa.string())]))]
    if state is not None:
        parts.append(state.keys.select(["split", "category"]))
    both = pa.concat_tables(parts)
    splits: dict[str, int] = {}
    train: dict[str, int] = {}
    for sp, cat in zip(both.column("split").to_pylist(), both.column("category").to_pylist(), strict=True):
        splits[sp] = splits.get(sp, 0) + 1
        if sp == "train":
            train[cat] = train.get(cat, 0) + 1
    return {"splits": splits, "train_by_category": train,
            "categories": sorted(set(both.column("category").to_pylist()))}


def publish(
    rows: pa.Table,
    dataset: str,
    *,
    lineage: Mapping[str, Any],
    max_attempts: int = 20,
    storage_options: dict[str, str] | None = None,
    taxonomy: Sequence[str] = (),
    frames: FrameMode = DEFAULT_FRAMES,
    gates: PublishGates | None = None,
    policy: SplitPolicy | None = None,
) -> PublishResult:
    """Add `rows` (from `training_rows`) not yet in `dataset` as one new Delta version.

    Returns the new version, or version=None when every row was already there (no empty commits).
    `taxonomy` seeds (and extends) the dataset's class list; categories outside it are appended, sorted.
    `frames`: copy/link the added rows' frames under the dataset root, or reference their absolute URIs.
    `gates` (None: none; `publish_from_review` passes its own) check the would-be version; a refusal raises
    PublishRefusedError before anything is written. `policy` names the splits the empty-split gate expects.
    """
    from deltalake import CommitProperties, DeltaTable, write_deltalake
    from deltalake.exceptions import CommitFailedError

    from edgemine.jobs.datasets import parse_ref

    t0 = time.perf_counter()
    pinned = parse_ref(dataset).version
    if pinned is not None:
        raise ConfigError(f"dataset={dataset!r} names a version (@v{pinned}); a publish makes the next version "
                          f"of a path: give it without @vN")
    if "source_uri" not in rows.column_names:
        rows = rows.append_column("source_uri", pa.nulls(rows.num_rows, pa.string()))
    missing = [f.name for f in TRAINING_SCHEMA if f.name not in rows.column_names]
    if missing:
        raise SchemaError(f"rows to publish lack column(s) {missing}; build them with training_rows()")
    if rows.num_rows:
        counts = pc.value_counts(rows.column("frame_id"))
        repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
        if len(repeated):
            raise SchemaError(f"rows to publish repeat frame_id {repeated[0].as_py()!r}")
        rows = rows.sort_by("frame_id")  # files hold rows in frame_id order, whatever order they came in
    expected_splits = [n for n, r in (policy or SplitPolicy()).ratios.items() if r > 0]
    base = {**lineage, "edgemine.rows": rows.num_rows}
    attempts = 0
    while True:
        attempts += 1
        meta = _lineage_strings(base)
        try:
            state = _table_state(dataset, storage_options)
            if state is None:
                new = rows
            else:
                existing = set(state.keys.column("frame_id").to_pylist())
                new = rows.filter(pa.array([f not in existing for f in rows.column("frame_id").to_pylist()],
                                           pa.bool_()))
            if new.num_rows == 0:
                return PublishResult(dataset, None, 0, rows.num_rows, attempts, time.perf_counter() - t0, meta,
                                     classes=tuple(state.classes) if state else ())
            schema = evolve_training_schema(state.schema if state else None, canonical_schema(new.schema),
                                            dataset=dataset)
            new = _conform(new, schema)
            before = state.classes if state else []
            classes = extend_classes(before, taxonomy, sorted(set(new.column("category").to_pylist())))
            warnings: list[str] = []
            if gates is not None:
                warnings = check_gates(gates, dataset=dataset, expected_splits=expected_splits,
                                       added_reviews=new.column("n_reviews").to_pylist(),
                                       agreement=lineage.get("agreement") or {}, **_gate_figures(state, new))
            new, frame_stats = place_frames(new, dataset, mode=frames)
            meta.update(_lineage_strings({
                "edgemine.added": new.num_rows, CLASSES_KEY: classes, CLASSES_ADDED_KEY: classes[len(before):],
                "edgemine.frames": frame_stats.lineage(),
                **({"edgemine.gates": gates.lineage(), "edgemine.gate_warnings": warnings} if gates else {}),
            }))
            done: dict[str, Any] = dict(classes=tuple(classes), classes_added=tuple(classes[len(before):]),
                                        warnings=tuple(warnings), frames=frame_stats.lineage())
            if state is None:
                # max_commit_retries=0: a creator that loses the race for version 0 must not retry its
                # commit as version 1 (delta-rs would: a blind append does not conflict), which would add
                # every row a second time; it fails here and retries below as a MERGE into the winner's table.
                write_deltalake(dataset, new, mode="error", storage_options=storage_options,
                                name="edge_cases", description="edge cases confirmed by edgemine review",
                                configuration=TABLE_CONFIGURATION,
                                commit_properties=CommitProperties(custom_metadata=meta, max_commit_retries=0))
                return PublishResult(dataset, _version(dataset, storage_options), new.num_rows, 0, attempts,
                                     time.perf_counter() - t0, meta, tuple(new.column("frame_id").to_pylist()),
                                     **done)
            dt = DeltaTable(dataset, storage_options=storage_options)
            metrics = (
                dt.merge(new, predicate="t.frame_id = s.frame_id", source_alias="s", target_alias="t",
                         merge_schema=True, commit_properties=CommitProperties(custom_metadata=meta))
                .when_not_matched_insert_all()
                .execute()
            )
            added = int(metrics.get("num_target_rows_inserted", new.num_rows))
            return PublishResult(dataset, dt.version(), added, rows.num_rows - new.num_rows, attempts,
                                 time.perf_counter() - t0, meta, tuple(new.column("frame_id").to_pylist()), **done)
        except CommitFailedError:
            if attempts >= max_attempts:
                raise
            time.sleep(random.uniform(0.01, 0.05) * attempts)  # another publisher won; re-read and retry
        except Exception as exc:
            # Two publishers creating the table at once: the loser sees "already exists"; retry as a merge.
            if "already exists" in str(exc).lower() and attempts < max_attempts:
                continue
            raise


# Pinned versions must stay readable for as long as a model trained on them is in use: the commit log (and
# with it time travel and each version's class list) is kept ten years, not Delta's default 30 days.
TABLE_CONFIGURATION = {"delta.logRetentionDuration": "interval 3650 days",
                       "delta.deletedFileRetentionDuration": "interval 3650 days"}


def _version(dataset: str, storage_options: dict[str, str] | None = None) -> int:
    from deltalake import DeltaTable

    return DeltaTable(dataset, storage_options=storage_options).version()


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
            "categories": list(run.categories),
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
        # the review taxonomy of each run: it seeds (and extends) the dataset's class list
        "taxonomy": {rid: r["categories"] for rid, r in runs.items()},
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
    frames: FrameMode = DEFAULT_FRAMES,
    gates: PublishGates | None = None,
) -> ReviewPublish:
    """Publish every confirmed edge case in the review store (`db`: a URL or review_api.db.Database).

    A frame confirmed in several runs is published once, from its latest consensus (`latest_per_frame`);
    the lineage lists every run and how many confirmations were superseded. A frame already in the dataset
    keeps its published row (rows are keyed by frame_id). The runs' review taxonomies seed the dataset's
    class list. `gates` may refuse the version (PublishRefusedError, nothing written); None means
    `PublishGates.warn_only()`: every gate is checked and a failure is a warning in the result and the
    lineage, so a program's loop keeps publishing - pass `PublishGates()` to refuse as the CLI does.

    Reviewers may amend or undo a decision until its item is published, so the snapshot's items are reserved
    in the store before the Delta commit (`storage.reserve_for_publish`, one transaction): an item whose
    consensus changed since the snapshot is left out of this version and listed in the lineage's
    `changed_during_publish` (a later publish takes its new answer), and while reserved an amend or undo is
    refused for a moment (409). After the commit the reservations become the version's publications
    (`storage.mark_published`); if the publish fails, each is settled by what the dataset holds (removed
    unless its row made it in). Reservations left by a dead publisher (older than
    `storage.RESERVATION_STALE_SECONDS`) are settled that way by the next publish into the dataset, first.
    """
    from datetime import UTC, datetime
    from uuid import uuid4

    from edgemine.review_api import storage
    from edgemine.review_api.db import Database

    policy = policy or SplitPolicy()
    database = Database(db) if isinstance(db, str) else db
    name, token = _store_name(dataset), uuid4().hex
    reserved: dict[int, tuple[str, str]] = {}  # this publish's reservations: item id -> (frame_id, run_id)
    settled = False
    try:
        with database.read() as s:
            confirmed = storage.confirmed_items(s, run_id=run_id, since=since)
            run_ids = sorted(set(confirmed.column("run_id").to_pylist()))
            lineage = review_lineage(s, run_ids=run_ids) if run_ids else {"mining_runs": []}
        confirmed, superseded = latest_per_frame(confirmed)
        lineage["superseded_confirmations"] = superseded  # frames confirmed by several runs: the latest won
        _settle_stale(database, dataset, name)
        confirmed, reserved, left_out = _reserve(database, confirmed, name, token)
        lineage.update(left_out)
        item_of = dict(zip(confirmed.column("frame_id").to_pylist(), confirmed.column("item_id").to_pylist(),
                           strict=True))
        rows = training_rows(confirmed.drop(["item_id", "consensus_method"]), policy=policy)
        lineage["splits"] = json.loads(policy.to_json())
        taxonomy = extend_classes([], *(lineage.get("taxonomy") or {}).values())
        result = publish(rows, dataset, lineage=lineage, taxonomy=taxonomy, frames=frames,
                         gates=PublishGates.warn_only() if gates is None else gates, policy=policy)
        readable = datetime.now(UTC)  # publish returned: the new version is committed and readable
        latencies: list[float] = []
        if result.added:
            added = set(result.added_ids)
            for fid, decided in zip(rows.column("frame_id").to_pylist(), rows.column("decided_at").to_pylist(),
                                    strict=True):
                if fid in added and decided is not None:
                    decided = decided if decided.tzinfo else decided.replace(tzinfo=UTC)
                    latencies.append((readable - decided).total_seconds())
        published = {} if result.version is None else {item_of[f]: result.version for f in result.added_ids}
        if reserved or published:
            with database.write() as s:
                removed = storage.settle_reservations(s, dataset=name, token=token, published=published, now=readable)
            settled = True
            if removed < len(reserved):  # see RESERVATION_STALE_SECONDS: this publish took too long
                _log().warning(f"{len(reserved) - removed} of this publish's reservations in {name!r} had gone stale "
                               f"and were settled by another publish; amends to them may have come too late")
    finally:
        try:
            if reserved and not settled:
                _settle(database, dataset, name, reserved, token=token)
        except Exception as exc:  # noqa: BLE001 - the publish's own error matters more; staleness frees them
            _log().warning(f"could not settle this publish's reservations in {name!r} ({exc}); they hold off "
                           f"amends for {storage.RESERVATION_STALE_SECONDS} s, then the next publish settles them")
        finally:
            if isinstance(db, str):
                database.dispose()
    return ReviewPublish(result, latencies)


def _log() -> Any:
    import logging

    return logging.getLogger(__name__)


def _store_name(dataset: str) -> str:
    """How the review store names a dataset (publications, reservations): a URI as given, a path absolute."""
    import os

    return dataset if "://" in dataset else os.path.abspath(dataset)


def _reserve(database: Any, confirmed: pa.Table, name: str, token: str
             ) -> tuple[pa.Table, dict[int, tuple[str, str]], dict[str, list[str]]]:
    """Reserve the snapshot's items for this publish (`storage.reserve_for_publish`); returns the rows that may
    go into the version, the reservations made (item id -> (frame_id, run_id)) and the frames left out, by why,
    for the lineage."""
    from datetime import UTC, datetime

    from edgemine.review_api import storage

    ids = confirmed.column("item_id").to_pylist()
    frames = dict(zip(ids, confirmed.column("frame_id").to_pylist(), strict=True))
    runs = dict(zip(ids, confirmed.column("run_id").to_pylist(), strict=True))
    seen = {int(i): (d, c, r) for i, d, c, r in zip(ids, confirmed.column("decided_at").to_pylist(),
                                                    confirmed.column("category").to_pylist(),
                                                    confirmed.column("root_cause").to_pylist(), strict=True)}
    held = storage.Reservation((), (), ())
    if seen:
        with database.write() as s:
            held = storage.reserve_for_publish(s, seen=seen, dataset=name, token=token, now=datetime.now(UTC))
    keep = {*held.reserved, *held.published}  # published ones are in the dataset already: publish skips them
    left_out = {"changed_during_publish": sorted(frames[i] for i in held.changed),  # published next time
                "in_another_publish": sorted(frames[i] for i in held.elsewhere)}  # that publish adds them
    rows = confirmed.filter(pa.array([i in keep for i in ids], pa.bool_())) if len(keep) < len(ids) else confirmed
    return rows, {i: (frames[i], runs[i]) for i in held.reserved}, left_out


def _settle_stale(database: Any, dataset: str, name: str) -> None:
    """Settle the reservations a dead publisher left in `dataset` (see storage.RESERVATION_STALE_SECONDS)."""
    from datetime import UTC, datetime

    from edgemine.review_api import storage

    with database.read() as s:
        stale = storage.stale_reservations(s, dataset=name, now=datetime.now(UTC))
    if stale:
        _settle(database, dataset, name, stale, token=None)


def _settle(database: Any, dataset: str, name: str, reservations: Mapping[int, tuple[str, str]], *,
            token: str | None) -> None:
    """End reservations by what the dataset holds: an item whose row (its frame, from its run) is there is
    recorded as published at the first version holding it; the others' reservations are removed. `token`:
    this publish's own (it failed); None: stale ones (`storage.settle_reservations`)."""
    from datetime import UTC, datetime

    from edgemine.review_api import storage

    found = _first_versions(dataset, set(reservations.values()))
    published = {i: found[key] for i, key in reservations.items() if key in found}
    with database.write() as s:
        storage.settle_reservations(s, dataset=name, published=published, now=datetime.now(UTC), token=token,
                                    item_ids=list(reservations))


def _first_versions(dataset: str, keys: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The first version of `dataset` holding each (frame_id, run_id) row; rows not in the latest version are
    absent. A publish only adds rows, so a row stays in every later version: a bisection per row, reading each
    probed version's keys once."""
    from deltalake import DeltaTable

    from edgemine.jobs.datasets import arrow_dataset

    if not keys or not _table_exists(dataset):
        return {}
    cache: dict[int, set[tuple[str, str]]] = {}

    def rows_at(version: int | None) -> set[tuple[str, str]]:
        dt = DeltaTable(dataset) if version is None else DeltaTable(dataset, version=version)
        v = dt.version()
        if v not in cache:
            t = arrow_dataset(dt).to_table(columns=["frame_id", "run_id"])
            cache[v] = set(zip(t.column("frame_id").cast(pa.string()).to_pylist(),
                               t.column("run_id").cast(pa.string()).to_pylist(), strict=True))
        return cache[v]

    latest_rows = rows_at(None)
    latest = max(cache)
    out: dict[tuple[str, str], int] = {}
    for key in keys:
        if key not in latest_rows:
            continue
        lo, hi = 0, latest
        while lo < hi:
            mid = (lo + hi) // 2
            if key in (cache[mid] if mid in cache else rows_at(mid)):
                hi = mid
            else:
                lo = mid + 1
        out[key] = lo
    return out


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
    frames: FrameMode = DEFAULT_FRAMES,
    gates: PublishGates | None = None,
    on_refused: Callable[[str], None] | None = None,
) -> list[ReviewPublish]:
    """Continuous publishing: publish when `min_new` new confirmations are waiting, or every `interval_s`.

    Runs until `stop` (a threading.Event) is set; returns every publish that added rows. Each one's
    `latencies_s` is the time from consensus to readable row. A gate refusal means "not yet": the waiting
    confirmations stay waiting (and accumulate), `on_refused` gets the reason (default: the module logger),
    and the next try comes with more confirmations or after `interval_s`. `gates=None`: as publish_from_review.
    """
    import logging
    import threading
    from datetime import timedelta

    from edgemine.review_api import storage
    from edgemine.review_api.db import Database

    if interval_s <= 0 or min_new < 1:
        raise ConfigError(f"interval_s={interval_s} must be > 0 and min_new={min_new} >= 1")
    say = on_refused or logging.getLogger(__name__).warning
    stop = stop or threading.Event()
    database = Database(db) if isinstance(db, str) else db
    published: list[ReviewPublish] = []
    last = time.monotonic()
    done: set[str] = set()
    watermark = None  # consensus time of the newest confirmation seen; the scan starts a little before it
    held: list[Any] = []  # while refused: the scan start of the oldest confirmation still unpublished
    try:
        while True:
            stopping = stop.is_set()
            since = watermark - timedelta(seconds=5) if watermark is not None else None
            with database.read() as s:
                fresh = storage.confirmed_items(s, run_id=run_id, since=since)
            ids = fresh.column("frame_id").to_pylist()
            waiting = [f for f in ids if f not in done]  # after a refusal: only those that came since
            if fresh.num_rows:
                newest = max(d for d in fresh.column("decided_at").to_pylist() if d is not None)
                watermark = newest if watermark is None else max(watermark, newest)
            elapsed = time.monotonic() - last
            # while refused, try again every interval too: what a gate lacked (agreement, another publisher's
            # rows) can come without a new confirmation
            retry = bool(held) and elapsed >= interval_s
            if (waiting and (len(waiting) >= min_new or elapsed >= interval_s or stopping)) or retry:
                try:
                    out = publish_from_review(database, dataset, run_id=run_id, policy=policy,
                                              since=held[0] if held else since, frames=frames, gates=gates)
                except PublishRefusedError as exc:
                    held[:] = held or [since]  # the next try re-reads from here, so nothing refused is lost
                    say(f"not yet publishing {dataset}: {exc}")
                else:
                    held.clear()
                    if out.result.added:
                        published.append(out)
                        if on_publish is not None:
                            on_publish(out)
                done.update(waiting)
                last = time.monotonic()
            if stopping:
                return published
            stop.wait(poll_s)
    finally:
        if isinstance(db, str):
            database.dispose()
