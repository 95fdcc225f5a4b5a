"""The embedding job on Ray Data: frames manifest -> Parquet shards of embeddings (+ errors.parquet).

    manifest ──► scan_manifest: validate, fingerprint, row groups; shard_ranges         manifest.py
             ──► ShardStore.check_config (_config.json); skip the shards already done   store.py
             ──► ShardSource read tasks: one block per unfinished shard                 workers.py
             ──► EmbedWorker actors (ActorPoolStrategy, sized by plan_actors):          workers.py
                 decode in a thread pool + encoder forward
             ──► driver (`_run_ray`): collect rows per shard; a complete shard is       here
                 split_shard + ShardStore.write_shard (atomic); Progress on stderr      store.py, progress.py
             ──► ShardStore.finalize: errors.parquet; summary.json                      store.py

Outputs in `out/` (see embeddings/store.py):
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
rows (`block_rows`). `decode="tasks"` runs decoding as separate Ray tasks instead (for when decoding needs
many more cores than inference, e.g. large JPEGs feeding a GPU).

A manifest with an `embedding` column needs no inference: its vectors are written as shards directly
(encoder id "manifest"; `_embed_from_manifest`, no Ray).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgemine.contracts import MANIFEST_REQUIRED
from edgemine.embeddings.device import DevicePlan
from edgemine.embeddings.encoders import DEFAULT_ENCODER
from edgemine.embeddings.manifest import (
    ManifestPlan,
    RowReader,
    check_vectors,
    manifest_dim,
    scan_manifest,
    shard_ranges,
    shard_table,
)
from edgemine.embeddings.progress import Progress
from edgemine.embeddings.store import FORMAT_VERSION, ShardStore, split_shard
from edgemine.embeddings.workers import (
    ActorLayout,
    EmbedWorker,
    block_rows,
    decode_stage,
    make_source,
    output_table,
    plan_actors,
)
from edgemine.errors import ConfigError, EdgemineError
from edgemine.runtime import ray_runtime

DecodePlacement = Literal["actor", "tasks"]
DECODE_PLACEMENTS: tuple[str, ...] = get_args(DecodePlacement)
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
    on_progress: Callable[[int, int], None] | None = None,
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
        return _embed_from_manifest(plan, store, ranges, shard_rows=shard_rows, progress=progress, t0=t0,
                                    on_progress=on_progress)

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
            blocks = -(-sum(e - b for _, b, e in pending) // block_rows(batch_size))
            layout = plan_actors(dev, cpus=cpus, actors=actors, threads_per_actor=threads_per_actor, decode=decode,
                                 work_blocks=blocks)
            written = _run_ray(plan, store, pending, spec=encoder, probe_id=probe.encoder_id, dim=probe.dim,
                               input_size=probe.input_size, min_side=probe.min_side, dev=dev, layout=layout,
                               batch_size=batch_size, decode=decode, progress=progress,
                               on_progress=on_progress)
    embedded, by_stage = store.finalize(len(ranges))
    return _result(store, plan, config, embedded, by_stage, len(ranges), written, t0, dev.device,
                   new_rows=sum(e - s for _, s, e in pending))


def _run_ray(plan: ManifestPlan, store: ShardStore, pending: list[tuple[int, int, int]], *, spec: str, probe_id: str,
             dim: int, input_size: int, min_side: int, dev: DevicePlan, layout: ActorLayout,
             batch_size: int, decode: str, progress: bool,
             on_progress: Callable[[int, int], None] | None = None) -> int:
    import ray
    from ray.data import ActorPoolStrategy

    logging.getLogger("ray.data").setLevel(logging.WARNING)

    ds = ray.data.read_datasource(make_source(plan, pending), num_cpus=0.1,
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
    # target size, so a target of `block_rows` rows' worth of bytes gives the actors blocks of a few batches.
    ctx = ds.context  # this dataset's own copy: a shared Ray session's other datasets keep their settings
    ctx.target_max_block_size = max(1024, block_rows(batch_size) * plan.bytes_per_row)
    ctx.enable_progress_bars = False  # our own progress line instead
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = False
    expected = {i: e - s for i, s, e in pending}
    buffers: dict[int, list[pa.Table]] = {}
    counts: dict[int, int] = {}
    bar = Progress(sum(expected.values()), enabled=progress, on_update=on_progress)
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
                emb, err = split_shard(pa.concat_tables(buffers.pop(s)), dim=dim, encoder_id=probe_id)
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
                         progress: bool, t0: float,
                         on_progress: Callable[[int, int], None] | None = None) -> EmbedResult:
    """The manifest brings its own `embedding` column: write it as shards, no inference, no Ray."""
    reader = RowReader(plan, [*MANIFEST_REQUIRED, "embedding"])
    dim = manifest_dim(plan, reader, ranges)
    config = {"format_version": FORMAT_VERSION, "encoder_id": MANIFEST_ENCODER_ID, "dim": dim, "input_size": None,
              "precision": "manifest", "shard_rows": shard_rows, "manifest_fingerprint": plan.fingerprint,
              "manifest_rows": plan.rows}
    store.check_config(config)
    pending = [(i, s, e) for i, (s, e) in enumerate(ranges) if not store.done(i)]
    bar = Progress(sum(e - s for _, s, e in pending), enabled=progress, label="embed (from manifest)",
                   on_update=on_progress)
    for shard, start, stop in pending:
        table = reader.read(start, stop)
        emb, ok, errors = check_vectors(table.column("embedding"), dim=dim)
        rows = output_table(shard_table(table, shard, start), emb, None, ok, errors)
        e_tab, r_tab = split_shard(rows, dim=dim, encoder_id=MANIFEST_ENCODER_ID)
        store.write_shard(shard, e_tab, r_tab)
        bar.update(stop - start, len(errors))
    embedded, by_stage = store.finalize(len(ranges))
    return _result(store, plan, config, embedded, by_stage, len(ranges), len(pending), t0, "manifest",
                   new_rows=sum(e - s for _, s, e in pending))


def _result(store: ShardStore, plan: ManifestPlan, config: dict[str, Any], embedded: int, by_stage: dict[str, int],
            n_shards: int, written: int, t0: float, device: str, *, new_rows: int) -> EmbedResult:
    n_errors = sum(by_stage.values())
    if embedded + n_errors != plan.rows:
        raise EdgemineError(f"{store.out}: {embedded} embedded + {n_errors} errors != {plan.rows} manifest rows; "
                            "delete the folder and re-run")
    seconds = round(time.perf_counter() - t0, 3)
    result = EmbedResult(
        out=str(store.out), embeddings_path=str(store.emb_dir), errors_path=str(store.errors_file),
        encoder_id=config["encoder_id"], dim=int(config["dim"]), input_size=config["input_size"], n_frames=plan.rows,
        n_embedded=embedded, n_errors=n_errors, errors_by_stage=by_stage, n_shards=n_shards,
        shards_written=written, seconds=seconds, device=device,
        frames_per_second=round(new_rows / seconds, 1) if seconds > 0 else 0.0,
    )
    store.write_summary(asdict(result))
    return result


__all__ = ["DECODE_PLACEMENTS", "DEFAULT_BATCH_SIZE", "DEFAULT_SHARD_ROWS", "DecodePlacement", "EmbedResult",
           "embed_manifest"]
