"""Items: the candidates of a run as reviewers see them, and who may see which.

A reviewer sees only items they were given (a lease, live or not); leads and admins see every item. A missing
item and someone else's item get the same answer, so ids cannot be probed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, bindparam, select
from sqlalchemy.orm import Session

from edgemine.errors import NotFoundError
from edgemine.review_api.db import Assignment, Item
from edgemine.review_api.hotsql import hot
from edgemine.review_api.storage._common import ITEMS

_ITEM_BY_ID = select(ITEMS).where(ITEMS.c.id == bindparam("iid"))
_PEERS = (select(ITEMS.c.id, ITEMS.c.frame_id, ITEMS.c.uri)
          .where(ITEMS.c.run_id == bindparam("run"), ITEMS.c.scenario_id == bindparam("scn"),
                 ITEMS.c.id != bindparam("iid"))
          .order_by(ITEMS.c.rank, ITEMS.c.id).limit(bindparam("n", type_=Integer())))


def item_row(session: Session, *, item_id: int) -> Any:
    """An item's columns as a Core row (attribute access like the ORM object, without its bookkeeping)."""
    row = hot(session).first(_ITEM_BY_ID, {"iid": item_id})
    if row is None:
        raise NotFoundError(f"item {item_id} does not exist")
    return row


def get_item(session: Session, *, item_id: int) -> Item:
    item = session.get(Item, item_id)
    if item is None:
        raise NotFoundError(f"item {item_id} does not exist")
    return item


def item_for_reviewer(session: Session, *, item_id: int, reviewer_id: int, role: str) -> Item:
    """The item if this person may see it: leads and admins see all, a reviewer only items they were given."""
    item = session.get(Item, item_id)
    if item is not None and role == "reviewer":
        held = session.scalar(select(Assignment.id).where(Assignment.item_id == item_id,
                                                          Assignment.reviewer_id == reviewer_id))
        if held is None:
            item = None
    if item is None:  # the same answer for "missing" and "not yours": no probing for ids
        raise NotFoundError(f"item {item_id} does not exist or is not in your queue")
    return item


@dataclass(frozen=True)
class Peer:
    id: int
    frame_id: str
    uri: str


def scenario_peers(session: Session, *, item: Any, limit: int = 8) -> list[Peer]:
    """Other candidates of the item's scenario in the same run, best rank first."""
    if item.scenario_id is None:
        return []
    rows = hot(session).all(_PEERS, {"run": item.run_id, "scn": item.scenario_id, "iid": item.id, "n": limit})
    return [Peer(int(r[0]), str(r[1]), str(r[2])) for r in rows]


def image_uri(session: Session, *, item: Item, kind: str, index: int) -> str:
    """The stored uri behind an item's image slot: its frame, k-th reference neighbour, context or peer."""
    if kind == "frame":
        if index != 0:
            raise NotFoundError(f"item {item.id} has one frame (index 0), not index {index}")
        return item.uri
    if kind in ("neighbor", "context"):
        uris = item.evidence.get("neighbor_uris" if kind == "neighbor" else "context_uris") or []
        if not 0 <= index < len(uris) or not uris[index]:
            raise NotFoundError(f"item {item.id} has no {kind} image {index} (it has {len(uris)})")
        return str(uris[index])
    if kind == "scenario":
        peers = scenario_peers(session, item=item)
        if not 0 <= index < len(peers):
            raise NotFoundError(f"item {item.id} has no scenario peer {index} (it has {len(peers)})")
        return peers[index].uri
    raise NotFoundError(f"image kind {kind!r} is not one of ['frame', 'neighbor', 'context', 'scenario']")

