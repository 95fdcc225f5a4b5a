"""The embedding job's output folder: its config check, which shards are done, atomic shard writes, the merge.

    out/_config.json                   encoder id, dim, input size, precision, shard size, manifest fingerprint
    out/embeddings/part-NNNNN.parquet  `edgemine.contracts.embeddings_schema(dim)`, rows in manifest order
    out/_errors/part-NNNNN.parquet     the shard's unusable frames (`ERRORS_SCHEMA`)
    out/errors.parquet                 every unusable frame, merged from `_errors/` by `finalize`
    out/summary.json                   counts and timings of the last run

A shard is done when its embeddings file exists; `write_shard` writes it (temp name + os.replace) after the
shard's errors part, so a crash leaves either a whole shard or none. `split_shard` turns the workers' output
rows of one shard into those two tables.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from edgemine.contracts import ERRORS_SCHEMA, embeddings_schema
from edgemine.errors import IncompatibleArtifactError
from edgemine.runtime import atomic_write_bytes, atomic_write_table

CONFIG_FILE = "_config.json"
SUMMARY_FILE = "summary.json"
EMBEDDINGS_DIR = "embeddings"
ERRORS_DIR = "_errors"  # per-shard error parts; "_" so Parquet readers of `out/` skip them
ERRORS_FILE = "errors.parquet"
FORMAT_VERSION = 1  # of the folder's layout; recorded in _config.json


class ShardStore:
    """The output folder: config check, which shards are done, atomic shard writes, the final merge."""

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = Path(out)
        self.emb_dir = self.out / EMBEDDINGS_DIR
        self.err_dir = self.out / ERRORS_DIR
        self.errors_file = self.out / ERRORS_FILE

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
        # Streamed part by part, so a temp name of its own rather than atomic_write_table (one whole table).
        tmp = self.out / f".{ERRORS_FILE}.tmp"
        with pq.ParquetWriter(tmp, ERRORS_SCHEMA) as w:
            for i in range(n_shards):
                part = pq.read_table(self.err_path(i), schema=ERRORS_SCHEMA)
                if part.num_rows:
                    w.write_table(part)
                    for s, c in zip(*np.unique(part.column("stage").to_numpy(zero_copy_only=False),
                                               return_counts=True), strict=True):
                        by_stage[str(s)] = by_stage.get(str(s), 0) + int(c)
        os.replace(tmp, self.errors_file)
        return embedded, by_stage

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_bytes(self.out / SUMMARY_FILE, json.dumps(summary, indent=2).encode())


def split_shard(rows: pa.Table, *, dim: int, encoder_id: str) -> tuple[pa.Table, pa.Table]:
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


__all__ = ["CONFIG_FILE", "ERRORS_FILE", "FORMAT_VERSION", "SUMMARY_FILE", "ShardStore", "split_shard"]
