from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image

from edgemine.mining.report import PALETTE, calibration_sample_key, render_report, svg_histogram
from edgemine.mining.report_grid import THUMB_PX, describe, metadata_columns, reason_kinds, write_thumbnails
from edgemine.mining.report_map import MapSample, pca_fit, project, sample_map_vectors


def test_thumbnails_are_small_jpegs_beside_the_page_and_unreadable_images_have_none(tmp_path: Path) -> None:
    Image.new("RGB", (640, 480), (200, 10, 10)).save(tmp_path / "f.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    uris = [str(tmp_path / "f.png"), f"file://{tmp_path / 'f.png'}", str(tmp_path / "missing.png"),
            str(tmp_path / "bad.png"), None, str(tmp_path / "f.png")]
    thumbs = write_thumbnails(uris, tmp_path / "report_files", prefix="report_files")
    assert set(thumbs) == {str(tmp_path / "f.png"), f"file://{tmp_path / 'f.png'}"}
    for rel in thumbs.values():
        assert rel.startswith("report_files/") and rel.endswith(".jpg")
        with Image.open(tmp_path / rel) as im:
            assert im.format == "JPEG" and max(im.size) == THUMB_PX


def _candidates(tmp_path: Path) -> pd.DataFrame:
    Image.new("RGB", (32, 32), (0, 200, 0)).save(tmp_path / "a.png")
    return pd.DataFrame({"frame_id": ["a", "b"], "rank": [1, 2], "score": [0.99, 0.95],
                         "reasons": [["novelty p99.9 (kNN distance 3 to the reference)"], ["trigger hard_brake"]],
                         "scenario_id": ["s000", "s000"], "event_id": ["d/e0001", "d/e0002"], "drive_id": ["d", "d"],
                         "novelty": [0.999, 0.5], "uncertainty": [0.2, np.nan], "rarity": [0.9, 0.8],
                         "trigger": [0.0, 1.0], "uri": [str(tmp_path / "a.png"), "/nowhere.png"],
                         "neighbor_ids": [["r1"], []], "neighbor_uris": [[str(tmp_path / "a.png")], []],
                         "neighbor_distances": [[0.5], []], "context_uris": [[], []],
                         "weather": ["rain", "rain"], "time_of_day": ["night", "day"], "speed_mps": [3.0, 9.5]})


def test_report_has_histograms_scenarios_grid_contributions_and_dropped_counts(tmp_path: Path) -> None:
    cands = _candidates(tmp_path)
    scen = pd.DataFrame({"scenario_id": ["s000"], "n_frames": [5], "n_drives": [1], "n_events": [2],
                         "n_candidates": [2], "score_max": [0.99], "novelty_max": [0.9999]})
    info = {"run_id": "r1", "encoder": "builtin", "dim": 64, "counts": {"dropped_total": 3, "candidates": 2},
            "signals": {"novelty": {"weight": 1.0}, "trigger": {"weight": 1.0}}, "timings": {"score": 1.0}}
    rng = np.random.default_rng(0)
    samples = {"score": rng.random(1000), "novelty": rng.random(1000), "trigger": np.zeros(1000),
               "novelty_raw": rng.random(1000), "calibration_novelty": rng.random(500)}
    thumbs = write_thumbnails(cands["uri"], tmp_path / "report_files", prefix="report_files")
    page = render_report(info=info, samples=samples, candidates=cands, scenarios=scen, thumbs=thumbs,
                         errors_by_reason={"score: embedding has NaN/inf values": 3})
    assert page.count("<svg") >= 4  # score, novelty, trigger, novelty distance + contributions
    assert "src='report_files/" in page and "(no image)" in page and "data:image" not in page
    assert "embedding has NaN/inf values" in page and "s000" in page and "trigger hard_brake" in page
    assert page.count("class='card'") == 2 and "peak novelty <b>p99.99</b>" in page
    assert "aria-label='weather'" in page and "speed_mps" in page  # a filter per category, a sort per number
    # offline: no URL but the SVG namespace, no external script or stylesheet
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page
    assert "<script src" not in page and "<link" not in page


def _cards(page: str) -> list[dict[str, Any]]:
    data = page.split("<script type='application/json' id='report-data'>")[1].split("</script>")[0]
    return json.loads(data)["cands"]


def test_the_grid_says_what_each_candidates_novelty_was_calibrated_on_and_reads_older_runs(tmp_path: Path) -> None:
    """A filter and each card's evidence say "reference" or the value it was ranked within; candidates written
    before the column read "reference" unless the run conditioned some value (then nothing: only the reasons know)."""
    info = {"run_id": "r1", "encoder": "builtin", "dim": 64, "counts": {"candidates": 2}}
    cands = _candidates(tmp_path).assign(novelty_calibration=["time_of_day=night", "reference"])

    def render(c: pd.DataFrame, counts: dict[str, Any]) -> str:
        return render_report(info={**info, "counts": counts}, samples={}, candidates=c, scenarios=None,
                             errors_by_reason={})

    page = render(cands, info["counts"])
    assert [c["novelty_calibration"] for c in _cards(page)] == ["time_of_day=night", "reference"]
    assert "aria-label='novelty calibrated on'" in page and "<option value='time_of_day=night'>" in page
    assert "aria-label='novelty_calibration'" not in page  # not shown as if it were manifest metadata
    old = _candidates(tmp_path).assign(novelty=[0.999, np.nan])  # an older run's candidates: no column
    assert [c["novelty_calibration"] for c in _cards(render(old, {}))] == ["reference", ""]
    conditioned = {"coverage": {"conditioned": [{"value": "time_of_day=night", "frames": 9}]}}
    assert [c["novelty_calibration"] for c in _cards(render(old, conditioned))] == ["", ""]
    assert "novelty_calibration" not in old.columns  # the caller's frame is left as it was


