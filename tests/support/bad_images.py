"""Hostile image files for the decode and thumbnail tests: decompression bombs and truncated JPEGs, built tiny."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def bomb_png(path: Path, width: int, height: int) -> str:
    """A ~70-byte PNG whose header claims `width x height` pixels (a decompression bomb as a decoder meets it)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1), 128).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # the signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))  # type + data
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return str(path)


def truncated_jpeg(path: Path, size: int = 64) -> str:
    """A JPEG cut off halfway through its scan data."""
    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return str(path)
