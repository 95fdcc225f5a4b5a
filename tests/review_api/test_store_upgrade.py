"""A store made by the previous version (no audit trail, no publications or publish reservations, runs without
amend_window_seconds) keeps working: `Database.create_all` adds what is missing, once, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text

from edgemine.review_api import storage
from edgemine.review_api.db import Database, add_missing_columns
from edgemine.review_api.importer import Policy, import_run
from edgemine.review_api.settings import load_settings
from edgemine.review_api.storage import DecisionInput
from tests.support.review import T0


def _make_old_store(url: str, run_dir: Path) -> None:
    db = Database(url)
    db.create_all()
    import_run(db, run_dir, policy=Policy.from_settings(load_settings(environment="test"), overlap_fraction=0.0),
               now=T0)
    with db.write_engine.begin() as conn:  # what the previous version's create_all made
        conn.execute(text("DROP TABLE decision_events"))
        conn.execute(text("DROP TABLE publications"))
        conn.execute(text("DROP TABLE publish_reservations"))
        conn.execute(text("ALTER TABLE runs DROP COLUMN amend_window_seconds"))
    db.dispose()


def test_an_old_store_gets_the_new_tables_and_columns(db_url: str, run_dirs: dict[str, Path]) -> None:
    _make_old_store(db_url, run_dirs["other"])
    db = Database(db_url)
    try:
        assert "amend_window_seconds" not in {c["name"] for c in inspect(db.write_engine).get_columns("runs")}
        db.create_all()
        found = inspect(db.write_engine)
        assert {"decision_events", "publications", "publish_reservations"} <= set(found.get_table_names())
        assert "amend_window_seconds" in {c["name"] for c in found.get_columns("runs")}
        assert add_missing_columns(db.write_engine) == []  # idempotent: nothing left to add
        db.create_all()
        with db.read() as s:
            assert storage.get_run(s, run_id="run-other").amend_window_seconds == 600  # the default, for old rows
        with db.write() as s:
            reviewer, _ = storage.create_reviewer(s, name="ana", role="reviewer", now=T0)
            lease = storage.lease_next(s, reviewer_id=reviewer.id, now=T0)
            assert lease is not None
            storage.submit_decision(s, item_id=lease.item_id, reviewer_id=reviewer.id, now=T0,
                                    decision=DecisionInput(verdict="unsure"))
        with db.write() as s:
            storage.amend_decision(s, item_id=lease.item_id, reviewer_id=reviewer.id, now=T0,
                                   decision=DecisionInput(verdict="not_edge_case"))
        with db.read() as s:
            trail = storage.item_history(s, item_id=lease.item_id, reviewer_id=reviewer.id, role="reviewer")
        assert [h["action"] for h in trail] == ["decide", "amend"]
    finally:
        db.dispose()


def test_a_decision_made_before_the_trail_existed_shows_as_a_decide(tmp_path: Path,
                                                                     run_dirs: dict[str, Path]) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    db = Database(url)
    db.create_all()
    import_run(db, run_dirs["other"], policy=Policy.from_settings(load_settings(environment="test"),
                                                                  overlap_fraction=0.0), now=T0)
    with db.write() as s:
        reviewer, _ = storage.create_reviewer(s, name="ana", role="reviewer", now=T0)
        lease = storage.lease_next(s, reviewer_id=reviewer.id, now=T0)
        assert lease is not None
        storage.submit_decision(s, item_id=lease.item_id, reviewer_id=reviewer.id, now=T0,
                                decision=DecisionInput(verdict="edge_case", category="debris", notes="old"))
        s.execute(text("DELETE FROM decision_events"))  # as if made by the previous version
    with db.read() as s:
        (entry,) = storage.item_history(s, item_id=lease.item_id, reviewer_id=reviewer.id, role="lead")
    assert (entry["action"], entry["at"], entry["before"]) == ("decide", T0, None)
    assert entry["after"] == {"verdict": "edge_case", "category": "debris", "root_causes": [], "notes": "old"}
    db.dispose()
