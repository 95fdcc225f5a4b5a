"""`edgemine datasets`: one version syntax (PATH@vN) in every command, deterministic output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgemine.jobs.datasets import dataset_diff, dataset_show
from edgemine.jobs.publish import SplitPolicy, publish, training_rows
from tests.support.datasets import confirmed

CLI = [sys.executable, "-m", "edgemine", "datasets"]


@pytest.fixture
def ds(tmp_path: Path) -> str:
    path = str(tmp_path / "edge_cases")
    publish(training_rows(confirmed(list(range(6))), policy=SplitPolicy()), path, frames="reference",
            lineage={"mining_runs": ["run-1"], "zeta": 1, "alpha": 2}, taxonomy=["debris", "animal_on_road"])
    publish(training_rows(confirmed(list(range(4, 10)), categories=["other"] * 6), policy=SplitPolicy()), path,
            frames="reference", lineage={"mining_runs": ["run-2"]}, taxonomy=["debris", "animal_on_road"])
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True)


def test_diff_takes_two_pinned_refs(ds: str) -> None:
    new = run("diff", f"{ds}@v0", f"{ds}@v1", "--json")
    assert new.returncode == 0, new.stderr
    d = json.loads(new.stdout)
    assert (d["from"], d["to"], d["rows_added"]) == (0, 1, 4) and d["classes_added"] == ["other"]
    assert d["added_frame_ids"] == ["f0006", "f0007", "f0008", "f0009"]
    assert json.loads(run("diff", f"{ds}@v0", "v1", "--json").stdout) == d  # the second on the same path
    old = run("diff", ds, "0", "1", "--json")  # the old form still works, and says how to write it
    assert json.loads(old.stdout) == d and f"write 'datasets diff {ds}@v0 {ds}@v1'" in old.stderr
    assert json.loads(run("diff", ds, "v0", "v1", "--json").stdout) == d
    assert dataset_diff(f"{ds}@v0", f"{ds}@v1") == dataset_diff(ds, 0, 1) == d
    text = run("diff", f"{ds}@v0", f"{ds}@v1").stdout
    assert "v0 -> v1: +4 rows" in text and "classes added: ['other']" in text
    unpinned = run("diff", ds, f"{ds}@v1")
    assert unpinned.returncode == 1 and "has no @vN" in unpinned.stderr


def test_show_log_and_classes_take_path_at_vn_and_print_in_a_fixed_order(ds: str) -> None:
    a = run("show", f"{ds}@v0", "--json").stdout
    assert a == run("show", f"{ds}@v0", "--json").stdout  # byte-identical twice
    info = json.loads(a)
    assert list(info) == sorted(info) and list(info["lineage"]) == sorted(info["lineage"])
    assert info["version"] == 0 and info["classes"] == ["debris", "animal_on_road", "construction_zone"]
    assert [c["name"] for c in info["schema"]][:3] == ["frame_id", "uri", "drive_id"]  # columns in table order
    assert info == json.loads(json.dumps(dataset_show(f"{ds}@v0"), default=str))
    text = run("show", f"{ds}@v0").stdout
    assert text.index("alpha:") < text.index("mining_runs:") < text.index("zeta:")
    assert "classes:    0=debris, 1=animal_on_road, 2=construction_zone" in text
    log = run("log", f"{ds}@v0").stdout.splitlines()
    header = "version committed                  operation rows    lineage (runs, code, classes added)"
    assert log[0] == header and len(log) == 2 and log[1].startswith("v0 ")  # the history up to the pinned version
    full = run("log", ds).stdout.splitlines()
    assert full[0] == header and full[1].startswith("v1 ") and "classes+=[\"other\"]" in full[1]
    assert full[1].index("MERGE") == header.index("operation") and full[1].index("+4") == header.index("rows")
    assert [e["version"] for e in json.loads(run("log", ds, "--json").stdout)] == [1, 0]  # --json: no header
    assert run("classes", f"{ds}@v1").stdout.splitlines() == [
        "0\tdebris", "1\tanimal_on_road", "2\tconstruction_zone", "3\tother"]
    assert json.loads(run("classes", f"{ds}@v0", "--json").stdout) == ["debris", "animal_on_road",
                                                                      "construction_zone"]
    bad = run("show", f"{ds}@v7")
    assert bad.returncode == 1 and "v7 does not exist" in bad.stderr


@pytest.mark.parametrize(("cmd", "tail"), [("show", "vX"), ("log", "latest"), ("classes", "v1.5"),
                                           ("show", "")])
def test_a_malformed_version_is_named_as_such_not_as_a_missing_table(ds: str, cmd: str, tail: str) -> None:
    bad = run(cmd, f"{ds}@{tail}")
    assert bad.returncode == 1 and "not a Delta table" not in bad.stderr, bad.stderr
    assert f"has a malformed version {tail!r}: write PATH@vN, N an integer (e.g. {ds}@v0)" in bad.stderr


def test_a_directory_whose_name_has_an_at_sign_is_still_a_path(tmp_path: Path) -> None:
    from edgemine.jobs.datasets import DatasetRef, parse_ref

    odd = tmp_path / "edge_cases@team"
    odd.mkdir()
    assert parse_ref(str(odd)) == DatasetRef(str(odd))
    assert parse_ref(f"{odd}@v2") == DatasetRef(str(odd), 2)


@pytest.mark.parametrize(("values", "expected"), [
    ([], None),
    (["AWS_REGION=eu-west-1"], {"AWS_REGION": "eu-west-1"}),
    (["a=b=c", " k =", "AWS_ALLOW_HTTP=true"], {"a": "b=c", "k": "", "AWS_ALLOW_HTTP": "true"}),
])
def test_storage_options_parse_key_equals_value(values: list[str], expected: dict[str, str] | None) -> None:
    from edgemine.jobs.datasets import parse_storage_options

    assert parse_storage_options(values) == expected


@pytest.mark.parametrize(("values", "message"), [
    (["AWS_REGION"], "--storage-option 'AWS_REGION' is not KEY=VALUE"),
    (["=x"], "--storage-option '=x' has an empty key"),
    (["a=1", "a=2"], "--storage-option a is given twice"),
])
def test_bad_storage_options_are_refused_naming_the_value(values: list[str], message: str) -> None:
    from edgemine.errors import ConfigError
    from edgemine.jobs.datasets import parse_storage_options

    with pytest.raises(ConfigError, match=message):
        parse_storage_options(values)


def test_every_datasets_command_passes_storage_options_to_deltalake(
        ds: str, deltalake_storage_options: list, capsys: pytest.CaptureFixture[str]) -> None:
    """--storage-option reaches every DeltaTable the command opens (a local table takes them harmlessly); a
    bad one is a one-line error naming it, before anything is read."""
    from edgemine.jobs.cli import main

    seen = deltalake_storage_options
    flags = ["--storage-option", "timeout=30s", "--storage-option", "AWS_REGION=eu-west-1"]
    for args in (["log", ds], ["show", f"{ds}@v1"], ["diff", f"{ds}@v0", f"{ds}@v1"], ["classes", f"{ds}@v0"]):
        seen.clear()
        assert main(["datasets", *args, *flags]) == 0, capsys.readouterr().err
        assert seen and all(o == {"timeout": "30s", "AWS_REGION": "eu-west-1"} for o in seen), (args, seen)
    capsys.readouterr()
    seen.clear()
    assert main(["datasets", "show", ds, "--storage-option", "timeout"]) == 1
    assert capsys.readouterr().err == "error: --storage-option 'timeout' is not KEY=VALUE\n" and not seen
