"""The one guarded image decode: bombs, truncated and garbage bytes become FrameError reasons, never tracebacks."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgemine.errors import FrameError
from edgemine.images import decode_rgb
from edgemine.limits import MAX_IMAGE_PIXELS
from tests.support.bad_images import bomb_png, truncated_jpeg


@pytest.mark.parametrize(("w", "h"), [(100_000, 100_000), (12_000, 10_000), (9_000, 8_000)])
def test_a_header_claiming_too_many_pixels_is_refused_before_decoding(tmp_path: Path, w: int, h: int) -> None:
    data = Path(bomb_png(tmp_path / "b.png", w, h)).read_bytes()
    assert len(data) < 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning as an exception is refused the same way
        with pytest.raises(FrameError, match=rf"^image too large: .*\(maximum {MAX_IMAGE_PIXELS} pixels\): b$"):
            decode_rgb(data, name="b")


def test_a_lower_limit_is_honoured(tmp_path: Path) -> None:
    data = Path(bomb_png(tmp_path / "b.png", 300, 300)).read_bytes()
    with pytest.raises(FrameError, match=r"image too large: 300x300 px \(maximum 1000 pixels\)"):
        decode_rgb(data, max_pixels=1000)


def test_truncated_garbage_and_small_images_say_why(tmp_path: Path) -> None:
    cut = Path(truncated_jpeg(tmp_path / "t.jpg")).read_bytes()
    with pytest.raises(FrameError, match=r"^corrupt image data: t: image file is truncated"):
        decode_rgb(cut, name="t")
    with pytest.raises(FrameError, match=r"^corrupt image: not a readable PNG/JPEG: x$"):
        decode_rgb(b"not an image", name="x")
    with pytest.raises(FrameError, match=r"^corrupt image: x: "):
        decode_rgb(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, name="x")
    buf = io.BytesIO()
    Image.new("RGB", (12, 8)).save(buf, "PNG")
    with pytest.raises(FrameError, match=r"^image too small: 12x8 px \(minimum side 16\): x$"):
        decode_rgb(buf.getvalue(), name="x", min_side=16)


def test_good_images_come_back_loaded_and_rgb() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    for mode, arr in [("RGB", rgb), ("L", rgb[..., 0]), ("RGBA", np.dstack([rgb, rgb[..., :1]]))]:
        buf = io.BytesIO()
        Image.fromarray(arr, mode=mode).save(buf, "PNG")
        im = decode_rgb(buf.getvalue())
        assert im.mode == "RGB" and im.size == (30, 20)
        if mode == "RGB":
            assert np.array_equal(np.asarray(im), rgb)
    buf = io.BytesIO()
    Image.fromarray(rgb).resize((400, 400)).save(buf, "JPEG")
    assert min(decode_rgb(buf.getvalue(), draft=50).size) >= 50  # DCT-scaled, never below the draft size
