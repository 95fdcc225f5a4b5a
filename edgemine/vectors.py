"""Arrow list columns to numpy matrices, and the checks that decide whether a frame's vector is usable.

Pure pyarrow/numpy. Embedding and logits columns may be fixed-size or variable lists.

The dimension: a fixed-size list's size, else the length most rows have (`LengthTally`: ties go to the
length seen first). Rows of another length are an error that names the first few (frame_id and length) and
how many differ: `SchemaError` for an inconsistent column, `IncompatibleArtifactError` when the dimension
was given (an index or run of another dimension).

A row is unusable, with a reason, never dropped silently, when it is null, when any value is NaN/inf (or a
float64 value beyond float32's range), or when its squared L2 norm exceeds `MAX_SQUARED_NORM` (a quarter of
float32's largest value, about |x| > 9.2e18 for a single value): for any two usable rows
||a - b||^2 <= 2||a||^2 + 2||b||^2 stays finite in float32, so no distance an index computes overflows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgemine.errors import IncompatibleArtifactError, SchemaError
from edgemine.limits import quote

MAX_SQUARED_NORM = float(np.finfo(np.float32).max) / 4  # beyond this, ||a - b||^2 may overflow float32
MAX_NAMED_ROWS = 5  # how many differing rows a dimension error names


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


def _nulls(col: pa.Array) -> np.ndarray:
    if not col.null_count:
        return np.zeros(len(col), bool)
    return np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _combined(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def fixed_size(t: pa.DataType) -> int | None:
    """The size of a fixed-size list type, else None."""
    return int(t.list_size) if pa.types.is_fixed_size_list(t) else None


@dataclass
class LengthTally:
    """The lengths of a list column's non-null rows, counted over one or many batches in bounded memory.

    `dim()` is the length most rows have (ties: the one seen first); `check(...)` raises naming the first
    MAX_NAMED_ROWS rows of another length, each with its length, and how many rows differ.
    """

    counts: dict[int, int] = field(default_factory=dict)
    first_row: dict[int, int] = field(default_factory=dict)  # length -> the first row that has it
    named: dict[int, list[tuple[int, str]]] = field(default_factory=dict)  # length -> [(row, who)], a few
    rows: int = 0

    def add(self, col: pa.ChunkedArray | pa.Array, frame_ids: pa.ChunkedArray | pa.Array | None = None) -> None:
        col = _combined(col)
        n = len(col)
        present = ~_nulls(col)
        lengths = _list_lengths(col)
        values, counts = np.unique(lengths[present], return_counts=True)
        for length, count in zip(values.tolist(), counts.tolist(), strict=True):
            rows = np.flatnonzero(present & (lengths == length))
            self.counts[length] = self.counts.get(length, 0) + count
            self.first_row.setdefault(length, self.rows + int(rows[0]))
            have = self.named.setdefault(length, [])
            for i in rows[: MAX_NAMED_ROWS - len(have)].tolist():
                have.append((self.rows + i, _who(frame_ids, i, self.rows + i)))
        self.rows += n

    def dim(self) -> int | None:
        if not self.counts:
            return None
        return max(self.counts, key=lambda length: (self.counts[length], -self.first_row[length]))

    def check(self, *, name: str, dim: int | None = None) -> int:
        """The dimension (`dim` if given, else the majority); raises when any row has another length."""
        given = dim is not None
        if dim is None:
            dim = self.dim()
            if dim is None:
                return 0
        others = {length: c for length, c in self.counts.items() if length != dim}
        if not others:
            return dim
        present = sum(self.counts.values())
        named = sorted((row, who, length) for length in others for row, who in self.named[length])
        _, who, length = named[0]
        msg = f"{name} of {who} has dimension {length}, expected {dim}"
        if not given:
            msg += f" ({self.counts.get(dim, 0)} of {present} rows have dimension {dim})"
        msg += f"; {sum(others.values())} of {present} rows differ"
        rest = [f"{w} ({n})" for _, w, n in named[1:MAX_NAMED_ROWS]]
        if rest:
            msg += ", also " + ", ".join(rest)
        raise (IncompatibleArtifactError if given else SchemaError)(msg)


def _who(frame_ids: pa.ChunkedArray | pa.Array | None, i: int, row: int) -> str:
    return f"frame_id={quote(frame_ids[i].as_py(), 80)}" if frame_ids is not None else f"row {row}"


def list_matrix(
    col: pa.ChunkedArray | pa.Array,
    *,
    name: str,
    frame_ids: pa.ChunkedArray | pa.Array | None = None,
    dim: int | None = None,
    allow_null: bool = True,
) -> Matrix:
    """Turn a list<float> column into an (n, d) float32 matrix.

    Null rows, rows holding NaN/inf and rows too large for float32 distances (module docstring) become
    unusable with a reason. Rows of the wrong length fail (`LengthTally.check`): `IncompatibleArtifactError`
    when `dim` is given, else `SchemaError`, naming the first few such frames with their lengths.
    """
    col = _combined(col)
    n = len(col)
    nulls = _nulls(col)
    if dim is None:
        dim = fixed_size(col.type)
    if n == 0:
        return Matrix(np.zeros((0, dim or 0), np.float32), np.zeros(0, bool), [])
    if dim is None or fixed_size(col.type) != dim:
        tally = LengthTally()
        tally.add(col, frame_ids)
        dim = tally.check(name=name, dim=dim)
    if nulls.any() and not allow_null:
        i = int(np.flatnonzero(nulls)[0])
        raise SchemaError(f"{name} of {_who(frame_ids, i, i)} is null")
    flat = pc.list_flatten(col)  # null rows contribute nothing
    values = np.zeros((n, dim), dtype=np.float32)
    source: np.ndarray | None = None
    if dim and flat is not None and len(flat):
        source = np.asarray(flat.to_numpy(zero_copy_only=False)).reshape(-1, dim)
        with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32 becomes inf, flagged below
            values[~nulls] = source.astype(np.float32, copy=False)
    reasons: list[str | None] = [None] * n
    for i in np.flatnonzero(nulls).tolist():
        reasons[i] = f"{name} is null"
    if dim:
        finite = np.isfinite(values).all(axis=1)
        with np.errstate(over="ignore", invalid="ignore"):  # float64 holds any float32 row's squared norm
            sq = np.einsum("ij,ij->i", values, values, dtype=np.float64)
        too_big = finite & ~(sq <= MAX_SQUARED_NORM)
        bad = np.flatnonzero(~nulls & ~finite)
        if bad.size and source is not None and source.dtype != np.float32:
            rows = np.flatnonzero(~nulls)  # row of the matrix -> row of `source`
            at = np.searchsorted(rows, bad)
            in_source = np.isfinite(np.asarray(source[at], dtype=np.float64))
            beyond = [bool(row.all()) for row in in_source]
        else:
            beyond = [False] * bad.size
        for i, is_beyond in zip(bad.tolist(), beyond, strict=True):
            reasons[i] = (f"{name} is too large: values beyond float32's range" if is_beyond
                          else f"{name} has NaN/inf values")
        for i in np.flatnonzero(too_big).tolist():
            reasons[i] = (f"{name} is too large: squared L2 norm above {MAX_SQUARED_NORM:.3g} "
                          "(its distances would overflow float32)")
    usable = np.array([r is None for r in reasons], dtype=bool)
    values[~usable] = 0.0
    return Matrix(values, usable, reasons)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
