"""Reading and decoding frames: conversions are kept, rejections carry a stage and a reason."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgemine.embeddings.decode import decode_batch, load_frame, to_model_input
from edgemine.errors import ConfigError
from tests.support.images import write_png


@pytest.fixture()
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)


def test_rgb_png_round_trips_exactly(tmp_path: Path, rgb: np.ndarray) -> None:
    uri = write_png(tmp_path / "a.png", rgb)
    assert np.array_equal(load_frame(uri, size=40), rgb)


def test_file_uri_and_resize(tmp_path: Path, rgb: np.ndarray) -> None:
    uri = write_png(tmp_path / "a b.png", rgb)
    out = load_frame("file://" + uri.replace(" ", "%20"), size=20)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    expected = np.asarray(Image.fromarray(rgb).resize((20, 20), Image.BILINEAR))
    assert np.array_equal(out, expected)


def test_non_square_frames_are_resized_to_square(tmp_path: Path) -> None:
    uri = write_png(tmp_path / "wide.png", np.zeros((30, 90, 3), np.uint8))
    assert load_frame(uri, size=32).shape == (32, 32, 3)


def test_grayscale_rgba_palette_and_16bit_are_converted(tmp_path: Path, rgb: np.ndarray) -> None:
    gray = rgb[..., 0]
    g = load_frame(write_png(tmp_path / "g.png", gray, "L"), size=40)
    assert np.array_equal(g[..., 0], gray) and np.array_equal(g[..., 1], gray) and np.array_equal(g[..., 2], gray)
    rgba = np.dstack([rgb, np.full((40, 40), 7, np.uint8)])
    assert np.array_equal(load_frame(write_png(tmp_path / "a.png", rgba, "RGBA"), size=40), rgb)
    pal = Image.fromarray(rgb).convert("P")
    pal.save(tmp_path / "p.png")
    assert load_frame(str(tmp_path / "p.png"), size=40).shape == (40, 40, 3)
    deep = (gray.astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    assert np.abs(load_frame(str(tmp_path / "d.png"), size=40)[..., 0].astype(int) - gray).max() <= 1


def test_jpeg_decodes(tmp_path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb).resize((200, 200)).save(tmp_path / "a.jpg", quality=90)
    assert load_frame(str(tmp_path / "a.jpg"), size=50).shape == (50, 50, 3)


def test_every_rejection_has_a_stage_and_a_reason(tmp_path: Path, rgb: np.ndarray) -> None:
    good = write_png(tmp_path / "good.png", rgb)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    truncated = (tmp_path / "good.png").read_bytes()[:200]
    (tmp_path / "truncated.png").write_bytes(truncated)
    tiny = write_png(tmp_path / "tiny.png", rgb[:8, :12])
    uris = [good, str(tmp_path / "missing.png"), str(tmp_path / "corrupt.png"), str(tmp_path / "empty.png"),
            str(tmp_path / "text.png"), str(tmp_path / "truncated.png"), tiny, "ftp://host/frame.png", ""]
    with ThreadPoolExecutor(2) as pool:
        out = decode_batch(uris, size=40, pool=pool)
    assert out.ok.tolist() == [0] and out.images.shape == (1, 40, 40, 3)
    reasons = {i: (stage, reason) for i, stage, reason in out.errors}
    assert sorted(reasons) == list(range(1, len(uris)))
    assert reasons[1] == ("decode", f"file not found: {uris[1]}")
    assert reasons[2][0] == "decode" and "corrupt" in reasons[2][1]
    assert reasons[3] == ("decode", f"empty file: {uris[3]}")
    assert "corrupt image" in reasons[4][1]
    assert "corrupt" in reasons[5][1]
    assert reasons[6] == ("decode", f"image too small: 12x8 px (minimum side 16): {tiny}")
    assert reasons[7][0] == "validate" and "'ftp'" in reasons[7][1]
    assert reasons[8] == ("validate", "empty uri")


def test_serial_and_threaded_decoding_agree(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    uris = [write_png(tmp_path / f"{i}.png", rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)) for i in range(12)]
    uris[5] = str(tmp_path / "nope.png")
    serial = decode_batch(uris, size=32)
    with ThreadPoolExecutor(3) as pool:
        threaded = decode_batch(uris, size=32, pool=pool)
    assert np.array_equal(serial.images, threaded.images) and serial.errors == threaded.errors
    assert serial.ok.tolist() == [i for i in range(12) if i != 5]


def test_model_input_is_nchw_float_in_unit_range() -> None:
    x = to_model_input(np.array([[[[0, 128, 255]]]], dtype=np.uint8))
    assert x.shape == (1, 3, 1, 1) and x.dtype == np.float32
    assert np.allclose(x.ravel(), [0.0, 128 / 255, 1.0])


def test_input_size_below_minimum_side_is_refused() -> None:
    with pytest.raises(ConfigError, match="input size=8"):
        decode_batch(["x.png"], size=8)


def test_a_decoder_crash_on_one_frame_is_recorded_not_raised(tmp_path: Path, rgb: np.ndarray,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import edgemine.embeddings.decode as dec

    uris = [write_png(tmp_path / f"{i}.png", rgb) for i in range(3)]
    real = dec.decode_image

    def flaky(data: bytes, *, size: int, min_side: int = 16, name: str = "frame") -> np.ndarray:
        if name.endswith("1.png"):
            raise IndexError("bad chunk table")  # what a malformed file can make Pillow raise
        return real(data, size=size, min_side=min_side, name=name)

    monkeypatch.setattr(dec, "decode_image", flaky)
    out = decode_batch(uris, size=40)
    assert out.ok.tolist() == [0, 2]
    assert out.errors == [(1, "decode", f"corrupt image: {uris[1]}: IndexError: bad chunk table")]


def test_decompression_bombs_and_truncated_jpegs_are_rejected_with_a_reason(tmp_path: Path) -> None:
    from tests.support.bad_images import bomb_png, truncated_jpeg

    uris = [bomb_png(tmp_path / "bomb.png", 100_000, 100_000), bomb_png(tmp_path / "big.png", 9_000, 8_000),
            truncated_jpeg(tmp_path / "cut.jpg")]
    out = decode_batch(uris, size=32)
    assert out.ok.tolist() == []
    reasons = {i: (stage, reason) for i, stage, reason in out.errors}
    assert reasons[0] == ("decode", f"image too large: 10000000000 pixels (maximum 64000000 pixels): {uris[0]}")
    assert reasons[1] == ("decode", f"image too large: 9000x8000 px (maximum 64000000 pixels): {uris[1]}")
    assert reasons[2][0] == "decode" and reasons[2][1].startswith(f"corrupt image data: {uris[2]}: image file is trunc")
