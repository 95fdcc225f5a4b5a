"""A training set's contract over time: a class list that is only extended, typed columns, schema evolution."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import CommitProperties, write_deltalake

from edgemine.contracts import CLASSES_KEY, TIMESTAMP, TRAINING_SCHEMA
from edgemine.errors import SchemaError
from edgemine.jobs.datasets import EdgeCaseDataset, dataset_classes, dataset_log, read_dataset
from edgemine.jobs.publish import SplitPolicy, publish, training_rows
from tests.support.datasets import confirmed, write_frames

ALL_TRAIN = SplitPolicy(ratios={"train": 1.0})


def put(ds: str, table: pa.Table, **kw: object) -> object:
    return publish(training_rows(table, policy=ALL_TRAIN), ds, lineage={}, frames="reference", **kw)  # type: ignore[arg-type]


# ================================================================ classes
def test_adding_a_category_keeps_every_old_class_index(tmp_path: Path) -> None:
    ds = str(tmp_path / "edge_cases")
    write_frames(tmp_path / "src", list(range(8)))
    taxonomy = ["wrong_way_vehicle", "debris"]
    v0 = put(ds, confirmed([0, 1, 2, 3], uri_dir=tmp_path / "src",
                           categories=["debris", "wrong_way_vehicle", "debris", "wrong_way_vehicle"]),
             taxonomy=taxonomy)
    # v1 brings a category outside the taxonomy; sorted first, it would shift every index if classes were sorted
    v1 = put(ds, confirmed([4, 5, 6, 7], uri_dir=tmp_path / "src",
                           categories=["animal_on_road", "debris", "animal_on_road", "wrong_way_vehicle"]),
             taxonomy=taxonomy)
    assert v0.classes == ("wrong_way_vehicle", "debris") and v0.classes_added == v0.classes  # type: ignore[attr-defined]
    assert v1.classes_added == ("animal_on_road",)  # type: ignore[attr-defined]
    c0, c1 = dataset_classes(f"{ds}@v0"), dataset_classes(f"{ds}@v1")
    assert c0 == ["wrong_way_vehicle", "debris"] and c1 == ["wrong_way_vehicle", "debris", "animal_on_road"]
    assert c1[: len(c0)] == c0
    d0, d1 = EdgeCaseDataset(f"{ds}@v0", split="train"), EdgeCaseDataset(f"{ds}@v1", split="train")
    t0 = dict(zip(d0.table.column("frame_id").to_pylist(), d0.targets, strict=True))
    t1 = dict(zip(d1.table.column("frame_id").to_pylist(), d1.targets, strict=True))
    assert t0 == {f: t1[f] for f in t0}  # the same frame has the same class index in both versions
    assert {d1.classes[t1[f]] for f in ("f0004", "f0006")} == {"animal_on_road"}
    log = {e["version"]: e["lineage"] for e in dataset_log(ds)}
    assert log[1]["edgemine.classes_added"] == ["animal_on_road"]
    assert log[1][CLASSES_KEY] == ["wrong_way_vehicle", "debris", "animal_on_road"]
    assert log[0]["edgemine.classes_added"] == ["wrong_way_vehicle", "debris"]


def test_the_taxonomy_seeds_classes_with_no_rows_yet_and_a_later_taxonomy_only_appends(tmp_path: Path) -> None:
    ds = str(tmp_path / "edge_cases")
    put(ds, confirmed([0], categories=["debris"]), taxonomy=["debris", "animal_on_road", "other"])
    assert dataset_classes(ds) == ["debris", "animal_on_road", "other"]  # seeded though only debris has rows
    r = put(ds, confirmed([1], categories=["other"]), taxonomy=["other", "construction_zone", "debris"])
    assert r.classes == ("debris", "animal_on_road", "other", "construction_zone")  # type: ignore[attr-defined]
    assert dataset_classes(f"{ds}@v0") == ["debris", "animal_on_road", "other"]  # time travel keeps v0's list


def test_racing_class_lists_fold_and_foreign_tables_fall_back_to_sorted_categories(tmp_path: Path) -> None:
    ds = str(tmp_path / "edge_cases")
    rows = training_rows(confirmed([0, 1, 2]), policy=ALL_TRAIN)
    # A table written by another tool: no class list in its commits -> its categories, sorted.
    write_deltalake(ds, rows.slice(0, 1))
    assert dataset_classes(ds) == ["debris"]
    # Two publishers that each extended the list they read (v0's) commit one after the other: both are kept.
    write_deltalake(ds, rows.slice(1, 1), mode="append",
                    commit_properties=CommitProperties(custom_metadata={CLASSES_KEY: '["debris", "x_added_by_a"]'}))
    write_deltalake(ds, rows.slice(2, 1), mode="append",
                    commit_properties=CommitProperties(custom_metadata={CLASSES_KEY: '["debris", "y_added_by_b"]'}))
    assert dataset_classes(ds) == ["debris", "x_added_by_a", "y_added_by_b", "animal_on_road", "construction_zone"]
    assert dataset_classes(f"{ds}@v1") == ["debris", "x_added_by_a", "animal_on_road"]


# ================================================================ types
META = [
    {"triggers_fired": ["hard_brake"], "trigger_raw": 0.5, "uncertainty_raw": 1.25, "frame_index": 12,
     "lidar_ok": True, "weather": "rain", "camera": {"id": "front", "fov": 90}, "speeds": [1, 2.5]},
    {"triggers_fired": [], "trigger_raw": None, "uncertainty_raw": 0.0, "frame_index": 13,
     "lidar_ok": False, "weather": None, "camera": None, "speeds": []},
    {"triggers_fired": ["hard_brake", "swerve"], "trigger_raw": 2.0, "uncertainty_raw": None, "frame_index": 0,
     "lidar_ok": None, "weather": "clear", "camera": {"id": "rear"}, "speeds": None},
]
META_TYPES = {"camera": pa.string(), "frame_index": pa.int64(), "lidar_ok": pa.bool_(),
              "speeds": pa.list_(pa.float64()),
              "trigger_raw": pa.float64(), "triggers_fired": pa.list_(pa.string()), "uncertainty_raw": pa.float64(),
              "weather": pa.string()}


def test_every_column_round_trips_with_its_type(tmp_path: Path) -> None:
    ds = str(tmp_path / "edge_cases")
    put(ds, confirmed([1, 2, 3], meta=META))
    got = read_dataset(f"{ds}@v0", resolve_uris=False)
    want = {f.name: f.type for f in TRAINING_SCHEMA} | META_TYPES
    assert {f.name: f.type for f in got.schema} == want
    rows = got.to_pylist()
    assert [r["triggers_fired"] for r in rows] == [["hard_brake"], [], ["hard_brake", "swerve"]]
    assert [r["trigger_raw"] for r in rows] == [0.5, None, 2.0]
    assert [r["uncertainty_raw"] for r in rows] == [1.25, 0.0, None]
    assert [r["frame_index"] for r in rows] == [12, 13, 0]
    assert [r["lidar_ok"] for r in rows] == [True, False, None]
    assert [r["speeds"] for r in rows] == [[1.0, 2.5], [], None]
    assert rows[0]["camera"] == '{"fov": 90, "id": "front"}'  # an object: JSON text with sorted keys
    assert rows[0]["timestamp"].tzinfo is not None and rows[0]["n_reviews"] == 2
    assert got.schema.field("timestamp").type == TIMESTAMP


def test_a_column_null_in_the_first_version_takes_its_type_when_values_arrive(tmp_path: Path) -> None:
    ds = str(tmp_path / "edge_cases")
    put(ds, confirmed([1, 2], meta=[{"trigger_raw": None, "frame_index": 1}, {"trigger_raw": None, "frame_index": 2}]))
    assert "trigger_raw" not in read_dataset(ds).column_names  # Delta has no null type: the column waits
    put(ds, confirmed([3], meta=[{"trigger_raw": 0.5, "frame_index": 3}]))
    v1 = read_dataset(ds)
    assert v1.schema.field("trigger_raw").type == pa.float64()  # not the string '0.5'
    assert v1.column("trigger_raw").to_pylist() == [None, None, 0.5]
    put(ds, confirmed([4], meta=[{"trigger_raw": None, "frame_index": None}]))  # nulls take the dataset's types
    v2 = read_dataset(ds)
    assert v2.schema.field("frame_index").type == pa.int64() and v2.column("frame_index").to_pylist()[-1] is None


def test_integers_widen_into_a_float_column(tmp_path: Path) -> None:
    ds = str(tmp_path / "edge_cases")
    put(ds, confirmed([1], meta=[{"speed_mps": 10.5}]))
    put(ds, confirmed([2], meta=[{"speed_mps": 11}]))
    t = read_dataset(ds)
    assert t.schema.field("speed_mps").type == pa.float64() and t.column("speed_mps").to_pylist() == [10.5, 11.0]


@pytest.mark.parametrize(("first", "then", "message"), [
    ({"frame_index": 12}, {"frame_index": "12"}, "column 'frame_index' is int64 in the dataset but string"),
    ({"frame_index": 12}, {"frame_index": 12.5}, "column 'frame_index' is int64 in the dataset but double"),
    ({"triggers_fired": ["a"]}, {"triggers_fired": "a"}, "column 'triggers_fired' is list<item: string> in the "
                                                         "dataset but string"),
    ({"lidar_ok": True}, {"lidar_ok": 1}, "column 'lidar_ok' is bool in the dataset but int64"),
])
def test_a_type_change_is_refused_naming_the_column_and_both_types(tmp_path: Path, first: dict, then: dict,
                                                                   message: str) -> None:
    ds = str(tmp_path / "edge_cases")
    put(ds, confirmed([1], meta=[first]))
    with pytest.raises(SchemaError, match=message):
        put(ds, confirmed([2], meta=[then]))
    assert read_dataset(ds).num_rows == 1 and len(dataset_log(ds)) == 1  # nothing written


def test_a_column_is_never_dropped(tmp_path: Path) -> None:
    ds = str(tmp_path / "edge_cases")
    put(ds, confirmed([1], meta=[{"weather": "rain"}]))
    put(ds, confirmed([2], meta=[{}]))  # rows without a metadata column: it reads null for them
    t = read_dataset(ds)
    assert t.column("weather").to_pylist() == ["rain", None]
    with pytest.raises(SchemaError, match=r"lack column\(s\) \['category'\]"):
        publish(training_rows(confirmed([3]), policy=ALL_TRAIN).drop(["category"]), ds, lineage={},
                frames="reference")
