from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgemine.errors import IncompatibleArtifactError, SchemaError
from edgemine.vectors import MAX_SQUARED_NORM, list_matrix


def test_nan_inf_and_null_rows_are_unusable_with_a_reason() -> None:
    col = pa.array([[1.0, 2.0], [np.nan, 0.0], None, [np.inf, 1.0], [3.0, 4.0]], pa.list_(pa.float32()))
    m = list_matrix(col, name="embedding")
    assert m.usable.tolist() == [True, False, False, False, True]
    assert m.reasons == [None, "embedding has NaN/inf values", "embedding is null", "embedding has NaN/inf values",
                         None]
    np.testing.assert_array_equal(m.values[[0, 4]], [[1, 2], [3, 4]])
    assert np.isfinite(m.values).all()


def test_fixed_size_lists_with_nulls() -> None:
    arr = pa.FixedSizeListArray.from_arrays(pa.array([1, 2, 3, 4, 5, 6], pa.float32()), 2)
    col = pa.array([[1.0, 2.0], None, [5.0, 6.0]], arr.type)
    m = list_matrix(col, name="embedding")
    assert m.dim == 2 and m.usable.tolist() == [True, False, True]
    np.testing.assert_array_equal(m.values[2], [5, 6])


def test_dimension_mismatch_names_the_frame() -> None:
    col = pa.array([[1.0, 2.0], [1.0, 2.0, 3.0]], pa.list_(pa.float32()))
    ids = pa.array(["a", "b"])
    with pytest.raises(IncompatibleArtifactError, match="frame_id='b' has dimension 3, expected 2"):
        list_matrix(col, name="embedding", frame_ids=ids, dim=2)
    with pytest.raises(SchemaError, match="frame_id='b' has dimension 3, expected 2"):
        list_matrix(col, name="embedding", frame_ids=ids)


def test_values_whose_squared_norm_overflows_float32_are_unusable_with_a_reason() -> None:
    big = 0.999 * float(np.sqrt(MAX_SQUARED_NORM))  # just inside the bound is usable; beyond it, not
    col = pa.array([[1.0, 2.0], [1e38, 0.0], [1e19, 1e19], [big, 0.0], [-1e38, -1e38]], pa.list_(pa.float32()))
    m = list_matrix(col, name="embedding")
    assert m.usable.tolist() == [True, False, False, True, False]
    assert m.reasons[1] == m.reasons[2] == m.reasons[4]
    assert m.reasons[1] is not None and m.reasons[1].startswith("embedding is too large: squared L2 norm")
    assert np.isfinite(m.values).all() and not m.values[[1, 2, 4]].any()
    # any two usable rows are a finite float32 distance apart
    usable = m.values[m.usable]
    d2 = ((usable[:, None, :] - usable[None, :, :]) ** 2).sum(-1)
    assert np.isfinite(d2).all()


def test_float64_values_beyond_float32_are_named_not_called_nan() -> None:
    col = pa.array([[1.0, 2.0], [1e300, 0.0], [np.nan, 0.0]], pa.list_(pa.float64()))
    m = list_matrix(col, name="embedding")
    assert m.usable.tolist() == [True, False, False]
    assert m.reasons[1] is not None and "too large" in m.reasons[1]
    assert m.reasons[2] == "embedding has NaN/inf values"


@given(st.lists(st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=3, max_size=3),
                min_size=1, max_size=12))
def test_every_usable_row_is_finite_with_a_finite_squared_norm(rows: list[list[float]]) -> None:
    m = list_matrix(pa.array(rows, pa.list_(pa.float32())), name="embedding")
    x = m.values[m.usable]
    assert np.isfinite(x).all() and np.isfinite(np.einsum("ij,ij->i", x, x)).all()
    assert all((r is None) == u for r, u in zip(m.reasons, m.usable, strict=True))


def test_the_dimension_is_the_majority_and_the_message_names_the_rows_that_differ() -> None:
    col = pa.array([[1.0, 2.0, 3.0], [1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [1.0], [1.0, 2.0]], pa.list_(pa.float32()))
    ids = pa.array(["a", "b", "c", "d", "e", "f"])
    with pytest.raises(SchemaError) as err:
        list_matrix(col, name="embedding", frame_ids=ids)
    msg = str(err.value)
    assert "frame_id='a' has dimension 3, expected 2" in msg and "frame_id='e' (1)" in msg
    assert "2 of 6 rows" in msg and "4 of 6 rows have dimension 2" in msg and "encoder" not in msg


def test_a_fixed_size_list_gives_the_dimension() -> None:
    col = pa.array([None, [1.0, 2.0, 3.0]], pa.list_(pa.float32(), 3))
    m = list_matrix(col, name="embedding")
    assert m.dim == 3 and m.usable.tolist() == [False, True]
    assert list_matrix(pa.array([None], pa.list_(pa.float32(), 3)), name="embedding").dim == 3


def test_many_differing_rows_are_named_up_to_a_few() -> None:
    col = pa.array([[1.0, 2.0]] * 20 + [[1.0]] * 15, pa.list_(pa.float32()))
    with pytest.raises(SchemaError) as err:
        list_matrix(col, name="embedding")
    msg = str(err.value)
    assert "15 of 35 rows" in msg and "row 20 has dimension 1, expected 2" in msg and "row 24 (1)" in msg
    assert "row 25" not in msg and len(msg) < 400
