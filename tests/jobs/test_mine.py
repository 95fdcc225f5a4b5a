"""End to end on bring-your-own embeddings (a manifest `embedding` column): every output of a mining run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgemine.contracts import (
    CANDIDATES_CORE_SCHEMA,
    CANDIDATES_EVIDENCE_SCHEMA,
    EVENTS_SCHEMA,
    SCENARIOS_SCHEMA,
    SCORES_SCHEMA,
)
from edgemine.errors import ConfigError, IncompatibleArtifactError, SchemaError
from edgemine.jobs.mine import RunResult, run_mine
from edgemine.jobs.similar import similar_frames
from tests.support.frames import fixed_list, with_embeddings
from tests.support.mine_spec import make_spec

pytestmark = [pytest.mark.integration]

@pytest.fixture(scope="module")
def run(byo: dict[str, Path], spark: Any, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return run_mine(make_spec(byo, tmp_path_factory.mktemp("run")), spark=spark)


@pytest.mark.spark
def test_candidates_carry_core_evidence_and_manifest_columns(run: RunResult, byo: dict[str, Path]) -> None:
    c = pq.read_table(run.run_dir / "candidates.parquet")
    core = CANDIDATES_CORE_SCHEMA.names + CANDIDATES_EVIDENCE_SCHEMA.names
    assert c.column_names[: len(core)] == core
    for f in list(CANDIDATES_CORE_SCHEMA) + list(CANDIDATES_EVIDENCE_SCHEMA):
        assert c.schema.field(f.name).type == f.type, f.name
    for col in ("drive_id", "timestamp", "uri", "label", "accel_mps2", "weather", "embedding"):
        assert col in c.column_names
    n = c.num_rows
    assert 0 < n <= 24 and c.column("rank").to_pylist() == list(range(1, n + 1))
    rows = c.to_pylist()
    assert all(Path(r["uri"]).is_absolute() and Path(r["uri"]).exists() for r in rows)
    assert all(r["reasons"] for r in rows)
    n_event = run.counts["above_threshold"]
    assert n_event > 0
    events = [r for r in rows if r["selected_by"] == "event"]
    assert len(events) == n_event and all(r["selected_by"] == "fill" for r in rows if r not in events)
    n_events = len({r["event_id"] for r in events})
    assert [r["selected_by"] for r in rows[:n_events]] == ["event"] * n_events  # round 1: every event once
    assert len({r["event_id"] for r in rows[:n_events]}) == n_events
    ev = [r["event_id"] for r in events]
    assert max(ev.count(e) for e in set(ev)) <= 3  # per-event cap
    assert all(r["event_id"].startswith(r["drive_id"] + "/e") for r in events)
    assert all(r["event_id"] is None and r["scenario_id"] is None for r in rows if r not in events)
    for r in rows:  # nearest reference frames, closest first; context frames from the same drive
        assert len(r["neighbor_ids"]) == 3 and all(i.startswith("ref-") for i in r["neighbor_ids"])
        assert r["neighbor_distances"] == sorted(r["neighbor_distances"])
        assert all(Path(u).exists() for u in r["neighbor_uris"])
        assert r["context_uris"] and all(f"/{r['drive_id']}/" in u for u in r["context_uris"])
        assert r["uri"] not in r["context_uris"]
        offs = r["context_offsets_s"]  # one signed offset per context frame, none at the frame itself
        assert len(offs) == len(r["context_uris"]) and all(o != 0 and abs(o) <= 1.2 for o in offs)
    assert all(r["score"] >= run.counts["threshold"] - 1e-6 for r in events)


@pytest.mark.spark
def test_scores_cover_every_usable_frame_and_errors_list_the_rest(run: RunResult) -> None:
    s = pq.read_table(run.run_dir / "scores.parquet")
    assert s.column_names[: len(SCORES_SCHEMA)] == SCORES_SCHEMA.names
    assert s.num_rows == 360 - 2 and run.counts["scored_frames"] == 358
    assert all(s.column("reasons").to_pylist())
    for sig in ("novelty", "rarity", "trigger"):
        v = np.array(s.column(sig).to_pylist(), dtype=float)
        assert np.isfinite(v).all() and (v >= 0).all() and (v <= 1).all()
    assert s.column("uncertainty").null_count == s.num_rows  # no logits, no probs: unavailable, not zero
    c = pq.read_table(run.run_dir / "candidates.parquet", columns=["frame_id", "selected_by"]).to_pylist()
    ev = dict(zip(s.column("frame_id").to_pylist(), s.column("event_id").to_pylist(), strict=True))
    assert all((ev[r["frame_id"]] is not None) == (r["selected_by"] == "event") for r in c)
    fired = [f for f in s.column("triggers_fired").to_pylist() if f]
    assert fired and all(set(f) <= {"hard_brake", "hard_brake_pedestrian"} for f in fired)
    e = pq.read_table(run.run_dir / "errors.parquet").to_pylist()
    assert sorted((r["frame_id"], r["stage"], r["reason"]) for r in e) == [
        ("drv-011-0000-00003", "score", "embedding has NaN/inf values"),
        ("drv-011-0000-00007", "score", "embedding has NaN/inf values")]
    assert all(r["uri"] and Path(r["uri"]).exists() for r in e)


@pytest.mark.spark
def test_run_json_events_scenarios_and_report(run: RunResult) -> None:
    info = json.loads((run.run_dir / "run.json").read_text())
    assert info["run_id"] == run.run_id and info["encoder"] == "manifest" and info["dim"] == 192
    assert info["counts"]["manifest_frames"] == 360 and info["counts"]["dropped_total"] == 2
    assert info["counts"]["dropped"] == {"score": 2} and info["spec"]["budget"] == 24
    for stage in ("frames", "embed", "reference_index", "frames_index", "score", "fuse", "aggregate", "scenarios",
                  "select", "write", "report", "total"):
        assert stage in info["timings"]
    assert {"numpy", "pyarrow", "faiss-cpu", "pyspark"} <= set(info["versions"])
    assert info["embeddings"]["path"].endswith("frames.parquet") and info["embeddings"]["in_manifest"]
    sc = pq.read_table(run.run_dir / "scenarios.parquet")
    assert sc.schema.equals(SCENARIOS_SCHEMA)
    assert sum(sc.column("n_candidates").to_pylist()) == run.counts["above_threshold"]
    assert sc.num_rows == run.counts["scenarios"] >= 1
    ev = pq.read_table(run.run_dir / "events.parquet")
    assert ev.schema.equals(EVENTS_SCHEMA)
    assert sum(ev.column("n_candidates").to_pylist()) == run.counts["above_threshold"]
    assert ev.num_rows == run.counts["events"]
    page = (run.run_dir / "report.html").read_text()
    assert "src='report_files/" in page and page.count("<svg") >= 4 and "id='map'" in page
    assert "embedding has NaN/inf values" in page and run.run_id in page
    assert not (run.run_dir / ".work").exists()


@pytest.mark.spark
def test_similar_expands_a_frame_into_its_neighbours(run: RunResult) -> None:
    first = pq.read_table(run.run_dir / "candidates.parquet").column("frame_id")[0].as_py()
    t = similar_frames(run.run_dir, [first, "drv-011-0001-00010"], k=5)
    assert t.num_rows == 10
    rows = [r for r in t.to_pylist() if r["query_frame_id"] == first]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert first not in [r["frame_id"] for r in rows]
    d = [r["distance"] for r in rows]
    assert d == sorted(d) and all(Path(r["uri"]).exists() for r in rows)
    from edgemine.errors import NotFoundError

    with pytest.raises(NotFoundError, match="'drv-011-0000-00003'"):  # dropped (NaN) frames are not in the run
        similar_frames(run.run_dir, ["drv-011-0000-00003"])


@pytest.mark.spark
def test_evaluate_reports_the_run_and_baselines(run: RunResult, byo: dict[str, Path]) -> None:
    from edgemine.mining.evaluate import evaluate_run

    rows = evaluate_run(str(run.run_dir), str(byo["gt"]), random_repeats=5)
    assert [m.method for m in rows] == ["edgemine", "plain kNN + NMS", "random (mean of 5)"]
    assert all(m.n_selected == run.counts["candidates"] for m in rows)
    assert 0.0 <= rows[0].auroc <= 1.0 and 0.0 < rows[1].average_precision <= 1.0  # fused score, kNN distance
    assert rows[0].events_total == 4  # the fixture's drives hold 4 rare events
    # the run's row is its candidates checked against ground truth (quality is measured in benchmarks/)
    gt = pq.read_table(byo["gt"]).to_pandas().set_index("frame_id")
    cands = pq.read_table(run.run_dir / "candidates.parquet").column("frame_id").to_pylist()
    assert rows[0].frame_precision == pytest.approx(gt.loc[cands, "is_rare"].mean())
    found = set(gt.loc[cands, "event_id"].dropna())
    assert rows[0].events_found == len(found)


@pytest.mark.spark
def test_reference_index_is_reused_and_an_embeddings_table_works_as_reference(
        run: RunResult, byo: dict[str, Path], spark: Any, tmp_path: Path) -> None:
    ref = pq.read_table(byo["reference"])
    table = pa.table({"frame_id": ref.column("frame_id"), "embedding": ref.column("embedding"),
                      "encoder": pa.array(["manifest"] * ref.num_rows), "uri": ref.column("uri")})
    pq.write_table(table, tmp_path / "ref_emb.parquet")
    spec = make_spec(byo, tmp_path / "r1", reference=str(tmp_path / "ref_emb.parquet"),
                     index={"dir": str(tmp_path / "shared_index"), "kind": "hnsw"})
    r1 = run_mine(spec, spark=spark)
    assert r1.counts["reference"]["reused"] is False and r1.counts["reference"]["kind"] == "hnsw"
    # no drive_id in this reference: novelty falls back to leave-one-out calibration, says so, and the
    # coverage guardrail (tuned on other-drive calibration) stays off
    assert r1.counts["novelty_calibration"] == "leave_one_out" and "coverage" not in r1.counts
    assert any("calibrated leave-one-out" in n for n in json.loads((tmp_path / "r1" / "run.json").read_text())["notes"])
    assert run.counts["novelty_calibration"] == "other_drives" and "coverage" in run.counts
    r2 = run_mine(spec.model_copy(update={"out": tmp_path / "r2"}), spark=spark)
    assert r2.counts["reference"]["reused"] is True
    a = pq.read_table(tmp_path / "r1" / "scores.parquet").column("novelty").to_pylist()
    b = pq.read_table(tmp_path / "r2" / "scores.parquet").column("novelty").to_pylist()
    assert a == b


def test_an_index_of_another_encoder_is_refused(byo: dict[str, Path], tmp_path: Path) -> None:
    from edgemine.mining.index import build_index_from_arrays

    idx = build_index_from_arrays(np.random.default_rng(0).normal(size=(50, 192)), encoder="torchscript:other.pt")
    idx.meta.params["source"] = str(byo["reference"].resolve())
    idx.save(tmp_path / "ix")
    spec = make_spec(byo, tmp_path / "run", index={"dir": str(tmp_path / "ix")})
    with pytest.raises(IncompatibleArtifactError, match="encoder 'torchscript:other.pt'"):
        run_mine(spec)


def test_an_index_dir_built_from_another_reference_is_refused(byo: dict[str, Path], tmp_path: Path) -> None:
    from edgemine.mining.index import build_index_from_arrays

    idx = build_index_from_arrays(np.random.default_rng(0).normal(size=(50, 192)), encoder="manifest")
    idx.meta.params["source"] = "/data/other_reference.parquet"
    idx.save(tmp_path / "ix")
    spec = make_spec(byo, tmp_path / "run", index={"dir": str(tmp_path / "ix")})
    with pytest.raises(IncompatibleArtifactError, match="built from reference '/data/other_reference.parquet'"):
        run_mine(spec)


def test_reference_of_another_dimension_is_refused(byo: dict[str, Path], reference_logs: Path, tmp_path: Path) -> None:
    ref = with_embeddings(reference_logs, tmp_path / "ref4.parquet", side=4)
    with pytest.raises(IncompatibleArtifactError, match="dim 48.*dim 192"):
        run_mine(make_spec(byo, tmp_path / "run", reference=str(ref)))


@pytest.mark.spark
def test_overflowing_embeddings_are_listed_in_errors_not_scored_as_no_signal(
        byo: dict[str, Path], spark: Any, tmp_path: Path) -> None:
    t = pq.read_table(byo["frames"])
    emb = np.stack(t.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    emb[11] = 1e38  # finite, but its squared norm (and every distance to it) overflows float32
    emb[12, 0] = 3e19  # one value is enough: 9e38
    frames = tmp_path / "frames.parquet"
    pq.write_table(t.set_column(t.column_names.index("embedding"), "embedding", fixed_list(emb)), frames)
    res = run_mine(make_spec(byo, tmp_path / "run", frames=str(frames)), spark=spark)
    ids = t.column("frame_id").to_pylist()
    too_large = "embedding is too large: squared L2 norm above 8.51e+37 (its distances would overflow float32)"
    e = pq.read_table(res.run_dir / "errors.parquet").to_pylist()
    assert sorted((r["frame_id"], r["stage"], r["reason"]) for r in e) == sorted([
        (ids[3], "score", "embedding has NaN/inf values"), (ids[7], "score", "embedding has NaN/inf values"),
        (ids[11], "score", too_large), (ids[12], "score", too_large)])
    scored = pq.read_table(res.run_dir / "scores.parquet", columns=["frame_id"]).column("frame_id").to_pylist()
    assert len(scored) == 360 - 4 and not {ids[11], ids[12]} & set(scored)
    assert res.counts["dropped"] == {"score": 4}


def test_embeddings_of_another_length_are_named_with_their_lengths(byo: dict[str, Path], tmp_path: Path) -> None:
    t = pq.read_table(byo["frames"])
    rows = [list(v) for v in t.column("embedding").to_pylist()]
    rows[0] = rows[0][:3]  # the first row used to set the dimension (and the error blamed the encoders)
    rows[20] = rows[20] + [0.0, 0.0]
    frames = tmp_path / "frames.parquet"
    col = pa.array(rows, pa.list_(pa.float32()))
    pq.write_table(t.set_column(t.column_names.index("embedding"), "embedding", col), frames)
    ids = t.column("frame_id").to_pylist()
    with pytest.raises(SchemaError) as err:
        run_mine(make_spec(byo, tmp_path / "run", frames=str(frames)))
    msg = str(err.value)
    assert f"frame_id='{ids[0]}' has dimension 3, expected 192 (358 of 360 rows have dimension 192)" in msg
    assert f"2 of 360 rows differ, also frame_id='{ids[20]}' (194)" in msg and "encoder" not in msg


def test_bad_inputs_fail_naming_the_value(byo: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="budget=361 is larger than the 360 frames"):
        run_mine(make_spec(byo, tmp_path / "a", budget=361))
    empty = tmp_path / "empty.parquet"
    pq.write_table(pq.read_table(byo["frames"]).slice(0, 0), empty)
    with pytest.raises(SchemaError, match="empty"):
        run_mine(make_spec(byo, tmp_path / "b", frames=str(empty)))
    # a failed run leaves no half-written files, and no folder when it created one and nothing else is left
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "b").exists()
    with pytest.raises(ConfigError, match="unknown signal 'novelity'"):
        make_spec(byo, tmp_path / "c", signals={"novelity": {"weight": 1}})
    with pytest.raises(ConfigError, match="trigger 'brake'.*malformed"):
        make_spec(byo, tmp_path / "d", signals={"trigger": {"rules": [{"name": "brake", "expr": "accel_mps2 <"}]}})
    with pytest.raises(ConfigError, match=r"trigger 'x': unknown column\(s\) \['brake_force'\]"):
        run_mine(make_spec(byo, tmp_path / "e", signals={"trigger": {"rules": [{"name": "x",
                                                                                "expr": "brake_force > 1"}]}}))


@pytest.mark.spark
@pytest.mark.slow
def test_cli_mine_similar_evaluate(byo: dict[str, Path], tmp_path: Path) -> None:
    import subprocess
    import sys

    cli = [sys.executable, "-m", "edgemine"]
    out = tmp_path / "cli-run"
    r = subprocess.run([*cli, "mine", "--frames", str(byo["frames"]), "--reference", str(byo["reference"]),
                        "--budget", "12", "--out", str(out), "--spark-master", "local[1]"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ok: " in r.stdout and "candidates (budget 12: " in r.stdout and "above the event thresholds" in r.stdout
    info = json.loads((out / "run.json").read_text())
    assert info["spec"]["spark"]["master"] == "local[1]" and info["counts"]["dropped_total"] == 2
    frame = pq.read_table(out / "scores.parquet", columns=["frame_id"]).column(0)[0].as_py()
    r = subprocess.run([*cli, "similar", "--run", str(out), "--frame-id", frame, "--k", "4",
                        "--out", str(tmp_path / "near.parquet")], capture_output=True, text=True, check=True)
    assert len(r.stdout.strip().splitlines()) == 5 and pq.read_table(tmp_path / "near.parquet").num_rows == 4
    r = subprocess.run([*cli, "evaluate", "--run", str(out), "--ground-truth", str(byo["gt"]), "--json"],
                       capture_output=True, text=True, check=True)
    rows = json.loads(r.stdout)
    assert rows[0]["method"] == "edgemine" and rows[0]["n_selected"] == info["counts"]["candidates"]
    r = subprocess.run([*cli, "similar", "--run", str(out), "--frame-id", "nope"], capture_output=True, text=True)
    assert r.returncode == 1 and "frame_id 'nope'" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.spark
def test_a_run_where_nothing_reaches_the_threshold_still_writes_every_output(
        byo: dict[str, Path], spark: Any, tmp_path: Path) -> None:
    res = run_mine(make_spec(byo, tmp_path / "none", aggregate={"threshold": 1000.0},
                             selection={"fill": False}), spark=spark)
    assert res.counts["candidates"] == 0 and res.counts["events"] == 0
    for name in ("candidates.parquet", "scores.parquet", "events.parquet", "scenarios.parquet", "errors.parquet",
                 "run.json", "report.html"):
        assert (res.run_dir / name).exists(), name
    c = pq.read_table(res.run_dir / "candidates.parquet")
    assert c.num_rows == 0 and c.column_names[:2] == ["frame_id", "rank"]
    assert pq.read_table(res.run_dir / "scores.parquet").num_rows == 358
    assert "no frame reached the threshold" in (res.run_dir / "report.html").read_text()
    notes = json.loads((res.run_dir / "run.json").read_text())["notes"]
    assert any("0 of the 24 candidates are frames of events" in n and "fill is off" in n for n in notes)


@pytest.mark.spark
def test_the_budget_is_filled_with_the_best_remaining_frames_one_per_drive_per_second(
        byo: dict[str, Path], spark: Any, tmp_path: Path) -> None:
    from edgemine.mining.select.nms import temporal_nms

    res = run_mine(make_spec(byo, tmp_path / "fill", aggregate={"threshold": 1000.0}), spark=spark)
    assert res.counts["events"] == 0 and res.counts["above_threshold"] == 0
    assert res.counts["candidates"] == res.counts["filled"] == 24
    c = pq.read_table(res.run_dir / "candidates.parquet")
    assert set(c.column("selected_by").to_pylist()) == {"fill"} and c.column("event_id").null_count == 24
    s = pq.read_table(res.run_dir / "scores.parquet", columns=["frame_id", "score"]).to_pandas()
    man = pq.read_table(byo["frames"], columns=["frame_id", "drive_id", "timestamp"]).to_pandas()
    s = s.merge(man, on="frame_id")
    ts = s["timestamp"].astype("datetime64[us, UTC]").astype("int64").to_numpy()
    want = s["frame_id"].to_numpy()[temporal_nms(s["score"].to_numpy(), s["drive_id"].to_numpy(), ts, n=24)]
    assert c.column("frame_id").to_pylist() == want.tolist()  # the best frames by fused score, rank order
    notes = json.loads((res.run_dir / "run.json").read_text())["notes"]
    assert any("24 are the best frames outside every event" in n for n in notes)


@pytest.mark.spark
def test_the_review_service_imports_the_run(run: RunResult, tmp_path: Path) -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "edgemine", "review", "import", str(run.run_dir), "--db",
                        f"sqlite:///{tmp_path / 'review.db'}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{run.counts['candidates']} items ({run.counts['candidates']} new)" in r.stdout


@pytest.mark.spark
def test_fill_frames_are_never_frames_of_an_event_so_the_caps_hold(
        byo: dict[str, Path], spark: Any, tmp_path: Path) -> None:
    res = run_mine(make_spec(byo, tmp_path / "cap", selection={"per_event_cap": 1}), spark=spark)
    c = pq.read_table(res.run_dir / "candidates.parquet").to_pandas()
    assert res.counts["events"] > 0 and res.counts["filled"] > 0 and len(c) == 24
    ev = c.loc[c["selected_by"] == "event", "event_id"]
    assert ev.notna().all() and ev.is_unique  # one frame per event: the cap
    s = pq.read_table(res.run_dir / "scores.parquet", columns=["frame_id", "event_id"]).to_pandas()
    fill = set(c.loc[c["selected_by"] == "fill", "frame_id"])
    assert s.loc[s["frame_id"].isin(fill), "event_id"].isna().all()  # no fill frame belongs to an event


@pytest.mark.spark
def test_a_fleet_with_night_drives_against_a_day_only_reference_is_warned_about(
        spark: Any, tmp_path: Path) -> None:
    from edgemine.jobs.synth import generate

    generate(tmp_path / "fleet", drives=10, frames_per_drive=36, rare_rate=0.0, size=48, seed=3, workers=1,
             conditions={"time_of_day": {"day": 1, "night": 2}})
    generate(tmp_path / "ref", drives=4, frames_per_drive=60, size=48, seed=4, reference=True, workers=1,
             conditions={"time_of_day": ["day"]})
    tod = pq.read_table(tmp_path / "fleet" / "manifest.parquet", columns=["time_of_day"]).column(0).to_pylist()
    drives = pq.read_table(tmp_path / "fleet" / "manifest.parquet", columns=["drive_id"]).column(0).to_pylist()
    assert {"day", "night"} <= set(tod) and len({d for d, t in zip(drives, tod, strict=True) if t == "night"}) >= 5
    byo = {"frames": with_embeddings(tmp_path / "fleet", tmp_path / "frames.parquet"),
           "reference": with_embeddings(tmp_path / "ref", tmp_path / "reference.parquet")}
    # small score batches: the coverage pass and the grouped fusion must keep rows aligned across batches
    res = run_mine(make_spec(byo, tmp_path / "run", budget=10, score_batch_rows=64), spark=spark)
    warnings = json.loads((res.run_dir / "run.json").read_text())["warnings"]
    night = [w for w in warnings if "time_of_day=night" in w]
    assert len(night) == 1 and night[0].startswith("the reference does not cover time_of_day=night: ")
    assert f"of its {tod.count('night')} frames are above the reference's novelty p90" in night[0]
    assert not any("time_of_day=day" in w for w in warnings)
    page = (res.run_dir / "report.html").read_text()
    assert page.index("time_of_day=night") < page.index("<h2>Summary</h2>")  # at the top of the report
    # coverage.novelty "within" (the default): night frames' novelty is calibrated among the fleet's night frames,
    # so they are ranked among themselves instead of all being novel; the warning still says what is missing
    cov = res.counts["coverage"]
    assert cov["conditioned"] == [{"value": "time_of_day=night", "frames": tod.count("night")}], cov
    assert any("novelty is calibrated within time_of_day=night" in n
               for n in json.loads((res.run_dir / "run.json").read_text())["notes"])

    m = pq.read_table(tmp_path / "fleet" / "manifest.parquet", columns=["frame_id", "time_of_day"]).to_pandas()

    def night_novelty(run_dir: Path) -> tuple[np.ndarray, list[list[str]]]:
        sc = pq.read_table(run_dir / "scores.parquet", columns=["frame_id", "novelty", "reasons"]).to_pandas()
        sc = sc.merge(m, on="frame_id")
        night = sc[sc["time_of_day"] == "night"]
        return night["novelty"].to_numpy(), [list(r) for r in night["reasons"]]

    def calibration(run_dir: Path, name: str) -> Any:
        """Each scored frame's (or candidate's) time_of_day beside its novelty_calibration."""
        t = pq.read_table(run_dir / name, columns=["frame_id", "novelty", "novelty_calibration"]).to_pandas()
        assert t["novelty"].notna().all() and t["novelty_calibration"].notna().all()
        return t.merge(m, on="frame_id")

    # the calibration each frame's novelty got, per frame: the conditioned value exactly on its frames
    sc = calibration(res.run_dir, "scores.parquet")
    assert len(sc) == res.counts["scored_frames"]
    assert (sc["novelty_calibration"] == np.where(sc["time_of_day"] == "night", "time_of_day=night",
                                                  "reference")).all()
    cand = calibration(res.run_dir, "candidates.parquet")
    assert len(cand) == res.counts["candidates"]
    assert (cand["novelty_calibration"] == np.where(cand["time_of_day"] == "night", "time_of_day=night",
                                                    "reference")).all()
    for v in set(cand["novelty_calibration"]):  # in the report: each card's evidence panel, and a filter
        assert f'"novelty_calibration":"{v}"' in page and f"<option value='{v}'>{v} (" in page
    # each calibration's frames counted, and its novelty histogram of its own
    frames = sc["novelty_calibration"].value_counts().to_dict()
    assert res.counts["novelty_calibrated_on"] == {"reference": frames["reference"],
                                                   "time_of_day=night": tod.count("night")}
    for v, n in frames.items():
        assert (">novelty (weight 1) · against the reference</text>" in page
                and f">fleet frames ranked against the reference: {n:,} (n={n:,})</text>" in page
                if v == "reference" else f">novelty (weight 1) · within {v}</text>" in page
                and f">fleet frames with {v}, ranked among themselves: {n:,} (n={n:,})</text>" in page)
    # events and scenarios say which calibrations their novelty stats mix: those of their frames
    in_events = sc.merge(pq.read_table(res.run_dir / "scores.parquet", columns=["frame_id", "event_id"]).to_pandas(),
                         on="frame_id").dropna(subset=["event_id"])
    want = in_events.groupby("event_id")["novelty_calibration"].agg(lambda v: sorted(set(v))).to_dict()
    ev = pq.read_table(res.run_dir / "events.parquet").to_pandas()
    assert len(ev) > 0 and dict(zip(ev["event_id"], map(list, ev["novelty_calibrations"]), strict=True)) == want
    scen = {r["scenario_id"]: r["novelty_calibrations"]
            for r in pq.read_table(res.run_dir / "scenarios.parquet").to_pylist()}
    assert all(v == sorted(set(v)) and v for v in scen.values())
    picked = pq.read_table(res.run_dir / "candidates.parquet", columns=["scenario_id", "novelty_calibration"])
    for r in picked.to_pylist():  # an event candidate is a kept frame of its scenario
        assert r["scenario_id"] is None or r["novelty_calibration"] in scen[r["scenario_id"]]
    pct, reasons = night_novelty(res.run_dir)
    off = run_mine(make_spec(byo, tmp_path / "run_off", budget=10, score_batch_rows=64,
                             coverage={"novelty": "reference"}), spark=spark)
    assert "conditioned" not in off.counts["coverage"] and off.counts["coverage"]["novelty"] == "reference"
    assert json.loads((off.run_dir / "run.json").read_text())["warnings"] == warnings  # the same guardrail
    for name in ("scores.parquet", "candidates.parquet"):  # coverage.novelty: reference: every frame's is
        assert (calibration(off.run_dir, name)["novelty_calibration"] == "reference").all()
    assert off.counts["novelty_calibrated_on"] == {"reference": off.counts["scored_frames"]}
    for name in ("events.parquet", "scenarios.parquet"):
        assert {tuple(v) for v in pq.read_table(off.run_dir / name).column("novelty_calibrations").to_pylist()} == {
            ("reference",)}
    off_page = (off.run_dir / "report.html").read_text()
    assert ">novelty (weight 1)</text>" in off_page and "novelty (weight 1) · " not in off_page  # one histogram
    pct_off, _ = night_novelty(off.run_dir)
    assert (pct_off >= 0.9).mean() > 0.5  # against the reference almost every night frame is novel
    assert (pct >= 0.9).mean() < 0.25  # among themselves about a tenth are above their own p90
    assert any("among this fleet's time_of_day=night frames" in r for rs in reasons for r in rs)
    with pytest.raises(ConfigError, match="coverage.novelty"):
        make_spec(byo, tmp_path / "run_bad", budget=10, coverage={"novelty": "ignore"})


@pytest.mark.spark
def test_long_stages_report_rows_done_for_a_live_rate_and_eta(byo: dict[str, Path], spark: Any,
                                                              tmp_path: Path) -> None:
    from edgemine.jobs.commands.mine import StageClock

    seen: list[tuple[str, int, int]] = []
    stage = [""]

    def log(line: str) -> None:
        if line.startswith("[") and line.endswith("]"):
            stage[0] = line[1:-1]

    run_mine(make_spec(byo, tmp_path / "run"), spark=spark, log=log,
             progress=lambda done, total: seen.append((stage[0], done, total)))
    by_stage = {s: [(d, t) for st, d, t in seen if st == s] for s in {s for s, _, _ in seen}}
    assert {"score", "fuse"} <= set(by_stage)
    for pairs in by_stage.values():
        done = [d for d, _ in pairs]
        assert done == sorted(done) and pairs[-1][0] == pairs[-1][1] > 0  # rises to the stage's total
    clock = StageClock(period_s=60)
    clock("[score]")
    clock.report(250, 1000)
    text = clock.status(5.0)
    clock.end()
    assert text.startswith("score: 250/1,000 frames (25%) 50 frames/s ETA 0m15s")


def test_a_run_whose_report_fails_leaves_no_run_json(byo: dict[str, Path], spark: Any, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import edgemine.mining.report as report

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("report broke")

    monkeypatch.setattr(report, "write_report", broken)
    with pytest.raises(RuntimeError, match="report broke"):
        run_mine(make_spec(byo, tmp_path / "run"), spark=spark)
    assert not (tmp_path / "run" / "run.json").exists()  # `review import` refuses a folder without it
