"""The mining job spec: YAML and flags in, one validated object out, errors naming the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgemine.errors import ConfigError, InputNotFoundError
from edgemine.jobs.spec import DEFAULT_SIGNALS, build_spec, load_spec

ROOT = Path(__file__).resolve().parents[2]
BASE = {"frames": "f.parquet", "reference": "r.parquet", "out": "run", "budget": 10}


def test_yaml_paths_are_relative_to_the_file_and_flags_override(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    job = tmp_path / "jobs" / "job.yaml"
    job.write_text("frames: ../data/m.parquet\nreference: /abs/ref.parquet\nout: runs/a\nbudget: 50\n"
                   "index: {dir: idx, kind: hnsw}\nsignals: {rarity: {weight: 0}}\n")
    spec = load_spec(job, budget=20, encoder=None)
    assert spec.frames == (tmp_path / "data" / "m.parquet").resolve()
    assert spec.reference == Path("/abs/ref.parquet") and spec.out == tmp_path / "jobs" / "runs" / "a"
    assert spec.index.dir == tmp_path / "jobs" / "idx" and spec.index.kind == "hnsw"
    assert spec.budget == 20 and spec.encoder == "builtin"
    # signals merge over the defaults: rarity turned off, the others kept
    assert spec.signals["rarity"]["weight"] == 0 and spec.signals["novelty"] == DEFAULT_SIGNALS["novelty"]
    weights = {n: w for n, (w, _) in spec.make_signals().items()}
    assert weights == {"novelty": 1.0, "uncertainty": 0.25, "rarity": 0.0, "trigger": 0.5}


def test_the_example_spec_is_valid() -> None:
    spec = load_spec(ROOT / "jobs" / "specs" / "example.yaml")
    assert spec.budget == 300 and [r.name for r in spec.make_signals()["trigger"][1].rules] == [
        "hard_brake", "hard_brake_pedestrian"]


@pytest.mark.parametrize("change, message", [
    ({"budget": 0}, "budget: Input should be greater than or equal to 1 (got 0)"),
    ({"budget": "lots"}, "budget: Input should be a valid integer"),
    ({"selection": {"per_event_cap": 0}}, "selection.per_event_cap: Input should be greater than or equal to 1"),
    ({"selection": {"strategy": "greedy"}}, "selection.strategy: unknown strategy 'greedy'"),
    ({"index": {"kind": "lsh"}}, "index.kind: Input should be 'auto', 'flat'"),
    ({"fusion": {"mode": "sum"}}, "fusion.mode: Input should be 'fisher'"),
    ({"aggregate": {"dedup_s": -1}}, "aggregate.dedup_s: Input should be greater than or equal to 0"),
    ({"signals": {"novelity": {}}}, "signals: unknown signal 'novelity'; known signals: novelty, rarity"),
    ({"signals": {"novelty": {"k": 0}}}, "signals: signals.novelty.k=0 must be >= 1"),
    ({"signals": {"uncertainty": {"measure": "variance"}}}, "measure='variance' is not one of"),
    ({"signals": {"trigger": {"rules": [{"name": "brake", "expr": "accel <"}]}}}, "trigger 'brake': malformed"),
    ({"signals": {"trigger": {"rules": [{"name": "x", "expr": "open('f')"}]}}}, "trigger 'x': \"open('f')\" is not"),
    ({"signals": {"novelty": {"weight": -1}}}, "novelty.weight=-1 must be a number >= 0"),
    ({"colour": "red"}, "colour: Extra inputs are not permitted"),
])
def test_bad_fields_are_named(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        build_spec({**BASE, **change})
    assert message in str(exc.value)


def test_missing_required_fields_and_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="frames: Field required"):
        build_spec({k: v for k, v in BASE.items() if k != "frames"})
    with pytest.raises(InputNotFoundError, match="nope.yaml"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("frames: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_spec(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="a job spec is a mapping"):
        load_spec(bad)


def test_cli_reports_a_bad_spec_on_one_line(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("frames: a.parquet\nreference: b.parquet\nout: run\nbudget: 5\nselection: {per_event_cap: -2}\n")
    out = subprocess.run([sys.executable, "-m", "edgemine", "mine", str(job)], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "selection.per_event_cap" in out.stderr and "Traceback" not in out.stderr


BOMB = "\n".join([
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    *(f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)),
    "budget: *i",
])


def test_a_yaml_alias_bomb_is_refused_quickly_without_echoing_it(tmp_path: Path) -> None:
    import time

    job = tmp_path / "bomb.yaml"
    job.write_text(BOMB)
    assert len(BOMB) < 500
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than 100,000 values") as err:
        load_spec(job)
    assert time.perf_counter() - t0 < 5 and len(str(err.value)) < 300


def test_a_huge_bad_value_is_quoted_at_most_200_characters(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(f'frames: f.parquet\nreference: r.parquet\nbudget: "{"9" * 50_000}x"\n')
    with pytest.raises(ConfigError, match=r"budget: .*\(50,003 characters\)") as err:
        load_spec(job)
    assert len(str(err.value)) < 600


def test_an_oversized_spec_file_is_refused_by_size(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("# " + "x" * (2 << 20) + "\nbudget: 5\n")
    with pytest.raises(ConfigError, match="bytes is more than the 1,048,576 a job spec may have"):
        load_spec(job)
