"""The reference index, built once and reused: loaded from its folder when it was built from the same
reference (and encoder), else the reference is embedded (or read as an embeddings table) and indexed.

The folder is the run's `index/reference/`, or `spec.index.dir` to share one across runs; an index in an
explicit `index.dir` built from another reference fails the job rather than score against other data. With
`index.shards` > 1 the index lives on Ray actors (mining/sharded_index.py), built and reused the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgemine.contracts import iter_manifest, open_dataset
from edgemine.errors import IncompatibleArtifactError
from edgemine.jobs.run_state import REFERENCE_INDEX, RunState, abs_path, positions
from edgemine.jobs.sources import EmbeddingSource, embed, source_from_table, table_kind
from edgemine.mining.index import VectorIndex, build_index, read_sidecar, sidecar_exists
from edgemine.mining.sharded_index import ShardedIndex
from edgemine.vectors import list_matrix

# one in-process index, or shards on Ray actors (same search API)
ReferenceIndex: TypeAlias = VectorIndex | ShardedIndex


def _ensure_ray(st: RunState) -> None:
    """A sharded index lives on Ray actors: join the running Ray (or RAY_ADDRESS), else start one for the run."""
    import ray

    from edgemine.runtime import ray_runtime

    if ray.is_initialized():
        return
    ctx = ray_runtime()
    ctx.__enter__()

    def stop_ray() -> None:
        ctx.__exit__(None, None, None)

    st.cleanups.insert(0, stop_ray)  # shut Ray down last


def _saved_reference(st: RunState, folder: Path, source: str) -> ReferenceIndex | None:
    """The index saved in `folder` when it may be reused for reference `source` (sharded or not), else None.

    An index found in the run's own folder is reused only when built from the same reference; one in an
    explicit `index.dir` must have been, or the job fails rather than score against other data."""
    spec = st.spec
    if spec.index.shards > 1:
        info = ShardedIndex.read_info(folder)
        if info is None:
            return None
        saved = info.get("source")
    else:
        if not sidecar_exists(folder):
            return None
        saved = read_sidecar(folder).params.get("source")
    if saved != source and spec.index.dir is None:
        return None
    if saved != source:
        raise IncompatibleArtifactError(
            f"index at {str(folder)!r} was built from reference {saved!r}, but this "
            f"job's reference is {source!r}; use another index.dir")
    if spec.index.shards > 1:
        sidx = ShardedIndex.load(folder)
        st.cleanups.append(sidx.shutdown)
        return sidx
    return VectorIndex.load(folder)


def _index_info(idx: ReferenceIndex) -> dict[str, Any]:
    info: dict[str, Any] = {"usable": idx.count, "kind": idx.meta.kind}
    if isinstance(idx, ShardedIndex):
        info["shards"] = len(idx.actors)
    return info


def reference_index(st: RunState, frames_src: EmbeddingSource) -> tuple[ReferenceIndex, dict[str, Any]]:
    """Load the reference index from its folder when it matches, else embed the reference and build it.

    Returns the index and what run.json records of it (`counts.reference`)."""
    spec = st.spec
    folder = Path(spec.index.dir) if spec.index.dir else st.run_dir / REFERENCE_INDEX
    source = abs_path(spec.reference)
    if spec.index.shards > 1:
        _ensure_ray(st)
    saved = _saved_reference(st, folder, source)
    if saved is not None:
        saved.check_compatible(encoder=frames_src.encoder, dim=frames_src.dim, what="the frames' embeddings")
        if "drive_id" in saved.ids.column_names or "drive_id" not in open_dataset(
                spec.reference, what="reference").schema.names:
            st.log(f"  reusing reference index {folder} ({saved.meta.kind}, {saved.count} vectors)")
            return saved, {"source": source, "index_dir": str(folder), "reused": True, **_index_info(saved)}
        st.log(f"  rebuilding reference index {folder}: saved without drive_id, which novelty's calibration needs")
    return _build_reference(st, frames_src, folder=folder, source=source)


def _build_reference(st: RunState, frames_src: EmbeddingSource, *, folder: Path,
                     source: str) -> tuple[ReferenceIndex, dict[str, Any]]:
    spec = st.spec
    kind = table_kind(spec.reference, what="reference")
    ref_path = Path(spec.reference)
    uris: pa.Table | None = None
    if kind == "manifest":
        ref_src = embed(ref_path, encoder=spec.encoder, out=folder / "embeddings", spec=spec, log=st.log)
        uris = pa.concat_tables(iter_manifest(ref_path, columns=["frame_id", "drive_id", "timestamp", "uri"]))
        uris = uris.select(["frame_id", "uri", "drive_id"])
    else:
        ref_src = source_from_table(ref_path, in_manifest=False, what=f"reference {ref_path}")
        d = open_dataset(ref_path, what="reference")
        keep_cols = [c for c in ("uri", "drive_id") if c in d.schema.names]
        if keep_cols:
            uris = d.to_table(columns=["frame_id", *keep_cols])
    if ref_src.dim != frames_src.dim or ref_src.encoder != frames_src.encoder:
        raise IncompatibleArtifactError(
            f"reference embeddings ({ref_src.encoder!r}, dim {ref_src.dim}) and frames' embeddings "
            f"({frames_src.encoder!r}, dim {frames_src.dim}) come from different encoders; embed both with one")
    dropped: dict[str, int] = {}
    uri_ids = uris.column("frame_id").combine_chunks() if uris is not None else None

    def batches() -> Iterator[tuple[pa.Table, np.ndarray]]:
        for b in ref_src.batches(batch_rows=spec.score_batch_rows):
            m = list_matrix(b.column("embedding"), name="embedding", frame_ids=b.column("frame_id"), dim=ref_src.dim)
            for r in m.reasons:
                if r is not None:
                    dropped[r] = dropped.get(r, 0) + 1
            keep = pa.array(m.usable)
            ids = b.select(["frame_id"]).filter(keep)
            if uri_ids is not None and uris is not None:
                pos = positions(ids.column("frame_id"), uri_ids)
                for c in uris.column_names[1:]:  # uri (evidence) and drive_id (calibration), where known
                    u = uris.column(c).take(pa.array(np.maximum(pos, 0)))
                    ids = ids.append_column(c, pc.if_else(pa.array(pos >= 0), u, pa.scalar(None, u.type)))
            yield ids, m.values[m.usable]

    params = spec.index.params(seed=spec.seed)
    idx: ReferenceIndex
    if spec.index.shards > 1:
        idx = ShardedIndex.build(batches(), count=ref_src.rows, dim=ref_src.dim, encoder=ref_src.encoder,
                                 shards=spec.index.shards, params=params)
        st.cleanups.append(idx.shutdown)
        idx.save(folder, extra={"source": source})
    else:
        idx = build_index(batches(), count=ref_src.rows, dim=ref_src.dim, encoder=ref_src.encoder, params=params)
        idx.meta.params["source"] = source
        idx.save(folder)
    st.log(f"  built reference index {folder}: {idx.meta.kind}, {idx.count} vectors")
    return idx, {"source": source, "index_dir": str(folder), "reused": False, "rows": ref_src.rows,
                 "dropped": dropped, "embeddings": ref_src.to_dict(), **_index_info(idx)}
