"""The storage suite, run on SQLite and on a real PostgreSQL (scripts/postgres.sh): import, queue, decisions."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from edgemine.contracts import DECISIONS_SCHEMA
from edgemine.errors import InvalidFieldError, LeaseExpiredError, NotFoundError, ReviewError
from edgemine.review_api import storage
from edgemine.review_api.db import Assignment, Database, Decision, Item, PublishReservation, Run
from edgemine.review_api.importer import Policy, import_run
from edgemine.review_api.settings import load_settings
from edgemine.review_api.storage import DecisionInput
from tests.support.review import SPLIT_2_1, T0, UNANIMOUS_3, make_run_dir

SETTINGS = load_settings(environment="test")
T = TypeVar("T")


def policy(**overrides: object) -> Policy:
    return Policy.from_settings(SETTINGS, **overrides)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    database.create_all()
    yield database
    database.dispose()


def people(db: Database, *names: str, role: str = "reviewer") -> list[int]:
    ids = []
    with db.write() as s:
        for name in names:
            reviewer, _ = storage.create_reviewer(s, name=name, role=role, now=T0)
            ids.append(reviewer.id)
    return ids


def lease(db: Database, reviewer_id: int, *, now=T0, run_id: str | None = None) -> Assignment | None:  # noqa: ANN001
    with db.write() as s:
        return storage.lease_next(s, reviewer_id=reviewer_id, now=now, run_id=run_id)


def decide(db: Database, item_id: int, reviewer_id: int, verdict: str = "not_edge_case", category: str | None = None,
           *, now=T0, key: str | None = None) -> storage.SubmitResult:  # noqa: ANN001
    with db.write() as s:
        return storage.submit_decision(s, item_id=item_id, reviewer_id=reviewer_id, now=now, idempotency_key=key,
                                       decision=DecisionInput(verdict=verdict, category=category))


def test_import_is_idempotent_and_lists_unusable_rows(db: Database, run_dirs: dict[str, Path]) -> None:
    first = import_run(db, run_dirs["bad"], policy=policy(), now=T0)
    assert (first.inserted, first.skipped, first.items) == (8, 2, 8)
    assert {r["reason"] for r in first.skipped_rows} == {"uri is empty"}
    assert all(r["frame_id"].endswith("-bad") for r in first.skipped_rows)
    again = import_run(db, run_dirs["bad"], policy=policy(overlap_fraction=1.0), now=T0)
    assert (again.inserted, again.items, again.already_present) == (0, 8, 8)
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Item)) == 8
        run = storage.get_run(s, run_id="run-bad")
        assert run.overlap_fraction == SETTINGS.overlap_fraction  # the first import's policy stands
        item = s.scalars(select(Item).order_by(Item.rank)).first()
        assert item is not None and item.uri.startswith("/") and item.meta["weather"] in ("clear", "rain", "fog")
        assert item.evidence["neighbor_ids"] and len(item.evidence["context_uris"]) >= 2


def test_an_interrupted_import_is_completed_by_the_next_one(db: Database, run_dirs: dict[str, Path]) -> None:
    import_run(db, run_dirs["small"], policy=policy(), now=T0)
    with db.write() as s:  # as if the import had died after the first rows
        s.execute(delete(Item).where(Item.rank > 10))
        storage.get_run(s, run_id="run-small").active = False
    report = import_run(db, run_dirs["small"], policy=policy(), now=T0)
    assert (report.inserted, report.already_present, report.items) == (14, 10, 24)


def test_leases_follow_rank_and_never_repeat_an_item(db: Database, run_dirs: dict[str, Path]) -> None:
    import_run(db, run_dirs["small"], policy=policy(overlap_fraction=0.0, gold_fraction=0.0), now=T0)
    (ana,) = people(db, "ana")
    seen = []
    for _ in range(24):
        held = lease(db, ana)
        assert held is not None
        assert lease(db, ana) is not None and lease(db, ana).id == held.id  # type: ignore[union-attr]
        seen.append(held.item_id)
        decide(db, held.item_id, ana)
    assert lease(db, ana) is None
    with db.read() as s:
        ranks = [storage.get_item(s, item_id=i).rank for i in seen]
    assert ranks == sorted(ranks) == list(range(1, 25))


def test_expired_leases_return_items_to_the_queue(db: Database, run_dirs: dict[str, Path]) -> None:
    import_run(db, run_dirs["small"], policy=policy(overlap_fraction=0.0, lease_seconds=60), now=T0)
    ana, ben = people(db, "ana", "ben")
    held = lease(db, ana)
    assert held is not None
    later = T0 + timedelta(seconds=61)
    taken = lease(db, ben, now=later)
    assert taken is not None and taken.item_id == held.item_id  # the slot came back
    with pytest.raises(LeaseExpiredError, match="expired"):
        decide(db, held.item_id, ana, now=later)
    again = lease(db, ana, now=later)
    assert again is not None and again.item_id != held.item_id  # never the same item twice


def test_renew_and_release(db: Database, run_dirs: dict[str, Path]) -> None:
    import_run(db, run_dirs["small"], policy=policy(overlap_fraction=0.0, lease_seconds=60), now=T0)
    ana, ben = people(db, "ana", "ben")
    held = lease(db, ana)
    assert held is not None
    with db.write() as s:
        renewed = storage.renew_lease(s, lease_id=held.id, reviewer_id=ana, now=T0 + timedelta(seconds=50))
    assert renewed.expires_at == T0 + timedelta(seconds=110)
    with db.write() as s, pytest.raises(NotFoundError):
        storage.renew_lease(s, lease_id=held.id, reviewer_id=ben, now=T0)
    with db.write() as s:
        storage.release_lease(s, lease_id=held.id, reviewer_id=ana, now=T0)
    assert lease(db, ben).item_id == held.item_id  # type: ignore[union-attr]
    assert lease(db, ana).item_id != held.item_id  # type: ignore[union-attr]


def test_overlap_items_get_independent_reviews_then_consensus(db: Database, run_dirs: dict[str, Path]) -> None:
    import_run(db, run_dirs["small"], policy=policy(overlap_fraction=1.0, overlap_reviews=3), now=T0)
    a, b, c, d = people(db, "a", "b", "c", "d")
    firsts = [lease(db, r) for r in (a, b, c)]
    assert len({x.item_id for x in firsts}) == 1  # type: ignore[union-attr]
    item_id = firsts[0].item_id  # type: ignore[union-attr]
    assert lease(db, d).item_id != item_id  # type: ignore[union-attr]  # three slots, all taken
    decide(db, item_id, a, "edge_case", "debris")
    decide(db, item_id, b, "edge_case", "debris")
    done = decide(db, item_id, c, "not_edge_case")
    assert done.completed
    with db.read() as s:
        item = storage.get_item(s, item_id=item_id)
        assert (item.status, item.consensus_verdict, item.consensus_category) == ("complete", "edge_case", "debris")
        assert item.confidence == pytest.approx(SPLIT_2_1) and item.consensus_method == "majority"


def test_ties_escalate_and_a_lead_resolves(db: Database, run_dirs: dict[str, Path]) -> None:
    import_run(db, run_dirs["small"], policy=policy(overlap_fraction=1.0, overlap_reviews=2), now=T0)
    a, b = people(db, "a", "b")
    (lead,) = people(db, "lead", role="lead")
    item_id = lease(db, a).item_id  # type: ignore[union-attr]
    assert lease(db, b).item_id == item_id  # type: ignore[union-attr]
    decide(db, item_id, a, "edge_case", "animal_on_road")
    decide(db, item_id, b, "not_edge_case")
    with db.write() as s:
        (esc,) = storage.escalations(s, run_id="run-small")
        assert (esc.id, esc.escalation_reason) == (item_id, "tie")
        with pytest.raises(InvalidFieldError, match="category"):
            storage.resolve_item(s, item_id=item_id, lead_id=lead, verdict="edge_case", category="dragons",
                                 root_cause=None, notes=None, make_gold=False, now=T0)
        storage.resolve_item(s, item_id=item_id, lead_id=lead, verdict="edge_case", category="animal_on_road",
                             root_cause="novel_scene", notes="deer", make_gold=True, now=T0)
    with db.read() as s:
        item = storage.get_item(s, item_id=item_id)
        assert (item.status, item.is_gold, item.consensus_method, item.confidence) == ("gold", True, "lead", 1.0)
        assert storage.escalations(s, run_id="run-small") == []
        assert storage.get_run(s, run_id="run-small").n_gold == 1


def test_gold_items_from_ground_truth_are_scored(db: Database, run_dirs: dict[str, Path], synth_logs: Path) -> None:
    report = import_run(db, run_dirs["small"], policy=policy(gold_fraction=0.25, gold_rate=0.5, overlap_fraction=0.0),
                        now=T0, ground_truth=synth_logs / "ground_truth.parquet")
    assert 3 <= report.gold <= 12
    (ana,) = people(db, "ana")
    gold_seen = correct = 0
    while (held := lease(db, ana)) is not None:
        with db.read() as s:
            item = storage.get_item(s, item_id=held.item_id)
            answer = (item.gold_verdict, item.gold_category)
        result = decide(db, held.item_id, ana, *(answer if held.is_gold else ("not_edge_case", None)))
        if held.is_gold:
            gold_seen += 1
            correct += bool(result.decision.gold_correct)
    assert gold_seen == report.gold and correct == gold_seen  # every gold item once, all answered right
    with db.read() as s:
        (me,) = storage.reviewer_metrics(s, run_id="run-small")
    assert me["gold_reviewed"] == gold_seen and me["gold_accuracy"] == 1.0


def test_idempotency_key_replays_and_refuses_a_different_body(db: Database, run_dirs: dict[str, Path]) -> None:
    import_run(db, run_dirs["small"], policy=policy(overlap_fraction=0.0), now=T0)
    (ana,) = people(db, "ana")
    held = lease(db, ana)
    first = decide(db, held.item_id, ana, "unsure", key="k-1")  # type: ignore[union-attr]
    again = decide(db, held.item_id, ana, "unsure", key="k-1")  # type: ignore[union-attr]
    assert first.created and not again.created and again.decision.id == first.decision.id
    with pytest.raises(InvalidFieldError, match="different body"):
        decide(db, held.item_id, ana, "edge_case", "debris", key="k-1")  # type: ignore[union-attr]
    with pytest.raises(ReviewError, match="already decided"):
        decide(db, held.item_id, ana, "unsure")  # type: ignore[union-attr]
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Decision)) == 1


def test_confirmed_items_and_decisions_export(db: Database, run_dirs: dict[str, Path]) -> None:
    import_run(db, run_dirs["small"], policy=policy(overlap_fraction=0.0), now=T0)
    (ana,) = people(db, "ana")
    verdicts = ["edge_case", "not_edge_case", "edge_case", "unsure"]
    for k, verdict in enumerate(verdicts):
        held = lease(db, ana, now=T0 + timedelta(minutes=k))
        decide(db, held.item_id, ana, verdict, "debris" if verdict == "edge_case" else None,  # type: ignore[union-attr]
               now=T0 + timedelta(minutes=k))
    with db.read() as s:
        table = storage.confirmed_items(s, run_id="run-small")
        later = storage.confirmed_items(s, since=T0 + timedelta(seconds=30))
        decisions = pa.concat_tables(list(storage.iter_decisions(s)))
    assert table.schema == storage.CONFIRMED_ITEMS_SCHEMA
    assert table.num_rows == 2 and set(table.column("category").to_pylist()) == {"debris"}
    assert table.column("n_reviews").to_pylist() == [1, 1]
    assert table.column("confidence").to_pylist() == pytest.approx([0.8, 0.8])  # one review: never 1.0
    assert '"weather"' in table.column("metadata")[0].as_py()
    # candidates written before the column, by a run that conditioned no value: every novelty on the reference
    assert table.column("novelty_calibration").to_pylist() == ["reference", "reference"]
    assert later.num_rows == 1  # consensus reached after `since`
    assert decisions.schema == DECISIONS_SCHEMA and decisions.num_rows == 4
    assert decisions.column("verdict").to_pylist() == verdicts
    assert set(decisions.column("reviewer").to_pylist()) == {"ana"}


def test_confirmed_items_carry_what_each_novelty_was_calibrated_on(
        db: Database, synth_logs: Path, reference_logs: Path, tmp_path: Path) -> None:
    """As the importer stored it: the candidates' column, or for runs written before it what run.json's counts
    imply (`novelty_calibration_before_column`): "reference", or null once the run conditioned a value."""
    night = {"coverage": {"conditioned": [{"value": "time_of_day=night", "frames": 40}]}}
    runs = {"new": (["time_of_day=night", "reference", None], night), "before": (None, None),
            "before-night": (None, night)}
    for name, (calibration, counts) in runs.items():
        d = make_run_dir(tmp_path / name, synth_logs, reference_logs, run_id=name, n=3)
        if calibration is not None:
            t = pq.read_table(d / "candidates.parquet")
            novelty = t.column("novelty").to_pylist()
            novelty[2] = None  # null exactly where novelty is
            t = t.set_column(t.column_names.index("novelty"), "novelty", pa.array(novelty, pa.float32()))
            pq.write_table(t.append_column("novelty_calibration", pa.array(calibration, pa.string())),
                           d / "candidates.parquet")
        if counts is not None:
            info = json.loads((d / "run.json").read_text())
            (d / "run.json").write_text(json.dumps({**info, "counts": counts}))
        import_run(db, d, policy=policy(overlap_fraction=0.0), now=T0)
    (ana,) = people(db, "ana")
    for k in range(9):
        held = lease(db, ana, now=T0 + timedelta(minutes=k))
        decide(db, held.item_id, ana, "edge_case", "debris", now=T0 + timedelta(minutes=k))  # type: ignore[union-attr]
    with db.read() as s:
        table = storage.confirmed_items(s)
    assert table.schema == storage.CONFIRMED_ITEMS_SCHEMA and table.num_rows == 9
    seen = sorted((r["run_id"], r["rank"], r["novelty_calibration"]) for r in table.to_pylist())
    assert seen == [("before", 1, "reference"), ("before", 2, "reference"), ("before", 3, "reference"),
                    ("before-night", 1, None), ("before-night", 2, None), ("before-night", 3, None),
                    ("new", 1, "time_of_day=night"), ("new", 2, "reference"), ("new", 3, None)]
    assert all("novelty_calibration" not in json.loads(m) for m in table.column("metadata").to_pylist())


def retry_on_conflict(fn: Callable[[], T], attempts: int = 3) -> T:
    """Run `fn()` again when a concurrent writer won a unique-constraint race (PostgreSQL), as `run_write` does."""
    for attempt in range(attempts):
        try:
            return fn()
        except IntegrityError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def test_concurrent_reviewers_never_over_assign(db: Database, run_dirs: dict[str, Path]) -> None:
    """Eight threads lease and decide at once; no item ever gets more reviews than it needs."""
    import_run(db, run_dirs["small"], policy=policy(overlap_fraction=0.5, overlap_reviews=3, gold_fraction=0.0),
               now=T0)
    ids = people(db, *[f"r{i}" for i in range(8)])
    errors: list[BaseException] = []

    def work(reviewer_id: int) -> None:
        try:
            for _ in range(30):
                held = retry_on_conflict(lambda: lease(db, reviewer_id))
                if held is None:
                    return
                decide(db, held.item_id, reviewer_id, "not_edge_case")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with db.read() as s:
        items = list(s.scalars(select(Item)))
        per_item = Counter(s.scalars(select(Decision.item_id)))
        pairs = s.execute(select(Decision.item_id, Decision.reviewer_id)).all()
    assert len(pairs) == len(set(pairs))
    for item in items:
        assert per_item[item.id] == item.required_reviews == item.n_decisions
        assert item.slots_free == 0 and item.status == "complete"


def test_unknown_run_and_item_are_named(db: Database) -> None:
    (ana,) = people(db, "ana")
    with db.write() as s, pytest.raises(NotFoundError, match="run 'nope'"):
        storage.lease_next(s, reviewer_id=ana, now=T0, run_id="nope")
    with db.read() as s, pytest.raises(NotFoundError, match="item 99"):
        storage.item_for_reviewer(s, item_id=99, reviewer_id=ana, role="reviewer")


def test_run_policy_update_checks_ranges(db: Database, run_dirs: dict[str, Path]) -> None:
    import_run(db, run_dirs["other"], policy=policy(), now=T0)
    with db.write() as s:
        run = storage.update_run_policy(s, run_id="run-other", gold_rate=0.3, active=False)
        assert (run.gold_rate, run.active) == (0.3, False)
        with pytest.raises(InvalidFieldError, match="gold_rate=0.9"):
            storage.update_run_policy(s, run_id="run-other", gold_rate=0.9)
    (ana,) = people(db, "ana")
    assert lease(db, ana) is None  # an inactive run serves nothing
    with db.read() as s:
        assert s.get(Run, "run-other") is not None


def test_queue_across_runs_follows_import_order_and_skips_paused_runs(db: Database, run_dirs: dict[str, Path]) -> None:
    import_run(db, run_dirs["small"], policy=policy(overlap_fraction=0.0), now=T0)
    import_run(db, run_dirs["other"], policy=policy(overlap_fraction=0.0), now=T0)
    import_run(db, run_dirs["bad"], policy=policy(overlap_fraction=0.0), now=T0)
    (ana,) = people(db, "ana")
    first = lease(db, ana)
    assert first.run_id == "run-small"  # type: ignore[union-attr]
    with db.write() as s:
        storage.release_lease(s, lease_id=first.id, reviewer_id=ana, now=T0)  # type: ignore[union-attr]
        storage.update_run_policy(s, run_id="run-small", active=False)
    runs = []
    while (held := lease(db, ana)) is not None:  # two runs open, one paused: merged walk in import order
        runs.append(held.run_id)
        decide(db, held.item_id, ana)
    assert runs == ["run-other"] * 12 + ["run-bad"] * 8
    assert lease(db, ana, run_id="run-small") is None


def test_dawid_skene_ignores_single_reviews(db: Database, run_dirs: dict[str, Path]) -> None:
    """Items with one review (not gold, not resolved) don't move reviewer accuracy or anyone's answer."""
    import_run(db, run_dirs["small"], policy=policy(overlap_fraction=0.5, overlap_reviews=3, gold_fraction=0.0),
               now=T0)
    ana, bo, cy = people(db, "ana", "bo", "cy")
    votes = {ana: ("edge_case", "debris"), bo: ("not_edge_case", None), cy: ("not_edge_case", None)}
    while True:  # everyone reviews until the queue is empty; ana says "debris" to everything, the others don't
        held = [(rid, lease(db, rid)) for rid in (ana, bo, cy)]
        if all(h is None for _, h in held):
            break
        for rid, h in held:
            if h is not None:
                decide(db, h.item_id, rid, *votes[rid])
    with db.read() as s:
        singles = list(s.scalars(select(Item.id).where(Item.required_reviews == 1)))
        ana_singles = list(s.scalars(select(Decision.item_id).where(Decision.item_id.in_(singles),
                                                                   Decision.reviewer_id == ana)))
        with_single = storage.plan_consensus(s, run_id="run-small")
    assert len(ana_singles) >= 2 and with_single.answers  # ana's lone "debris" votes exist, overlap items got answers
    with db.write() as s:  # take the single reviews away: the plan must not change
        s.execute(delete(Decision).where(Decision.item_id.in_(singles)))
    with db.read() as s:
        without = storage.plan_consensus(s, run_id="run-small")
    assert without.answers == with_single.answers
    assert without.reviewer_accuracy == pytest.approx(with_single.reviewer_accuracy)
    assert with_single.reviewer_accuracy["ana"] < with_single.reviewer_accuracy["bo"]


def _in_flight(fn: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    """Start `fn` in a thread and give it a second: long enough to finish unless a lock makes it wait."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - the caller checks it
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(1.0)
    return t, errors


