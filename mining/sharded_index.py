"""The reference index split across Ray actors: queries fan out to every shard, top-k lists are merged.

One machine's memory bounds a single FAISS index; a fleet's reference set does not fit. Each `IndexShard`
actor holds a `VectorIndex` over a slice of the reference rows (its own kind, chosen by its own size);
`ShardedIndex.search` sends each query batch to every shard once (through the object store) and merges the
per-shard top-k by distance — for exact shards the result equals one exact index over all rows. Queries
stream in batches, so memory stays flat whatever the number of queries.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from edgemine.errors import ConfigError, IncompatibleArtifactError
from edgemine.mining.index import IndexMeta, IndexParams, VectorIndex, build_index, drop_own_rows


def merge_topk(dists: list[np.ndarray], ids: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard (n, k_i) results (global ids, -1/+inf for missing) into the overall (n, k), closest first.

    Ties are broken by the smaller global id, so the merge is deterministic whatever the shard order.
    """
    if not dists:
        raise ConfigError("merge_topk needs at least one shard's results")
    d = np.concatenate(dists, axis=1)
    i = np.concatenate(ids, axis=1)
    d = np.where(i < 0, np.inf, d)
    tie = np.where(i < 0, np.iinfo(np.int64).max, i)
    order = np.lexsort((tie, d), axis=1)[:, :k]
    out_d = np.take_along_axis(d, order, 1).astype(np.float32)
    out_i = np.take_along_axis(i, order, 1)
    if out_d.shape[1] < k:
        pad = k - out_d.shape[1]
        out_d = np.hstack([out_d, np.full((len(out_d), pad), np.inf, np.float32)])
        out_i = np.hstack([out_i, np.full((len(out_i), pad), -1, np.int64)])
    return out_d, np.where(np.isinf(out_d), -1, out_i)


class IndexShard:
    """One shard, as a Ray actor: receives its rows in batches, builds, searches, saves."""

    def __init__(self, shard: int, offset: int, dim: int, encoder: str, params: IndexParams,
                 omp_threads: int | None = None) -> None:
        if omp_threads:
            import faiss

            faiss.omp_set_num_threads(omp_threads)
        self.shard, self.offset, self.dim, self.encoder, self.params = shard, offset, dim, encoder, params
        self._batches: list[tuple[pa.Table, np.ndarray]] = []
        self.index: VectorIndex | None = None

    def add(self, ids: pa.Table, vectors: np.ndarray) -> int:
        self._batches.append((ids, np.asarray(vectors, np.float32)))
        return len(vectors)

    def build(self) -> dict[str, Any]:
        count = sum(len(v) for _, v in self._batches)
        self.index = build_index(iter(self._batches), count=count, dim=self.dim, encoder=self.encoder,
                                 params=self.params)
        self._batches = []
        return self._info()

    def load(self, folder: str) -> dict[str, Any]:
        self.index = VectorIndex.load(folder)
        return self._info()

    def _info(self) -> dict[str, Any]:
        index = self._built()
        return {"shard": self.shard, "offset": self.offset, "count": index.count, "kind": index.meta.kind}

    def _built(self) -> VectorIndex:
        if self.index is None:
            raise ConfigError(f"shard {self.shard} has no index yet (call build or load)")
        return self.index

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._built()
        d, i = index.search(x, min(k, index.count))
        return d, np.where(i >= 0, i + self.offset, -1)

    def ids(self) -> pa.Table:
        return self._built().ids

    def reconstruct(self, rows: list[int]) -> np.ndarray:
        return self._built().reconstruct([r - self.offset for r in rows])

    def meta(self) -> IndexMeta:
        return self._built().meta

    def save(self, folder: str) -> str:
        return str(self._built().save(folder))