def _bars(svg: str) -> list[tuple[float, float]]:
    """A histogram's bars as (x, height), its legend swatch left out."""
    found = re.findall(rf"<rect x='([\d.]+)' y='[\d.]+' width='[\d.]+' height='([\d.]+)' fill='{PALETTE['fleet']}'/>",
                       svg)
    return [(float(x), float(h)) for x, h in found if float(x) >= 40]


def test_the_novelty_histogram_is_split_by_calibration_each_labelled_with_its_value_and_frames(
        tmp_path: Path) -> None:
    """Percentiles ranked within time_of_day=night share no axis with reference-calibrated ones: one histogram per
    novelty_calibration (its frames as bars, its candidates as the line); one calibration: the page as before."""
    rng = np.random.default_rng(2)
    day, night = rng.uniform(0.0, 0.45, 900), rng.uniform(0.55, 1.0, 300)  # apart, so a mixed bar would show
    info = {"run_id": "r1", "encoder": "builtin", "dim": 64, "signals": {"novelty": {"weight": 1.0}},
            "counts": {"candidates": 2, "novelty_calibrated_on": {"reference": 900, "time_of_day=night": 1234}}}
    cands = _candidates(tmp_path).assign(novelty_calibration=["time_of_day=night", "reference"])
    samples = {"score": rng.random(1200), "novelty": np.concatenate([day, night]),
               calibration_sample_key("reference"): day, calibration_sample_key("time_of_day=night"): night}
    page = render_report(info=info, samples=samples, candidates=cands, scenarios=None, errors_by_reason={})
    plots = {t: svg for svg in page.split("<svg")[1:]
             for t in re.findall(r"font-weight='600'>([^<]*)</text>", svg)}
    assert "novelty (weight 1)" not in plots  # no histogram of both calibrations
    ref = plots["novelty (weight 1) · against the reference"]
    within = plots["novelty (weight 1) · within time_of_day=night"]
    # fleet frames, named so: 'reference' alone reads as the reference set's own frames
    assert "fleet frames ranked against the reference: 900 (n=900)" in ref and "their candidates (n=1)" in ref
    assert "fleet frames with time_of_day=night, ranked among themselves: 1,234 (n=300)" in within
    assert "their candidates (n=1)" in within
    assert page.index("· against the reference<") < page.index("· within time_of_day=night<")
    assert "novelty percentile within time_of_day=night" in within
    mid = 40 + (360 - 40 - 12) / 2  # the x axis' middle (0.5)
    assert all(x < mid for x, h in _bars(ref) if h > 0) and all(x >= mid for x, h in _bars(within) if h > 0)
    assert len(_bars(ref)) == len(_bars(within)) == 20
    # one calibration (a run that conditioned no value): the single histogram, exactly as without the split
    one = {"novelty_calibrated_on": {"reference": 1200}, "candidates": 2}
    plain = {k: v for k, v in samples.items() if not k.startswith("novelty@")}
    only_ref = {**plain, calibration_sample_key("reference"): samples["novelty"]}
    cands_ref = cands.assign(novelty_calibration="reference")
    pages = [render_report(info={**info, "counts": one}, samples=s, candidates=cands_ref, scenarios=None,
                           errors_by_reason={}) for s in (only_ref, plain)]
    assert pages[0] == pages[1] and "novelty (weight 1)</text>" in pages[0]
    # one calibration, not the reference (an all-night fleet, every frame ranked within night): its axis says so
    all_night = {**plain, calibration_sample_key("time_of_day=night"): samples["novelty"]}
    night_page = render_report(info={**info, "counts": {"novelty_calibrated_on": {"time_of_day=night": 1200},
                                                        "candidates": 2}}, samples=all_night,
                               candidates=cands.assign(novelty_calibration="time_of_day=night"), scenarios=None,
                               errors_by_reason={})
    assert "novelty percentile within time_of_day=night" in night_page and "· within" not in night_page
    with pytest.raises(ValueError, match="calibration=''"):
        calibration_sample_key("")


