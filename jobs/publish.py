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

import pyarrow as pa
import pyarrow.compute as pc

from jobs.contracts import SPLITS, TRAINING_SCHEMA, cast_to
from jobs.errors import ConfigError, SchemaError

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

    from jobs.datasets import arrow_dataset

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
                write_deltalake(dataset, rows, mode="error", storage_options=storage_options,
                                name="edge_cases", description="edge cases confirmed by edgemine review",
                                commit_properties=CommitProperties(custom_metadata=meta))
                return PublishResult(dataset, _version(dataset), rows.num_rows, 0, attempts,
                                     time.perf_counter() - t0, meta)
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
                                 time.perf_counter() - t0, meta)
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
