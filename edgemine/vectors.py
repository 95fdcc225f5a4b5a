"""Arrow list columns to numpy matrices, and the checks that decide whether a frame's vector is usable.

Pure pyarrow/numpy. Embedding and logits columns may be fixed-size or variable lists; a variable list is
accepted when every row has the same length. Rows that cannot be used (null, NaN/inf) are reported with a
reason instead of being dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgemine.errors import IncompatibleArtifactError, SchemaError


@dataclass(frozen=True)
class Matrix:
    """Rows of a list column as a float32 matrix; `usable[i]` is False where row i has `reasons[i]`."""

    values: np.ndarray  # (n, d) float32; unusable rows are zeros
    usable: np.ndarray  # (n,) bool
    reasons: list[str | None]

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])


def _list_lengths(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False), dtype=np.int64)


def list_matrix(
    col: pa.ChunkedArray | pa.Array,
    *,
    name: str,
    frame_ids: pa.ChunkedArray | pa.Array | None = None,
    dim: int | None = None,
    allow_null: bool = True,
) -> Matrix:
    """Turn a list<float> column into an (n, d) float32 matrix.

    Null rows and rows holding NaN/inf become unusable with a reason. Rows of the wrong length fail with
    `IncompatibleArtifactError` when `dim` is given (an index or run of another dimension), else with
    `SchemaError` (the column itself is inconsistent), naming the first such frame.
    """
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    n = len(col)
    nulls = np.zeros(n, bool)
    if col.null_count:
        nulls = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if n == 0:
        return Matrix(np.zeros((0, dim or 0), np.float32), np.zeros(0, bool), [])
    lengths = _list_lengths(col)
    present = lengths[~nulls]
    dim_given = dim is not None
    if dim is None:
        dim = int(present[0]) if present.size else 0
    bad_len = (~nulls) & (lengths != dim)
    if bad_len.any():
        i = int(np.flatnonzero(bad_len)[0])
        who = f"frame_id={frame_ids[i].as_py()!r}" if frame_ids is not None else f"row {i}"
        msg = f"{name} of {who} has dimension {int(lengths[i])}, expected {dim}"
        raise (IncompatibleArtifactError if dim_given else SchemaError)(msg)
    if nulls.any() and not allow_null:
        i = int(np.flatnonzero(nulls)[0])
        who = f"frame_id={frame_ids[i].as_py()!r}" if frame_ids is not None else f"row {i}"
        raise SchemaError(f"{name} of {who} is null")
    flat = pc.list_flatten(col)  # null rows contribute nothing
    values = np.zeros((n, dim), dtype=np.float32)
    if dim and flat is not None and len(flat):
        arr = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
        values[~nulls] = arr
    finite = np.isfinite(values).all(axis=1) if dim else np.ones(n, bool)
    usable = (~nulls) & finite
    reasons: list[str | None] = [None] * n
    for bad in np.flatnonzero(~usable).tolist():
        reasons[bad] = f"{name} is null" if nulls[bad] else f"{name} has NaN/inf values"
    values[~usable] = 0.0
    return Matrix(values, usable, reasons)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
