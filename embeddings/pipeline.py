"""The embedding job on Ray Data: frames manifest -> Parquet shards of embeddings (+ errors.parquet).

    manifest ──► ShardSource (read tasks: one block per unfinished shard of `shard_rows` manifest rows)
             ──► EmbedWorker actors (ActorPoolStrategy): decode in a thread pool + encoder forward
             ──► driver: collect rows per shard, write each shard atomically when complete

Outputs in `out/`:
- `embeddings/part-NNNNN.parquet` — `edgemine.contracts.embeddings_schema(dim)`, rows in manifest order;
- `errors.parquet` — every frame that could not be embedded (`ERRORS_SCHEMA`), merged from `_errors/`;
- `_config.json` — encoder id, input size, precision, shard size and the manifest fingerprint;
- `summary.json` — counts and timings of the last run.

Resumable: shard i always holds manifest rows [i*shard_rows, (i+1)*shard_rows). A shard is done when its
embeddings file exists; it is written (temp name + os.replace) after its errors part, so a crash leaves
either a whole shard or none. A re-run checks `_config.json` (a different encoder, input size, precision,
shard size or manifest raises IncompatibleArtifactError naming both values) and redoes only missing shards.

Throughput on CPU (see docs/BENCHMARKS.md): decoding a 64 px PNG costs more than the baseline CNN's forward
pass, so decoding happens inside the inference actor (a thread pool when the actor has several threads;
Pillow releases the GIL), which avoids shipping pixels between processes. By default there are
single-threaded actors, one per core plus one (`plan_actors`): that beat one actor with all cores, whose
idle OpenMP threads spin against the decoder. Read tasks yield whole shards, sliced into blocks of ~1024
rows (`_block_rows`). `decode="tasks"` runs decoding as separate Ray tasks instead (for when decoding needs
many more cores than inference, e.g. large JPEGs feeding a GPU).

A manifest with an `embedding` column needs no inference: its vectors are written as shards directly
(encoder id "manifest").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from edgemine.contracts import (
    ERRORS_SCHEMA,
    MANIFEST_REQUIRED,
    embeddings_schema,
    iter_manifest,
    manifest_base_dir,
    normalize_manifest_batch,
)
from edgemine.embeddings.decode import MIN_SIDE, decode_batch
from edgemine.embeddings.device import DevicePlan, cpu_threads_per_actor
from edgemine.embeddings.encoders import DEFAULT_ENCODER
from edgemine.errors import ConfigError, EdgemineError, IncompatibleArtifactError, SchemaError
from edgemine.runtime import atomic_write_bytes, atomic_write_table, ray_runtime

DecodePlacement = Literal["actor", "tasks"]
DECODE_PLACEMENTS: tuple[str, ...] = get_args(DecodePlacement)
CONFIG_FILE = "_config.json"
SUMMARY_FILE = "summary.json"
EMBEDDINGS_DIR = "embeddings"
ERRORS_DIR = "_errors"  # per-shard error parts; "_" so Parquet readers of `out/` skip them
ERRORS_FILE = "errors.parquet"
FORMAT_VERSION = 1
DEFAULT_BATCH_SIZE = 256
DEFAULT_SHARD_ROWS = 4096
MANIFEST_ENCODER_ID = "manifest"

log = logging.getLogger(__name__)


# ================================================================ result
@dataclass
class EmbedResult:
    out: str
    embeddings_path: str  # folder of Parquet shards (embeddings_schema(dim))
    errors_path: str  # errors.parquet (ERRORS_SCHEMA)
    encoder_id: str
    dim: int
    input_size: int | None
    n_frames: int  # manifest rows; == n_embedded + n_errors
    n_embedded: int
    n_errors: int
    errors_by_stage: dict[str, int]
    n_shards: int
    shards_written: int  # by this run; the rest were already done (resume)
    seconds: float
    device: str
    frames_per_second: float  # frames embedded by this run / seconds

    def summary(self) -> str:
        stages = ", ".join(f"{k} {v}" for k, v in sorted(self.errors_by_stage.items()))
        resumed = self.n_shards - self.shards_written
        return (
            f"embedded {self.n_embedded:,} of {self.n_frames:,} frames with {self.encoder_id} (dim {self.dim}); "
            f"{self.n_errors:,} unusable{f' ({stages})' if stages else ''}; {self.shards_written} shard(s) "
            f"written{f', {resumed} reused' if resumed else ''} in {self.seconds:.1f}s "
            f"({self.frames_per_second:,.0f} frames/s on {self.device}) -> {self.embeddings_path}"
        )


# ================================================================ manifest plan
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


class _RowReader:
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


def _shard_table(table: pa.Table, shard: int, start: int) -> pa.Table:
    n = table.num_rows
    return pa.table({
        "shard": pa.array(np.full(n, shard, dtype=np.int32)),
        "row": pa.array(np.arange(start, start + n, dtype=np.int64)),
        "frame_id": table.column("frame_id"),
        "uri": table.column("uri"),
    })


# ================================================================ Ray Data: source
def _make_source(plan: ManifestPlan, shards: list[tuple[int, int, int]]) -> Any:
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class ShardSource(Datasource):
        """One read task per unfinished shard; Ray Data slices its output to the dataset's block size."""

        def estimate_inmemory_data_size(self) -> int | None:
            return sum(stop - start for _, start, stop in shards) * 200

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[ReadTask]:
            tasks = []
            for shard, start, stop in shards:
                def read(shard: int = shard, start: int = start, stop: int = stop) -> Iterator[pa.Table]:
                    yield _shard_table(_RowReader(plan, list(MANIFEST_REQUIRED)).read(start, stop), shard, start)

                meta = BlockMetadata(num_rows=stop - start, size_bytes=(stop - start) * 200, input_files=None,
                                     exec_stats=None)
                tasks.append(ReadTask(read, meta))
            return tasks

    return ShardSource()


