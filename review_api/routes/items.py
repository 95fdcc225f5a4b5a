"""Items: the reviewer's view, frames by item id, decisions (and amending or undoing your own), an item's audit
trail, and the lead's view and resolution."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Header, Path, Query, Response, status
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from edgemine.review_api import schemas, storage, views
from edgemine.review_api.deps import AnyReviewer, AppState, Db, Lead, Now, State

router = APIRouter(tags=["items"])

ItemId = Annotated[int, Path(ge=1, le=2**62)]


@router.get("/items/{item_id}", response_model=schemas.ItemPublic, summary="An item in your queue")
def get_item(item_id: ItemId, me: AnyReviewer, db: Db) -> schemas.ItemPublic:
    with db.read() as s:
        item = storage.item_for_reviewer(s, item_id=item_id, reviewer_id=me.id, role=me.role)
        return views.item_public(s, item, storage.get_run(s, run_id=item.run_id))


@router.get(
    "/items/{item_id}/images/{kind}/{index}",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}}, "description": "A JPEG thumbnail."}},
    summary="An image of an item: its frame, a reference neighbour, a context frame or a scenario peer",
)
def get_image(
    item_id: ItemId,
    kind: schemas.ImageKind,
    index: Annotated[int, Path(ge=0, le=1000)],
    me: AnyReviewer,
    state: State,
    size: Annotated[Literal["large", "small"], Query()] = "large",
) -> FileResponse:
    with state.db.read() as s:
        item = storage.item_for_reviewer(s, item_id=item_id, reviewer_id=me.id, role=me.role)
        uri = storage.image_uri(s, item=item, kind=kind, index=index)
    px = state.settings.thumbnail_px if size == "large" else state.settings.thumbnail_small_px
    thumb = state.thumbnails.render(uri, px=px)
    headers = {"Cache-Control": "private, max-age=86400"}
    if thumb.placeholder:  # the frame cannot be shown: a grey placeholder, and why
        headers["X-Edgemine-Placeholder"] = thumb.placeholder
    return FileResponse(thumb.path, media_type="image/jpeg", headers=headers)


@router.post(
    "/items/{item_id}/decisions",
    response_model=schemas.DecisionPublic,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": schemas.DecisionPublic, "description": "A retry: the decision recorded earlier."}},
    summary="Decide an item you hold a lease on",
)
async def decide(
    item_id: ItemId,
    body: schemas.DecisionCreate,
    me: AnyReviewer,
    state: State,
    background: BackgroundTasks,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=128,
                                                  description="Makes retries safe: same key, same result.")] = None,
) -> Response:
    now = state.clock()
    decision = _decision_input(body)

    def record(s: Session) -> tuple[storage.SubmitResult, schemas.DecisionPublic]:
        result = storage.submit_decision(s, item_id=item_id, reviewer_id=me.id, decision=decision, now=now,
                                         idempotency_key=idempotency_key)
        return result, views.decision_public(result.decision)

    result, out = await state.db.run_write(record)
    if result.created:
        state.metrics.decisions.labels(body.verdict).inc()
    if result.completed and result.required_reviews >= 3 and _consensus_refresh_due(state, result.run_id):
        background.add_task(_refresh_consensus, state, result.run_id)
    # serialised once here (FastAPI would validate a returned model again); a replay answers 200
    return Response(out.model_dump_json(), media_type="application/json", background=background,
                    status_code=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


def _decision_input(body: schemas.DecisionCreate) -> storage.DecisionInput:
    return storage.DecisionInput(verdict=body.verdict, category=body.category, root_causes=tuple(body.root_causes),
                                 notes=body.notes, seconds=body.seconds)


CHANGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "You have no decision on this item."},
    409: {"description": "Your decision can no longer change; `detail` says why (window over, a lead resolved "
                         "it, gold, published)."},
}


@router.put("/items/{item_id}/decisions/mine", response_model=schemas.DecisionPublic, responses=CHANGE_RESPONSES,
            summary="Amend your decision on an item, within the run's amend window")
async def amend(item_id: ItemId, body: schemas.DecisionCreate, me: AnyReviewer, state: State) -> Response:
    now = state.clock()

    def change(s: Session) -> schemas.DecisionPublic:
        record, version = storage.amend_decision(s, item_id=item_id, reviewer_id=me.id,
                                                 decision=_decision_input(body), now=now)
        return views.decision_public(record, version)

    out = await state.db.run_write(change)
    return Response(out.model_dump_json(), media_type="application/json")


@router.delete("/items/{item_id}/decisions/mine", response_model=schemas.NextPublic, responses=CHANGE_RESPONSES,
               summary="Undo your decision on an item: it is withdrawn (the audit trail keeps it) and the item is "
                       "leased back to you")
async def undo(item_id: ItemId, me: AnyReviewer, state: State) -> Response:
    now = state.clock()

    def withdraw(s: Session) -> schemas.NextPublic:
        lease = storage.undo_decision(s, item_id=item_id, reviewer_id=me.id, now=now)
        item = storage.item_row(s, item_id=item_id)
        run = storage.run_rules(s, run_id=lease.run_id)
        return schemas.NextPublic(lease=views.lease_public(lease), item=views.item_public(s, item, run))

    out = await state.db.run_write(withdraw)
    return Response(out.model_dump_json(), media_type="application/json")


@router.get("/items/{item_id}/history", response_model=list[schemas.HistoryEntry],
            summary="An item's audit trail, oldest first (a reviewer sees their own entries, a lead everyone's)")
def history(item_id: ItemId, me: AnyReviewer, db: Db) -> list[dict[str, Any]]:
    with db.read() as s:
        return storage.item_history(s, item_id=item_id, reviewer_id=me.id, role=me.role)


DS_MAX_SHARE = 0.1  # a run's background Dawid-Skene refreshes may be busy at most this share of the time


def _consensus_refresh_due(state: AppState, run_id: str) -> bool:
    """Dawid-Skene re-runs for a run after an item got its 3rd review, at most every ds_refresh_seconds and
    at least 1 / DS_MAX_SHARE times the last refresh's duration apart (a big run's EM takes seconds; the
    service keeps its cores for requests)."""
    every = state.settings.ds_refresh_seconds
    if every <= 0:
        return False
    t = time.monotonic()
    with state.auth_lock:
        wait = max(every, state.ds_last_seconds.get(run_id, 0.0) / DS_MAX_SHARE)
        if t - state.ds_last_refresh.get(run_id, -1e18) < wait:
            return False
        state.ds_last_refresh[run_id] = t
    return True


def _refresh_consensus(state: AppState, run_id: str) -> None:
    # the EM runs on a snapshot in a worker process (off the write lock and off this process's GIL);
    # only the answers that changed are written
    start = time.monotonic()
    plan = state.consensus_pool().submit(storage.plan_consensus_job, state.db.url, run_id).result()
    for part in plan.chunks(500):  # short transactions: reviewers' commits go in between
        with state.db.write() as s:
            storage.apply_consensus(s, plan=part, now=state.clock())
    state.ds_last_seconds[run_id] = time.monotonic() - start


@router.get("/items/{item_id}/review", response_model=schemas.ItemLead,
            summary="Lead: an item with all its decisions and its consensus")
def review_item(item_id: ItemId, me: Lead, db: Db) -> schemas.ItemLead:
    with db.read() as s:
        item = storage.get_item(s, item_id=item_id)
        return views.item_lead(s, item, storage.get_run(s, run_id=item.run_id))


@router.post("/items/{item_id}/resolve", response_model=schemas.ItemLead,
             summary="Lead: settle an item (escalated or not), optionally making it a gold item")
def resolve(item_id: ItemId, body: schemas.Resolution, me: Lead, db: Db, now: Now) -> schemas.ItemLead:
    with db.write() as s:
        item = storage.resolve_item(s, item_id=item_id, lead_id=me.id, verdict=body.verdict, category=body.category,
                                    root_cause=body.root_cause, notes=body.notes, make_gold=body.make_gold,
                                    now=now())
        return views.item_lead(s, item, storage.get_run(s, run_id=item.run_id))


@router.get("/escalations", response_model=list[schemas.EscalationPublic],
            summary="Lead: items waiting for a lead, oldest first")
def list_escalations(
    me: Lead,
    db: Db,
    run_id: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[schemas.EscalationPublic]:
    with db.read() as s:
        found = storage.escalations(s, run_id=run_id, limit=limit, offset=offset)
        runs = {r: storage.get_run(s, run_id=r) for r in {i.run_id for i in found}}
        return [views.escalation_public(s, i, runs[i.run_id]) for i in found]
