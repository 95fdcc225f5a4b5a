"""A mining run's inputs: the manifest columns it holds, embedding sources (probed or embedded), the
uncertainty models' logits, and the index over the run's own frames.

    src = embed(Path("frames.parquet"), encoder="builtin", out=run_dir / "embeddings", spec=spec, log=print)
    for batch in src.batches(batch_rows=65_536): ...

An embedding source is a Parquet table with `frame_id` and `embedding` (and maybe `logits`, `encoder`): the
manifest itself when it carries embeddings (bring your own), else what the embed step wrote.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from edgemine.contracts import MANIFEST_REQUIRED, check_manifest_schema, iter_manifest, open_dataset
from edgemine.errors import ConfigError, IncompatibleArtifactError, SchemaError
from edgemine.jobs.outputs import ErrorLog
from edgemine.jobs.run_state import FRAMES_INDEX, Log, RunState, positions
from edgemine.jobs.spec import MineSpec
from edgemine.mining.index import VectorIndex, build_index
from edgemine.mining.signals import Signal
from edgemine.vectors import LengthTally, fixed_size, list_matrix


# ================================================================ embedding sources
@dataclass(frozen=True)
class EmbeddingSource:
    """Where a set of embeddings lives: a manifest with an `embedding` column or an embeddings table."""

    path: Path
    encoder: str
    dim: int
    rows: int
    in_manifest: bool
    has_logits: bool
    errors_path: Path | None = None

    def dataset(self) -> ds.Dataset:
        return ds.dataset(str(self.path), format="parquet")

    def batches(self, *, batch_rows: int, logits: bool = False) -> Iterator[pa.Table]:
        cols = ["frame_id", "embedding"] + (["logits"] if logits and self.has_logits else [])
        for b in self.dataset().to_batches(columns=cols, batch_size=batch_rows):
            if b.num_rows:
                yield pa.Table.from_batches([b])

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "encoder": self.encoder, "dim": self.dim, "rows": self.rows,
                "in_manifest": self.in_manifest, "column": "embedding"}


def table_kind(path: str | os.PathLike[str], *, what: str) -> str:
    """"manifest" (frames manifest), "embeddings" (frame_id + embedding table) or SchemaError."""
    schema = open_dataset(path, what=what).schema
    names = set(schema.names)
    if {"drive_id", "timestamp", "uri"} <= names:
        return "manifest"
    if {"frame_id", "embedding"} <= names:
        return "embeddings"
    raise SchemaError(
        f"{what} {str(path)!r} is neither a frames manifest (frame_id, drive_id, timestamp, uri) nor an "
        f"embeddings table (frame_id, embedding); it has columns {sorted(names)}"
    )


def _embedding_dim(dataset: ds.Dataset, *, what: str) -> int:
    """The fixed-size list's size, else the length most rows have; SchemaError naming the rows that differ."""
    t = dataset.schema.field("embedding").type
    size = fixed_size(t)
    if size is not None:
        return size
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)) or not pa.types.is_floating(t.value_type):
        raise SchemaError(f"{what}: column 'embedding' has type {t}, expected a list of floats")
    tally = LengthTally()
    ids = "frame_id" in dataset.schema.names
    for b in dataset.to_batches(columns=["frame_id", "embedding"] if ids else ["embedding"], batch_size=65_536):
        tally.add(b.column("embedding"), b.column("frame_id") if ids else None)
    if tally.dim() is None:
        raise SchemaError(f"{what}: every 'embedding' is null")
    try:
        return tally.check(name="embedding")
    except SchemaError as exc:
        raise SchemaError(f"{what}: {exc}") from None


def _encoder_of(dataset: ds.Dataset, *, what: str) -> str:
    if "encoder" not in dataset.schema.names:
        return "manifest"
    found: set[str] = set()
    for b in dataset.to_batches(columns=["encoder"], batch_size=65_536):
        found.update(v for v in pc.unique(b.column(0)).to_pylist() if v is not None)
        if len(found) > 1:
            raise IncompatibleArtifactError(f"{what} mixes embeddings of several encoders: {sorted(found)}")
    return found.pop() if found else "manifest"


