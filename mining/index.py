"""FAISS adapter: a vector index chosen by size, searched in batches, persisted with a JSON sidecar.

Exact (flat) search below `exact_below` vectors; above it an approximate index (`ivf_flat`, `ivf_pq` or
`hnsw`). Every parameter can be overridden. On disk an index is a folder:

    index.faiss   faiss.write_index output
    index.json    sidecar: dim, metric, encoder id, count, kind and the parameters it was built with
    ids.parquet   row i of the index is frame i here (frame_id, plus uri/drive_id when known)

Loading an index and searching it with vectors of another encoder or dimension raises
`IncompatibleArtifactError`. Distances are Euclidean (for `cosine`, between L2-normalised vectors).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from edgemine.errors import ConfigError, IncompatibleArtifactError, InputNotFoundError
from edgemine.vectors import l2_normalize

IndexKind = Literal["auto", "flat", "ivf_flat", "ivf_pq", "hnsw"]
ApproxKind = Literal["ivf_flat", "ivf_pq", "hnsw"]
Refine = Literal["none", "sq8", "flat"]
Metric = Literal["l2", "cosine"]
INDEX_FILE, SIDECAR_FILE, IDS_FILE = "index.faiss", "index.json", "ids.parquet"
SIDECAR_VERSION = 1


def _faiss() -> Any:
    """The faiss module, typed loosely: its bundled stubs miss the SearchParameters keywords and HNSW fields."""
    import faiss

    return faiss


def _check_literal(name: str, value: object, lit: Any) -> None:
    valid = get_args(lit)
    if value not in valid:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(repr, valid))}")


@dataclass(frozen=True)
class IndexParams:
    """How to build and search an index. `None` means "derived from the data size" (see `resolved`)."""

    kind: IndexKind = "auto"
    metric: Metric = "l2"
    exact_below: int = 200_000  # auto: exact search below this many vectors
    # auto: the approximate kind above the threshold. IVF-Flat at nlist ~4*sqrt(n), nprobe 32: 1M x 1M in 134 s,
    # recall@10 0.9997, 2.3 GiB here; HNSW32 builds several times slower (docs/BENCHMARKS.md "Fleet scale").
    approx: ApproxKind = "ivf_flat"
    nlist: int | None = None  # IVF cells; default ~4*sqrt(n), at least 39 points per cell
    nprobe: int = 32  # IVF cells visited per query
    pq_m: int | None = None  # PQ sub-quantizers; default the largest divisor of dim <= dim/2 and <= 64
    pq_nbits: int = 8
    refine: Refine = "sq8"  # ivf_pq: re-rank k*k_factor PQ hits with 8-bit (sq8) or full (flat) vectors
    k_factor: int = 4
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 256
    train_size: int = 100_000  # IVF training vectors (the first ones streamed in)
    seed: int = 0

    def __post_init__(self) -> None:
        _check_literal("index.kind", self.kind, IndexKind)
        _check_literal("index.metric", self.metric, Metric)
        _check_literal("index.approx", self.approx, ApproxKind)
        _check_literal("index.refine", self.refine, Refine)
        for name in ("exact_below", "nprobe", "pq_nbits", "k_factor", "hnsw_m", "ef_construction", "ef_search",
                     "train_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"index.{name}={getattr(self, name)} must be >= 1")
        for name in ("nlist", "pq_m"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"index.{name}={v} must be >= 1")

    def resolved(self, *, count: int, dim: int) -> IndexParams:
        """Concrete parameters for `count` vectors of `dim`: kind chosen, nlist/pq_m filled in."""
        kind = self.kind
        if kind == "auto":
            kind = "flat" if count < self.exact_below else self.approx
        nlist = self.nlist
        if kind in ("ivf_flat", "ivf_pq") and nlist is None:
            nlist = max(1, min(int(4 * math.sqrt(max(count, 1))), max(1, count // 39)))
        pq_m = self.pq_m
        if kind == "ivf_pq":
            if pq_m is None:
                pq_m = max(m for m in range(1, min(64, max(1, dim // 2)) + 1) if dim % m == 0)
            if dim % pq_m:
                raise ConfigError(f"index.pq_m={pq_m} must divide the embedding dim {dim}")
        return replace(self, kind=kind, nlist=nlist, pq_m=pq_m)


@dataclass(frozen=True)
class IndexMeta:
    """The sidecar: what an index holds and how it was built."""

    dim: int
    metric: Metric
    encoder: str
    count: int
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    version: int = SIDECAR_VERSION


def _factory_string(p: IndexParams, dim: int) -> str:
    if p.kind == "flat":
        return "Flat"
    if p.kind == "ivf_flat":
        return f"IVF{p.nlist},Flat"
    if p.kind == "ivf_pq":
        refine = {"none": "", "sq8": ",Refine(SQ8)", "flat": ",RFlat"}[p.refine]
        return f"IVF{p.nlist},PQ{p.pq_m}x{p.pq_nbits}{refine}"
    return f"HNSW{p.hnsw_m},Flat"


class VectorIndex:
    """A FAISS index plus its sidecar and the ids of its rows."""

    def __init__(self, index: Any, meta: IndexMeta, ids: pa.Table) -> None:
        if ids.num_rows != index.ntotal:
            raise IncompatibleArtifactError(f"index holds {index.ntotal} vectors but ids list {ids.num_rows}")
        self.index = index
        self.meta = meta
        self.ids = ids
        self._params = IndexParams(**{k: v for k, v in meta.params.items() if k in IndexParams.__dataclass_fields__})
        self._apply_search_params()

    # ------------------------------------------------------------ search
    def _apply_search_params(self) -> None:
        faiss = _faiss()

        p = self._params
        if p.kind in ("ivf_flat", "ivf_pq"):
            faiss.extract_index_ivf(self.index).nprobe = min(p.nprobe, p.nlist or p.nprobe)
            if isinstance(self.index, faiss.IndexRefine):
                self.index.k_factor = float(p.k_factor)
        elif p.kind == "hnsw":
            self.index.hnsw.efSearch = p.ef_search

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def check_compatible(self, *, encoder: str, dim: int, what: str = "embeddings") -> None:
        """Raise IncompatibleArtifactError unless `encoder`/`dim` match the sidecar."""
        if dim != self.meta.dim:
            raise IncompatibleArtifactError(
                f"{what} have dim {dim} but the index was built with dim {self.meta.dim} (encoder "
                f"{self.meta.encoder!r}); rebuild the index with the same encoder"
            )
        if encoder != self.meta.encoder:
            raise IncompatibleArtifactError(
                f"{what} come from encoder {encoder!r} but the index was built from encoder "
                f"{self.meta.encoder!r}; embed both sides with the same encoder"
            )

    def _prep(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.meta.dim:
            raise IncompatibleArtifactError(
                f"query vectors have shape {tuple(x.shape)}; the index expects dim {self.meta.dim}"
            )
        return l2_normalize(x) if self.meta.metric == "cosine" else x

    def _search_params(self, exclude: np.ndarray | None) -> Any:
        faiss = _faiss()

        if exclude is None or len(exclude) == 0:
            return None
        sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.ascontiguousarray(exclude, dtype=np.int64)))
        p = self._params
        if p.kind in ("ivf_flat", "ivf_pq"):
            ivf = faiss.SearchParametersIVF(sel=sel, nprobe=min(p.nprobe, p.nlist or p.nprobe))
            if isinstance(self.index, faiss.IndexRefine):
                return faiss.IndexRefineSearchParameters(k_factor=float(p.k_factor), sel=sel, base_index_params=ivf)
            return ivf
        if p.kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=sel, efSearch=p.ef_search)
        return faiss.SearchParameters(sel=sel)

    def search(
        self, x: np.ndarray, k: int, *, exclude: np.ndarray | None = None, batch_size: int = 4096
    ) -> tuple[np.ndarray, np.ndarray]:
        """k nearest rows for each query: (distances float32 (n, k), row ids int64 (n, k)), closest first.

        Missing neighbours (k larger than the index, or excluded) have id -1 and distance +inf. `exclude`
        lists row ids no query may return.
        """
        if k < 1:
            raise ConfigError(f"k={k} must be >= 1")
        q = self._prep(x)
        n = q.shape[0]
        dist = np.full((n, k), np.inf, dtype=np.float32)
        ids = np.full((n, k), -1, dtype=np.int64)
        params = self._search_params(exclude)
        for s in range(0, n, batch_size):
            d, i = self.index.search(q[s : s + batch_size], k, params=params)
            ok = i >= 0
            d = np.sqrt(np.maximum(d, 0.0), dtype=np.float32)
            dist[s : s + batch_size] = np.where(ok, d, np.inf)
            ids[s : s + batch_size] = i
        return dist, ids

    def search_other_groups(
        self, x: np.ndarray, k: int, *, query_groups: np.ndarray, row_groups: np.ndarray, margin: int = 64
    ) -> tuple[np.ndarray, np.ndarray]:
        """kNN that never returns a row of the query's own group (e.g. the same drive).

        Searches k+margin neighbours and drops same-group ones; queries left with fewer than k are searched
        again with the whole group excluded (exact but slower, so only for those).
        """
        qg = np.asarray(query_groups)
        rg = np.asarray(row_groups)
        if len(rg) != self.count:
            raise ConfigError(f"row_groups has {len(rg)} entries for an index of {self.count} rows")
        kk = min(k + margin, self.count)
        d, i = self.search(x, kk)
        same = (i < 0) | (rg[np.maximum(i, 0)] == qg[:, None])
        order = np.argsort(same, axis=1, kind="stable")[:, :k]  # other-group hits first, in distance order
        dist = np.where(np.take_along_axis(same, order, 1), np.inf, np.take_along_axis(d, order, 1))
        ids = np.where(np.take_along_axis(same, order, 1), -1, np.take_along_axis(i, order, 1))
        if dist.shape[1] < k:
            pad = k - dist.shape[1]
            dist = np.hstack([dist, np.full((len(dist), pad), np.inf, np.float32)])
            ids = np.hstack([ids, np.full((len(ids), pad), -1, np.int64)])
        short = np.flatnonzero((~same).sum(axis=1) < k)
        for g in np.unique(qg[short]):
            q = short[qg[short] == g]
            dd, ii = self.search(x[q], k, exclude=np.flatnonzero(rg == g))
            dist[q], ids[q] = dd, ii
        return dist.astype(np.float32), ids

    def self_search(self, rows: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Leave-one-out kNN for vectors that are rows `rows` of this index: a row is never its own neighbour.

        Searches k+1 and removes the query's own row (or, if an approximate index missed it, the last
        neighbour), so exact duplicates of other rows still count as neighbours at distance 0.
        """
        d, i = self.search(vectors, k + 1)
        return drop_own_rows(d, i, rows, k)

    def reconstruct(self, rows: Sequence[int]) -> np.ndarray:
        """Stored vectors of `rows` (exact for flat/HNSW/IVF-Flat, approximate for IVF-PQ)."""
        faiss = _faiss()

        if self._params.kind in ("ivf_flat", "ivf_pq"):
            ivf = faiss.extract_index_ivf(self.index)
            if ivf.direct_map.no():
                ivf.make_direct_map()
        return np.stack([self.index.reconstruct(int(r)) for r in rows]) if len(rows) else np.zeros((0, self.meta.dim))

    # ------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write index.faiss, index.json and ids.parquet (each to a temporary name, then renamed)."""
        faiss = _faiss()

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(out / (INDEX_FILE + ".tmp")))
        pq.write_table(self.ids, out / (IDS_FILE + ".tmp"))
        (out / (SIDECAR_FILE + ".tmp")).write_text(json.dumps(asdict(self.meta), indent=2))
        for name in (INDEX_FILE, IDS_FILE, SIDECAR_FILE):  # sidecar last: it marks the folder complete
            os.replace(out / (name + ".tmp"), out / name)
        return out

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> VectorIndex:
        faiss = _faiss()

        f = Path(folder)
        if not (f / SIDECAR_FILE).exists():
            raise InputNotFoundError(f"no index at {str(f)!r} (missing {SIDECAR_FILE})")
        raw = json.loads((f / SIDECAR_FILE).read_text())
        meta = IndexMeta(**raw)
        index = faiss.read_index(str(f / INDEX_FILE))
        if index.d != meta.dim or index.ntotal != meta.count:
            raise IncompatibleArtifactError(
                f"index at {str(f)!r} holds {index.ntotal} vectors of dim {index.d} but its sidecar says "
                f"{meta.count} of dim {meta.dim}"
            )
        return cls(index, meta, pq.read_table(f / IDS_FILE))


