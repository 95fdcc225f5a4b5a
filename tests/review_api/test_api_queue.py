"""The queue through HTTP: leases and expiry, blind overlap, gold interleaving and scoring, retries, 422s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from tests.support.review import ReviewEnv


def test_lease_expiry_renewal_and_skip(env: ReviewEnv, run_dirs: dict[str, Path]) -> None:
    env.import_run(run_dirs["small"], overlap_fraction=0.0, lease_seconds=60)
    first = env.next("ana")
    assert first is not None and first["item"]["rank"] == 1
    assert env.next("ana") == first  # a repeated `next` returns the held lease, unchanged
    env.clock.advance(50)
    r = env.client.post(f"/leases/{first['lease']['id']}/renew", headers=env.auth("ana"))
    assert r.status_code == 200 and r.json()["expires_at"] == "2026-03-01T09:01:50Z"
    env.clock.advance(50)  # 100 s after the lease, 50 s after the renewal: still live
    assert env.next("ben")["item"]["id"] != first["item"]["id"]  # type: ignore[index]
    env.clock.advance(11)  # now expired
    stolen = env.next("cho")
    assert stolen is not None and stolen["item"]["id"] == first["item"]["id"]
    r = env.decide("ana", first["item"]["id"], verdict="not_edge_case")
    assert r.status_code == 409 and "expired" in r.json()["detail"]
    r = env.client.post(f"/leases/{first['lease']['id']}/renew", headers=env.auth("ana"))
    assert r.status_code == 409
    # ana never gets that item again; cho can decide it
    again = env.next("ana")
    assert again is not None and again["item"]["id"] != first["item"]["id"]
    assert env.decide("cho", first["item"]["id"], verdict="not_edge_case").status_code == 201
    # skipping gives the item back to others, never to the one who skipped
    r = env.client.delete(f"/leases/{again['lease']['id']}", headers=env.auth("ana"))
    assert r.status_code == 204
    after_skip = env.next("ana")
    assert after_skip is not None and after_skip["item"]["id"] != again["item"]["id"]
    assert env.client.delete(f"/leases/{again['lease']['id']}", headers=env.auth("ana")).status_code == 409


def test_empty_queue_is_204(env: ReviewEnv, run_dirs: dict[str, Path]) -> None:
    assert env.client.post("/queue/next", headers=env.auth("ana")).status_code == 204
    env.import_run(run_dirs["other"], overlap_fraction=0.0, gold_fraction=0.0)
    r = env.client.post("/queue/next", params={"run_id": "nope"}, headers=env.auth("ana"))
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    for _ in range(12):
        held = env.next("ana")
        assert env.decide("ana", held["item"]["id"], verdict="unsure").status_code == 201  # type: ignore[index]
    assert env.client.post("/queue/next", headers=env.auth("ana")).status_code == 204


def test_blind_overlap(env: ReviewEnv, run_dirs: dict[str, Path]) -> None:
    env.import_run(run_dirs["small"], overlap_fraction=1.0, overlap_reviews=3)
    ana = env.next("ana")
    assert ana is not None
    r = env.decide("ana", ana["item"]["id"], verdict="edge_case", category="debris", notes="cone", seconds=4)
    assert r.status_code == 201
    ben = env.next("ben")
    cho = env.next("cho")
    # the same item, and exactly the same view: nothing about ana's decision or how many reviewed it
    assert ben is not None and cho is not None
    assert ben["item"] == cho["item"] == ana["item"]
    text = str(ben)
    assert "debris" not in str(ben["item"]["reasons"]) and "cone" not in text and "decision" not in text
    # and a reviewer cannot reach anyone's decisions
    assert env.client.get(f"/items/{ana['item']['id']}/review", headers=env.auth("ben")).status_code == 403
    assert env.decide("ben", ben["item"]["id"], verdict="not_edge_case").json()["verdict"] == "not_edge_case"
    # a fourth reviewer does not get an item that has its three reviewers
    env.add("dan")
    assert env.next("dan")["item"]["id"] != ana["item"]["id"]  # type: ignore[index]


def _answer_for(item: dict[str, Any], truth: dict[str, tuple[str, str | None]]) -> dict[str, Any]:
    verdict, category = truth[item["frame_id"]]
    return {"verdict": verdict, "category": category} if category else {"verdict": verdict}


def test_gold_items_are_interleaved_indistinguishably_and_scored(env: ReviewEnv, run_dirs: dict[str, Path],
                                                                 synth_logs: Path) -> None:
    import pyarrow.parquet as pq

    report = env.import_run(run_dirs["small"], ground_truth=str(synth_logs / "ground_truth.parquet"),
                            gold_fraction=0.25, gold_rate=0.3, overlap_fraction=0.0)
    assert report["gold"] >= 3
    gt = {r["frame_id"]: ("edge_case", r["category"]) if r["is_rare"] else ("not_edge_case", None)
          for r in pq.read_table(synth_logs / "ground_truth.parquet").to_pylist()}
    with env.app_state.db.read() as s:
        from sqlalchemy import select

        from edgemine.review_api.db import Item

        gold_ids = set(s.scalars(select(Item.id).where(Item.is_gold)))
    served: list[tuple[int, bool]] = []
    regular_keys = gold_keys = None
    while (held := env.next("ana")) is not None:
        item = held["item"]
        is_gold = item["id"] in gold_ids
        served.append((item["id"], is_gold))
        keys = (set(held), set(held["lease"]), set(item), {k: type(v) for k, v in item.items()}.keys())
        if is_gold:
            gold_keys = keys
        else:
            regular_keys = keys
        # ana answers gold items right except the first one
        answer = _answer_for(item, gt)
        if is_gold and sum(g for _, g in served) == 1:
            answer = {"verdict": "unsure"}
        assert env.decide("ana", item["id"], **answer).status_code == 201
    n_gold = sum(g for _, g in served)
    assert len(served) == len({i for i, _ in served})  # never an item twice, gold or not
    assert len(served) - n_gold == report["items"] - report["gold"]  # every regular item was served
    assert 1 <= n_gold <= report["gold"]
    assert abs(n_gold / len(served) - 0.3) < 0.2  # about the run's gold rate (draws are seeded, not random)
    assert gold_keys == regular_keys  # same shape: nothing tells a gold item apart
    first_gold = next(k for k, (_, g) in enumerate(served) if g)
    assert first_gold < len(served) - n_gold  # interleaved, not all at the end
    metrics = env.client.get("/runs/run-small/metrics", headers=env.auth("lead")).json()
    (ana,) = metrics["reviewers"]
    assert ana["gold_reviewed"] == n_gold
    assert ana["gold_accuracy"] == round((n_gold - 1) / n_gold, 4)


def test_gold_rate_controls_how_often_gold_is_served(env: ReviewEnv, run_dirs: dict[str, Path],
                                                     synth_logs: Path) -> None:
    env.import_run(run_dirs["small"], ground_truth=str(synth_logs / "ground_truth.parquet"), gold_fraction=0.5,
                   gold_rate=0.0, overlap_fraction=0.0)
    with env.app_state.db.read() as s:
        from sqlalchemy import select

        from edgemine.review_api.db import Item

        gold_ids = set(s.scalars(select(Item.id).where(Item.is_gold)))
    assert gold_ids
    while (held := env.next("ben")) is not None:
        assert held["item"]["id"] not in gold_ids  # rate 0: never gold
        env.decide("ben", held["item"]["id"], verdict="not_edge_case")


def test_idempotent_retries(env: ReviewEnv, run_dirs: dict[str, Path]) -> None:
    env.import_run(run_dirs["small"], overlap_fraction=0.0)
    held = env.next("ana")
    item = held["item"]["id"]  # type: ignore[index]
    body = {"verdict": "edge_case", "category": "debris", "root_causes": ["novel_scene"], "seconds": 2.5}
    first = env.decide("ana", item, key="abc-1", **body)
    retry = env.decide("ana", item, key="abc-1", **body)
    assert (first.status_code, retry.status_code) == (201, 200)
    assert first.json() == retry.json()
    clash = env.decide("ana", item, key="abc-1", **{**body, "category": "other"})
    assert clash.status_code == 422 and clash.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    no_key = env.decide("ana", item, **body)
    assert no_key.status_code == 409 and "already decided" in no_key.json()["detail"]
    # the retry also works after the lease has moved on
    env.next("ana")
    assert env.decide("ana", item, key="abc-1", **body).status_code == 200
    lead_view = env.client.get(f"/items/{item}/review", headers=env.auth("lead")).json()
    assert len(lead_view["decisions"]) == 1


def test_invalid_decisions_are_422_naming_the_field(env: ReviewEnv, run_dirs: dict[str, Path]) -> None:
    env.import_run(run_dirs["small"], overlap_fraction=0.0)
    item = env.next("ana")["item"]["id"]  # type: ignore[index]
    cases = [
        ({"verdict": "maybe"}, "verdict"),
        ({"verdict": "edge_case"}, "category"),
        ({"verdict": "edge_case", "category": "dragons"}, "category"),
        ({"verdict": "not_edge_case", "category": "debris"}, "category"),
        ({"verdict": "unsure", "root_causes": ["bad_luck"]}, "root_causes"),
        ({"verdict": "unsure", "root_causes": ["novel_scene", "novel_scene"]}, "root_causes"),
        ({"verdict": "unsure", "seconds": -1}, "seconds"),
        ({"verdict": "unsure", "notes": "x" * 2001}, "notes"),
        ({"verdict": "unsure", "colour": "red"}, "colour"),
        ({}, "verdict"),
    ]
    for body, field in cases:
        r = env.decide("ana", item, **body)
        assert r.status_code == 422, (body, r.text)
        locs = [e["loc"][-1] for e in r.json()["detail"]]
        assert field in locs, (body, r.json())
    assert env.decide("ana", item, verdict="unsure").status_code == 201  # the lease survived the bad tries


def test_item_view_has_evidence_and_serves_frames_by_id(env: ReviewEnv, run_dirs: dict[str, Path],
                                                        tmp_path: Path) -> None:
    env.import_run(run_dirs["small"], overlap_fraction=0.0)
    held = env.next("ana")
    item = held["item"]  # type: ignore[index]
    assert item["reasons"] and set(item["signals"]) == {"novelty", "uncertainty", "rarity", "trigger"}
    assert len(item["neighbors"]) == 3 and item["neighbors"][0]["distance"] == 0.5
    assert len(item["context"]) >= 2 and item["scenario"]
    assert "uri" not in item and all("/tmp" not in str(v) for v in item.values())  # no file paths leak
    assert "debris" in item["taxonomy"]["categories"] and "novel_scene" in item["taxonomy"]["root_causes"]
    for ref in [item["frame"], *item["neighbors"], *item["context"], *item["scenario"]]:
        r = env.client.get(ref["url"], headers=env.auth("ana"))
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert "private" in r.headers["cache-control"]
        out = tmp_path / "x.jpg"
        out.write_bytes(r.content)
        assert Image.open(out).size[0] > 0
    small = env.client.get(item["frame"]["url"], params={"size": "small"}, headers=env.auth("ana"))
    assert small.status_code == 200
    thumbs = list((tmp_path / "thumbs").rglob("*.jpg"))
    assert len(thumbs) >= 3  # rendered once, then served from the cache
    before = {p: p.stat().st_mtime_ns for p in thumbs}
    env.client.get(item["frame"]["url"], headers=env.auth("ana"))
    assert {p: p.stat().st_mtime_ns for p in thumbs} == before
    # out-of-range slots and kinds are 404/422, never a file read from a client path
    assert env.client.get(f"/items/{item['id']}/images/neighbor/9", headers=env.auth("ana")).status_code == 404
    r = env.client.get(f"/items/{item['id']}/images/..%2F..%2Fetc%2Fpasswd/0", headers=env.auth("ana"))
    assert r.status_code in (404, 422)


def test_context_time_offsets_reach_the_item_view(env: ReviewEnv, run_dirs: dict[str, Path], tmp_path: Path) -> None:
    """candidates.parquet's context_offsets_s (signed seconds, in context_uris order) is served beside the
    context frames; a run imported without it says null."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(run_dirs["other"] / "candidates.parquet")
    offsets = [[0.5 * (k - len(uris) // 2) - (0.0 if k < len(uris) // 2 else -0.5) for k in range(len(uris))]
               for uris in table.column("context_uris").to_pylist()]
    out = tmp_path / "with-offsets"
    out.mkdir()
    pq.write_table(table.append_column("context_offsets_s", pa.array(offsets, pa.list_(pa.float32()))),
                   out / "candidates.parquet")
    (out / "run.json").write_text(json.dumps({"run_id": "run-offsets"}))
    env.import_run(out, overlap_fraction=0.0, gold_fraction=0.0)
    env.import_run(run_dirs["small"], overlap_fraction=0.0, gold_fraction=0.0)
    held = env.next("ana", run_id="run-offsets")
    item = held["item"]  # type: ignore[index]
    expected = offsets[item["rank"] - 1]
    assert item["context_offsets_s"] == expected and len(item["context"]) == len(expected) >= 2
    assert 0.0 not in expected and min(expected) < 0 < max(expected)
    assert env.client.get(f"/items/{item['id']}", headers=env.auth("ana")).json()["context_offsets_s"] == expected
    env.decide("ana", item["id"], verdict="unsure")
    undone = env.client.delete(f"/items/{item['id']}/decisions/mine", headers=env.auth("ana")).json()
    assert undone["item"]["context_offsets_s"] == expected  # the lease+item body of an undo, like /queue/next
    env.decide("ana", item["id"], verdict="unsure")
    plain = env.next("ana", run_id="run-small")
    assert plain["item"]["context_offsets_s"] is None  # type: ignore[index]


def test_an_item_says_what_its_novelty_was_calibrated_on_also_for_runs_written_before_the_column(
        env: ReviewEnv, synth_logs: Path, reference_logs: Path, tmp_path: Path) -> None:
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.support.review import make_run_dir

    def run(name: str, calibration: list[str | None] | None, counts: dict[str, Any] | None) -> str:
        d = make_run_dir(tmp_path / name, synth_logs, reference_logs, run_id=name, n=3)
        if calibration is not None:
            t = pq.read_table(d / "candidates.parquet")
            pq.write_table(t.append_column("novelty_calibration", pa.array(calibration, pa.string())),
                           d / "candidates.parquet")
        if counts is not None:
            info = json.loads((d / "run.json").read_text())
            (d / "run.json").write_text(json.dumps({**info, "counts": counts}))
        env.import_run(d, overlap_fraction=0.0)
        return name

    def seen(run_id: str) -> list[tuple[Any, Any]]:
        page = env.client.get(f"/runs/{run_id}/items", headers=env.auth("lead")).json()
        items = [env.client.get(f"/items/{i['item_id']}/review", headers=env.auth("lead")).json()
                 for i in page["items"]]
        assert all("novelty_calibration" not in i["metadata"] for i in items)  # not manifest metadata
        return [(i["rank"], i["novelty_calibration"]) for i in sorted(items, key=lambda i: i["rank"])]

    night = {"coverage": {"conditioned": [{"value": "time_of_day=night", "frames": 40}]}}
    assert seen(run("new", ["time_of_day=night", "reference", None], night)) == [
        (1, "time_of_day=night"), (2, "reference"), (3, None)]
    # candidates written before the column: every frame's is "reference" unless the run conditioned a value
    assert seen(run("before", None, None)) == [(1, "reference"), (2, "reference"), (3, "reference")]
    assert seen(run("before-night", None, night)) == [(1, None), (2, None), (3, None)]
    held = env.next("ana")
    assert held is not None and "novelty_calibration" in held["item"]
