"""Small runtime helpers shared by the layers: atomic writes, the Ray runtime, URI resolution.

Nothing here imports ray, torch or pyspark at module level (`edgemine --help` stays quick).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def _tmp_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` so a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = _tmp_for(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_write_table(path: str | os.PathLike[str], table: pa.Table) -> None:
    """Write `table` as Parquet at `path` atomically (temp name in the same folder + os.replace)."""
    path = Path(path)
    tmp = _tmp_for(path)
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def resolve_uri(uri: str, base_dir: str | None) -> str:
    """A manifest's relative URI resolved against the manifest's folder; URLs and absolute paths unchanged."""
    if "://" in uri or base_dir is None or os.path.isabs(uri):
        return uri
    return os.path.normpath(os.path.join(base_dir, uri))


@contextlib.contextmanager
def ray_runtime(*, num_cpus: int | None = None) -> Iterator[None]:
    """Use a running Ray (or RAY_ADDRESS); else start a local one for the job and shut it down after."""
    import ray

    if ray.is_initialized():
        yield
        return
    for key, value in (("RAY_AUTH_MODE", "disabled"), ("RAY_USAGE_STATS_ENABLED", "0"),
                       ("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")):
        os.environ.setdefault(key, value)
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 logging_level=logging.WARNING, configure_logging=True)
    try:
        yield
    finally:
        ray.shutdown()