def test_an_amend_in_flight_is_what_the_completing_review_counts(db: Database, run_dirs: dict[str, Path]) -> None:
    """An amend not yet committed when another reviewer's decision completes the item: the consensus is
    computed from the amended answer (the amend holds the item row, as the completing decision does;
    SQLite's writers take turns anyway)."""
    import_run(db, run_dirs["small"], policy=policy(overlap_fraction=1.0, overlap_reviews=2, gold_fraction=0.0),
               now=T0)
    ana, ben = people(db, "ana", "ben")
    item_id = lease(db, ana).item_id  # type: ignore[union-attr]
    assert lease(db, ben).item_id == item_id  # type: ignore[union-attr]
    decide(db, item_id, ana, "not_edge_case")
    later = T0 + timedelta(seconds=5)
    with db.write() as s:
        storage.amend_decision(s, item_id=item_id, reviewer_id=ana, now=later,
                               decision=DecisionInput(verdict="edge_case", category="debris"))
        ben_decides, errors = _in_flight(lambda: decide(db, item_id, ben, "edge_case", "debris", now=later))
    ben_decides.join(30)
    assert not errors, errors
    with db.read() as s:
        item = storage.get_item(s, item_id=item_id)
        assert (item.status, item.consensus_verdict, item.consensus_category) == ("complete", "edge_case", "debris")