# ================================================================ Ray Data: workers
OUTPUT_FIELDS = ("shard", "row", "frame_id", "uri", "embedding", "logits", "stage", "reason")


def _output_table(batch: pa.Table, emb: np.ndarray, logits: np.ndarray | None, ok: np.ndarray,
                  errors: dict[int, tuple[str, str]]) -> pa.Table:
    """One output row per input row: the embedding, or (stage, reason) for a frame that failed."""
    n = batch.num_rows
    dim = emb.shape[1] if emb.ndim == 2 and emb.shape[1] else 1
    full = np.zeros((n, dim), dtype=np.float32)
    valid = np.zeros(n, dtype=bool)
    if len(ok):
        full[ok] = emb
        valid[ok] = True
    for i in errors:
        valid[i] = False
    emb_arr = pa.FixedSizeListArray.from_arrays(pa.array(full.reshape(-1)), dim, mask=pa.array(~valid))
    if logits is not None:
        c = logits.shape[1]
        lfull = np.zeros((n, c), dtype=np.float32)
        lfull[ok] = logits
        offsets = pa.array(np.arange(0, (n + 1) * c, c, dtype=np.int32))
        log_arr = pa.ListArray.from_arrays(offsets, pa.array(lfull.reshape(-1)), mask=pa.array(~valid))
    else:
        log_arr = pa.nulls(n, pa.list_(pa.float32()))
    stage = [errors[i][0] if i in errors else None for i in range(n)]
    reason = [errors[i][1] if i in errors else None for i in range(n)]
    return pa.table({
        "shard": batch.column("shard"), "row": batch.column("row"), "frame_id": batch.column("frame_id"),
        "uri": batch.column("uri"), "embedding": emb_arr, "logits": log_arr,
        "stage": pa.array(stage, pa.string()), "reason": pa.array(reason, pa.string()),
    })