def source_from_table(path: Path, *, in_manifest: bool, what: str, errors_path: Path | None = None,
                      encoder: str | None = None) -> EmbeddingSource:
    d = open_dataset(path, what=what)
    enc = encoder or ("manifest" if in_manifest else _encoder_of(d, what=what))
    has_logits = "logits" in d.schema.names and not in_manifest
    if has_logits:
        has_logits = any(b.column(0).null_count < b.num_rows for b in d.to_batches(columns=["logits"]))
    return EmbeddingSource(path=path, encoder=enc, dim=_embedding_dim(d, what=what), rows=d.count_rows(),
                           in_manifest=in_manifest, has_logits=has_logits, errors_path=errors_path)


def embed(manifest: Path, *, encoder: str, out: Path, spec: MineSpec, log: Log,
          progress: Callable[[int, int], None] | None = None) -> EmbeddingSource:
    """Embed a manifest (the embedding engineer's Ray pipeline) unless it carries embeddings already."""
    if "embedding" in open_dataset(manifest, what="manifest").schema.names:
        return source_from_table(manifest, in_manifest=True, what=f"manifest {manifest}")
    from edgemine.embeddings.pipeline import embed_manifest

    log(f"  embedding {manifest} with {encoder} -> {out}")
    res = embed_manifest(manifest, encoder=encoder, out=out, input_size=spec.input_size,
                         batch_size=spec.batch_size, actors=spec.actors, device=spec.device, progress=False,
                         on_progress=progress)
    errors = Path(res.errors_path) if getattr(res, "errors_path", None) else None
    return source_from_table(Path(res.embeddings_path), in_manifest=False, what=f"embeddings of {manifest}",
                             errors_path=errors if errors and errors.exists() else None, encoder=res.encoder_id)


def _slug(text: str) -> str:
    import hashlib
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[-60:] + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def embed_out(st: RunState, encoder: str, default: str) -> Path:
    """Where the embed step writes for `encoder`: the run folder, or a sub-folder of the shared embed_dir."""
    if st.spec.embed_dir is None:
        return st.run_dir / default
    return Path(st.spec.embed_dir) / _slug(encoder)


def embed_frames(st: RunState) -> EmbeddingSource:
    """The frames' embeddings: the manifest's own, or the encoder's."""
    spec = st.spec
    src = embed(spec.frames, encoder=spec.encoder, out=embed_out(st, spec.encoder, "embeddings"), spec=spec,
                log=st.log, progress=st.report)
    st.counts["encoder"] = src.encoder
    if src.in_manifest and spec.encoder != "builtin":
        st.notes.append(f"the manifest carries embeddings, so encoder {spec.encoder!r} was not run")
    st.log(f"  frames: {src.rows} embeddings of dim {src.dim} from {src.encoder}")
    return src


def model_logit_tables(st: RunState, frames_src: EmbeddingSource) -> list[tuple[str, pa.Table]]:
    """(model spec, table of frame_id + logits) for each uncertainty model; the encoder's own logits if none."""
    out: list[tuple[str, pa.Table]] = []
    for i, m in enumerate(st.spec.models):
        src = frames_src if m == st.spec.encoder else embed(
            Path(st.spec.frames), encoder=m, out=embed_out(st, m, f"models/m{i}"), spec=st.spec, log=st.log,
            progress=st.report)
        if not src.has_logits:
            st.notes.append(f"model {m!r} gave no logits; it does not contribute to uncertainty")
            continue
        t = src.dataset().to_table(columns=["frame_id", "logits"])
        out.append((m, t))
    if not st.spec.models and frames_src.has_logits:
        out.append((frames_src.encoder, frames_src.dataset().to_table(columns=["frame_id", "logits"])))
    st.counts["uncertainty_models"] = [m for m, _ in out]
    return out


# ================================================================ the manifest the run holds
@dataclass(frozen=True)
class Manifest:
    """The narrow manifest columns held for the whole run (ids, drives, times, uris, label/probs and the
    columns the signals read), with each frame's drive as an integer code."""

    table: pa.Table
    ids: pa.Array
    drive_codes: np.ndarray

    @property
    def num_rows(self) -> int:
        return self.table.num_rows


