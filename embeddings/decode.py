"""Read frame bytes through pyarrow.fs, decode, convert to RGB and resize; say why a frame is rejected.

Pure and engine-free: the Ray pipeline, the bare benchmark loop and baseline training all call
`decode_batch`. Decoding runs in a thread pool because Pillow releases the GIL while it inflates and
resizes, so threads use every core without the cost of moving pixels between processes.

Conversions (never rejections): grayscale, palette, 16-bit and CMYK frames become RGB; an alpha channel
is dropped. Frames that are not square are resized to `size x size` (the whole field of view is kept, the
aspect ratio is not). Rejections, each with a reason that goes to errors.parquet: missing file, unreadable
URI scheme, empty, corrupt or truncated bytes, images whose shorter side is below `min_side`, and headers
claiming more than `MAX_PIXELS` pixels (decompression bombs, refused before any pixel is inflated).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
from PIL import Image

from edgemine.errors import ConfigError, FrameError
from edgemine.images import decode_rgb
from edgemine.limits import MAX_IMAGE_PIXELS

MIN_SIDE = 16  # pixels; below this a frame carries no usable scene content
MAX_PIXELS = MAX_IMAGE_PIXELS  # a larger header is rejected before decoding (edgemine.limits, the one policy)
_LOCAL_SCHEMES = ("", "file")
_fs_cache: dict[tuple[str, str], pafs.FileSystem] = {}
_fs_lock = threading.Lock()


# ---------------------------------------------------------------- reading bytes
def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and in-filesystem path of `uri`; one filesystem object per scheme and bucket."""
    parsed = urlparse(uri) if "://" in uri else None
    if parsed is None:
        return _cached(("", ""), lambda: pafs.LocalFileSystem()), os.path.abspath(uri)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        return _cached(("", ""), lambda: pafs.LocalFileSystem()), unquote(parsed.path)
    try:
        fs = _cached((scheme, parsed.netloc), lambda: pafs.FileSystem.from_uri(uri)[0])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise FrameError(f"unreadable URI scheme {scheme!r} in {uri!r}: {exc}", stage="validate") from exc
    except (OSError, pa.ArrowException) as exc:  # e.g. an object store that cannot be reached
        raise FrameError(f"cannot open the {scheme!r} filesystem for {uri!r}: {exc}") from exc
    if scheme in ("s3", "gs", "gcs"):
        return fs, f"{parsed.netloc}{unquote(parsed.path)}"
    return fs, pafs.FileSystem.from_uri(uri)[1]


def _cached(key: tuple[str, str], make: Callable[[], pafs.FileSystem]) -> pafs.FileSystem:
    with _fs_lock:
        fs = _fs_cache.get(key)
        if fs is None:
            fs = _fs_cache[key] = make()
        return fs


def read_bytes(uri: str) -> bytes:
    """All bytes of one frame. Raises FrameError (stage `decode`, or `validate` for an unknown scheme)."""
    fs, path = _filesystem(uri)
    try:
        with fs.open_input_stream(path) as f:
            data = f.read()
    except FileNotFoundError as exc:
        raise FrameError(f"file not found: {uri}") from exc
    except (OSError, pa.ArrowException) as exc:
        if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
            raise FrameError(f"file not found: {uri}") from exc
        raise FrameError(f"unreadable: {uri}: {exc}") from exc
    if not data:
        raise FrameError(f"empty file: {uri}")
    return bytes(data)


# ---------------------------------------------------------------- decoding one frame
def decode_image(data: bytes, *, size: int, min_side: int = MIN_SIDE, name: str = "frame") -> np.ndarray:
    """Decode PNG/JPEG bytes to an RGB uint8 array `[size, size, 3]`. Raises FrameError with the reason.

    The guards (pixel limit, decompression bombs, truncated data) and the RGB conversion are the core's
    `edgemine.images.decode_rgb`, shared with the review thumbnails; a JPEG decodes at (at least) `size`.
    """
    rgb = decode_rgb(data, name=name, min_side=min_side, max_pixels=MAX_PIXELS, draft=size)
    try:
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(rgb, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise FrameError(f"corrupt image data: {name}: {exc}") from exc
    if arr.shape != (size, size, 3):  # defensive: a decoder that ignored the conversion
        raise FrameError(f"decoded to shape {arr.shape}, expected {(size, size, 3)}: {name}")
    return arr


def load_frame(uri: str, *, size: int, min_side: int = MIN_SIDE) -> np.ndarray:
    """Read and decode one frame: `[size, size, 3]` uint8 RGB."""
    return decode_image(read_bytes(uri), size=size, min_side=min_side, name=uri)


# ---------------------------------------------------------------- batches
@dataclass
class DecodedBatch:
    """The frames of one batch that decoded (`images[i]` is input row `ok[i]`) and why the others did not."""

    images: np.ndarray  # uint8 [n_ok, size, size, 3]
    ok: np.ndarray  # int64 [n_ok] indices into the input
    errors: list[tuple[int, str, str]] = field(default_factory=list)  # (input index, stage, reason)


def _load_or_reason(uri: str, size: int, min_side: int) -> np.ndarray | FrameError:
    try:
        return load_frame(uri, size=size, min_side=min_side)
    except FrameError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - a malformed file can make a decoder raise anything (struct.error,
        # IndexError, ...); one bad frame must never fail the batch, and its reason is kept in errors.parquet.
        return FrameError(f"corrupt image: {uri}: {type(exc).__name__}: {exc}")


def decode_batch(
    uris: Sequence[str | None],
    *,
    size: int,
    min_side: int = MIN_SIDE,
    pool: ThreadPoolExecutor | None = None,
) -> DecodedBatch:
    """Read and decode `uris` (in a thread pool if given). Every input index is either in `ok` or in `errors`."""
    if size < min_side:
        raise ConfigError(f"input size={size} is below the minimum frame side {min_side}")
    out = np.empty((len(uris), size, size, 3), dtype=np.uint8)
    ok: list[int] = []
    errors: list[tuple[int, str, str]] = []
    errors.extend((i, "validate", "empty uri") for i, u in enumerate(uris) if not u)
    todo: list[tuple[int, str]] = [(i, u) for i, u in enumerate(uris) if u]
    results = (
        pool.map(lambda iu: _load_or_reason(iu[1], size, min_side), todo)
        if pool is not None
        else (_load_or_reason(u, size, min_side) for _, u in todo)
    )
    for (i, _), res in zip(todo, results, strict=True):
        if isinstance(res, FrameError):
            errors.append((i, res.stage, res.reason))
        else:
            out[len(ok)] = res
            ok.append(i)
    errors.sort()
    return DecodedBatch(images=out[: len(ok)], ok=np.asarray(ok, dtype=np.int64), errors=errors)


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 `[B, H, W, 3]` -> float32 `[B, 3, H, W]` in [0, 1] (the encoder contract)."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
