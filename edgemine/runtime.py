"""Small runtime helpers shared by the layers: atomic writes, the Ray runtime, engine logs, URI resolution.

Nothing here imports ray, torch or pyspark at module level (`edgemine --help` stays quick).
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import logging
import os
import sys
import tempfile
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


# Python loggers of the engines: inside `engine_log` they write to its file, not to the terminal.
ENGINE_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve", "py4j", "pyspark")
_engine_log: Path | None = None


def engine_log_path() -> Path | None:
    """The file `engine_log` is routing the engines' output to, or None outside one."""
    return _engine_log


def _route_engine_loggers(path: Path) -> list[tuple[logging.Logger, list[logging.Handler], bool]]:
    """Point every engine logger at `path` (replacing its handlers); returns what to restore."""
    saved = []
    for name in ENGINE_LOGGERS:
        lg = logging.getLogger(name)
        if any(getattr(h, "_edgemine_engine_log", None) == path for h in lg.handlers):
            continue
        saved.append((lg, lg.handlers[:], lg.propagate))
        fh = logging.FileHandler(path, encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        fh._edgemine_engine_log = path  # type: ignore[attr-defined]
        lg.handlers = [fh]
        lg.propagate = False
    return saved


@contextlib.contextmanager
def engine_log(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Send the engines' own output (Ray, Spark) to `path` while the block runs; ours still reaches the terminal.

    The JVM and Ray's C++ core worker write to file descriptor 2 directly, so fd 2 is pointed at the file and
    `sys.stderr` at a copy of the terminal's descriptor; the engines' Python loggers (and Ray Data's, through
    RAY_DATA_LOGGING_CONFIG) write to the file too. A JVM started inside keeps writing there after the block.
    """
    global _engine_log
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved_fd = os.dup(2)
    old_stderr = sys.stderr
    terminal = os.fdopen(os.dup(saved_fd), "w", buffering=1, encoding=getattr(old_stderr, "encoding", None) or "utf-8",
                         errors="backslashreplace")
    cfg_fd, cfg = tempfile.mkstemp(prefix="edgemine-ray-data-log-", suffix=".json")
    with os.fdopen(cfg_fd, "w") as f:  # JSON is YAML: Ray Data re-reads this whenever it configures its logger
        json.dump({"version": 1, "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
                   "handlers": {"file": {"class": "logging.FileHandler", "formatter": "plain", "filename": str(path)}},
                   "loggers": {"ray.data": {"level": "INFO", "handlers": ["file"], "propagate": False}}}, f)
    had_cfg = os.environ.get("RAY_DATA_LOGGING_CONFIG")
    if had_cfg is None:
        os.environ["RAY_DATA_LOGGING_CONFIG"] = cfg
    fault = faulthandler.is_enabled()
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr = terminal
    if fault:  # a crash's traceback still belongs on the terminal
        faulthandler.enable(file=terminal)
    _engine_log = path
    restore = _route_engine_loggers(path)
    try:
        yield path
    finally:
        _engine_log = None
        for name in ENGINE_LOGGERS:  # ours, whoever routed them (ray_runtime does again after ray.init)
            lg = logging.getLogger(name)
            for h in [h for h in lg.handlers if getattr(h, "_edgemine_engine_log", None) is not None]:
                lg.removeHandler(h)
                h.close()
        for lg, handlers, propagate in restore:
            lg.handlers, lg.propagate = handlers, propagate
        with contextlib.suppress(Exception):
            terminal.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        sys.stderr = old_stderr
        if fault:
            faulthandler.enable(file=old_stderr)
        terminal.close()
        if had_cfg is None:
            os.environ.pop("RAY_DATA_LOGGING_CONFIG", None)
        with contextlib.suppress(OSError):
            os.unlink(cfg)


@contextlib.contextmanager
def ray_runtime(*, num_cpus: int | None = None) -> Iterator[None]:
    """Use a running Ray (or RAY_ADDRESS); else start a local one for the job and shut it down after.

    Inside `engine_log`, workers' output is not forwarded to the driver (it stays in Ray's session logs)
    and Ray's loggers write to the engine log."""
    import ray

    if ray.is_initialized():
        yield
        return
    for key, value in (("RAY_AUTH_MODE", "disabled"), ("RAY_USAGE_STATS_ENABLED", "0"),
                       ("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")):
        os.environ.setdefault(key, value)
    log_path = _engine_log
    to_driver = log_path is None  # inside engine_log, workers' output stays in Ray's session logs
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], logging_level=logging.WARNING, log_to_driver=to_driver)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 logging_level=logging.WARNING, configure_logging=True, log_to_driver=to_driver)
    if log_path is not None:  # ray.init may have set its loggers' handlers afresh
        _route_engine_loggers(log_path)
    try:
        yield
    finally:
        ray.shutdown()
