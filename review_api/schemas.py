"""Request and response bodies: Create/Update for what clients send, Public for what they get back.

What a reviewer gets about an item (`ItemPublic`) is the same for regular, overlap and gold items and
never includes other people's decisions, the number of reviews, or whether the answer is known.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Verdict = Literal["edge_case", "not_edge_case", "unsure"]
LeadVerdict = Literal["edge_case", "not_edge_case"]
Role = Literal["reviewer", "lead", "admin"]
ImageKind = Literal["frame", "neighbor", "context", "scenario"]
Tag = Field(min_length=1, max_length=200)


class Strict(BaseModel):
    """What clients send: no unknown fields, finite numbers only, text that is valid Unicode.

    JSON parsers accept NaN, Infinity, 1e999 (inf) and lone surrogates ("\\ud800"); none of them can be
    stored or sent back as JSON, so they are refused here with a 422 naming the field.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        for text in value if isinstance(value, list) else (value,):
            if isinstance(text, str) and not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError("text must be valid Unicode: it holds a lone surrogate (U+D800-U+DFFF)") from None
        return value


# ---------------------------------------------------------------- people
class ReviewerCreate(Strict):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[^\s].*$")
    role: Role = "reviewer"


class ReviewerPublic(BaseModel):
    id: int
    name: str
    role: Role
    active: bool
    created_at: datetime


class ReviewerCreated(ReviewerPublic):
    token: str = Field(description="The bearer token. It is shown this once and stored only as a hash.")


# ---------------------------------------------------------------- items
class ImageRef(BaseModel):
    index: int
    url: str  # /items/{id}/images/{kind}/{index}: served by item id only
    frame_id: str | None = None
    distance: float | None = None  # reference neighbours: embedding distance


class Taxonomy(BaseModel):
    categories: list[str]
    root_causes: list[str]


class ItemPublic(BaseModel):
    id: int
    run_id: str
    frame_id: str
    rank: int
    score: float | None
    signals: dict[str, float | None]  # novelty, uncertainty, rarity, trigger
    # what `signals.novelty` was calibrated on: "reference", or the metadata value the reference lacks that it
    # was ranked within ("time_of_day=night"); null where novelty is, or the store does not know (an item
    # imported before the column, or from a run without it that calibrated some value within)
    novelty_calibration: str | None = None
    reasons: list[str]
    scenario_id: str | None
    event_id: str | None
    drive_id: str
    timestamp: datetime
    label: str | None
    metadata: dict[str, Any]
    frame: ImageRef
    neighbors: list[ImageRef]  # nearest reference frames: "why is this novel"
    context: list[ImageRef]  # frames around this one in its drive (its event)
    # each `context` frame's signed offset in seconds from this one, in the same order (null: the run was
    # imported without candidates.parquet's context_offsets_s)
    context_offsets_s: list[float | None] | None = None
    scenario: list[ImageRef]  # other candidates of its scenario
    taxonomy: Taxonomy


class LeasePublic(BaseModel):
    id: int
    item_id: int
    leased_at: datetime
    expires_at: datetime


class NextPublic(BaseModel):
    lease: LeasePublic
    item: ItemPublic


# ---------------------------------------------------------------- decisions
class DecisionCreate(Strict):
    verdict: Verdict
    category: str | None = Field(None, min_length=1, max_length=200)
    root_causes: list[str] = Field(default_factory=list, max_length=20)
    notes: str | None = Field(None, max_length=2000)
    seconds: float | None = Field(None, ge=0, le=86_400, description="Time the reviewer spent on the item.")


class DecisionPublic(BaseModel):
    id: int
    item_id: int
    verdict: Verdict
    category: str | None
    root_causes: list[str]
    notes: str | None
    seconds: float | None
    decided_at: datetime  # when it was first made (an amendment keeps it: the change window runs from it)
    version: int = 1  # 1, plus one per amendment


class MyDecision(BaseModel):
    """One of your decisions, and whether you may still amend or undo it (`change_until`, or `why_not`)."""

    decision_id: int
    item_id: int
    run_id: str
    frame_id: str
    verdict: Verdict
    category: str | None
    root_causes: list[str]
    notes: str | None
    decided_at: datetime
    version: int
    can_change: bool
    change_until: datetime | None  # the end of the window; null when the item is final for another reason
    why_not: str | None  # in words, when can_change is false


class DecisionContent(BaseModel):
    verdict: str | None
    category: str | None
    root_causes: list[str]
    notes: str | None


class HistoryEntry(BaseModel):
    """One entry of an item's audit trail (decide / amend / undo by a reviewer, resolve by a lead)."""

    at: datetime
    reviewer_id: int
    reviewer_name: str
    action: Literal["decide", "amend", "undo", "resolve"]
    before: DecisionContent | None
    after: DecisionContent | None


class WaitingReason(BaseModel):
    reason: Literal["needs_more_reviewers", "leased_by_others", "escalated", "skipped_by_you", "decided_by_you",
                    "paused"]
    count: int
    text: str


class ProgressPublic(BaseModel):
    """Where you stand in a run (see storage.progress for each figure's definition)."""

    run_id: str
    total_items: int
    done_items: int
    position: int
    mine_in_run: int
    mine_today: int
    pace_s: float | None
    queue_empty: bool
    waiting: list[WaitingReason]


class DecisionLead(DecisionPublic):
    reviewer: str
    is_gold: bool
    gold_correct: bool | None


# ---------------------------------------------------------------- lead views
class Consensus(BaseModel):
    status: str
    verdict: str | None
    category: str | None
    root_cause: str | None
    confidence: float | None
    method: str | None
    escalation_reason: str | None
    decided_at: datetime | None


class ItemLead(ItemPublic):
    is_gold: bool
    gold_verdict: str | None
    gold_category: str | None
    required_reviews: int
    n_decisions: int
    consensus: Consensus
    decisions: list[DecisionLead]


class EscalationPublic(BaseModel):
    item_id: int
    run_id: str
    frame_id: str
    rank: int
    reason: str | None
    reason_text: str | None  # the reason in words
    n_decisions: int
    escalated_at: datetime | None
    votes: dict[str, int]  # label -> how many reviewers chose it


class ItemReview(BaseModel):
    reviewer_id: int
    reviewer_name: str
    verdict: Verdict
    category: str | None
    root_causes: list[str]
    notes: str | None
    decided_at: datetime
    version: int


class BrowseItem(BaseModel):
    """An item in the lead's item browser, with every current review side by side."""

    item_id: int
    frame_id: str
    rank: int
    status: str
    required_reviews: int
    n_decisions: int
    consensus_verdict: str | None
    consensus_category: str | None
    confidence: float | None
    consensus_method: str | None
    escalation_reason: str | None
    escalation_text: str | None
    is_gold: bool
    disagreement: bool  # two of its reviews have different labels (the category for edge_case, else the verdict)
    reviews: list[ItemReview]


class ItemPage(BaseModel):
    total: int  # items matching the filters, on every page
    next_after_id: int | None  # pass as after_id for the next page; null on the last one
    items: list[BrowseItem]


class Resolution(Strict):
    verdict: LeadVerdict
    category: str | None = Field(None, min_length=1, max_length=200)
    root_cause: str | None = Field(None, min_length=1, max_length=200)
    notes: str | None = Field(None, max_length=2000)
    make_gold: bool = Field(False, description="Also serve this item as a gold item from now on.")


# ---------------------------------------------------------------- runs
class RunImport(Strict):
    run_dir: str = Field(min_length=1, max_length=4096, pattern=r"^[^\x00]+$",
                         description="A mining run folder on the server.")
    ground_truth: str | None = Field(None, min_length=1, max_length=4096, pattern=r"^[^\x00]+$",
                                     description="Known answers: frame_id, category, is_rare (Parquet).")
    categories: list[str] | None = Field(None, min_length=1, max_length=100)
    root_causes: list[str] | None = Field(None, min_length=1, max_length=100)
    overlap_fraction: float | None = Field(None, ge=0, le=1)
    overlap_reviews: int | None = Field(None, ge=2, le=3)
    gold_fraction: float | None = Field(None, ge=0, le=1)
    gold_rate: float | None = Field(None, ge=0, le=0.5)
    lease_seconds: int | None = Field(None, ge=10, le=86_400)
    min_agreement: float | None = Field(None, ge=0, le=1)
    ds_min_confidence: float | None = Field(None, ge=0, le=1)
    amend_window_seconds: int | None = Field(None, ge=0, le=86_400)


class ImportPublic(BaseModel):
    run_id: str
    items: int
    inserted: int
    already_present: int
    gold: int
    overlap: int
    skipped: int
    skipped_rows: list[dict[str, str | None]]
    ignored_columns: list[str]
    categories: list[str]
    root_causes: list[str]


class RunUpdate(Strict):
    active: bool | None = None
    gold_rate: float | None = Field(None, ge=0, le=0.5)
    lease_seconds: int | None = Field(None, ge=10, le=86_400)
    min_agreement: float | None = Field(None, ge=0, le=1)
    ds_min_confidence: float | None = Field(None, ge=0, le=1)
    amend_window_seconds: int | None = Field(None, ge=0, le=86_400, description="How long after a decision its "
                                             "reviewer may amend or undo it (0: never).")


class RunPublic(BaseModel):
    run_id: str
    source: str
    imported_at: datetime
    active: bool
    n_items: int
    n_gold: int
    categories: list[str]
    root_causes: list[str]
    overlap_fraction: float
    overlap_reviews: int
    gold_rate: float
    lease_seconds: int
    min_agreement: float
    ds_min_confidence: float
    amend_window_seconds: int
    warnings: list[str]  # what keeps the run from finishing, in words (e.g. too few reviewers for its overlap)


class ConsensusRefresh(BaseModel):
    run_id: str
    method: str
    items_considered: int
    items_updated: int
    escalated: int
    converged: bool
    n_iter: int
    reviewer_accuracy: dict[str, float]


class MetricsPublic(BaseModel):
    """A run's quality and queue figures (see storage.run_metrics for their definitions).

    `reviewers` rows carry `agreement_with_consensus` (leave-one-out over overlap items: the reviewer's label
    against the plurality of the other reviewers' votes; null when `agreement_n` is 0) and `agreement_n`;
    `agreement.cohen_kappa_pairs` entries are {a, b, kappa, n} (n: items both reviewed; `items` is the same).
    `warnings`: what keeps the run from finishing, in words (as RunPublic.warnings).
    """

    run_id: str
    queue: dict[str, Any]
    agreement: dict[str, Any]
    consensus_methods: dict[str, int]
    reviewers: list[dict[str, Any]]
    review_hours: float
    cost: float | None
    cost_per_confirmed_edge_case: float | None
    warnings: list[str]