def test_a_second_undo_in_flight_finds_nothing_to_undo(db: Database, run_dirs: dict[str, Path]) -> None:
    """Two undos of one decision at once (a double key press): the second is told there is nothing to undo,
    and the item lost one review, not two."""
    import_run(db, run_dirs["small"], policy=policy(overlap_fraction=1.0, overlap_reviews=2, gold_fraction=0.0),
               now=T0)
    ana, ben = people(db, "ana", "ben")
    item_id = lease(db, ana).item_id  # type: ignore[union-attr]
    assert lease(db, ben).item_id == item_id  # type: ignore[union-attr]
    decide(db, item_id, ana, "not_edge_case")
    decide(db, item_id, ben, "not_edge_case")
    later = T0 + timedelta(seconds=5)

    def undo() -> None:
        with db.write() as s:
            storage.undo_decision(s, item_id=item_id, reviewer_id=ana, now=later)

    with db.write() as s:
        storage.undo_decision(s, item_id=item_id, reviewer_id=ana, now=later)
        second, errors = _in_flight(undo)
    second.join(30)
    assert len(errors) == 1 and isinstance(errors[0], NotFoundError), errors
    with db.read() as s:
        item = storage.get_item(s, item_id=item_id)
        assert (item.n_decisions, item.slots_free, item.status) == (1, 0, "queued")
        assert s.scalar(select(func.count()).select_from(Decision).where(Decision.item_id == item_id)) == 1


