"""What the storage modules share: the core tables, the queue's SQL fragments, labels and consensus columns.

Labels: a decision's label is its category when the verdict is `edge_case`, else the verdict itself.
A run's label space is `["not_edge_case", *categories, "unsure"]`; "unsure" counts as a review but is
no vote (majority), is left out of Dawid-Skene, and is its own class in the agreement coefficients.

Confidence: an item's `confidence` is always an estimate of the probability that its consensus label is right
(for an escalated item: that the most likely label is). Majority (the hot path) computes it with
`mining.consensus.vote_posteriors`, taking every reviewer to be right with probability `VOTER_ACCURACY`, so
one review is 0.8 and agreeing reviews approach but never reach 1.0; Dawid-Skene's refresh replaces it with
its posterior on items with three or more reviews, its confusion matrices drawn towards that same accuracy by
`DS_PRIOR_STRENGTH` pseudo-votes per row. A lead's answer and a gold item's known answer are 1.0.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, literal_column, text
from sqlalchemy.sql.elements import ColumnElement

from edgemine.contracts import NOVELTY_CALIBRATION
from edgemine.review_api.db import Assignment, Decision, Item, Run

NOT_EDGE, UNSURE, EDGE = "not_edge_case", "unsure", "edge_case"
CONFIRMED_STATUSES = ("complete", "resolved", "gold")  # statuses whose consensus is final (not escalated)
# Literal SQL (not bound parameters) so SQLite's planner can match the partial indexes' WHERE clauses.
OPEN_ITEMS = text("items.slots_free > 0 AND NOT items.is_gold")  # ix_items_open
FINAL_STATUSES = ("resolved", "gold")  # a lead's answer: no reviewer, and no majority of reviews, changes it
# the accuracy assumed of a reviewer before the run's evidence: majority's confidence (per-decision, so no
# per-reviewer read on the hot path) and the centre of Dawid-Skene's prior over confusion matrices
VOTER_ACCURACY = 0.8
# Dawid-Skene's prior weight, in pseudo-votes per confusion-matrix row: a reviewer's few slips on a small run
# cannot make three reviewers who name three classes look certain (mining.consensus.dawid_skene)
DS_PRIOR_STRENGTH = 4.0
# the most an estimate from reviews may say (a lead's or gold answer is 1.0): the export's float32 would make
# a posterior of 1 - 1e-8 read as certain (float32 holds 0.999999)
MAX_CONFIDENCE = 0.999999
LEASED: ColumnElement[str] = literal_column("'leased'")  # state = 'leased': uq_assignments_live, ix_assignments_expiry
# Core tables for the hot paths
ITEMS, ASSIGNMENTS = cast(Table, Item.__table__), cast(Table, Assignment.__table__)
DECISIONS, RUNS = cast(Table, Decision.__table__), cast(Table, Run.__table__)
# An item a lead has answered takes no more reviews: a lease on it that ends (expired, skipped, undone) frees no
# slot. `!=` conditions, not IN: the hot path refuses expanding parameters.
NOT_FINAL: tuple[ColumnElement[bool], ...] = tuple(ITEMS.c.status != s for s in FINAL_STATUSES)


IN_BATCH = 500  # ids per IN (...) list: short statements, far below SQLite's and PostgreSQL's parameter limits


def in_batches(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    """`ids` in slices of IN_BATCH, for `column.in_(part)` over lists that may hold millions of ids."""
    for start in range(0, len(ids), IN_BATCH):
        yield ids[start:start + IN_BATCH]


def unit_hash(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) from the parts (gold draws, overlap sampling)."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def novelty_calibration_of(evidence: dict[str, Any] | None) -> str | None:
    """What an item's novelty was calibrated on, as the importer kept it in its evidence ("reference", or the
    metadata value it was ranked within); None when unknown or the item has no novelty."""
    v = (evidence or {}).get(NOVELTY_CALIBRATION)
    return v if isinstance(v, str) else None


def label_space(run: Run) -> list[str]:
    return [NOT_EDGE, *run.categories, UNSURE]


def decision_label(verdict: str, category: str | None) -> str:
    return category if verdict == EDGE and category else verdict


def top_share(labels: Sequence[str]) -> float | None:
    """The most chosen label's share of all the reviews ("unsure" is a review but no vote); None without reviews.
    What majority compares with the run's `min_agreement`."""
    if not labels:
        return None
    votes = Counter(lab for lab in labels if lab != UNSURE)
    return max(votes.values()) / len(labels) if votes else 0.0


def top_tag(tag_lists: Sequence[Sequence[str]]) -> str | None:
    """The most frequent tag (the alphabetically first on a tie), or None when there is none."""
    tags = Counter(t for tags in tag_lists for t in tags)
    if not tags:
        return None
    top = max(tags.values())
    return sorted(t for t, c in tags.items() if c == top)[0]


def consensus_outcome(*, label: str | None, reason: str, root_cause: str | None) -> dict[str, Any]:
    """An item's status and answer columns: decided (`reason` empty) or escalated to a lead (`reason` says why)."""
    if reason:
        return {"status": "escalated", "escalation_reason": reason, "consensus_verdict": None,
                "consensus_category": None, "consensus_root_cause": None}
    return {"status": "complete", "escalation_reason": None,
            "consensus_verdict": NOT_EDGE if label == NOT_EDGE else EDGE,
            "consensus_category": None if label == NOT_EDGE else label, "consensus_root_cause": root_cause}


def consensus_values(*, label: str | None, confidence: float, method: str, reason: str, root_cause: str | None,
                     now: datetime) -> dict[str, Any]:
    """All of an item's consensus columns, as majority and Dawid-Skene write them (see consensus_outcome);
    `confidence` is their posterior of the label, at most MAX_CONFIDENCE."""
    return {**consensus_outcome(label=label, reason=reason, root_cause=root_cause),
            "confidence": min(float(confidence), MAX_CONFIDENCE), "consensus_method": method, "consensus_at": now}
