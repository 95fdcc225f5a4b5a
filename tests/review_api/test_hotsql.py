"""The hot path's SQLite executor returns and writes exactly what SQLAlchemy does, statement by statement."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, InvalidRequestError, NoResultFound
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from edgemine.review_api import storage
from edgemine.review_api.db import Assignment, Database, Decision, DecisionEvent, Item, Reviewer, Run
from edgemine.review_api.hotsql import HotSQL, hot
from edgemine.review_api.importer import Policy, import_run
from edgemine.review_api.settings import load_settings
from edgemine.review_api.storage import DecisionInput, consensus, decisions, events, items, leases, runs
from edgemine.review_api.storage._common import consensus_values
from tests.support.review import T0

NOT_HOT: set[str] = set()  # statements of the storage package that never go through hot()


class _Undo(Exception):
    pass


@pytest.fixture
def db(tmp_path: Path, run_dirs: dict[str, Path], synth_logs: Path) -> Iterator[Database]:
    """A store mid-review: gold and overlap items, live leases, decisions with and without keys."""
    database = Database(f"sqlite:///{tmp_path / 'r.db'}")
    database.create_all()
    policy = Policy.from_settings(load_settings(environment="test"), gold_fraction=0.25, gold_rate=0.3,
                                  overlap_fraction=0.5)
    import_run(database, run_dirs["small"], policy=policy, now=T0, ground_truth=synth_logs / "ground_truth.parquet")
    with database.write() as s:
        ids = [storage.create_reviewer(s, name=n, role="reviewer", now=T0)[0].id for n in ("ana", "bo", "cy")]
        storage.create_reviewer(s, name="dee", role="reviewer", now=T0)  # no leases yet: the inserts' reviewer
    for k in range(4):
        for rid in ids:
            with database.write() as s:
                held = storage.lease_next(s, reviewer_id=rid, now=T0 + timedelta(seconds=k))
                assert held is not None
            if k < 3:
                with database.write() as s:
                    storage.submit_decision(s, item_id=held.item_id, reviewer_id=rid, now=T0 + timedelta(seconds=k),
                                            idempotency_key=f"{rid}-{k}" if k % 2 else None,
                                            decision=DecisionInput(verdict="edge_case" if k else "unsure",
                                                                   category="debris" if k else None,
                                                                   root_causes=("novel_scene",) if k else (),
                                                                   notes="seen" if k == 2 else None, seconds=1.5))
    yield database
    database.dispose()


def _snapshot(s: Session) -> dict[str, list[tuple[Any, ...]]]:
    return {t.__tablename__: [tuple(r) for r in s.execute(select(t.__table__).order_by(t.__table__.c.id))]
            for t in (Item, Assignment, Decision, DecisionEvent)} | {
                "runs": [tuple(r) for r in s.execute(select(Run.__table__))]}


def _both(db: Database, call: Callable[[HotSQL], Any]) -> tuple[Any, Any]:
    """(SQLite executor's result and tables, SQLAlchemy's result and tables), each in a rolled-back transaction."""
    outcomes = []
    for raw in (True, False):
        box: dict[str, Any] = {}
        with pytest.raises(_Undo), db.write() as s:
            q = HotSQL(s)
            if not raw:
                q.raw = None  # the session path, as on PostgreSQL
            out = call(q)
            box["out"] = [tuple(r) for r in out] if isinstance(out, list) else (
                tuple(out) if isinstance(out, tuple) else out)
            box["tables"] = _snapshot(s)
            raise _Undo
        outcomes.append(box)
    return outcomes[0], outcomes[1]


def _ids(db: Database) -> dict[str, Any]:
    with db.read() as s:
        live = s.scalars(select(Assignment).where(Assignment.state == "leased").order_by(Assignment.id)).first()
        decided = s.execute(select(Decision).where(Decision.idempotency_key.is_not(None))).scalars().first()
        gold = s.scalar(select(Item.id).where(Item.is_gold))
        open_item = s.scalar(select(Item.id).where(Item.slots_free > 0, Item.is_gold.is_(False)))
        complete = s.scalars(select(Item).where(Item.status == "complete")).first()
        scenario = s.execute(select(Item).where(Item.scenario_id.is_not(None))).scalars().first()
        dee = s.execute(select(Reviewer).where(Reviewer.name == "dee")).scalar_one()
        assert live is not None and decided is not None and gold is not None and scenario is not None
        assert complete is not None
        return {"live": live, "decided": decided, "gold": gold, "scenario": scenario, "dee": dee.id,
                "open": open_item, "complete": complete}


def cases(db: Database) -> dict[str, list[tuple[str, Executable, dict[str, Any]]]]:
    ids = _ids(db)
    live, decided, item = ids["live"], ids["decided"], ids["scenario"]
    rid, run, now = live.reviewer_id, live.run_id, T0 + timedelta(minutes=3, microseconds=123_457)
    away = now.astimezone(timezone(timedelta(hours=-7)))  # another zone: stored as the same UTC text
    columns = consensus_values(label="debris", confidence=0.75, method="majority", reason="",
                                root_cause="novel_scene", now=away)
    return {
        "first": [
            ("_HELD", leases._HELD, {"rid": rid}),
            ("_ITEM_BY_ID", items._ITEM_BY_ID, {"iid": item.id}),
            ("_PRIOR", decisions._PRIOR, {"rid": decided.reviewer_id, "key": decided.idempotency_key}),
            ("_REQUIRED", decisions._REQUIRED, {"iid": item.id}),
            ("_LEASE_OF", decisions._LEASE_OF, {"iid": live.item_id, "rid": rid}),
            ("_RUN_RULES", runs._RUN_RULES, {"run": run}),
            ("_SERVED", leases._SERVED, {"rid": rid, "run": run}),
            ("_GOLD_UNSEEN", leases._GOLD_UNSEEN, {"rid": rid, "run": run}),
            ("_BUMP", decisions._BUMP, {"iid": item.id}),
            ("_INSERT_LEASE", leases._INSERT_LEASE, {
                "item_id": ids["gold"], "reviewer_id": ids["dee"], "run_id": run, "state": "leased", "is_gold": True,
                "leased_at": away, "expires_at": away + timedelta(seconds=600), "closed_at": None}),
            ("_INSERT_DECISION", decisions._INSERT_DECISION, {
                "item_id": item.id, "reviewer_id": ids["dee"], "run_id": run, "verdict": "edge_case",
                "category": "debris", "root_causes": ["novel_scene", "label_ambiguity"], "notes": "ünïcode",
                "seconds": 2.25, "decided_at": away, "idempotency_key": "k", "is_gold": False, "gold_correct": None,
                "assignment_id": live.id, "handling_seconds": 12.5}),
        ],
        "all": [
            ("_RUN_POLICIES", leases._RUN_POLICIES, {}),
            ("_OPEN", leases._OPEN, {"rid": rid}),
            ("_OPEN_IN_RUN", leases._OPEN_IN_RUN, {"rid": rid, "run": run}),
            ("_PEERS", items._PEERS, {"run": item.run_id, "scn": item.scenario_id, "iid": item.id, "n": 8}),
            ("_DECISIONS_OF", decisions._DECISIONS_OF, {"iid": decided.item_id}),
        ],
        "rowcount": [
            ("_EXPIRE_ONE", leases._EXPIRE_ONE, {"lid": live.id, "now": away}),
            ("_FREE_SLOT", leases._FREE_SLOT, {"iid": item.id}),
            ("_TAKE_SLOT", leases._TAKE_SLOT, {"iid": ids["open"]}),
            ("_CLOSE_LEASE", decisions._CLOSE_LEASE, {"lid": live.id, "now": away}),
            ("_SET_CONSENSUS", decisions._SET_CONSENSUS, {"iid": item.id, **columns}),
            ("_APPLY_ANSWER", consensus._APPLY_ANSWER, {"iid": ids["complete"].id,
                                                        "n_seen": ids["complete"].n_decisions,
                                                        "seen_at": ids["complete"].consensus_at, **columns}),
            ("_INSERT_EVENT", events._INSERT_EVENT, {
                "item_id": item.id, "reviewer_id": ids["dee"], "run_id": run, "decision_id": decided.id,
                "action": "amend", "at": away, "before": None,
                "after": {"verdict": "edge_case", "category": "debris", "root_causes": ["ü"], "notes": None}}),
        ],
    }


def _hot_statements() -> dict[str, Executable]:
    """Every module-level Core statement (`_NAME`) of the storage package's modules."""
    found: dict[str, Executable] = {}
    for info in pkgutil.iter_modules(storage.__path__):
        module = importlib.import_module(f"{storage.__name__}.{info.name}")
        found.update((n, v) for n, v in vars(module).items() if n.startswith("_") and isinstance(v, Executable))
    return found


