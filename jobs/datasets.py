"""Read edge-case training sets: pinned versions, splits, history, diffs, classes, and a torch Dataset.

A dataset reference is a Delta table path, optionally pinned: `data/edge_cases@v3` (`@3` is accepted too).
Every command and reader takes this one syntax. Training pipelines should always read a pinned version;
`read_dataset` returns exactly that version's rows, ordered by frame_id, at the contract's types, with `uri`
resolved against the dataset root (frames published with `--frames copy|link` live under it), and
`dataset_classes` its class list (a class's index never changes between versions).
Ray users read the same table with `ray.data.read_delta(path, version=N)` (stored `uri`s: resolve relative
ones with `resolve_frame_uri(path, uri)`).

A dataset on an object store takes `storage_options` (deltalake's: credentials, region, endpoint...) in every
reader, as `publish` does; they open the Delta log and read the version's files, and `EdgeCaseDataset` reads
its object-store frames through pyarrow.fs with them. A `file://` path is local: its frames resolve to local
paths.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from edgemine.contracts import CLASSES_KEY, canonical_schema
from edgemine.errors import ConfigError, InputNotFoundError, NotFoundError
from edgemine.jobs.dataset_frames import is_remote, local_path, resolve_frame_uri, store_paths

_REF = re.compile(r"^(?P<path>.+?)@v?(?P<version>\d+)$")
# Commit-info keys written by delta-rs itself; everything else in a commit's info is our lineage.
_DELTA_KEYS = {"timestamp", "operation", "operationParameters", "readVersion", "engineInfo", "clientVersion",
               "operationMetrics", "version", "isBlindAppend", "userMetadata"}
_OLD_VERSION = re.compile(r"^@?v?(?P<version>\d+)$")


@dataclass(frozen=True)
class DatasetRef:
    path: str
    version: int | None = None

    def __str__(self) -> str:
        return self.path if self.version is None else f"{self.path}@v{self.version}"


def parse_ref(ref: str, *, version: int | None = None) -> DatasetRef:
    """`path@v3` -> DatasetRef(path, 3). An explicit `version` must agree with a pinned ref.

    Anything else after the last `@` (`path@vX`, `path@latest`, `path@`) is a malformed version, refused as
    such (not reported later as a missing table) - unless the whole ref is an existing local directory.
    """
    m = _REF.match(ref)
    if m:
        pinned = int(m.group("version"))
        if version is not None and version != pinned:
            raise ConfigError(f"dataset {ref!r} is pinned to v{pinned} but version={version} was asked for")
        return DatasetRef(m.group("path"), pinned)
    path, at, tail = ref.rpartition("@")
    if at and path and "/" not in tail and not ("://" not in ref and os.path.isdir(ref)):
        raise ConfigError(f"dataset {ref!r} has a malformed version {tail!r}: write PATH@vN, N an integer "
                          f"(e.g. {path}@v0)")
    return DatasetRef(ref, version)


StorageOptions = dict[str, str] | None


def parse_storage_options(values: list[str] | tuple[str, ...], *, flag: str = "--storage-option") -> StorageOptions:
    """`["AWS_REGION=eu-west-1", ...]` (the CLI's repeated `--storage-option KEY=VALUE`) -> deltalake's
    `storage_options` dict; None when there are none (deltalake then reads its environment, e.g. AWS_*).
    The value may contain `=`; a missing `=`, an empty key or a key given twice is refused, naming it."""
    options: dict[str, str] = {}
    for item in values:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise ConfigError(f"{flag} {item!r} is not KEY=VALUE")
        if not key:
            raise ConfigError(f"{flag} {item!r} has an empty key: write KEY=VALUE")
        if key in options:
            raise ConfigError(f"{flag} {key} is given twice")
        options[key] = value
    return options or None


def _open(ref: DatasetRef, storage_options: StorageOptions = None):  # noqa: ANN202 - deltalake.DeltaTable
    from deltalake import DeltaTable

    try:
        dt = DeltaTable(ref.path, storage_options=storage_options)
    except Exception as exc:
        if type(exc).__name__ == "TableNotFoundError":
            raise InputNotFoundError(f"no dataset at {ref.path!r} (not a Delta table)") from exc
        raise
    if ref.version is not None:
        latest = dt.version()
        if not 0 <= ref.version <= latest:
            raise NotFoundError(f"dataset {ref.path!r} has versions 0..{latest}; v{ref.version} does not exist")
        dt = DeltaTable(ref.path, version=ref.version, storage_options=storage_options)
    return dt


def _options_of(dt: Any) -> StorageOptions:
    """The storage options `dt` was opened with: a reader that reopens the table, or reads its files, needs
    them too (deltalake keeps them on the table; it has no public accessor)."""
    return getattr(dt, "_storage_options", None) or None


def arrow_dataset(dt: Any):  # noqa: ANN201 - pyarrow.dataset.Dataset
    """A plain pyarrow dataset over one version's files, with the table's (evolved) schema.

    Used instead of `DeltaTable.to_pyarrow_dataset()`, whose Rust-backed filesystem can abort the process
    at interpreter exit ("terminate called without an active exception", delta-rs #2184, polars #24169).
    Files written before a column existed read it as null. A table on an object store opened with
    `storage_options` is read through deltalake's filesystem with those options (pyarrow's would not see them;
    the exit abort is a risk there alone); without options pyarrow finds credentials as it does (environment).
    """
    import pyarrow.dataset as pads

    schema = pa.schema(dt.schema().to_arrow())
    options = _options_of(dt)
    if options and is_remote(dt.table_uri):
        return _store_dataset(dt, options, schema)
    if is_remote(dt.table_uri):  # no options: pyarrow's filesystem for the store, credentials from the environment
        fs, paths = store_paths(_file_paths(dt))
        return pads.dataset(paths, format="parquet", schema=schema, filesystem=fs)
    return pads.dataset(_file_paths(dt), format="parquet", schema=schema)


def _file_paths(dt: Any) -> list[str]:
    """A version's files as a reader opens them. deltalake gives a local table's files as its URI's path,
    percent-escapes and all (`/data/my%20ds/part-0.parquet` for `/data/my ds`): decoded here, as deltalake
    decodes a table path when it writes (it cannot write under a directory whose name holds `%xx` itself)."""
    if is_remote(dt.table_uri):
        return list(dt.file_uris())
    return [local_path(u) if u.startswith("file://") else unquote(u) for u in dt.file_uris()]


def _store_dataset(dt: Any, options: dict[str, str], schema: pa.Schema):  # noqa: ANN202 - pyarrow Dataset
    """A version's files read through deltalake's filesystem (paths relative to the table root), with `options`."""
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs
    from deltalake.fs import DeltaStorageHandler

    root = dt.table_uri.rstrip("/") + "/"
    # relative to the root: a remote table's file URIs start with it; a local one's with its URI's path
    files = [u.removeprefix(root).removeprefix(urlsplit(root).path) for u in dt.file_uris()]
    fs = pafs.PyFileSystem(DeltaStorageHandler(root, options))
    return pads.dataset(files, format="parquet", schema=schema, filesystem=fs)


def latest_version(path: str, *, storage_options: StorageOptions = None) -> int:
    r = parse_ref(path)
    if r.version is not None:
        raise ConfigError(f"latest_version takes a dataset path; {path!r} is pinned to v{r.version}")
    return int(_open(r, storage_options).version())


def classes_of(dt: Any, categories: list[str] | None = None) -> list[str]:
    """The class list of the version `dt` is at: every commit's `edgemine.classes` up to it, in order.

    Each publish writes the whole list, extended; folding every commit (not just the last) keeps a class a
    racing publisher added. Categories in the rows that no commit lists (a table written by something else,
    or before class lists) follow, sorted.
    """
    out: list[str] = []
    for h in reversed(_history(dt)):
        if CLASSES_KEY not in h:
            continue
        for c in _maybe_json(h[CLASSES_KEY]) or []:
            if c not in out:
                out.append(c)
    if categories is None:
        categories = arrow_dataset(dt).to_table(columns=["category"]).column("category").to_pylist()
    out += sorted({str(c) for c in categories if c is not None} - set(out))
    return out


def _history(dt: Any) -> list[dict[str, Any]]:
    """Commit infos of versions 0..dt.version(), newest first.

    Read from the table's latest state: `history()` of a time-travelled DeltaTable (deltalake 1.x) returns
    the newest commits numbered down from the pinned version (0, -1, -2 ...), not the pinned version's own.
    """
    from deltalake import DeltaTable

    version = dt.version()
    latest = DeltaTable(dt.table_uri, storage_options=_options_of(dt))
    return sorted((h for h in latest.history() if 0 <= h.get("version", -1) <= version),
                  key=lambda h: -h["version"])


def dataset_classes(ref: str | DatasetRef, *, version: int | None = None,
                    storage_options: StorageOptions = None) -> list[str]:
    """The class list of one version (latest if unpinned): index i is class i in every later version too."""
    r = parse_ref(ref, version=version) if isinstance(ref, str) else ref
    return classes_of(_open(r, storage_options))


def read_dataset(
    ref: str | DatasetRef,
    *,
    version: int | None = None,
    split: str | None = None,
    columns: list[str] | None = None,
    resolve_uris: bool = True,
    storage_options: StorageOptions = None,
) -> pa.Table:
    """The rows of one version (latest if unpinned), optionally one split, as a pyarrow Table.

    Rows come ordered by frame_id; types are the contract's (strings as string, lists as list<item>).
    `uri` is resolved against the dataset root, so a process can open it from any working directory
    (`resolve_uris=False`: the stored value, relative for copied or linked frames); a `file://` root gives
    local paths.
    """
    r = parse_ref(ref, version=version) if isinstance(ref, str) else ref
    dt = _open(r, storage_options)
    ds = arrow_dataset(dt)
    cols = None if columns is None else list(dict.fromkeys([*columns, "frame_id"]))
    if split is not None:
        # Filter batch by batch after the read: delta-rs writes strings as Utf8View, which pyarrow's
        # dataset filter cannot compare with a plain string scalar.
        cols = None if cols is None else list(dict.fromkeys([*cols, "split"]))
        parts = [b.filter(pc.equal(b.column("split").cast(pa.string()), split))
                 for b in ds.to_batches(columns=cols)]
        schema = ds.schema if cols is None else pa.schema([ds.schema.field(c) for c in cols])
        table = pa.Table.from_batches(parts, schema=schema) if parts else schema.empty_table()
        if table.num_rows == 0:
            present = set(ds.to_table(columns=["split"]).column("split").to_pylist())
            if split not in present:
                raise NotFoundError(f"split {split!r} is not in {r}; it has {sorted(present)}")
    else:
        table = ds.to_table(columns=cols)
    table = table.cast(canonical_schema(table.schema)).sort_by("frame_id")
    if resolve_uris and "uri" in table.column_names:
        uris = [resolve_frame_uri(r.path, u) for u in table.column("uri").to_pylist()]
        table = table.set_column(table.column_names.index("uri"), "uri", pa.array(uris, pa.string()))
    return table.select(columns) if columns is not None else table


def version_files(ref: str | DatasetRef, *, storage_options: StorageOptions = None) -> list[str]:
    """The Parquet files that make up a version (for readers that do not speak Delta; `uri` as stored)."""
    r = parse_ref(ref) if isinstance(ref, str) else ref
    return _file_paths(_open(r, storage_options))


def dataset_log(ref: str | DatasetRef, *, storage_options: StorageOptions = None) -> list[dict[str, Any]]:
    """Every version (up to a pinned one), newest first: when, what, rows added, and its lineage (keys sorted)."""
    r = parse_ref(ref) if isinstance(ref, str) else ref
    dt = _open(r, storage_options)
    out = []
    for h in _history(dt):
        metrics = h.get("operationMetrics") or {}
        added = metrics.get("num_target_rows_inserted", metrics.get("num_added_rows"))
        out.append({
            "version": h.get("version"),
            "timestamp": datetime.fromtimestamp(h["timestamp"] / 1000, UTC).isoformat(timespec="seconds"),
            "operation": h.get("operation"),
            "rows_added": added,
            "lineage": {k: _maybe_json(h[k]) for k in sorted(h) if k not in _DELTA_KEYS},
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


def dataset_show(ref: str | DatasetRef, *, version: int | None = None,
                 storage_options: StorageOptions = None) -> dict[str, Any]:
    """One version: rows, splits, categories and classes, schema (in column order), lineage. Keys sorted."""
    r = parse_ref(ref, version=version) if isinstance(ref, str) else ref
    dt = _open(r, storage_options)
    v = dt.version()
    table = read_dataset(DatasetRef(r.path, v), resolve_uris=False, storage_options=storage_options)
    entry = next((e for e in dataset_log(DatasetRef(r.path, v), storage_options=storage_options)
                  if e["version"] == v), None)
    return {
        "categories": dict(sorted(_counts(table, "category").items())),
        "classes": classes_of(dt, table.column("category").to_pylist()),
        "dataset": r.path,
        "drives": len(set(table.column("drive_id").to_pylist())) if table.num_rows else 0,
        "duplicate_frame_ids": duplicate_keys(table),  # should always be empty; listed so it cannot hide
        "lineage": entry["lineage"] if entry else {},
        "rows": table.num_rows,
        "schema": [{"name": f.name, "type": str(f.type)} for f in table.schema],
        "splits": dict(sorted(_counts(table, "split").items())),
        "version": v,
    }


def _diff_refs(a: str | DatasetRef, b: str | DatasetRef | int, c: int | None) -> tuple[DatasetRef, DatasetRef]:
    if c is not None or isinstance(b, int):  # the old form: (path, a, b)
        if c is None or not isinstance(b, int):
            raise ConfigError(f"dataset_diff({a!r}, {b!r}, {c!r}) needs two pinned refs: PATH@vA, PATH@vB")
        path = a.path if isinstance(a, DatasetRef) else parse_ref(a).path
        return DatasetRef(path, b), DatasetRef(path, int(c))
    ra = parse_ref(a) if isinstance(a, str) else a
    short = _OLD_VERSION.match(b) if isinstance(b, str) else None  # `PATH@v0 v1`: the second on the same path
    rb = DatasetRef(ra.path, int(short.group("version"))) if short else parse_ref(b) if isinstance(b, str) else b
    for r in (ra, rb):
        if r.version is None:
            raise ConfigError(f"diff needs pinned versions: {str(r)!r} has no @vN (e.g. {r.path}@v0 {r.path}@v1)")
    return ra, rb


def dataset_diff(a: str | DatasetRef, b: str | DatasetRef | int, c: int | None = None, *,
                 storage_options: StorageOptions = None) -> dict[str, Any]:
    """What changed from version a to b: rows added/removed (by frame_id), relabels, new/dropped columns, classes.

    `dataset_diff("ds@v0", "ds@v1")` (also `("ds@v0", "v1")`, and the old `("ds", 0, 1)`). Rows are counted as
    rows, and frame_ids on more than one row of either version are listed (`duplicate_frame_ids`), so a
    duplicated frame cannot hide behind an unchanged set of keys. Lists are sorted.
    """
    ra, rb = _diff_refs(a, b, c)
    ta = read_dataset(ra, resolve_uris=False, storage_options=storage_options)
    tb = read_dataset(rb, resolve_uris=False, storage_options=storage_options)
    ca = dict(zip(ta.column("frame_id").to_pylist(), ta.column("category").to_pylist(), strict=True))
    cb = dict(zip(tb.column("frame_id").to_pylist(), tb.column("category").to_pylist(), strict=True))
    added = sorted(set(cb) - set(ca))
    removed = sorted(set(ca) - set(cb))
    relabeled = sorted(f for f in set(ca) & set(cb) if ca[f] != cb[f])
    added_by_cat: dict[str, int] = {}
    for f in added:
        added_by_cat[cb[f]] = added_by_cat.get(cb[f], 0) + 1
    classes_a = dataset_classes(ra, storage_options=storage_options)
    classes_b = dataset_classes(rb, storage_options=storage_options)
    return {
        "added_by_category": dict(sorted(added_by_cat.items())),
        "added_frame_ids": added[:20],
        "classes_added": [x for x in classes_b if x not in classes_a],
        "columns_added": [x for x in tb.column_names if x not in ta.column_names],
        "columns_removed": [x for x in ta.column_names if x not in tb.column_names],
        "dataset": ra.path if ra.path == rb.path else {"from": ra.path, "to": rb.path},
        "duplicate_frame_ids": {"from": duplicate_keys(ta), "to": duplicate_keys(tb)},
        "from": ra.version,
        "relabeled": len(relabeled),
        "rows": {"from": ta.num_rows, "to": tb.num_rows},
        "rows_added": len(added),
        "rows_removed": len(removed),
        "to": rb.version,
    }


class EdgeCaseDataset:
    """A torch `Dataset` over one pinned version and split: (image float32 [3,S,S] in [0,1], class index).

    Class indices come from the dataset's class list (`dataset_classes`), so an index means the same class
    in every version. `classes` fixes another label space (e.g. a model's classes plus new categories).
    Images are read through the row's `uri`, resolved against the dataset root (a `file://` root: local paths).
    `storage_options` open a table on an object store for its rows and class list, and its frames: an
    object-store `uri` (`s3://...`, or relative to an object-store root) is read through pyarrow.fs with the
    options' AWS_* keys (`dataset_frames.filesystem`); a local one is opened as a file.
    """

    def __init__(self, ref: str, *, split: str | None = "train", version: int | None = None,
                 classes: list[str] | None = None, size: int = 64, label_column: str = "category",
                 storage_options: StorageOptions = None) -> None:
        r = parse_ref(ref, version=version)
        if r.version is None:  # pin it now: rows and classes must come from the same version
            r = DatasetRef(r.path, latest_version(r.path, storage_options=storage_options))
        self.ref = r
        self.table = read_dataset(r, split=split, columns=None, storage_options=storage_options)
        labels = self.table.column(label_column).to_pylist()
        self.classes = list(classes) if classes is not None else dataset_classes(r, storage_options=storage_options)
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise ConfigError(f"categories {unknown} are not in classes={self.classes}")
        self.targets = [index[c] for c in labels]
        self.uris = self.table.column("uri").to_pylist()
        self.size = size
        self.storage_options = storage_options
        self._filesystems: dict[str, Any] = {}  # per store (scheme://bucket): made once, not per frame

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers make their own filesystems
        return {**self.__dict__, "_filesystems": {}}

    def _open(self, uri: str) -> Any:
        import io

        from edgemine.jobs.dataset_frames import filesystem

        if not is_remote(uri):
            return uri
        key = "/".join(uri.split("/", 3)[:3])  # scheme://bucket
        if key in self._filesystems:
            fs, prefix = self._filesystems[key]
            path = uri[len(prefix):]
        else:
            fs, path = filesystem(uri, self.storage_options)
            if uri.endswith(path):  # s3://bkt/k -> bkt/k: the same prefix comes off every uri of this store
                self._filesystems[key] = fs, uri[: len(uri) - len(path)]
        try:
            with fs.open_input_stream(path) as f:
                return io.BytesIO(f.read())
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputNotFoundError(f"frame {uri!r} cannot be read: {exc}") from exc

    def __len__(self) -> int:
        return len(self.uris)

    def __getitem__(self, i: int):  # noqa: ANN204 - (torch.Tensor, int)
        import numpy as np
        import torch
        from PIL import Image

        with Image.open(self._open(self.uris[i])) as im:
            img = im.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        x = torch.from_numpy(np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0)
        return x, self.targets[i]