class EmbedWorker:
    """Ray Data actor: decode (thread pool) + encoder forward for one batch of manifest rows.

    Loads the encoder once per actor and checks its id against the driver's, so actors on other machines
    cannot silently use different weights.
    """

    def __init__(self, *, spec: str, input_size: int | None, device: str, autocast: bool, expected_id: str,
                 threads: int, decode_threads: int, min_side: int = MIN_SIDE) -> None:
        import torch

        from edgemine.embeddings.encoders import load_encoder

        torch.set_num_threads(max(1, threads))
        self.encoder = load_encoder(spec, input_size=input_size, device=device, autocast=autocast)
        if self.encoder.encoder_id != expected_id:
            raise IncompatibleArtifactError(
                f"worker loaded encoder {self.encoder.encoder_id!r} but the job uses {expected_id!r}: "
                f"{spec!r} resolves to different weights on this node"
            )
        self.pool = ThreadPoolExecutor(max(1, decode_threads)) if decode_threads > 1 else None
        self.min_side = max(min_side, self.encoder.min_side)  # an encoder may refuse smaller frames

    def _embed_isolating(self, images: np.ndarray, errors: dict[int, tuple[str, str]], ok: np.ndarray,
                         ) -> tuple[np.ndarray, np.ndarray | None]:
        """Forward the batch; if it raises, forward frame by frame so only the frames that fail are lost."""
        try:
            return self.encoder.embed_uint8(images)
        except (RuntimeError, ValueError) as batch_exc:
            log.warning("batch forward failed (%s); retrying frame by frame", batch_exc)
        embs: list[np.ndarray] = []
        logits: list[np.ndarray] = []
        for j in range(len(images)):
            try:
                e, lg = self.encoder.embed_uint8(images[j:j + 1])
            except (RuntimeError, ValueError) as exc:
                errors[int(ok[j])] = ("embed", f"encoder forward failed: {exc}".splitlines()[0])
                e, lg = np.zeros((1, self.encoder.dim), np.float32), None
                if self.encoder.n_classes:
                    lg = np.zeros((1, self.encoder.n_classes), np.float32)
            embs.append(e)
            if lg is not None:
                logits.append(lg)
        return np.concatenate(embs), (np.concatenate(logits) if logits else None)

    def __call__(self, batch: pa.Table) -> pa.Table:
        errors: dict[int, tuple[str, str]] = {}
        if "pixels" in batch.column_names:  # decode="tasks": pixels come from the decode stage
            images, ok = _pixels_to_images(batch, self.encoder.input_size, errors)
        else:
            dec = decode_batch(batch.column("uri").to_pylist(), size=self.encoder.input_size,
                               min_side=self.min_side, pool=self.pool)
            images, ok = dec.images, dec.ok
            errors.update({i: (stage, reason) for i, stage, reason in dec.errors})
        emb = np.zeros((0, self.encoder.dim), np.float32)
        logits = None
        if len(ok):
            emb, logits = self._embed_isolating(images, errors, ok)
            finite = np.isfinite(emb).all(axis=1)
            if logits is not None:
                finite &= np.isfinite(logits).all(axis=1)
            for j in np.flatnonzero(~finite):
                errors.setdefault(int(ok[j]), ("embed", "non-finite embedding or logits (NaN/inf)"))
        out = _output_table(batch.drop_columns([c for c in ("pixels", "stage", "reason")
                                                if c in batch.column_names]), emb, logits, ok, errors)
        return out


def decode_stage(batch: pa.Table, *, size: int, min_side: int = MIN_SIDE) -> pa.Table:
    """decode="tasks": a Ray task decodes a batch to raw uint8 pixels (`pixels`, null + stage/reason if not)."""
    dec = decode_batch(batch.column("uri").to_pylist(), size=size, min_side=min_side)
    pixels: list[bytes | None] = [None] * batch.num_rows
    for j, i in enumerate(dec.ok):
        pixels[int(i)] = dec.images[j].tobytes()
    stage: list[str | None] = [None] * batch.num_rows
    reason: list[str | None] = [None] * batch.num_rows
    for i, s, r in dec.errors:
        stage[i], reason[i] = s, r
    return batch.append_column("pixels", pa.array(pixels, pa.binary(size * size * 3))) \
        .append_column("stage", pa.array(stage, pa.string())).append_column("reason", pa.array(reason, pa.string()))