def drop_own_rows(d: np.ndarray, i: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """From a (n, k+1) search of index rows `rows`, remove each query's own row (else its last neighbour)."""
    own = i == np.asarray(rows, dtype=np.int64)[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones_like(own)
    keep[np.arange(len(drop)), drop] = False
    return d[keep].reshape(-1, k), i[keep].reshape(-1, k)


def sidecar_exists(folder: str | os.PathLike[str]) -> bool:
    return (Path(folder) / SIDECAR_FILE).exists()


def read_sidecar(folder: str | os.PathLike[str]) -> IndexMeta:
    return IndexMeta(**json.loads((Path(folder) / SIDECAR_FILE).read_text()))


def build_index(
    batches: Iterable[tuple[pa.Table, np.ndarray]],
    *,
    count: int,
    dim: int,
    encoder: str,
    params: IndexParams = IndexParams(),
) -> VectorIndex:
    """Build an index from streamed (ids table, vectors) batches; `count` (the total) picks the kind.

    The ids table of each batch has `frame_id` and any other per-row columns to keep (uri, drive_id…).
    IVF indexes train on the first `train_size` vectors, buffered; everything else is added as it comes.
    HNSW vectors are buffered and added in one call: faiss inserts each `add` call's points level by level,
    and appending batch after batch onto a small graph routes every insert through its low levels — recall@10
    fell from 0.97 to 0.76 at 100k (benchmarks/fleet_novelty.py, hnsw_fast). The graph holds every vector
    anyway, so the buffer costs one extra copy while the graph is built.
    """
    faiss = _faiss()

    if count < 1:
        raise ConfigError(f"cannot build an index from count={count} vectors")
    p = params.resolved(count=count, dim=dim)
    faiss_metric = faiss.METRIC_L2
    index = faiss.index_factory(dim, _factory_string(p, dim), faiss_metric)
    if p.kind == "hnsw":
        index.hnsw.efConstruction = p.ef_construction
    if p.kind == "ivf_pq":
        ivfpq = faiss.downcast_index(faiss.extract_index_ivf(index))
        ivfpq.do_polysemous_training = False  # we never search polysemous codes; the training is very slow
    id_tables: list[pa.Table] = []
    pending: list[np.ndarray] = []
    pending_rows = 0
    added = 0

    def prep(v: np.ndarray) -> np.ndarray:
        v = np.ascontiguousarray(v, dtype=np.float32)
        if v.ndim != 2 or v.shape[1] != dim:
            raise IncompatibleArtifactError(f"vectors of shape {tuple(v.shape)} cannot go into a dim-{dim} index")
        return l2_normalize(v) if p.metric == "cosine" else v

    def train_and_flush() -> None:
        nonlocal pending, pending_rows, added
        if not pending:
            return
        block = np.concatenate(pending)
        if not index.is_trained:
            km_n = min(len(block), p.train_size)
            rng = np.random.default_rng(p.seed)
            sample = block[rng.choice(len(block), km_n, replace=False)] if km_n < len(block) else block
            if isinstance(index, faiss.IndexIVF) or faiss.try_extract_index_ivf(index) is not None:
                faiss.extract_index_ivf(index).cp.seed = p.seed
            index.train(sample)
        index.add(block)
        added += len(block)
        pending, pending_rows = [], 0

    for ids, vecs in batches:
        v = prep(vecs)
        if ids.num_rows != len(v):
            raise ConfigError(f"ids ({ids.num_rows}) and vectors ({len(v)}) differ in length")
        id_tables.append(ids)
        if index.is_trained and p.kind != "hnsw":
            index.add(v)
            added += len(v)
        else:
            pending.append(v)
            pending_rows += len(v)
            if pending_rows >= p.train_size and p.kind != "hnsw":
                train_and_flush()
    train_and_flush()
    if added == 0:
        raise ConfigError("cannot build an index from 0 vectors")
    ids_table = pa.concat_tables(id_tables, promote_options="permissive") if id_tables else pa.table({})
    meta = IndexMeta(dim=dim, metric=p.metric, encoder=encoder, count=added, kind=p.kind, params=asdict(p))
    return VectorIndex(index, meta, ids_table)


def build_index_from_arrays(
    vectors: np.ndarray,
    *,
    frame_ids: Sequence[str] | None = None,
    encoder: str = "test",
    params: IndexParams = IndexParams(),
    batch_size: int = 65_536,
) -> VectorIndex:
    """Convenience for in-memory data: one call, ids default to "0", "1", …"""
    vectors = np.asarray(vectors, dtype=np.float32)
    ids = list(frame_ids) if frame_ids is not None else [str(i) for i in range(len(vectors))]
    batches = (
        (pa.table({"frame_id": pa.array(ids[s : s + batch_size], pa.string())}), vectors[s : s + batch_size])
        for s in range(0, len(vectors), batch_size)
    )
    return build_index(batches, count=len(vectors), dim=vectors.shape[1], encoder=encoder, params=params)
