"""What runs inside Ray Data for the embedding job: the shard read source, the inference actors, the decode
stage, and how many actors with how many threads (`plan_actors`).

    ShardSource read tasks ──► [decode_stage tasks, decode="tasks"] ──► EmbedWorker actors ──► output rows

Every output row is one input row: (shard, row, frame_id, uri, embedding, logits, stage, reason), with
embedding null and (stage, reason) set for a frame that could not be embedded (`output_table`).

Ray Data serialises `EmbedWorker` and `decode_stage` by reference, so they live at module level here;
`ShardSource` subclasses a Ray class and is built inside `make_source`, so importing this module imports
neither Ray nor torch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgemine.contracts import MANIFEST_REQUIRED
from edgemine.embeddings.decode import MIN_SIDE, decode_batch
from edgemine.embeddings.device import DevicePlan, cpu_threads_per_actor
from edgemine.embeddings.manifest import ManifestPlan, RowReader, shard_table
from edgemine.errors import IncompatibleArtifactError

OUTPUT_FIELDS = ("shard", "row", "frame_id", "uri", "embedding", "logits", "stage", "reason")

log = logging.getLogger(__name__)


# ================================================================ source
def make_source(plan: ManifestPlan, shards: list[tuple[int, int, int]]) -> Any:
    """A Ray Data datasource with one read task per (shard, start, stop) in `shards`."""
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
                    yield shard_table(RowReader(plan, list(MANIFEST_REQUIRED)).read(start, stop), shard, start)

                meta = BlockMetadata(num_rows=stop - start, size_bytes=(stop - start) * 200, input_files=None,
                                     exec_stats=None)
                tasks.append(ReadTask(read, meta))
            return tasks

    return ShardSource()


# ================================================================ workers
def output_table(batch: pa.Table, emb: np.ndarray, logits: np.ndarray | None, ok: np.ndarray,
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
        out = output_table(batch.drop_columns([c for c in ("pixels", "stage", "reason")
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


# ================================================================ actor planning
def block_rows(batch_size: int) -> int:
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


__all__ = ["OUTPUT_FIELDS", "ActorLayout", "EmbedWorker", "block_rows", "decode_stage", "make_source",
           "output_table", "plan_actors"]