def _pixels_to_images(batch: pa.Table, size: int, errors: dict[int, tuple[str, str]]) -> tuple[np.ndarray,
                                                                                                np.ndarray]:
    pix = batch.column("pixels").combine_chunks()
    valid = pc.is_valid(pix).to_numpy(zero_copy_only=False)
    stages, reasons = batch.column("stage").to_pylist(), batch.column("reason").to_pylist()
    for i in np.flatnonzero(~valid):
        errors[int(i)] = (stages[i] or "decode", reasons[i] or "not decoded")
    ok = np.flatnonzero(valid)
    good = pix.filter(pa.array(valid))
    nbytes = size * size * 3
    data = np.frombuffer(good.buffers()[1], dtype=np.uint8)
    images = data[good.offset * nbytes:(good.offset + len(good)) * nbytes]
    return images.reshape(len(ok), size, size, 3), ok


# ================================================================ driver: shard files
class ShardStore:
    """The output folder: config check, which shards are done, atomic shard writes, the final merge."""

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = Path(out)
        self.emb_dir = self.out / EMBEDDINGS_DIR
        self.err_dir = self.out / ERRORS_DIR

    def emb_path(self, shard: int) -> Path:
        return self.emb_dir / f"part-{shard:05d}.parquet"

    def err_path(self, shard: int) -> Path:
        return self.err_dir / f"part-{shard:05d}.parquet"

    def check_config(self, config: dict[str, Any]) -> None:
        """Write `_config.json`, or check an existing one matches (IncompatibleArtifactError if not)."""
        path = self.out / CONFIG_FILE
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise IncompatibleArtifactError(f"{path} is not valid JSON ({exc}); remove {self.out} to start "
                                                "over") from exc
            for key, value in config.items():
                if old.get(key) != value:
                    raise IncompatibleArtifactError(
                        f"{self.out} holds embeddings with {key}={old.get(key)!r} but this run has {key}={value!r}; "
                        "use another --out or delete it to start over"
                    )
            return
        stray = [p.name for p in (self.emb_dir.glob("*.parquet") if self.emb_dir.exists() else [])]
        if stray:
            raise IncompatibleArtifactError(f"{self.emb_dir} has shards ({stray[0]}, ...) but no {CONFIG_FILE}; "
                                            "refusing to mix outputs of an unknown run")
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(config, indent=2, sort_keys=True).encode())

    def done(self, shard: int) -> bool:
        return self.emb_path(shard).exists() and self.err_path(shard).exists()

    def write_shard(self, shard: int, embeddings: pa.Table, errors: pa.Table) -> None:
        """Errors part first, embeddings last: the embeddings file is the shard's 'done' mark."""
        self.emb_dir.mkdir(parents=True, exist_ok=True)
        self.err_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_table(self.err_path(shard), errors)
        atomic_write_table(self.emb_path(shard), embeddings)

    def finalize(self, n_shards: int) -> tuple[int, dict[str, int]]:
        """Merge the error parts into errors.parquet (atomically); return (embedded rows, errors by stage)."""
        embedded = sum(pq.ParquetFile(self.emb_path(i)).metadata.num_rows for i in range(n_shards))
        by_stage: dict[str, int] = {}
        tmp = self.out / f".{ERRORS_FILE}.tmp"
        with pq.ParquetWriter(tmp, ERRORS_SCHEMA) as w:
            for i in range(n_shards):
                part = pq.read_table(self.err_path(i), schema=ERRORS_SCHEMA)
                if part.num_rows:
                    w.write_table(part)
                    for s, c in zip(*np.unique(part.column("stage").to_numpy(zero_copy_only=False),
                                               return_counts=True), strict=True):
                        by_stage[str(s)] = by_stage.get(str(s), 0) + int(c)
        os.replace(tmp, self.out / ERRORS_FILE)
        return embedded, by_stage