def test_every_hot_statement_matches_sqlalchemy(db: Database) -> None:
    table = cases(db)
    covered = {name for rows in table.values() for name, _, _ in rows}
    statements = set(_hot_statements())
    assert statements - NOT_HOT == covered, "a new hot statement needs a case here"
    for kind, rows in table.items():
        for name, stmt, params in rows:
            fast, reference = _both(db, lambda q, stmt=stmt, params=params, kind=kind: getattr(q, kind)(stmt, params))
            assert fast == reference, name
            if kind == "all":
                assert reference["out"], f"{name}: pick parameters that return rows"
            elif kind == "rowcount":
                assert reference["out"] == 1, name
            else:
                assert reference["out"] is not None, name


def test_rows_read_like_sqlalchemy_rows(db: Database) -> None:
    """Typed values (aware datetimes, parsed JSON, booleans) and attribute access, as the views use them."""
    item_id = _ids(db)["scenario"].id
    with db.read() as s:
        fast = hot(s).first(items._ITEM_BY_ID, {"iid": item_id})
        reference = s.execute(items._ITEM_BY_ID, {"iid": item_id}).first()
    assert fast is not None and reference is not None
    assert fast.timestamp == reference.timestamp and fast.timestamp.tzinfo is not None
    assert fast.evidence == reference.evidence and isinstance(fast.evidence, dict)
    assert fast.is_gold is reference.is_gold
    assert fast._asdict() == dict(reference._mapping)


