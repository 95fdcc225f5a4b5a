"""Frame thumbnails, rendered once per (frame, size) and served from a disk cache.

Frames are looked up by item id in the store; the uri never comes from a client. Local paths and
file:// URIs are read directly; other URIs (s3://, gs://) go through pyarrow's filesystems.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
from pathlib import Path

from edgemine.errors import InputNotFoundError


class Thumbnails:
    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            if len(self._locks) > 4096:
                self._locks.clear()
            return self._locks.setdefault(key, threading.Lock())

    def get(self, uri: str, *, px: int) -> Path:
        """Path of a JPEG of `uri` whose longest side is at most `px`, rendering it on first use."""
        key = hashlib.sha256(f"{uri}\x1f{px}\x1f{_mtime(uri)}".encode()).hexdigest()
        path = self.cache_dir / key[:2] / f"{key}.jpg"
        if path.exists():
            return path
        with self._lock(key):
            if path.exists():
                return path
            data = _render(_read_bytes(uri), px)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        return path


def _local_path(uri: str) -> str | None:
    if uri.startswith("file://"):
        return uri[len("file://"):]
    return None if "://" in uri else uri


def _mtime(uri: str) -> int:
    local = _local_path(uri)
    if local is None:
        return 0
    try:
        return os.stat(local).st_mtime_ns
    except OSError:
        return -1


def _read_bytes(uri: str) -> bytes:
    local = _local_path(uri)
    try:
        if local is not None:
            return Path(local).read_bytes()
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(uri)
        with fs.open_input_file(path) as f:
            return bytes(f.read())
    except (OSError, ValueError) as exc:
        raise InputNotFoundError("the frame file is missing or unreadable") from exc


def _render(data: bytes, px: int) -> bytes:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as src:
            rgb = src.convert("RGB")
            if max(rgb.size) > px:
                rgb.thumbnail((px, px), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            rgb.save(out, "JPEG", quality=88)
            return out.getvalue()
    except (UnidentifiedImageError, OSError) as exc:
        raise InputNotFoundError("the frame file is not a readable image") from exc