def _split_shard(rows: pa.Table, *, dim: int, encoder_id: str) -> tuple[pa.Table, pa.Table]:
    """Worker output rows of one shard -> (embeddings table, errors table), both in manifest order."""
    rows = rows.sort_by("row")
    failed = pc.is_valid(rows.column("stage"))
    good = rows.filter(pc.invert(failed))
    bad = rows.filter(failed)
    schema = embeddings_schema(dim)
    emb = pa.table({
        "frame_id": good.column("frame_id"),
        "embedding": good.column("embedding").cast(schema.field("embedding").type),
        "logits": good.column("logits").cast(pa.list_(pa.float32())),
        "encoder": pa.array([encoder_id] * good.num_rows, pa.string()),
    }, schema=schema)
    err = pa.table({"frame_id": bad.column("frame_id"), "uri": bad.column("uri"), "stage": bad.column("stage"),
                    "reason": bad.column("reason")}, schema=ERRORS_SCHEMA)
    return emb, err


# ================================================================ progress
class Progress:
    """rows/s and ETA on stderr: redrawn in place on a terminal, one line every 10 s otherwise."""

    def __init__(self, total: int, *, enabled: bool, label: str = "embed") -> None:
        self.total, self.enabled, self.label = total, enabled, label
        self.done = self.errors = 0
        self.t0 = time.perf_counter()
        self._last = 0.0
        self._tty = sys.stderr.isatty()

    def update(self, rows: int, errors: int = 0) -> None:
        self.done += rows
        self.errors += errors
        now = time.perf_counter()
        if self.enabled and (now - self._last >= (0.5 if self._tty else 10.0) or self.done >= self.total):
            self._last = now
            print(self.line(), file=sys.stderr, end="\r" if self._tty and self.done < self.total else "\n",
                  flush=True)

    def line(self) -> str:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        rate = self.done / dt
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta_s = f"{eta // 60:.0f}m{eta % 60:02.0f}s" if eta != float("inf") else "?"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (f"{self.label}: {self.done:,}/{self.total:,} frames ({pct:.1f}%) {rate:,.0f} frames/s "
                f"ETA {eta_s}; {self.errors:,} unusable")


# ================================================================ the job
def _check_options(batch_size: int, shard_rows: int, actors: int | None, decode: str) -> None:
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    if shard_rows < 1:
        raise ConfigError(f"shard_rows={shard_rows} must be >= 1")
    if actors is not None and actors < 1:
        raise ConfigError(f"actors={actors} must be >= 1")
    if decode not in DECODE_PLACEMENTS:
        raise ConfigError(f"decode={decode!r} is not one of {list(DECODE_PLACEMENTS)}")


