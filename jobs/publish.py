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
from collections.abc import Mapping, Sequence
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

__all__ = ["DEFAULT_FRAMES", "PublishGates", "PublishRefusedError", "PublishResult", "SplitPolicy", "assign_split",
           "extend_classes", "latest_per_frame", "publish", "training_rows"]
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


def table_exists(path: str, storage_options: dict[str, str] | None = None) -> bool:
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

    if not table_exists(path, storage_options):
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
            new, frame_stats = place_frames(new, dataset, mode=frames, storage_options=storage_options)
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