def test_a_scenario_card_says_what_its_peak_novelty_was_calibrated_on(tmp_path: Path) -> None:
    """scenarios.parquet's novelty_calibrations on the card: a peak ranked among the fleet's night frames is no
    percentile against the reference; a scenario of both says it mixes them; the reference alone reads as before."""
    cands = _candidates(tmp_path).assign(scenario_id=["s000", "s001"])
    scen = pd.DataFrame({"scenario_id": ["s000", "s001", "s002", "s003"], "n_frames": [5, 3, 2, 1],
                         "n_drives": [1] * 4, "n_events": [1] * 4, "n_candidates": [1, 1, 0, 0],
                         "score_max": [0.99, 0.98, 0.97, 0.96], "novelty_max": [0.999, 0.995, 0.99, 0.98],
                         # as pandas reads them from scenarios.parquet: numpy arrays
                         "novelty_calibrations": [np.array(["time_of_day=night"], object),
                                                  np.array(["reference", "time_of_day=night"], object),
                                                  np.array(["reference"], object), np.array([], object)]})
    page = render_report(info={"run_id": "r1", "counts": {}}, samples={}, candidates=cands, scenarios=scen,
                         errors_by_reason={})
    card = {m[0]: m[1] for m in re.findall(r"data-scenario='(s\d+)'.*?<div>peak novelty (.*?) · peak fused", page)}
    assert card == {"s000": "<b>p99.9</b> among this fleet's time_of_day=night frames",
                    "s001": "<b>p99.5</b> (its frames' novelty mixes calibrations: the reference, time_of_day=night)",
                    "s002": "<b>p99.0</b>", "s003": "<b>p98.0</b>"}
    old = render_report(info={"run_id": "r1", "counts": {}}, samples={}, candidates=cands, errors_by_reason={},
                        scenarios=scen.drop(columns=["novelty_calibrations"]))  # a run before the column
    assert "among this fleet" not in old and "mixes calibrations" not in old


def test_one_colour_per_meaning_across_plots() -> None:
    rng = np.random.default_rng(1)
    a = svg_histogram(rng.random(100), title="x", overlay=rng.random(10), overlay_label="candidates")
    b = svg_histogram(rng.random(100), title="y", overlay=rng.random(10), overlay_label="reference",
                      overlay_color=PALETTE["reference"])
    assert PALETTE["fleet"] in a and PALETTE["fleet"] in b  # all scored frames: the same colour in both
    assert PALETTE["candidates"] in a and PALETTE["candidates"] not in b and PALETTE["reference"] in b
    assert "share of frames" in a and "value" in a  # labelled axes


def test_histogram_handles_empty_and_constant_values() -> None:
    assert "no values" in svg_histogram(np.array([np.nan]), title="x")
    assert "<rect" in svg_histogram(np.ones(10), title="x")


def test_scenarios_are_described_by_their_most_common_varying_metadata(tmp_path: Path) -> None:
    c = _candidates(tmp_path)
    cat, num = metadata_columns(c)
    assert cat == ["weather", "time_of_day"] and num == ["speed_mps"]
    assert describe(c, cat, informative={"weather", "time_of_day"}) == "rain / night"
    assert describe(c, cat, informative=set()) == "mixed conditions"
    assert reason_kinds(["rarity p99 (x)", "trigger a", "no strong signal; top: rarity p61"]) == \
        ["rarity", "trigger", "none strong"]


class _Index:  # what sample_map_vectors needs of an index
    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self.ids = pa.table({"frame_id": [f"f{i}" for i in range(len(x))]})
        self.asked: list[int] = []

    @property
    def count(self) -> int:
        return len(self.x)

    def reconstruct(self, rows: list[int]) -> np.ndarray:
        self.asked += list(rows)
        return self.x[rows]


def test_map_sample_is_bounded_and_pca_matches_numpy() -> None:
    rng = np.random.default_rng(2)
    fleet, ref = _Index(rng.normal(size=(3000, 8))), _Index(rng.normal(size=(900, 8)) + 3)
    s = sample_map_vectors(fleet, ref, ["f7", "nope", "f11"], n_fleet=500, n_reference=200, seed=0)
    assert s.fleet.shape == (500, 8) and s.reference.shape == (200, 8) and s.candidate_ids == ["f7", "f11"]
    assert np.allclose(s.candidates, fleet.x[[7, 11]]) and len(fleet.asked) == 502 and len(ref.asked) == 200
    again = sample_map_vectors(fleet, ref, ["f7"], n_fleet=500, n_reference=200, seed=0)
    assert np.array_equal(again.fleet, s.fleet)  # deterministic
    x = np.concatenate([s.fleet, s.reference])
    mean, comps, share = pca_fit(x)
    cov_vals, cov_vecs = np.linalg.eigh(np.cov(x - mean, rowvar=False))
    top = cov_vecs[:, ::-1][:, :2].T
    assert np.allclose(np.abs(np.sum(comps * top, axis=1)), 1.0, atol=1e-6)  # same axes up to sign
    assert np.isclose(share[0], cov_vals[-1] / cov_vals.sum())
    p = project(s)
    assert p is not None and p.fleet.shape == (500, 2) and p.candidates.shape == (2, 2)
    assert project(MapSample(fleet=np.zeros((0, 4)), reference=np.zeros((0, 4)), candidate_ids=[],
                             candidates=np.zeros((0, 4)))) is None
