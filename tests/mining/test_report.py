from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from edgemine.mining.report import render_report, svg_histogram, thumbnail


def test_thumbnails_are_data_uris_and_missing_images_are_none(tmp_path: Path) -> None:
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "f.png")
    uri = thumbnail(str(tmp_path / "f.png"))
    assert uri is not None and uri.startswith("data:image/png;base64,")
    assert thumbnail(f"file://{tmp_path / 'f.png'}") == uri
    assert thumbnail(str(tmp_path / "missing.png")) is None and thumbnail("s3://bucket/x.png") is None


def test_report_has_histograms_scenarios_contributions_and_dropped_counts(tmp_path: Path) -> None:
    Image.new("RGB", (32, 32), (0, 200, 0)).save(tmp_path / "a.png")
    cands = pd.DataFrame({"frame_id": ["a", "b"], "rank": [1, 2], "score": [0.99, 0.95],
                          "reasons": [["novelty p99.9 (kNN distance 3 to the reference)"], ["trigger hard_brake"]],
                          "scenario_id": ["s000", "s000"], "event_id": ["d/e0001", "d/e0002"],
                          "novelty": [0.999, 0.5], "uncertainty": [0.2, np.nan], "rarity": [0.9, 0.8],
                          "trigger": [0.0, 1.0], "uri": [str(tmp_path / "a.png"), "/nowhere.png"]})
    scen = pd.DataFrame({"scenario_id": ["s000"], "n_frames": [5], "n_drives": [1], "n_events": [2],
                         "n_candidates": [2], "score_max": [0.99], "novelty_max": [0.999]})
    info = {"run_id": "r1", "encoder": "builtin", "dim": 64, "counts": {"dropped_total": 3, "candidates": 2},
            "signals": {"novelty": {"weight": 1.0}, "trigger": {"weight": 1.0}}, "timings": {"score": 1.0}}
    rng = np.random.default_rng(0)
    samples = {"score": rng.random(1000), "novelty": rng.random(1000), "trigger": np.zeros(1000),
               "novelty_raw": rng.random(1000), "calibration_novelty": rng.random(500)}
    page = render_report(info=info, samples=samples, candidates=cands, scenarios=scen,
                         errors_by_reason={"score: embedding has NaN/inf values": 3})
    assert page.count("<svg") >= 4  # score, novelty, trigger, novelty distance + contributions
    assert "data:image/png;base64," in page and "(no image)" in page
    assert "embedding has NaN/inf values" in page and "s000" in page and "trigger hard_brake" in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def test_histogram_handles_empty_and_constant_values() -> None:
    assert "no values" in svg_histogram(np.array([np.nan]), title="x")
    assert "<rect" in svg_histogram(np.ones(10), title="x")
