"""Thumbnails of frames that cannot be shown (decompression bombs, truncated files) are a placeholder, not a 500."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from edgemine.review_api.thumbnails import Thumbnails
from tests.support.bad_images import bomb_png, truncated_jpeg
from tests.support.review import ReviewEnv, make_run_dir


def _with_context(run_dir: Path, uris: list[str]) -> Path:
    table = pq.read_table(run_dir / "candidates.parquet")
    i = table.column_names.index("context_uris")
    table = table.set_column(i, "context_uris", pa.array([uris] * table.num_rows, pa.list_(pa.string())))
    pq.write_table(table, run_dir / "candidates.parquet")
    return run_dir


def test_context_frames_that_cannot_be_decoded_are_served_as_a_placeholder(
        env: ReviewEnv, synth_logs: Path, reference_logs: Path, tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", synth_logs, reference_logs, run_id="run-bombs", n=4)
    good = str(sorted(synth_logs.rglob("*.png"))[0])
    bombs = [bomb_png(tmp_path / "bomb.png", 100_000, 100_000),  # Pillow's own DecompressionBombError
             bomb_png(tmp_path / "big.png", 9_000, 8_000),  # under Pillow's limit, over ours
             truncated_jpeg(tmp_path / "cut.jpg")]
    env.import_run(_with_context(run, [good, *bombs]), overlap_fraction=0.0)
    item = env.next("ana")["item"]  # type: ignore[index]
    shown = env.client.get(item["context"][0]["url"], headers=env.auth("ana"))
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"
    assert "x-edgemine-placeholder" not in shown.headers
    for ref in item["context"][1:]:
        r = env.client.get(ref["url"], headers=env.auth("ana"))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/jpeg" and r.headers["x-edgemine-placeholder"]
        with Image.open(io.BytesIO(r.content)) as im:
            w, h = im.size
            assert w == h and im.getpixel((w // 2, h // 2)) != im.getpixel((w // 2, 2))  # grey with a cross
        assert str(tmp_path) not in str(dict(r.headers))  # no file path in what the client sees
    again = env.client.get(item["context"][1]["url"], params={"size": "small"}, headers=env.auth("ana"))
    assert again.status_code == 200


@pytest.mark.parametrize("kind", ["bomb", "big", "truncated", "text"])
def test_render_says_why_a_frame_is_a_placeholder(tmp_path: Path, kind: str) -> None:
    path = {"bomb": lambda: bomb_png(tmp_path / "b.png", 100_000, 100_000),
            "big": lambda: bomb_png(tmp_path / "g.png", 9_000, 8_000),
            "truncated": lambda: truncated_jpeg(tmp_path / "t.jpg"),
            "text": lambda: _text(tmp_path / "x.png")}[kind]()
    thumbs = Thumbnails(tmp_path / "cache")
    first = thumbs.render(path, px=96)
    assert first.placeholder and first.path.exists()
    assert {"bomb": "too large", "big": "too large", "truncated": "truncated", "text": "not a readable"}[kind] \
        in first.placeholder
    assert str(tmp_path) not in first.placeholder and first.placeholder.isascii() and "\n" not in first.placeholder
    assert thumbs.render(path, px=96) == first  # remembered, not decoded again
    assert thumbs.get(path, px=96) == first.path


def test_a_good_frame_is_rendered_without_a_placeholder(tmp_path: Path) -> None:
    Image.new("RGB", (300, 200), (10, 200, 30)).save(tmp_path / "ok.png")
    out = Thumbnails(tmp_path / "cache").render(str(tmp_path / "ok.png"), px=96)
    assert out.placeholder is None
    with Image.open(out.path) as im:
        assert im.format == "JPEG" and max(im.size) == 96


def _text(path: Path) -> str:
    path.write_text("not an image")
    return str(path)