def test_a_lead_answer_given_while_an_undone_item_is_back_in_review_stays_final(db: Database,
                                                                                run_dirs: dict[str, Path]) -> None:
    """A reviewer undoes their review of an escalated item, a lead resolves it meanwhile, then the reviewer
    decides again: the lead's answer stands (the completing decision's majority never overwrites it)."""
    import_run(db, run_dirs["small"], policy=policy(overlap_fraction=1.0, overlap_reviews=2, gold_fraction=0.0),
               now=T0)
    ana, ben = people(db, "ana", "ben")
    (lead,) = people(db, "lead", role="lead")
    item_id = lease(db, ana).item_id  # type: ignore[union-attr]
    assert lease(db, ben).item_id == item_id  # type: ignore[union-attr]
    decide(db, item_id, ana, "edge_case", "debris")
    decide(db, item_id, ben, "not_edge_case")
    later = T0 + timedelta(seconds=5)
    with db.write() as s:
        assert storage.get_item(s, item_id=item_id).status == "escalated"
        storage.undo_decision(s, item_id=item_id, reviewer_id=ana, now=later)
        storage.resolve_item(s, item_id=item_id, lead_id=lead, verdict="not_edge_case", category=None,
                             root_cause=None, notes="a shadow", make_gold=False, now=later)
    decide(db, item_id, ana, "edge_case", "debris", now=later)
    with db.read() as s:
        item = storage.get_item(s, item_id=item_id)
        assert (item.status, item.consensus_verdict, item.consensus_method) == ("resolved", "not_edge_case", "lead")
        assert item.n_decisions == 2