def embed_manifest(
    manifest: str | os.PathLike[str],
    *,
    encoder: str = DEFAULT_ENCODER,
    out: str | os.PathLike[str],
    input_size: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    actors: int | None = None,
    device: str = "auto",
    shard_rows: int = DEFAULT_SHARD_ROWS,
    progress: bool = True,
    decode: DecodePlacement = "actor",
    threads_per_actor: int | None = None,
    num_cpus: int | None = None,
) -> EmbedResult:
    """Embed every frame of `manifest` into Parquet shards under `out` (resumable; see the module docstring).

    encoder: spec string (`builtin`, `builtin:FIT.npz`, `torchscript:PATH`, `torchvision:NAME:PATH`,
      `efficientnet_lite0[:SIZE]`).
    input_size: frames are resized to this square size (default: the encoder's own).
    batch_size: frames per forward pass. actors: inference actors (default: one per GPU on CUDA, else
      cores + 1 single-threaded ones; see `plan_actors`). threads_per_actor: torch (and decode) threads per
      actor (default on CPU: 1, or cores // actors when `actors` is given). device: auto | cpu | cuda (see
      embeddings.device).
    shard_rows: manifest rows per output shard (the unit of resume). decode: "actor" decodes inside the
      inference actors (thread pool), "tasks" in separate Ray tasks. num_cpus: for a locally started Ray.
    Every manifest row ends up in exactly one of the embedding shards or errors.parquet.
    """
    from edgemine.embeddings.device import resolve_device
    from edgemine.embeddings.encoders import load_encoder

    t0 = time.perf_counter()
    _check_options(batch_size, shard_rows, actors, decode)
    store = ShardStore(out)
    plan = scan_manifest(manifest)
    ranges = shard_ranges(plan.rows, shard_rows)
    if plan.embedding_column:
        return _embed_from_manifest(plan, store, ranges, shard_rows=shard_rows, progress=progress, t0=t0)

    dev = resolve_device(device)
    probe = load_encoder(encoder, input_size=input_size, device="cpu")  # id, dim and input size, on the driver
    config = {"format_version": FORMAT_VERSION, "encoder_id": probe.encoder_id, "dim": probe.dim,
              "input_size": probe.input_size, "precision": dev.precision, "shard_rows": shard_rows,
              "manifest_fingerprint": plan.fingerprint, "manifest_rows": plan.rows}
    store.check_config(config)
    pending = [(i, s, e) for i, (s, e) in enumerate(ranges) if not store.done(i)]
    written = 0
    if pending:
        with ray_runtime(num_cpus=num_cpus):
            import ray

            cpus = int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
            blocks = -(-sum(e - b for _, b, e in pending) // _block_rows(batch_size))
            layout = plan_actors(dev, cpus=cpus, actors=actors, threads_per_actor=threads_per_actor, decode=decode,
                                 work_blocks=blocks)
            written = _run_ray(plan, store, pending, spec=encoder, probe_id=probe.encoder_id, dim=probe.dim,
                               input_size=probe.input_size, min_side=probe.min_side, dev=dev, layout=layout,
                               batch_size=batch_size, decode=decode, progress=progress)
    embedded, by_stage = store.finalize(len(ranges))
    return _result(store, plan, config, embedded, by_stage, len(ranges), written, t0, dev.device,
                   new_rows=sum(e - s for _, s, e in pending))


def _block_rows(batch_size: int) -> int:
    """Rows per block the actors get: a few batches, fine-grained enough to balance the actors, coarse
    enough to amortise a task."""
    return batch_size * max(1, 1024 // batch_size)


@dataclass(frozen=True)
class ActorLayout:
    actors: int
    threads: int  # torch intra-op threads (and decode threads) per actor
    actor_cpus: float  # logical CPUs each actor reserves in Ray
    num_gpus: float  # GPUs each actor reserves


def plan_actors(dev: DevicePlan, *, cpus: int, actors: int | None = None, threads_per_actor: int | None = None,
                decode: str = "actor", work_blocks: int | None = None) -> ActorLayout:
    """How many inference actors, with how many threads, CPUs and GPUs each. Pure, so testable without GPUs.

    CUDA: one actor per GPU, one GPU each, the cores shared between them for decoding. CPU: single-threaded
    actors, one per core plus one — single-threaded actors beat one actor using every core here
    (docs/BENCHMARKS.md): no idle OpenMP threads spinning against the decoder, no GIL shared between decode
    threads; the extra actor keeps the cores busy while another waits for its next block or hands back its
    output (100k frames on 2 cores: ratio to bare torch 0.91 with 3 actors vs 0.74–0.78 with 2). Without an
    explicit `actors`, never more actors than `work_blocks` (blocks of ~1024 rows) to feed them.
    Logical CPUs: read tasks ask for 0.1 each and the actors share the rest minus half a core, so the pool
    can never starve the reads that feed it; with decode="tasks" the actors take half the cores.
    """
    if dev.device == "cuda":
        n = actors or max(1, dev.gpus)
        threads = threads_per_actor or max(1, cpus // n)
    else:
        threads = threads_per_actor or (1 if actors is None else cpu_threads_per_actor(actors=actors, cpus=cpus))
        n = actors or max(1, cpus // threads + (1 if threads == 1 else 0))
    if actors is None and work_blocks is not None:
        n = max(1, min(n, work_blocks))
    share = min(float(threads), cpus / 2 / n) if decode == "tasks" else (cpus - 0.5) / n
    actor_cpus = max(0.1, share)
    return ActorLayout(actors=n, threads=threads, actor_cpus=round(actor_cpus, 3), num_gpus=dev.num_gpus_per_actor)


def _run_ray(plan: ManifestPlan, store: ShardStore, pending: list[tuple[int, int, int]], *, spec: str, probe_id: str,
             dim: int, input_size: int, min_side: int, dev: DevicePlan, layout: ActorLayout,
             batch_size: int, decode: str, progress: bool) -> int:
    import ray
    from ray.data import ActorPoolStrategy

    logging.getLogger("ray.data").setLevel(logging.WARNING)

    ds = ray.data.read_datasource(_make_source(plan, pending), num_cpus=0.1,
                                  override_num_blocks=len(pending))
    worker_kwargs = dict(spec=spec, input_size=input_size, device=dev.device, autocast=dev.autocast,
                         expected_id=probe_id, threads=layout.threads,
                         decode_threads=layout.threads if decode == "actor" else 1)
    if decode == "tasks":
        ds = ds.map_batches(decode_stage, batch_size=batch_size, batch_format="pyarrow",
                            fn_kwargs={"size": input_size, "min_side": min_side}, num_cpus=1)
    ds = ds.map_batches(EmbedWorker, batch_size=batch_size, batch_format="pyarrow", zero_copy_batch=True,
                        compute=ActorPoolStrategy(size=layout.actors), fn_constructor_kwargs=worker_kwargs,
                        num_cpus=layout.actor_cpus, num_gpus=layout.num_gpus or None)

    # Read tasks yield whole shards (each reads its row groups once); Ray Data slices blocks above the
    # target size, so a target of `_block_rows` rows' worth of bytes gives the actors blocks of a few batches.
    ctx = ds.context  # this dataset's own copy: a shared Ray session's other datasets keep their settings
    ctx.target_max_block_size = max(1024, _block_rows(batch_size) * plan.bytes_per_row)
    ctx.enable_progress_bars = False  # our own progress line instead
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = False
    expected = {i: e - s for i, s, e in pending}
    buffers: dict[int, list[pa.Table]] = {}
    counts: dict[int, int] = {}
    bar = Progress(sum(expected.values()), enabled=progress)
    written = 0
    for block in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2):
        if block.num_rows == 0:
            continue
        shard_col = block.column("shard").to_numpy()
        n_err = int(pc.sum(pc.is_valid(block.column("stage"))).as_py() or 0)
        for shard in np.unique(shard_col):
            s = int(shard)
            part = block.filter(pa.array(shard_col == shard)) if len(np.unique(shard_col)) > 1 else block
            buffers.setdefault(s, []).append(part)
            counts[s] = counts.get(s, 0) + part.num_rows
            if counts[s] == expected[s]:
                emb, err = _split_shard(pa.concat_tables(buffers.pop(s)), dim=dim, encoder_id=probe_id)
                store.write_shard(s, emb, err)
                written += 1
            elif counts[s] > expected[s]:
                raise EdgemineError(f"shard {s} received {counts[s]} rows, expected {expected[s]} (internal error)")
        bar.update(block.num_rows, n_err)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("Ray Data stats:\n%s", ds.stats())
    missing = [s for s in expected if counts.get(s, 0) != expected[s]]
    if missing:
        raise EdgemineError(f"{len(missing)} shard(s) incomplete after the run (first: {missing[0]}); re-run to resume")
    return written


def _embed_from_manifest(plan: ManifestPlan, store: ShardStore, ranges: list[tuple[int, int]], *, shard_rows: int,
                         progress: bool, t0: float) -> EmbedResult:
    """The manifest brings its own `embedding` column: write it as shards, no inference, no Ray."""
    reader = _RowReader(plan, [*MANIFEST_REQUIRED, "embedding"])
    dim = _manifest_dim(plan, reader, ranges)
    config = {"format_version": FORMAT_VERSION, "encoder_id": MANIFEST_ENCODER_ID, "dim": dim, "input_size": None,
              "precision": "manifest", "shard_rows": shard_rows, "manifest_fingerprint": plan.fingerprint,
              "manifest_rows": plan.rows}
    store.check_config(config)
    pending = [(i, s, e) for i, (s, e) in enumerate(ranges) if not store.done(i)]
    bar = Progress(sum(e - s for _, s, e in pending), enabled=progress, label="embed (from manifest)")
    for shard, start, stop in pending:
        table = reader.read(start, stop)
        emb, ok, errors = check_vectors(table.column("embedding"), dim=dim)
        rows = _output_table(_shard_table(table, shard, start), emb, None, ok, errors)
        e_tab, r_tab = _split_shard(rows, dim=dim, encoder_id=MANIFEST_ENCODER_ID)
        store.write_shard(shard, e_tab, r_tab)
        bar.update(stop - start, len(errors))
    embedded, by_stage = store.finalize(len(ranges))
    return _result(store, plan, config, embedded, by_stage, len(ranges), len(pending), t0, "manifest",
                   new_rows=sum(e - s for _, s, e in pending))


def check_vectors(column: pa.ChunkedArray | pa.Array, *, dim: int) -> tuple[np.ndarray, np.ndarray,
                                                                           dict[int, tuple[str, str]]]:
    """Vectors of a manifest's `embedding` column: (float32 [n_ok, dim], ok row indices, {row: (stage, reason)}).

    Null rows, rows of another length and rows with NaN/inf are rejected with a reason.
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
    return np.ascontiguousarray(emb[finite], dtype=np.float32), ok[finite].astype(np.int64), errors


def _manifest_dim(plan: ManifestPlan, reader: _RowReader, ranges: list[tuple[int, int]]) -> int:
    import pyarrow.dataset as ds

    typ = ds.dataset(plan.source, format="parquet").schema.field("embedding").type
    if pa.types.is_fixed_size_list(typ):
        return int(typ.list_size)
    for start, stop in ranges:
        lengths = pc.list_value_length(reader.read(start, stop).column("embedding")).drop_null()
        if len(lengths):
            return int(lengths[0].as_py())
    raise SchemaError(f"{plan.source}: column 'embedding' is null in every row")


def _result(store: ShardStore, plan: ManifestPlan, config: dict[str, Any], embedded: int, by_stage: dict[str, int],
            n_shards: int, written: int, t0: float, device: str, *, new_rows: int) -> EmbedResult:
    n_errors = sum(by_stage.values())
    if embedded + n_errors != plan.rows:
        raise EdgemineError(f"{store.out}: {embedded} embedded + {n_errors} errors != {plan.rows} manifest rows; "
                            "delete the folder and re-run")
    seconds = round(time.perf_counter() - t0, 3)
    result = EmbedResult(
        out=str(store.out), embeddings_path=str(store.emb_dir), errors_path=str(store.out / ERRORS_FILE),
        encoder_id=config["encoder_id"], dim=int(config["dim"]), input_size=config["input_size"], n_frames=plan.rows,
        n_embedded=embedded, n_errors=n_errors, errors_by_stage=by_stage, n_shards=n_shards,
        shards_written=written, seconds=seconds, device=device,
        frames_per_second=round(new_rows / seconds, 1) if seconds > 0 else 0.0,
    )
    atomic_write_bytes(store.out / SUMMARY_FILE, json.dumps(asdict(result), indent=2).encode())
    return result


__all__ = ["DECODE_PLACEMENTS", "ActorLayout", "EmbedResult", "EmbedWorker", "embed_manifest", "plan_actors",
           "scan_manifest", "shard_ranges"]
