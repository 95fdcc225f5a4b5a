from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from edgemine.errors import IncompatibleArtifactError, SchemaError
from edgemine.vectors import list_matrix


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