def test_a_resolved_item_is_never_served_again_when_a_lease_on_it_ends(db: Database,
                                                                       run_dirs: dict[str, Path]) -> None:
    """A lead resolves an item while reviewers hold leases on it: whether those leases expire or are skipped,
    the item's slots stay closed, so nobody else is asked to review a settled item."""
    import_run(db, run_dirs["small"], policy=policy(overlap_fraction=1.0, overlap_reviews=3, gold_fraction=0.0),
               now=T0)
    ana, ben, cy = people(db, "ana", "ben", "cy")
    (lead,) = people(db, "lead", role="lead")
    first = lease(db, ana)
    assert first is not None
    second = lease(db, ben)
    assert second is not None and second.item_id == first.item_id
    with db.write() as s:
        storage.resolve_item(s, item_id=first.item_id, lead_id=lead, verdict="edge_case", category="debris",
                             root_cause=None, notes=None, make_gold=False, now=T0)
        storage.release_lease(s, lease_id=second.id, reviewer_id=ben, now=T0)  # ben skips it
    served = set()
    while (got := lease(db, cy, now=T0 + timedelta(days=1))) is not None:  # ana's lease has run out by then
        served.add(got.item_id)
        decide(db, got.item_id, cy, now=T0 + timedelta(days=1))
    assert served and first.item_id not in served
    with db.read() as s:
        assert storage.get_item(s, item_id=first.item_id).slots_free == 0