def manifest_columns(spec: MineSpec, signals: list[Signal]) -> list[str]:
    """The manifest columns a run holds: the required ones, label/probs when there, and what signals read."""
    schema = open_dataset(spec.frames, what="manifest").schema
    check_manifest_schema(schema, source=str(spec.frames))
    cols = list(MANIFEST_REQUIRED)
    for c in ("label", "probs"):
        if c in schema.names:
            cols.append(c)
    for sig in signals:
        cols += [c for c in sig.table_columns(schema.names) if c not in cols]
    return cols


def load_manifest(st: RunState, signals: list[Signal]) -> Manifest:
    """Check the manifest against the budget and hold the columns the run needs."""
    spec = st.spec
    n_manifest = open_dataset(spec.frames, what="manifest").count_rows()
    if n_manifest == 0:
        raise SchemaError(f"{spec.frames}: the manifest is empty (0 rows)")
    if spec.budget > n_manifest:
        raise ConfigError(f"budget={spec.budget} is larger than the {n_manifest} frames in {spec.frames}")
    man = pa.concat_tables(iter_manifest(spec.frames, columns=manifest_columns(spec, signals)))
    st.counts["manifest_frames"] = man.num_rows
    drives = man.column("drive_id").combine_chunks().dictionary_encode().indices
    return Manifest(table=man, ids=man.column("frame_id").combine_chunks(),
                    drive_codes=np.asarray(drives.to_numpy(zero_copy_only=False), dtype=np.int64))


# ================================================================ the index over the run's frames
def frames_index_build(st: RunState, src: EmbeddingSource, man: Manifest,
                       errors: ErrorLog) -> tuple[VectorIndex, np.ndarray]:
    """Index every usable frame embedding into `index/frames/`; unusable ones go to errors.parquet (stage
    "score"). Returns the index and, per manifest row, whether it has an embedding row."""
    has = np.zeros(man.num_rows, dtype=bool)
    uris = man.table.column("uri").combine_chunks()
    extra = {"n": 0}

    def batches() -> Iterator[tuple[pa.Table, np.ndarray]]:
        for b in src.batches(batch_rows=st.spec.score_batch_rows):
            pos = positions(b.column("frame_id"), man.ids)
            inman = pos >= 0
            extra["n"] += int((~inman).sum())
            m = list_matrix(b.column("embedding"), name="embedding", frame_ids=b.column("frame_id"), dim=src.dim)
            has[pos[inman]] = True
            bad = np.flatnonzero(inman & ~m.usable)
            if bad.size:
                errors.add([b.column("frame_id")[int(i)].as_py() for i in bad],
                           [uris[int(pos[i])].as_py() for i in bad], "score", [str(m.reasons[int(i)]) for i in bad])
            keep = inman & m.usable
            yield b.select(["frame_id"]).filter(pa.array(keep)), m.values[keep]

    idx = build_index(batches(), count=min(src.rows, man.num_rows), dim=src.dim, encoder=src.encoder,
                      params=st.spec.index.params(seed=st.spec.seed))
    idx.save(st.run_dir / FRAMES_INDEX)
    st.counts["embeddings_not_in_manifest"] = extra["n"]
    return idx, has.copy()


def log_missing(st: RunState, src: EmbeddingSource, man: Manifest, missing: np.ndarray, errors: ErrorLog) -> None:
    """Frames of the manifest without an embedding row: copy the embed step's reasons, or say there was none."""
    if not missing.size:
        return
    ids = man.table.column("frame_id").take(pa.array(missing))
    uris = man.table.column("uri").take(pa.array(missing))
    reasons: dict[str, tuple[str, str]] = {}
    if src.errors_path is not None:
        e = pq.read_table(src.errors_path)
        for fid, stage, reason in zip(e.column("frame_id").to_pylist(), e.column("stage").to_pylist(),
                                      e.column("reason").to_pylist(), strict=True):
            if fid is not None:
                reasons[fid] = (stage or "embed", reason or "")
    by_stage: dict[str, tuple[list, list, list]] = {}
    for fid, uri in zip(ids.to_pylist(), uris.to_pylist(), strict=True):
        stage, reason = reasons.get(fid, ("embed", "no embedding was produced for this frame"))
        a = by_stage.setdefault(stage, ([], [], []))
        a[0].append(fid)
        a[1].append(uri)
        a[2].append(reason)
    for stage, (f, u, r) in by_stage.items():
        errors.add(f, u, stage, r)
