"""Decoding untrusted image bytes: the one guarded entry point that embed and the review thumbnails share.

Pillow only, imported when first used. `decode_rgb` turns bytes into a loaded RGB image or raises `FrameError`
with the reason (the same reasons errors.parquet and the review placeholder show):

- bytes Pillow cannot identify: `corrupt image: not a readable PNG/JPEG: <name>`;
- a header claiming more than `limits.MAX_IMAGE_PIXELS` pixels: `image too large: ...`, decided from the header
  before a single pixel is inflated (a decompression bomb is a few bytes claiming billions of pixels; Pillow's
  own `DecompressionBombError`/`Warning` for headers beyond its limit gives the same reason);
- a shorter side below `min_side`: `image too small: ...`;
- truncated or corrupt pixel data: `corrupt image data: <name>: image file is truncated ...`;
- anything else a malformed file makes a decoder raise (struct.error, IndexError, ...): `corrupt image: ...`.

Conversions, never rejections: grayscale, palette, 16-bit, float and CMYK images become RGB; alpha is dropped.
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING

import numpy as np

from edgemine.errors import FrameError
from edgemine.limits import MAX_IMAGE_PIXELS

if TYPE_CHECKING:
    from PIL import Image


def decode_rgb(
    data: bytes,
    *,
    name: str = "image",
    min_side: int = 1,
    max_pixels: int = MAX_IMAGE_PIXELS,
    draft: int | None = None,
) -> Image.Image:
    """Decode untrusted image bytes into a loaded RGB image; FrameError (stage `decode`) says why not.

    `name` is what the reason calls the image (a uri for errors.parquet, a neutral word for a client).
    `draft`: a JPEG is decoded by DCT scaling at no less than `draft x draft` pixels (cheap for big frames).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise FrameError(f"corrupt image: not a readable PNG/JPEG: {name}") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise FrameError(_too_large(str(exc), max_pixels, name)) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise FrameError(f"corrupt image: {name}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - a malformed header can make a plugin raise anything
        raise FrameError(f"corrupt image: {name}: {_why(exc)}") from exc
    w, h = im.size
    if min(w, h) < min_side:
        im.close()
        raise FrameError(f"image too small: {w}x{h} px (minimum side {min_side}): {name}")
    if w * h > max_pixels:
        im.close()
        raise FrameError(f"image too large: {w}x{h} px (maximum {max_pixels} pixels): {name}")
    try:
        if draft and im.format == "JPEG":
            im.draft("RGB", (draft, draft))
        im.load()
        rgb = to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        im.close()
        raise FrameError(_too_large(str(exc), max_pixels, name)) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # "image file is truncated", a broken stream
        im.close()
        raise FrameError(f"corrupt image data: {name}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - see above; one bad frame must never become a traceback
        im.close()
        raise FrameError(f"corrupt image data: {name}: {_why(exc)}") from exc
    if rgb is not im:
        im.close()
    return rgb


def to_rgb(im: Image.Image) -> Image.Image:
    """`im` as RGB: 16-bit and float images are scaled to 8 bits, alpha is dropped (a no-op for RGB)."""
    from PIL import Image

    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        top = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        gray = np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")  # L, LA, RGBA, CMYK, YCbCr, P...: alpha is dropped


def _too_large(message: str, max_pixels: int, name: str) -> str:
    claimed = re.search(r"\((\d+) pixels\)", message)
    size = f"{int(claimed.group(1))} pixels" if claimed else "more pixels than the decoder allows"
    return f"image too large: {size} (maximum {max_pixels} pixels): {name}"


def _why(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"