def test_pending_orm_changes_are_seen(db: Database) -> None:
    """Like `session.execute`, the executor flushes what the caller added before it runs a statement."""
    with pytest.raises(_Undo), db.write() as s:
        run = s.get(Run, "run-small")
        assert run is not None
        run.min_agreement = 0.91
        assert storage.run_rules(s, run_id="run-small").min_agreement == pytest.approx(0.91)
        raise _Undo


def test_refuses_what_sqlalchemy_would_refuse_with_its_own_errors(db: Database) -> None:
    """A missing parameter, a column left to a Python-side default, a broken constraint, no row for `one`."""
    ids = _ids(db)
    live = ids["live"]
    lease = {"item_id": live.item_id, "reviewer_id": live.reviewer_id, "run_id": live.run_id, "state": "leased",
             "is_gold": False, "leased_at": T0, "expires_at": T0, "closed_at": None}
    with db.write() as s:
        q = hot(s)
        assert q.raw is not None
        with pytest.raises(InvalidRequestError, match="'rid'"):
            q.first(leases._HELD, {})  # would bind NULL and find nothing
        with pytest.raises(InvalidRequestError, match="Python-side default"):
            q.one(leases._INSERT_LEASE, {k: v for k, v in lease.items() if k != "is_gold"})
        with pytest.raises(IntegrityError):  # the same (item, reviewer) twice: SQLAlchemy's class, not sqlite3's
            q.one(leases._INSERT_LEASE, lease)
        with pytest.raises(NoResultFound):
            q.one(items._ITEM_BY_ID, {"iid": 10**9})