class ShardedIndex:
    """A reference index over `shards` Ray actors. Global row r lives in the shard whose range holds r."""

    def __init__(self, actors: list[Any], infos: list[dict[str, Any]], *, dim: int, encoder: str) -> None:
        self.actors = actors
        self.infos = sorted(infos, key=lambda x: x["shard"])
        self.dim = dim
        self.encoder = encoder

    @property
    def count(self) -> int:
        return sum(i["count"] for i in self.infos)

    @cached_property
    def meta(self) -> IndexMeta:
        """The first shard's sidecar, with the kind marked sharded and the total count (fetched once)."""
        import ray

        m = ray.get(self.actors[0].meta.remote())
        return IndexMeta(dim=m.dim, metric=m.metric, encoder=m.encoder, count=self.count,
                         kind=f"sharded-{len(self.actors)}x{m.kind}", params=dict(m.params))

    @cached_property
    def ids(self) -> pa.Table:
        """Row r's frame_id (and uri) at row r, fetched once from the shards."""
        import ray

        return pa.concat_tables(ray.get([a.ids.remote() for a in self.actors]), promote_options="permissive")

    def reconstruct(self, rows: list[int] | np.ndarray) -> np.ndarray:
        """Stored vectors of global rows, gathered from the shards that hold them."""
        import ray

        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros((len(rows), self.dim), np.float32)
        bounds = np.array([i["offset"] for i in self.infos] + [self.count])
        shard_of = np.searchsorted(bounds, rows, side="right") - 1
        futures = {s: self.actors[s].reconstruct.remote(rows[shard_of == s].tolist())
                   for s in np.unique(shard_of)}
        for s, f in futures.items():
            out[shard_of == s] = ray.get(f)
        return out

    def search_other_groups(self, x: np.ndarray, k: int, *, query_groups: np.ndarray, row_groups: np.ndarray,
                            margin: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """kNN that never returns a row of the query's own group (see VectorIndex.search_other_groups).

        Searches k+margin over the shards and drops same-group hits; queries left with fewer than k are
        searched again four times deeper, until they have k or the whole index was searched (inf/-1 pad)."""
        qg, rg = np.asarray(query_groups), np.asarray(row_groups)
        if len(rg) != self.count:
            raise ConfigError(f"row_groups has {len(rg)} entries for an index of {self.count} rows")
        dist = np.full((len(x), k), np.inf, np.float32)
        ids = np.full((len(x), k), -1, np.int64)
        todo, kk = np.arange(len(x)), min(k + margin, self.count)
        while len(todo):
            d, i = self.search(x[todo], kk)
            other = (i >= 0) & (rg[np.maximum(i, 0)] != qg[todo][:, None])
            done = (other.sum(axis=1) >= k) | (kk >= self.count)
            for r in np.flatnonzero(done):
                sel = np.flatnonzero(other[r])[:k]
                dist[todo[r], : len(sel)], ids[todo[r], : len(sel)] = d[r, sel], i[r, sel]
            todo, kk = todo[~done], min(kk * 4, self.count)
        return dist, ids

    def self_search(self, rows: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Leave-one-out kNN of vectors that are rows `rows` of this index (see VectorIndex.self_search)."""
        d, i = self.search(vectors, k + 1)
        return drop_own_rows(d, i, rows, k)

    @classmethod
    def build(
        cls,
        batches: Iterable[tuple[pa.Table, np.ndarray]],
        *,
        count: int,
        dim: int,
        encoder: str,
        shards: int,
        params: IndexParams = IndexParams(),
        actor_options: dict[str, Any] | None = None,
    ) -> ShardedIndex:
        """Stream (ids, vectors) batches into `shards` contiguous row ranges, one actor each, then build."""
        import ray

        if shards < 1:
            raise ConfigError(f"index.shards={shards} must be >= 1")
        if count < shards:
            raise ConfigError(f"cannot split count={count} vectors into shards={shards}")
        bounds = np.linspace(0, count, shards + 1).astype(np.int64)
        remote: Any = ray.remote(IndexShard).options(**(actor_options or {"num_cpus": 0}))
        actors: list[Any] = [remote.remote(s, int(bounds[s]), dim, encoder, params) for s in range(shards)]
        pending: list[Any] = []
        row = 0
        for ids, vecs in batches:
            vecs = np.asarray(vecs, np.float32)
            if vecs.ndim != 2 or vecs.shape[1] != dim:
                raise IncompatibleArtifactError(f"vectors of shape {tuple(vecs.shape)} for a dim-{dim} index")
            start = 0
            while start < len(vecs):
                if row >= count:
                    raise ConfigError(f"count={count} but the batches hold more vectors")
                s = int(np.searchsorted(bounds, row, side="right") - 1)
                take = min(len(vecs) - start, int(bounds[s + 1]) - row)
                pending.append(actors[s].add.remote(ids.slice(start, take), vecs[start : start + take]))
                start += take
                row += take
            if len(pending) > 4 * shards:  # bounded in flight: the driver never holds the whole reference
                ray.get(pending)
                pending = []
        ray.get(pending)
        if row == 0:
            raise ConfigError("cannot build a sharded index from 0 vectors")
        # `count` may overstate the usable rows (unusable ones are dropped upstream): trailing shards that
        # received nothing are let go.
        used = [s for s in range(shards) if bounds[s] < row]
        for s in range(shards):
            if s not in used:
                ray.kill(actors[s])
        actors = [actors[s] for s in used]
        infos = ray.get([a.build.remote() for a in actors])
        return cls(actors, infos, dim=dim, encoder=encoder)

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Global (distances, row ids) of the k nearest reference rows, merged over shards."""
        import ray

        if k < 1:
            raise ConfigError(f"k={k} must be >= 1")
        x = np.ascontiguousarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise IncompatibleArtifactError(f"queries of shape {tuple(x.shape)} for a dim-{self.dim} index")
        ref = ray.put(x)
        parts = ray.get([a.search.remote(ref, k) for a in self.actors])
        return merge_topk([p[0] for p in parts], [p[1] for p in parts], k)

    def search_batches(self, batches: Iterable[np.ndarray], k: int, *, in_flight: int = 2
                       ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream query batches; at most `in_flight` batches are being searched at once."""
        import ray

        queue: list[list[Any]] = []
        for x in batches:
            x = np.ascontiguousarray(x, np.float32)
            ref = ray.put(x)
            queue.append([a.search.remote(ref, k) for a in self.actors])
            if len(queue) >= in_flight:
                parts = ray.get(queue.pop(0))
                yield merge_topk([p[0] for p in parts], [p[1] for p in parts], k)
        while queue:
            parts = ray.get(queue.pop(0))
            yield merge_topk([p[0] for p in parts], [p[1] for p in parts], k)

    def save(self, folder: str | os.PathLike[str], *, extra: dict[str, Any] | None = None) -> Path:
        import json

        import ray

        root = Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        ray.get([a.save.remote(str(root / f"shard-{i['shard']:04d}")) for a, i in zip(self.actors, self.infos,
                                                                                      strict=True)])
        (root / "shards.json").write_text(json.dumps({"dim": self.dim, "encoder": self.encoder,
                                                      "shards": self.infos, **(extra or {})}, indent=2))
        return root

    @staticmethod
    def read_info(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
        """shards.json of a saved sharded index, or None when `folder` holds none."""
        import json

        p = Path(folder) / "shards.json"
        return json.loads(p.read_text()) if p.exists() else None

    @classmethod
    def load(cls, folder: str | os.PathLike[str], *, actor_options: dict[str, Any] | None = None) -> ShardedIndex:
        import json

        import ray

        root = Path(folder)
        meta = json.loads((root / "shards.json").read_text())
        remote: Any = ray.remote(IndexShard).options(**(actor_options or {"num_cpus": 0}))
        actors: list[Any] = []
        futures: list[Any] = []
        for info in meta["shards"]:
            a = remote.remote(info["shard"], info["offset"], meta["dim"], meta["encoder"], IndexParams())
            actors.append(a)
            futures.append(a.load.remote(str(root / f"shard-{info['shard']:04d}")))
        return cls(actors, ray.get(futures), dim=meta["dim"], encoder=meta["encoder"])

    def check_compatible(self, *, encoder: str, dim: int, what: str = "embeddings") -> None:
        if dim != self.dim or encoder != self.encoder:
            raise IncompatibleArtifactError(
                f"{what} (encoder {encoder!r}, dim {dim}) do not match the sharded index "
                f"(encoder {self.encoder!r}, dim {self.dim})")

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []
