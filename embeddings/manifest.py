"""The embedding job's input side: the manifest scanned, fingerprinted and cut into shards of rows.

`scan_manifest` validates a frames manifest in one streamed pass and records its files' row groups, so
`RowReader` can read any global row range (a shard) without a scan. Shard i always holds manifest rows
[i*shard_rows, (i+1)*shard_rows) (`shard_ranges`), which is what makes the job resumable. `shard_table` is
the block a read task hands the workers: (shard, row, frame_id, uri).

A manifest may bring its own `embedding` column; `manifest_dim` and `check_vectors` read and validate it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from edgemine.contracts import MANIFEST_REQUIRED, iter_manifest, manifest_base_dir, normalize_manifest_batch
from edgemine.errors import SchemaError
from edgemine.vectors import MAX_SQUARED_NORM, LengthTally


@dataclass(frozen=True)
class ManifestFile:
    path: str
    first_row: int  # global index of its first row
    row_groups: tuple[int, ...]  # rows per row group

    @property
    def rows(self) -> int:
        return sum(self.row_groups)


@dataclass(frozen=True)
class ManifestPlan:
    source: str
    files: tuple[ManifestFile, ...]
    filesystem: Any  # pyarrow.fs.FileSystem (picklable; shipped to read tasks)
    base_dir: str | None
    rows: int
    fingerprint: str
    embedding_column: bool
    bytes_per_row: int  # in-memory size of a read block row (shard, row, frame_id, uri)


def scan_manifest(manifest: str | os.PathLike[str]) -> ManifestPlan:
    """Validate the manifest in one streamed pass and fingerprint it (sha256 of its frame ids and uris)."""
    import pyarrow.dataset as ds

    source = os.fspath(manifest)
    h = hashlib.sha256()
    rows = string_bytes = 0
    for batch in iter_manifest(source, columns=list(MANIFEST_REQUIRED)):
        for fid, uri in zip(batch.column("frame_id").to_pylist(), batch.column("uri").to_pylist(), strict=True):
            line = f"{fid}\0{uri}\n".encode()
            h.update(line)
            string_bytes += len(line)
        rows += batch.num_rows
    dataset = ds.dataset(source, format="parquet")
    files = []
    first = 0
    for path in dataset.files:
        with dataset.filesystem.open_input_file(path) as f:
            meta = pq.ParquetFile(f).metadata
        groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
        files.append(ManifestFile(path, first, groups))
        first += sum(groups)
    if first != rows:
        raise SchemaError(f"{source}: Parquet metadata counts {first} rows but {rows} were read")
    base_dir = manifest_base_dir(source) if "://" not in source else None
    return ManifestPlan(source, tuple(files), dataset.filesystem, base_dir, rows, h.hexdigest()[:32],
                        "embedding" in dataset.schema.names, bytes_per_row=20 + string_bytes // max(rows, 1))


def shard_ranges(rows: int, shard_rows: int) -> list[tuple[int, int]]:
    return [(s, min(s + shard_rows, rows)) for s in range(0, rows, shard_rows)]


class RowReader:
    """Reads global row ranges of a manifest, reusing the last row group read (shards may share one)."""

    def __init__(self, plan: ManifestPlan, columns: list[str]) -> None:
        self.plan = plan
        self.columns = columns
        self._key: tuple[str, int] | None = None
        self._table: pa.Table | None = None
        self._open: dict[str, pq.ParquetFile] = {}

    def _group(self, path: str, index: int) -> pa.Table:
        if self._key != (path, index):
            pf = self._open.get(path)
            if pf is None:
                self._open.clear()
                pf = self._open[path] = pq.ParquetFile(self.plan.filesystem.open_input_file(path))
            self._table = pf.read_row_group(index, columns=self.columns)
            self._key = (path, index)
        return self._table  # type: ignore[return-value]

    def read(self, start: int, stop: int) -> pa.Table:
        parts = []
        for f in self.plan.files:
            if f.first_row >= stop or f.first_row + f.rows <= start:
                continue
            g0 = f.first_row
            for gi, n in enumerate(f.row_groups):
                lo, hi = max(start, g0), min(stop, g0 + n)
                if lo < hi:
                    parts.append(self._group(f.path, gi).slice(lo - g0, hi - lo))
                g0 += n
        table = pa.concat_tables(parts).combine_chunks()
        return normalize_manifest_batch(table, base_dir=self.plan.base_dir, source=self.plan.source)


def shard_table(table: pa.Table, shard: int, start: int) -> pa.Table:
    """Manifest rows [start, start + len) of `shard` as a read block: (shard, row, frame_id, uri)."""
    n = table.num_rows
    return pa.table({
        "shard": pa.array(np.full(n, shard, dtype=np.int32)),
        "row": pa.array(np.arange(start, start + n, dtype=np.int64)),
        "frame_id": table.column("frame_id"),
        "uri": table.column("uri"),
    })


# ---------------------------------------------------------------- a manifest's own `embedding` column
def manifest_dim(plan: ManifestPlan, reader: RowReader, ranges: list[tuple[int, int]]) -> int:
    """The `embedding` column's length: its fixed size, else the length most rows have (`LengthTally`)."""
    import pyarrow.dataset as ds

    typ = ds.dataset(plan.source, format="parquet").schema.field("embedding").type
    if pa.types.is_fixed_size_list(typ):
        return int(typ.list_size)
    tally = LengthTally()
    for start, stop in ranges:
        tally.add(reader.read(start, stop).column("embedding"))
    dim = tally.dim()
    if dim is None:
        raise SchemaError(f"{plan.source}: column 'embedding' is null in every row")
    return dim  # rows of other lengths become error rows (check_vectors), named there


def check_vectors(column: pa.ChunkedArray | pa.Array, *, dim: int) -> tuple[np.ndarray, np.ndarray,
                                                                           dict[int, tuple[str, str]]]:
    """Vectors of a manifest's `embedding` column: (float32 [n_ok, dim], ok row indices, {row: (stage, reason)}).

    Null rows, rows of another length, rows with NaN/inf and rows too large for float32 distances (squared L2
    norm above edgemine.vectors.MAX_SQUARED_NORM, the rule mining runs apply) are rejected with a reason.
    """
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
        col = col.cast(pa.list_(col.type.value_type))
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    offsets = col.offsets.to_numpy()
    lengths = np.diff(offsets)
    values = col.values.cast(pa.float32()).to_numpy(zero_copy_only=False)  # null values inside lists: NaN
    errors: dict[int, tuple[str, str]] = {}
    for i in np.flatnonzero(~valid):
        errors[int(i)] = ("validate", "embedding is null")
    for i in np.flatnonzero(valid & (lengths != dim)):
        errors[int(i)] = ("validate", f"embedding has {int(lengths[i])} values, expected {dim}")
    ok = np.flatnonzero(valid & (lengths == dim))
    emb = values[offsets[ok][:, None] + np.arange(dim)] if len(ok) else np.zeros((0, dim), np.float32)
    finite = np.isfinite(emb).all(axis=1)
    for i in ok[~finite]:
        errors[int(i)] = ("validate", "embedding has non-finite values (NaN/inf)")
    with np.errstate(over="ignore", invalid="ignore"):
        sq = np.einsum("ij,ij->i", emb, emb, dtype=np.float64)
    too_big = finite & ~(sq <= MAX_SQUARED_NORM)
    for i in ok[too_big]:
        errors[int(i)] = ("validate", f"embedding is too large: squared L2 norm above {MAX_SQUARED_NORM:.3g} "
                                      "(its distances would overflow float32)")
    keep = finite & ~too_big
    return np.ascontiguousarray(emb[keep], dtype=np.float32), ok[keep].astype(np.int64), errors


__all__ = ["ManifestFile", "ManifestPlan", "RowReader", "check_vectors", "manifest_dim", "scan_manifest",
           "shard_ranges", "shard_table"]