# ---------------------------------------------------------------- a publish's reservations (jobs/publish.py)
def _confirmed_edge_cases(db: Database, run_dirs: dict[str, Path], n: int
                          ) -> tuple[int, list[int], dict[int, storage.audit.SeenConsensus]]:
    """`n` items ana confirmed as debris at T0 (one review each), and a publish's snapshot of them."""
    import_run(db, run_dirs["small"], policy=policy(overlap_fraction=0.0, gold_fraction=0.0), now=T0)
    (ana,) = people(db, "ana")
    items = []
    for _ in range(n):
        held = lease(db, ana)
        assert held is not None
        decide(db, held.item_id, ana, "edge_case", "debris")
        items.append(held.item_id)
    seen = _snapshot(db, items)
    assert sorted(seen) == sorted(items)
    return ana, items, seen


def _snapshot(db: Database, items: list[int]) -> dict[int, storage.audit.SeenConsensus]:
    """The consensus of these items as a publish's snapshot (`confirmed_items`) reads it."""
    with db.read() as s:
        t = storage.confirmed_items(s)
    return {i: (d, c, r) for i, d, c, r in zip(t.column("item_id").to_pylist(), t.column("decided_at").to_pylist(),
                                               t.column("category").to_pylist(), t.column("root_cause").to_pylist(),
                                               strict=True) if i in items}


def _amend(db: Database, item_id: int, reviewer_id: int, category: str, *, now=T0) -> None:  # noqa: ANN001
    with db.write() as s:
        storage.amend_decision(s, item_id=item_id, reviewer_id=reviewer_id, now=now,
                               decision=DecisionInput(verdict="edge_case", category=category))


def _reserve(db: Database, seen: dict[int, storage.audit.SeenConsensus], *, token: str, dataset: str = "/data/edge",
             now=T0) -> storage.Reservation:  # noqa: ANN001
    with db.write() as s:
        return storage.reserve_for_publish(s, seen=seen, dataset=dataset, token=token, now=now)


