from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgemine.errors import ConfigError, IncompatibleArtifactError
from edgemine.mining.index import IndexParams, build_index_from_arrays
from edgemine.mining.sharded_index import ShardedIndex, merge_topk

RNG = np.random.default_rng(0)
REF = RNG.normal(size=(3000, 16)).astype(np.float32)
QUERIES = RNG.normal(size=(200, 16)).astype(np.float32)


def batches(x: np.ndarray, size: int = 700) -> Iterator[tuple[pa.Table, np.ndarray]]:
    for s in range(0, len(x), size):
        yield pa.table({"frame_id": [f"r{i}" for i in range(s, min(s + size, len(x)))]}), x[s : s + size]


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 5), st.integers(1, 12), st.integers(0, 2**31))
def test_merging_shard_results_equals_a_global_sort(shards: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    d_all = rng.integers(0, 20, size=(7, 40)).astype(np.float32)  # many ties on purpose
    parts_d, parts_i = [], []
    for cols in np.array_split(np.arange(40), shards):
        if len(cols) == 0:
            continue
        order = np.lexsort((np.broadcast_to(cols, d_all[:, cols].shape), d_all[:, cols]), axis=1)[:, :k]
        parts_d.append(np.take_along_axis(d_all[:, cols], order, 1))
        parts_i.append(cols[order])
    d, i = merge_topk(parts_d, parts_i, k)
    want = np.lexsort((np.broadcast_to(np.arange(40), d_all.shape), d_all), axis=1)[:, :k]
    assert (i == want).all()
    assert np.allclose(d, np.take_along_axis(d_all, want, 1))


@pytest.mark.ray
@pytest.mark.integration
def test_exact_shards_equal_one_exact_index(ray_local: str) -> None:
    single = build_index_from_arrays(REF, params=IndexParams(kind="flat"))
    sharded = ShardedIndex.build(batches(REF), count=len(REF), dim=16, encoder="test", shards=3,
                                 params=IndexParams(kind="flat"))
    try:
        assert [i["count"] for i in sharded.infos] == [1000, 1000, 1000]
        d1, i1 = single.search(QUERIES, 10)
        d2, i2 = sharded.search(QUERIES, 10)
        np.testing.assert_allclose(d1, d2, rtol=1e-5)
        assert (i1 == i2).mean() > 0.999  # equal up to exact float ties
        # streamed query batches give the same answers as one call
        streamed = list(sharded.search_batches((QUERIES[s : s + 64] for s in range(0, 200, 64)), 10))
        np.testing.assert_array_equal(np.concatenate([s[1] for s in streamed]), i2)
        # other-group search (novelty's calibration): the same as the in-process index, even when one group
        # fills the first k+margin neighbours and the search must go deeper
        groups = np.arange(len(REF)) // 500
        rows = np.arange(0, len(REF), 97)
        d1, i1 = single.search_other_groups(REF[rows], 10, query_groups=groups[rows], row_groups=groups, margin=2)
        d2, i2 = sharded.search_other_groups(REF[rows], 10, query_groups=groups[rows], row_groups=groups, margin=2)
        np.testing.assert_allclose(d1, d2, rtol=1e-5)
        assert (groups[i2] != groups[rows][:, None]).all()
    finally:
        sharded.shutdown()


@pytest.mark.ray
@pytest.mark.integration
def test_approximate_shards_keep_recall_and_survive_save_and_load(ray_local: str, tmp_path: Path) -> None:
    exact = build_index_from_arrays(REF, params=IndexParams(kind="flat"))
    params = IndexParams(kind="hnsw", ef_search=128)
    sharded = ShardedIndex.build(batches(REF), count=len(REF), dim=16, encoder="test", shards=2, params=params)
    _, want = exact.search(QUERIES, 10)
    _, got = sharded.search(QUERIES, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(want, got, strict=True)])
    assert recall >= 0.95
    sharded.save(tmp_path / "idx")
    sharded.shutdown()
    loaded = ShardedIndex.load(tmp_path / "idx")
    try:
        _, again = loaded.search(QUERIES, 10)
        np.testing.assert_array_equal(again, got)
        with pytest.raises(IncompatibleArtifactError, match="dim 8"):
            loaded.check_compatible(encoder="test", dim=8)
    finally:
        loaded.shutdown()


@pytest.mark.ray
def test_bad_shard_counts_name_the_value(ray_local: str) -> None:
    with pytest.raises(ConfigError, match="shards=0"):
        ShardedIndex.build(batches(REF), count=len(REF), dim=16, encoder="t", shards=0)
    with pytest.raises(ConfigError, match="count=2 vectors into shards=3"):
        ShardedIndex.build(batches(REF[:2]), count=2, dim=16, encoder="t", shards=3)
