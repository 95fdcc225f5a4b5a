"""Read edge-case training sets: pinned versions, splits, history, diffs, and a torch Dataset.

A dataset reference is a Delta table path, optionally pinned: `data/edge_cases@v3` (or `@3`). Training
pipelines should always read a pinned version; `read_dataset` returns exactly that version's rows.
Ray users read the same table with `ray.data.read_delta(path, version=N)`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from edgemine.errors import ConfigError, InputNotFoundError, NotFoundError

_REF = re.compile(r"^(?P<path>.+?)@v?(?P<version>\d+)$")
# Commit-info keys written by delta-rs itself; everything else in a commit's info is our lineage.
_DELTA_KEYS = {"timestamp", "operation", "operationParameters", "readVersion", "engineInfo", "clientVersion",
               "operationMetrics", "version", "isBlindAppend", "userMetadata"}


@dataclass(frozen=True)
class DatasetRef:
    path: str
    version: int | None = None

    def __str__(self) -> str:
        return self.path if self.version is None else f"{self.path}@v{self.version}"


def parse_ref(ref: str, *, version: int | None = None) -> DatasetRef:
    """`path@v3` -> DatasetRef(path, 3). An explicit `version` must agree with a pinned ref."""
    m = _REF.match(ref)
    if m:
        pinned = int(m.group("version"))
        if version is not None and version != pinned:
            raise ConfigError(f"dataset {ref!r} is pinned to v{pinned} but version={version} was asked for")
        return DatasetRef(m.group("path"), pinned)
    return DatasetRef(ref, version)


def _open(ref: DatasetRef):  # noqa: ANN202 - deltalake.DeltaTable
    from deltalake import DeltaTable

    try:
        dt = DeltaTable(ref.path)
    except Exception as exc:
        if type(exc).__name__ == "TableNotFoundError":
            raise InputNotFoundError(f"no dataset at {ref.path!r} (not a Delta table)") from exc
        raise
    if ref.version is not None:
        latest = dt.version()
        if not 0 <= ref.version <= latest:
            raise NotFoundError(f"dataset {ref.path!r} has versions 0..{latest}; v{ref.version} does not exist")
        dt = DeltaTable(ref.path, version=ref.version)
    return dt


def arrow_dataset(dt: Any):  # noqa: ANN201 - pyarrow.dataset.Dataset
    """A plain pyarrow dataset over one version's files, with the table's (evolved) schema.

    Used instead of `DeltaTable.to_pyarrow_dataset()`, whose Rust-backed filesystem can abort the process
    at interpreter exit ("terminate called without an active exception", delta-rs #2184, polars #24169).
    Files written before a column existed read it as null.
    """
    import pyarrow.dataset as pads

    schema = pa.schema(dt.schema().to_arrow())
    return pads.dataset(list(dt.file_uris()), format="parquet", schema=schema)


def latest_version(path: str) -> int:
    return int(_open(DatasetRef(path)).version())


def read_dataset(
    ref: str | DatasetRef,
    *,
    version: int | None = None,
    split: str | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """The rows of one version (latest if unpinned), optionally one split, as a pyarrow Table."""
    r = parse_ref(ref, version=version) if isinstance(ref, str) else ref
    dt = _open(r)
    ds = arrow_dataset(dt)
    if split is not None:
        # Filter batch by batch after the read: delta-rs writes strings as Utf8View, which pyarrow's
        # dataset filter cannot compare with a plain string scalar.
        cols = None if columns is None else list(dict.fromkeys([*columns, "split"]))
        parts = [b.filter(pc.equal(b.column("split").cast(pa.string()), split))
                 for b in ds.to_batches(columns=cols)]
        schema = ds.schema if cols is None else pa.schema([ds.schema.field(c) for c in cols])
        table = pa.Table.from_batches(parts, schema=schema) if parts else schema.empty_table()
        if table.num_rows == 0:
            present = set(ds.to_table(columns=["split"]).column("split").to_pylist())
            if split not in present:
                raise NotFoundError(f"split {split!r} is not in {r}; it has {sorted(present)}")
        return table.select(columns) if columns is not None else table
    return ds.to_table(columns=columns)


def version_files(ref: str | DatasetRef) -> list[str]:
    """The Parquet files that make up a version (for readers that do not speak Delta)."""
    r = parse_ref(ref) if isinstance(ref, str) else ref
    return list(_open(r).file_uris())


def dataset_log(path: str) -> list[dict[str, Any]]:
    """Every version, newest first: when, what, how many rows it added, and its lineage."""
    dt = _open(DatasetRef(path))
    out = []
    for h in dt.history():
        metrics = h.get("operationMetrics") or {}
        added = metrics.get("num_target_rows_inserted", metrics.get("num_added_rows"))
        out.append({
            "version": h.get("version"),
            "timestamp": datetime.fromtimestamp(h["timestamp"] / 1000, UTC).isoformat(timespec="seconds"),
            "operation": h.get("operation"),
            "rows_added": added,
            "lineage": {k: _maybe_json(v) for k, v in h.items() if k not in _DELTA_KEYS},
        })
    return out


def _maybe_json(v: Any) -> Any:
    """Commit metadata values are strings; lineage values that were JSON (numbers, lists, objects) come back."""
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _counts(table: pa.Table, column: str) -> dict[str, int]:
    if column not in table.column_names or table.num_rows == 0:
        return {}
    vc = pc.value_counts(table.column(column))
    return {str(v["values"]): int(v["counts"]) for v in vc.to_pylist()}


def duplicate_keys(table: pa.Table, key: str = "frame_id") -> list[str]:
    """Values of `key` that appear on more than one row (a training set has one row per frame), sorted."""
    if key not in table.column_names or table.num_rows == 0:
        return []
    vc = pc.value_counts(table.column(key))
    return sorted(str(v) for v in vc.filter(pc.greater(vc.field("counts"), 1)).field("values").to_pylist())


def dataset_show(ref: str, *, version: int | None = None) -> dict[str, Any]:
    r = parse_ref(ref, version=version)
    dt = _open(r)
    v = dt.version()
    table = arrow_dataset(dt).to_table()
    entry = next((e for e in dataset_log(r.path) if e["version"] == v), None)
    return {
        "dataset": r.path,
        "version": v,
        "rows": table.num_rows,
        "duplicate_frame_ids": duplicate_keys(table),  # should always be empty; listed so it cannot hide
        "splits": _counts(table, "split"),
        "categories": _counts(table, "category"),
        "drives": len(set(table.column("drive_id").to_pylist())) if table.num_rows else 0,
        "schema": {f.name: str(f.type) for f in table.schema},
        "lineage": entry["lineage"] if entry else {},
    }


def dataset_diff(path: str, a: int, b: int) -> dict[str, Any]:
    """What changed from version a to b: rows added/removed (by frame_id), relabels, new/dropped columns.

    Rows are counted as rows, and frame_ids on more than one row of either version are listed
    (`duplicate_frame_ids`), so a duplicated frame cannot hide behind an unchanged set of keys.
    """
    ta = read_dataset(DatasetRef(path, a))
    tb = read_dataset(DatasetRef(path, b))
    ca = dict(zip(ta.column("frame_id").to_pylist(), ta.column("category").to_pylist(), strict=True))
    cb = dict(zip(tb.column("frame_id").to_pylist(), tb.column("category").to_pylist(), strict=True))
    added = sorted(set(cb) - set(ca))
    removed = sorted(set(ca) - set(cb))
    relabeled = sorted(f for f in set(ca) & set(cb) if ca[f] != cb[f])
    added_by_cat: dict[str, int] = {}
    for f in added:
        added_by_cat[cb[f]] = added_by_cat.get(cb[f], 0) + 1
    return {
        "dataset": path,
        "from": a,
        "to": b,
        "rows_added": len(added),
        "rows_removed": len(removed),
        "rows": {"from": ta.num_rows, "to": tb.num_rows},
        "duplicate_frame_ids": {"from": duplicate_keys(ta), "to": duplicate_keys(tb)},
        "relabeled": len(relabeled),
        "added_by_category": dict(sorted(added_by_cat.items())),
        "columns_added": [c for c in tb.column_names if c not in ta.column_names],
        "columns_removed": [c for c in ta.column_names if c not in tb.column_names],
        "added_frame_ids": added[:20],
    }


class EdgeCaseDataset:
    """A torch `Dataset` over one pinned version and split: (image float32 [3,S,S] in [0,1], class index).

    `classes` fixes the label space (e.g. the model's classes plus new categories); by default it is the
    sorted set of categories in this version. Images are read through the row's `uri`.
    """

    def __init__(self, ref: str, *, split: str | None = "train", version: int | None = None,
                 classes: list[str] | None = None, size: int = 64, label_column: str = "category") -> None:
        self.table = read_dataset(ref, version=version, split=split, columns=None)
        labels = self.table.column(label_column).to_pylist()
        self.classes = list(classes) if classes is not None else sorted(set(labels))
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise ConfigError(f"categories {unknown} are not in classes={self.classes}")
        self.targets = [index[c] for c in labels]
        self.uris = self.table.column("uri").to_pylist()
        self.size = size

    def __len__(self) -> int:
        return len(self.uris)

    def __getitem__(self, i: int):  # noqa: ANN204 - (torch.Tensor, int)
        import numpy as np
        import torch
        from PIL import Image

        with Image.open(self.uris[i]) as im:
            img = im.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        x = torch.from_numpy(np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0)
        return x, self.targets[i]