def test_a_reserved_item_holds_off_amend_and_undo_until_its_publish_settles(db: Database,
                                                                            run_dirs: dict[str, Path]) -> None:
    ana, (a, b, c), seen = _confirmed_edge_cases(db, run_dirs, 3)
    soon = T0 + timedelta(seconds=5)
    assert _reserve(db, seen, token="p1", now=soon) == storage.Reservation((a, b, c), (), ())
    with pytest.raises(ReviewError, match=f"item {a} is being published into '/data/edge'; try again in a moment"):
        _amend(db, a, ana, "animal_on_road", now=soon)
    with pytest.raises(ReviewError, match="being published into '/data/edge'"), db.write() as s:
        storage.undo_decision(s, item_id=b, reviewer_id=ana, now=soon)
    with db.read() as s:
        mine = {d["item_id"]: d for d in storage.my_decisions(s, reviewer_id=ana, now=soon)}
    assert not mine[a]["can_change"] and "try again in a moment" in mine[a]["why_not"]
    assert mine[a]["change_until"] == T0 + timedelta(seconds=SETTINGS.amend_window_seconds)  # held off, not ended
    # another publish into the same dataset leaves them to this one; a publish into another dataset holds its own
    assert _reserve(db, seen, token="p2", now=soon) == storage.Reservation((), (), (a, b, c))
    assert _reserve(db, {c: seen[c]}, token="p3", dataset="/data/other", now=soon).reserved == (c,)
    with db.write() as s:  # p1 committed version 4 with a and b (c's frame was there already)
        assert storage.settle_reservations(s, dataset="/data/edge", token="p1", published={a: 4, b: 4}, now=soon) == 3
    # the next publish into it needs no reservation for what is published there (final)
    assert _reserve(db, seen, token="p4", now=soon) == storage.Reservation((c,), (), (), (a, b))
    with db.write() as s:
        assert storage.settle_reservations(s, dataset="/data/edge", token="p4", published={}, now=soon) == 1
    with pytest.raises(ReviewError, match="already published in dataset '/data/edge' version 4"):
        _amend(db, a, ana, "animal_on_road", now=soon)
    with pytest.raises(ReviewError, match="being published into '/data/other'"):
        _amend(db, c, ana, "animal_on_road", now=soon)
    with db.write() as s:  # p3 failed: nothing of it is in /data/other
        assert storage.settle_reservations(s, dataset="/data/other", token="p3", published={}, now=soon) == 1
        assert s.scalar(select(func.count()).select_from(PublishReservation)) == 0
    _amend(db, c, ana, "animal_on_road", now=soon)


def test_reserving_leaves_out_items_whose_consensus_changed_since_the_snapshot(db: Database,
                                                                               run_dirs: dict[str, Path]) -> None:
    ana, (a, b, c, d), seen = _confirmed_edge_cases(db, run_dirs, 4)
    _amend(db, a, ana, "animal_on_road", now=T0 + timedelta(seconds=2))  # a new answer
    _amend(db, d, ana, "debris", now=T0)  # the same answer at the same time: nothing to leave out
    with db.write() as s:
        storage.undo_decision(s, item_id=b, reviewer_id=ana, now=T0 + timedelta(seconds=2))
    held = _reserve(db, seen, token="p1", now=T0 + timedelta(seconds=3))
    assert (held.reserved, held.changed, held.elsewhere) == ((c, d), (a, b), ())
    with db.read() as s:
        assert storage.publishing_into(s, [a, b, c, d], now=T0 + timedelta(seconds=3)) == {c: "/data/edge",
                                                                                           d: "/data/edge"}


def test_an_amend_racing_a_reservation_is_either_seen_by_it_or_refused(db: Database, run_dirs: dict[str, Path]) -> None:
    """The reservation locks its items as an amend does (PostgreSQL; SQLite's writers take turns): an amend not
    yet committed makes the reservation wait and leave the item out; a reservation not yet committed makes the
    amend wait and refuse."""
    ana, (a, b), seen = _confirmed_edge_cases(db, run_dirs, 2)
    soon = T0 + timedelta(seconds=5)
    results: list[storage.Reservation] = []
    with db.write() as s:
        storage.amend_decision(s, item_id=a, reviewer_id=ana, now=soon,
                               decision=DecisionInput(verdict="edge_case", category="animal_on_road"))
        reserving, errors = _in_flight(lambda: results.append(_reserve(db, seen, token="p1", now=soon)))
    reserving.join(30)
    assert not errors and results[0] == storage.Reservation((b,), (a,), ())
    with db.write() as s:  # a new snapshot of a, amended
        assert storage.reserve_for_publish(s, seen=_snapshot(db, [a]), dataset="/data/other", token="p2",
                                           now=soon).reserved == (a,)
        amending, errors = _in_flight(lambda: _amend(db, a, ana, "debris", now=soon))
    amending.join(30)
    assert len(errors) == 1 and "being published into '/data/other'" in str(errors[0]), errors


