"""Frame thumbnails, rendered once per (frame, size) and served from a disk cache.

Frames are looked up by item id in the store; the uri never comes from a client. Local paths and
file:// URIs are read directly; other URIs (s3://, gs://) go through pyarrow's filesystems.

Bytes are decoded through the core's one guarded entry point (`edgemine.images.decode_rgb`: pixel limit,
decompression bombs, truncated or corrupt data). A frame that cannot be decoded is shown as a placeholder (a
grey square with a cross, still a JPEG, so the page shows it like any frame) and its reason is remembered next
to the cache entry, so the bytes are not decoded again; `Thumbnails.render` returns that reason with the path.
A frame file that is missing or unreadable stays `InputNotFoundError` (404): it may yet appear.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from edgemine.errors import FrameError, InputNotFoundError
from edgemine.images import decode_rgb
from edgemine.limits import MAX_QUOTED_CHARS

PLACEHOLDER_GREY = (160, 160, 160)
PLACEHOLDER_INK = (96, 96, 96)


@dataclass(frozen=True)
class Thumbnail:
    """A JPEG to serve; `placeholder` is why the frame itself could not be shown (None when it is the frame)."""

    path: Path
    placeholder: str | None = None


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
        """Path of a JPEG of `uri` whose longest side is at most `px` (or of the placeholder), rendered on first use."""
        return self.render(uri, px=px).path

    def render(self, uri: str, *, px: int) -> Thumbnail:
        """The thumbnail of `uri` at `px`, or the placeholder with the reason the frame cannot be shown."""
        key = hashlib.sha256(f"{uri}\x1f{px}\x1f{_mtime(uri)}".encode()).hexdigest()
        path = self.cache_dir / key[:2] / f"{key}.jpg"
        why = path.with_suffix(".placeholder")
        found = self._cached(path, why, px)
        if found is not None:
            return found
        with self._lock(key):
            found = self._cached(path, why, px)
            if found is not None:
                return found
            data = _read_bytes(uri)
            try:
                jpeg = _render(data, px)
            except FrameError as exc:
                reason = _header_safe(exc.reason)
                if _local_path(uri) is not None:  # keyed by mtime: a changed file is tried again
                    _write_atomic(why, reason.encode("ascii"))
                # a remote object has no mtime in the key: never remember its failure (it may be mid-upload)
                return Thumbnail(self._placeholder(px), reason)
            _write_atomic(path, jpeg)
        return Thumbnail(path)

    def _cached(self, path: Path, why: Path, px: int) -> Thumbnail | None:
        if path.exists():
            return Thumbnail(path)
        try:
            reason = why.read_text("ascii")
        except (OSError, UnicodeDecodeError):
            return None
        return Thumbnail(self._placeholder(px), reason)

    def _placeholder(self, px: int) -> Path:
        path = self.cache_dir / "placeholder" / f"{px}.jpg"
        if not path.exists():
            _write_atomic(path, _placeholder_jpeg(px))
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
    """A JPEG of `data` whose longest side is at most `px`; FrameError when the bytes cannot be shown."""
    from PIL import Image

    rgb = decode_rgb(data, name="frame", draft=px)  # "frame", not the uri: the reason may reach a client
    if max(rgb.size) > px:
        rgb.thumbnail((px, px), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=88)
    return out.getvalue()


def _placeholder_jpeg(px: int) -> bytes:
    """A grey `px x px` square crossed corner to corner: "this frame cannot be shown"."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (px, px), PLACEHOLDER_GREY)
    draw = ImageDraw.Draw(im)
    width = max(2, px // 24)
    draw.line([(0, 0), (px - 1, px - 1)], fill=PLACEHOLDER_INK, width=width)
    draw.line([(0, px - 1), (px - 1, 0)], fill=PLACEHOLDER_INK, width=width)
    out = io.BytesIO()
    im.save(out, "JPEG", quality=88)
    return out.getvalue()


def _header_safe(reason: str) -> str:
    """One line of printable ASCII, at most MAX_QUOTED_CHARS long: fit for a log line or an HTTP header."""
    text = " ".join(reason.split()).encode("ascii", "replace").decode("ascii")
    return text if len(text) <= MAX_QUOTED_CHARS else text[: MAX_QUOTED_CHARS - 3] + "..."


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
