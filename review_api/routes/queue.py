"""The reviewer's queue: lease the next item, renew or give back a lease."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from sqlalchemy.orm import Session

from edgemine.review_api import schemas, storage, views
from edgemine.review_api.deps import AnyReviewer, Db, Now, State

router = APIRouter(tags=["queue"])
LeaseId = Annotated[int, Path(ge=1, le=2**62)]


@router.post(
    "/queue/next",
    response_model=schemas.NextPublic,
    responses={204: {"description": "Nothing left for you to review."}},
    summary="Lease the next item to review (or get back the one you hold)",
)
async def next_item(
    me: AnyReviewer,
    state: State,
    run_id: Annotated[str | None, Query(max_length=200, description="Only items of this run.")] = None,
) -> Response:
    now = state.clock()
    reclaim = state.reclaim_due(now)

    def lease(s: Session) -> tuple[schemas.NextPublic, bool] | None:
        held = storage.lease_next(s, reviewer_id=me.id, now=now, run_id=run_id, reclaim=reclaim)
        if held is None:
            return None
        item = storage.item_row(s, item_id=held.item_id)
        run = storage.run_rules(s, run_id=held.run_id)
        return schemas.NextPublic(lease=views.lease_public(held), item=views.item_public(s, item, run)), held.is_gold

    leased = await state.db.run_write(lease)
    if leased is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    state.metrics.leases.labels("gold" if leased[1] else "regular").inc()
    # serialised once here: returning the model would make FastAPI validate it a second time
    return Response(leased[0].model_dump_json(), media_type="application/json")


@router.post("/leases/{lease_id}/renew", response_model=schemas.LeasePublic, summary="Extend your lease")
def renew(lease_id: LeaseId, me: AnyReviewer, db: Db, now: Now) -> schemas.LeasePublic:
    with db.write() as s:
        return views.lease_public(storage.renew_lease(s, lease_id=lease_id, reviewer_id=me.id, now=now()))


@router.delete("/leases/{lease_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Give an item back without deciding (skip); you will not get it again")
def release(lease_id: LeaseId, me: AnyReviewer, db: Db, now: Now) -> Response:
    with db.write() as s:
        storage.release_lease(s, lease_id=lease_id, reviewer_id=me.id, now=now())
    return Response(status_code=status.HTTP_204_NO_CONTENT)