def test_a_stale_reservation_holds_off_nobody_and_the_next_publish_settles_it(db: Database,
                                                                              run_dirs: dict[str, Path]) -> None:
    """A publisher that died between reserving and settling: after RESERVATION_STALE_SECONDS its reservations
    block no amend; they still keep the dataset's next publish off the items until it settles them."""
    ana, (a, b), seen = _confirmed_edge_cases(db, run_dirs, 2)
    _reserve(db, seen, token="dead", now=T0)
    with pytest.raises(ReviewError, match="being published"):
        _amend(db, a, ana, "animal_on_road", now=T0 + timedelta(seconds=storage.RESERVATION_STALE_SECONDS - 1))
    stale = T0 + timedelta(seconds=storage.RESERVATION_STALE_SECONDS)
    assert SETTINGS.amend_window_seconds > storage.RESERVATION_STALE_SECONDS  # so the window is still open
    _amend(db, a, ana, "animal_on_road", now=stale)
    assert _reserve(db, seen, token="next", now=stale).elsewhere == (b,)  # a changed; b waits for the settling
    with db.read() as s:
        frames = {i: (f, r) for i, f, r in s.execute(select(Item.id, Item.frame_id, Item.run_id))}
        assert storage.stale_reservations(s, dataset="/data/edge", now=stale) == {a: frames[a], b: frames[b]}
        assert storage.stale_reservations(s, dataset="/data/edge", now=stale - timedelta(seconds=1)) == {}
    with db.write() as s:  # the dead publisher's version 0 holds b, not a
        assert storage.settle_reservations(s, dataset="/data/edge", published={b: 0}, item_ids=[a, b], now=stale) == 2
    with db.read() as s:
        assert storage.publications_of(s, [a, b]) == {b: ("/data/edge", 0)}
        assert s.scalar(select(func.count()).select_from(PublishReservation)) == 0


def test_confidence_is_a_probability_that_grows_with_agreement(db: Database, run_dirs: dict[str, Path]) -> None:
    """One review is not certain: a single-review row of the export is less sure than a unanimous 3-review row,
    which is less than 1.0; a 2-1 split is below a unanimous item and a three-way split below both, before and
    after Dawid-Skene."""
    import_run(db, run_dirs["small"], policy=policy(overlap_fraction=0.5, overlap_reviews=3, gold_fraction=0.0),
               now=T0)
    people_ids = people(db, "ana", "ben", "cho")
    script = {0: ("debris", "debris", "debris"), 1: ("debris", "debris", None), 2: ("debris", "other", None)}
    done: dict[int, int] = {}
    with db.read() as s:
        rank = {i.id: i.rank for i in s.scalars(select(Item))}
    busy = True
    while busy:
        busy = False
        for rid in people_ids:
            held = lease(db, rid)
            if held is None:
                continue
            busy = True
            k = done.get(held.item_id, 0)
            category = script[rank[held.item_id] % 3][k]
            decide(db, held.item_id, rid, "edge_case" if category else "not_edge_case", category)
            done[held.item_id] = k + 1
    with db.read() as s:
        items = list(s.scalars(select(Item)))
        table = storage.confirmed_items(s, run_id="run-small")
    single = [i.confidence for i in items if i.n_decisions == 1]
    by_pattern = {p: [i for i in items if i.n_decisions == 3 and i.rank % 3 == p] for p in script}
    assert single and all(by_pattern.values())
    assert single == pytest.approx([0.8] * len(single))
    assert [i.confidence for i in by_pattern[0]] == pytest.approx([UNANIMOUS_3] * len(by_pattern[0]))
    assert [i.confidence for i in by_pattern[1]] == pytest.approx([SPLIT_2_1] * len(by_pattern[1]))
    assert 0.8 < SPLIT_2_1 < UNANIMOUS_3 < 1.0
    assert all(i.status == "escalated" and i.confidence < 0.5 for i in by_pattern[2])
    rows = table.to_pylist()
    one = [r["confidence"] for r in rows if r["n_reviews"] == 1]
    three = [r["confidence"] for r in rows if r["n_reviews"] == 3]
    assert one and three and max(one) < min(three) and max(three) < 1.0
    with db.write() as s:
        storage.refresh_consensus(s, run_id="run-small", now=T0 + timedelta(hours=1))
    with db.read() as s:
        after = {i.id: i for i in s.scalars(select(Item))}
    ds = {p: [after[i.id].confidence for i in found] for p, found in by_pattern.items()}
    assert all(after[i.id].consensus_method == "dawid_skene" for found in by_pattern.values() for i in found)
    # here every item but the split ones is debris, so Dawid-Skene reads the split as debris too; still in order
    assert max(ds[2]) < min(ds[1]) and max(ds[1]) <= min(ds[0]) and max(ds[0]) <= storage.MAX_CONFIDENCE < 1.0
    assert [after[i.id].confidence for i in items if i.n_decisions == 1] == single  # Dawid-Skene leaves them
