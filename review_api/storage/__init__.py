"""Keyword-only storage functions of the review service, one module per part of the review.

Every function takes an open SQLAlchemy session (from `Database.write()` or `.read()`) and, where time
matters, the current time `now`, so tests drive expiry with a fake clock: nothing in this package reads the
clock. Functions raise the typed errors of `edgemine.errors`; only the routes turn them into HTTP answers.
Nothing here commits: the caller's transaction does.

- `reviewers`: people, roles and bearer tokens.
- `runs`: imported runs and the review policy that may change after import.
- `leases`: the queue: who gets which item next, lease expiry and release.
- `items`: items as reviewers see them, and who may see which.
- `decisions`: a reviewer's decision, idempotent retries, and the majority consensus it completes.
- `leads`: escalations (with their reason in words) and a lead's final answer (which may make an item gold).
- `events`, `audit`: the audit trail (every version of every decision, and lead resolutions); a reviewer's
  amend and undo within the run's window; `mark_published` (published items are final), and the reservations
  a publish holds from before its Delta commit until it settles them (`reserve_for_publish`).
- `progress`: where a reviewer stands in a run, what waits and why; a run's warnings.
- `browse`: the lead's item browser (filters, keyset pages, reviews side by side).
- `consensus`: Dawid-Skene over a run, planned from a snapshot and applied where nothing changed since.
- `metrics`: agreement, per-reviewer figures and queue figures.
- `exports`: confirmed edge cases (the publish step) and decisions as Arrow batches.
- `_common`: the core tables, SQL fragments, labels and consensus columns the modules share (how a decision
  becomes a label, and how "unsure" counts, is written there).

Callers import from here (`from edgemine.review_api import storage`); the names below are the package's
public surface.
"""

from edgemine.contracts import CONFIRMED_ITEMS_SCHEMA
from edgemine.review_api.storage._common import (
    EDGE,
    MAX_CONFIDENCE,
    NOT_EDGE,
    VOTER_ACCURACY,
    decision_label,
    novelty_calibration_of,
    top_share,
    unit_hash,
)
from edgemine.review_api.storage.audit import (
    RESERVATION_STALE_SECONDS,
    Reservation,
    amend_decision,
    change_blocker,
    decision_versions,
    item_history,
    mark_published,
    my_decisions,
    publications_of,
    publishing_into,
    reserve_for_publish,
    settle_reservations,
    stale_reservations,
    undo_decision,
)
from edgemine.review_api.storage.browse import browse_items
from edgemine.review_api.storage.consensus import (
    ConsensusPlan,
    ConsensusReport,
    ItemAnswer,
    apply_consensus,
    plan_consensus,
    plan_consensus_job,
    refresh_consensus,
)
from edgemine.review_api.storage.decisions import (
    DecisionInput,
    DecisionRecord,
    SubmitResult,
    decisions_of,
    submit_decision,
)
from edgemine.review_api.storage.exports import confirmed_items, iter_confirmed_items, iter_decisions
from edgemine.review_api.storage.items import Peer, get_item, image_uri, item_for_reviewer, item_row, scenario_peers
from edgemine.review_api.storage.leads import escalation_text, escalations, resolve_item
from edgemine.review_api.storage.leases import Lease, lease_next, release_lease, renew_lease
from edgemine.review_api.storage.metrics import agreement_metrics, queue_stats, reviewer_metrics, run_metrics
from edgemine.review_api.storage.progress import active_reviewers, progress, run_warnings
from edgemine.review_api.storage.reviewers import (
    create_reviewer,
    deactivate_reviewer,
    ensure_reviewer_with_token,
    get_reviewer,
    list_reviewers,
    reviewer_by_token,
)
from edgemine.review_api.storage.runs import RunRules, get_run, list_runs, run_rules, update_run_policy

__all__ = [
    "CONFIRMED_ITEMS_SCHEMA",
    "EDGE",
    "NOT_EDGE",
    "RESERVATION_STALE_SECONDS",
    "ConsensusPlan",
    "ConsensusReport",
    "DecisionInput",
    "DecisionRecord",
    "ItemAnswer",
    "Lease",
    "Peer",
    "Reservation",
    "RunRules",
    "SubmitResult",
    "active_reviewers",
    "agreement_metrics",
    "amend_decision",
    "apply_consensus",
    "browse_items",
    "change_blocker",
    "confirmed_items",
    "create_reviewer",
    "deactivate_reviewer",
    "decision_label",
    "MAX_CONFIDENCE",
    "VOTER_ACCURACY",
    "top_share",
    "decision_versions",
    "decisions_of",
    "ensure_reviewer_with_token",
    "escalation_text",
    "escalations",
    "get_item",
    "get_reviewer",
    "get_run",
    "image_uri",
    "item_for_reviewer",
    "item_history",
    "item_row",
    "iter_confirmed_items",
    "iter_decisions",
    "lease_next",
    "list_reviewers",
    "list_runs",
    "mark_published",
    "my_decisions",
    "novelty_calibration_of",
    "plan_consensus",
    "plan_consensus_job",
    "progress",
    "publications_of",
    "publishing_into",
    "queue_stats",
    "refresh_consensus",
    "release_lease",
    "renew_lease",
    "reserve_for_publish",
    "resolve_item",
    "reviewer_by_token",
    "reviewer_metrics",
    "run_metrics",
    "run_rules",
    "run_warnings",
    "scenario_peers",
    "settle_reservations",
    "stale_reservations",
    "submit_decision",
    "undo_decision",
    "unit_hash",
    "update_run_policy",
]
