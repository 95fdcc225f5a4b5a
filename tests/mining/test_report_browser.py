"""A real run's report.html opened from disk in headless Chromium (Debian package, driven by Playwright) with
every non-file request refused: thumbnails load, a metadata filter narrows the grid, the embedding map has
its points, a click shows a candidate's nearest reference frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from edgemine.jobs.mine import run_mine
from tests.support.browser import CHROMIUM_ARGS, SHOTS, wait_until
from tests.support.frames import with_embeddings
from tests.support.mine_spec import make_spec

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow, pytest.mark.spark]




@pytest.fixture(scope="module")
def run_dir(synth_logs: Path, reference_logs: Path, spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report_run")
    byo = {"frames": with_embeddings(synth_logs, root / "frames.parquet"),
           "reference": with_embeddings(reference_logs, root / "reference.parquet")}
    return run_mine(make_spec(byo, root / "run"), spark=spark).run_dir



def visible_cards(page: Any) -> int:
    return int(page.evaluate("Array.from(document.querySelectorAll('#grid .card')).filter(c => !c.hidden).length"))


def test_report_opens_offline_with_thumbnails_filters_map_and_neighbours(chromium: str, run_dir: Path) -> None:
    from playwright.sync_api import sync_playwright

    cands = pq.read_table(run_dir / "candidates.parquet").to_pandas()
    n = len(cands)
    assert n > 0 and (run_dir / "report_files").is_dir()
    column, value = next((c, v) for c in ("weather", "time_of_day", "road_type", "label")
                         for v in [cands[c].value_counts().index[-1]] if cands[c].nunique() > 1)
    want = int((cands[column] == value).sum())
    assert 0 < want < n
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        asked: list[str] = []

        def refuse_network(route: Any) -> None:
            if route.request.url.startswith("file://"):
                route.continue_()
            else:
                asked.append(route.request.url)
                route.abort()

        page.route("**/*", refuse_network)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((run_dir / "report.html").as_uri())

        assert page.locator("#grid .card").count() == n  # one card, one thumbnail per candidate
        wait_until(page, "Array.from(document.querySelectorAll('#grid .card img.thumb'))"
                         ".filter(i => i.complete && i.naturalWidth > 0).length === " + str(n))

        page.select_option(f"select.filter[aria-label='{column}']", str(value))
        assert visible_cards(page) == want
        assert page.locator("#shown").inner_text().startswith(f"{want} of {n}")
        page.select_option(f"select.filter[aria-label='{column}']", "")
        assert visible_cards(page) == n

        assert page.locator("#map circle.cand").count() == n
        assert page.locator("#map g.bg circle").count() > n  # fleet and reference samples under them

        page.locator("#map circle.cand[data-rank='1']").hover()
        wait_until(page, "!document.querySelector('#tip').hidden && "
                         "document.querySelector('#tip img').naturalWidth > 0")

        first = cands.sort_values("rank").iloc[0]
        page.locator("#grid .card[data-rank='1']").click()
        assert page.locator("#detail").is_visible()
        assert first["frame_id"] in page.locator("#detail h3").inner_text()
        n_nb = len(first["neighbor_uris"])
        assert n_nb > 0
        wait_until(page, "Array.from(document.querySelectorAll('#detail .strip')[0].querySelectorAll('img'))"
                         f".filter(i => i.naturalWidth > 0).length === {n_nb}")
        for nb in first["neighbor_ids"]:
            assert nb in page.locator("#detail .strip").first.inner_text()
        # what its novelty was calibrated on (this fleet's reference covers it: the reference)
        assert first["novelty_calibration"] == "reference"
        assert "novelty calibrated on\tthe reference" in page.locator("#detail table.facts").inner_text()
        # "more like this": fleet frames from other drives than the candidate's, thumbnails loaded
        more = page.locator("#detail .strip", has_text="More like this, from other drives")
        assert more.count() == 1
        wait_until(page, "Array.from(document.querySelectorAll('#detail .strip')).find(s => s.textContent"
                         ".includes('More like this')).querySelectorAll('img').length > 0")
        shown = more.inner_text()
        assert first["drive_id"] not in shown and "drv-" in shown

        page.evaluate("document.getElementById('candidates').scrollIntoView()")
        page.mouse.move(700, 5)  # no hover ring in the picture
        wait_until(page, "Array.from(document.images).every(i => i.complete)")
        page.screenshot(path=str(SHOTS / "report.png"))
        browser.close()
    assert not asked, asked  # the page asked for nothing beyond its own files
    assert not errors, errors
