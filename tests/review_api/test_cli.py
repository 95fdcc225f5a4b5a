"""The review commands of the CLI, run as a user would (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from edgemine.contracts import DECISIONS_SCHEMA
from edgemine.review_api import storage
from edgemine.review_api.db import Database
from edgemine.review_api.storage import DecisionInput
from tests.support.review import T0

EDGEMINE = [sys.executable, "-m", "edgemine"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGEMINE, *args], capture_output=True, text=True, timeout=120)


def test_reviewers_add_prints_the_token_once(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    out = run("reviewers", "add", "ana", "--role", "lead", "--db", db)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.startswith("em_") and len(token) > 40 and "\n" not in token
    assert "shown once" in out.stderr
    listed = run("reviewers", "list", "--db", db)
    assert listed.stdout.split() == ["ana", "lead", "active"] and token not in listed.stdout
    with Database(db).read() as s:
        assert storage.reviewer_by_token(s, token=token).name == "ana"  # type: ignore[union-attr]
    again = run("reviewers", "add", "ana", "--db", db)
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "'ana' already exists" in again.stderr
    bad = run("reviewers", "add", "bo", "--role", "boss", "--db", db)
    assert bad.returncode == 1 and "role='boss'" in bad.stderr
    assert run("reviewers", "revoke", "ana", "--db", db).returncode == 0
    assert "revoked" in run("reviewers", "list", "--db", db).stdout


def test_import_consensus_metrics_export(tmp_path: Path, run_dirs: dict[str, Path], synth_logs: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    gt = str(synth_logs / "ground_truth.parquet")
    out = run("review", "import", str(run_dirs["bad"]), "--db", db, "--ground-truth", gt, "--gold-fraction", "0.25",
              "--overlap", "0")
    assert out.returncode == 0, out.stderr
    assert "imported run 'run-bad': 8 items (8 new)" in out.stdout and "2 skipped" in out.stdout
    assert "uri is empty" in out.stdout
    again = run("review", "import", str(run_dirs["bad"]), "--db", db)
    assert "already imported run 'run-bad': 8 items (0 new)" in again.stdout
    missing = run("review", "import", str(tmp_path / "nope"), "--db", db)
    assert missing.returncode == 1 and "nope" in missing.stderr and "Traceback" not in missing.stderr
    database = Database(db)
    with database.write() as s:
        ana, _ = storage.create_reviewer(s, name="ana", role="reviewer", now=T0)
    while True:
        with database.write() as s:
            held = storage.lease_next(s, reviewer_id=ana.id, now=T0)
            if held is None:
                break
            storage.submit_decision(s, item_id=held.item_id, reviewer_id=ana.id, now=T0,
                                    decision=DecisionInput(verdict="edge_case", category="debris"))
    database.dispose()
    consensus = run("review", "consensus", "run-bad", "--db", db)
    assert consensus.returncode == 0 and json.loads(consensus.stdout)["method"] == "dawid_skene"
    metrics = json.loads(run("review", "metrics", "run-bad", "--db", db).stdout)
    assert metrics["queue"]["items"] == 8 and metrics["reviewers"][0]["reviewer"] == "ana"
    out = run("review", "export", "--out", str(tmp_path / "export"), "--db", db)
    assert out.returncode == 0, out.stderr
    decisions = pq.read_table(tmp_path / "export" / "decisions.parquet")
    confirmed = pq.read_table(tmp_path / "export" / "confirmed.parquet")
    assert decisions.schema == DECISIONS_SCHEMA and decisions.num_rows >= 6
    assert confirmed.schema == storage.CONFIRMED_ITEMS_SCHEMA and confirmed.num_rows >= 6
    assert set(confirmed.column("novelty_calibration").to_pylist()) == {"reference"}  # a run before the column
    assert f"wrote {decisions.num_rows} decisions" in out.stdout
