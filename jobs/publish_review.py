"""Publish from the review store: consensus-confirmed items -> a new version of a Delta training set.

`publish_from_review` reads the confirmed items (`storage.confirmed_items`), keeps the latest confirmation per
frame, reserves the items in the store while the version is committed (so an amend or undo racing the publish
is either left out of this version or refused, never lost), publishes them (`jobs.publish.publish`) with the
review lineage, and records them as published. `watch_and_publish` does it continuously, with the per-row
decision -> readable latency.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from edgemine.errors import ConfigError, PublishRefusedError
from edgemine.jobs.dataset_frames import FrameMode
from edgemine.jobs.publish import (
    DEFAULT_FRAMES,
    PublishGates,
    PublishResult,
    SplitPolicy,
    extend_classes,
    latest_per_frame,
    publish,
    table_exists,
    training_rows,
)


def code_version() -> str:
    """edgemine's version plus the git commit when run from a checkout."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    try:
        v = version("edgemine")
    except PackageNotFoundError:
        v = "0+unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, text=True,
                             capture_output=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{v}+g{sha}" if sha else v


def review_lineage(session: Any, *, run_ids: list[str]) -> dict[str, Any]:
    """Lineage of a publish from the review store: runs, encoders, policies, reviewers, agreement."""
    from sqlalchemy import func, select

    from edgemine.review_api import storage
    from edgemine.review_api.db import Decision

    runs: dict[str, Any] = {}
    for rid in run_ids:
        run = storage.get_run(session, run_id=rid)
        agreement = storage.agreement_metrics(session, run_id=rid)
        runs[rid] = {
            "source": run.source,
            "categories": list(run.categories),
            "encoder": run.info.get("encoder_id") or run.info.get("encoder"),
            "models": run.info.get("models"),
            "policy": {"overlap_fraction": run.overlap_fraction, "overlap_reviews": run.overlap_reviews,
                       "gold_rate": run.gold_rate, "min_agreement": run.min_agreement,
                       "ds_min_confidence": run.ds_min_confidence},
            "agreement": {k: agreement.get(k) for k in ("items", "cohen_kappa_mean", "fleiss_kappa",
                                                        "krippendorff_alpha")},
        }
    n_reviewers = session.scalar(select(func.count(func.distinct(Decision.reviewer_id)))
                                 .where(Decision.run_id.in_(run_ids))) if run_ids else 0
    n_decisions = session.scalar(select(func.count()).select_from(Decision).where(Decision.run_id.in_(run_ids))
                                 ) if run_ids else 0
    return {
        "mining_runs": run_ids,
        "encoders": sorted({str(r["encoder"]) for r in runs.values() if r["encoder"]}),
        "review_policy": {rid: r["policy"] for rid, r in runs.items()},
        "agreement": {rid: r["agreement"] for rid, r in runs.items()},
        "reviewers": int(n_reviewers or 0),
        "decisions": int(n_decisions or 0),
        "runs": {rid: {"source": r["source"], "models": r["models"]} for rid, r in runs.items()},
        # the review taxonomy of each run: it seeds (and extends) the dataset's class list
        "taxonomy": {rid: r["categories"] for rid, r in runs.items()},
        "code_version": code_version(),
    }


def require_run(session: Any, run_id: str, *, shown: int = 5) -> None:
    """NotFoundError naming `run_id` and the store's runs (the newest `shown`) unless the store has it: a
    typo'd --run must not read as "nothing new"."""
    from edgemine.errors import NotFoundError
    from edgemine.review_api import storage
    from edgemine.review_api.db import Run

    if session.get(Run, run_id) is not None:
        return
    runs = [r.run_id for r in storage.list_runs(session)]
    if not runs:
        raise NotFoundError(f"run {run_id!r} is not in the review store, which has no runs (import one with "
                            f"'edgemine review import')")
    newest = runs[::-1][:shown]
    more = f" and {len(runs) - shown} more" if len(runs) > shown else ""
    raise NotFoundError(f"run {run_id!r} is not in the review store; it has {len(runs)} run(s), newest first: "
                        f"{', '.join(newest)}{more}")


@dataclass(frozen=True)
class ReviewPublish:
    result: PublishResult
    latencies_s: list[float]  # per added row: readable in the dataset minus its consensus time
    # rows the version added per mining run, every run of the snapshot (0: all its rows were there already);
    # without run_id a publish takes every run in the store, so say which went in
    added_by_run: dict[str, int] = field(default_factory=dict)
    # confirmed frames this version left out, by why (`changed_during_publish`, `in_another_publish`)
    left_out: dict[str, list[str]] = field(default_factory=dict)


def publish_from_review(
    db: Any,
    dataset: str,
    *,
    run_id: str | None = None,
    policy: SplitPolicy | None = None,
    since: Any = None,
    frames: FrameMode = DEFAULT_FRAMES,
    gates: PublishGates | None = None,
    storage_options: dict[str, str] | None = None,
) -> ReviewPublish:
    """Publish every confirmed edge case in the review store (`db`: a URL or review_api.db.Database).

    A frame confirmed in several runs is published once, from its latest consensus (`latest_per_frame`);
    the lineage lists every run and how many confirmations were superseded. A frame already in the dataset
    keeps its published row (rows are keyed by frame_id). The runs' review taxonomies seed the dataset's
    class list. `gates` may refuse the version (PublishRefusedError, nothing written); None means
    `PublishGates.warn_only()`: every gate is checked and a failure is a warning in the result and the
    lineage, so a program's loop keeps publishing - pass `PublishGates()` to refuse as the CLI does.

    Reviewers may amend or undo a decision until its item is published, so the snapshot's items are reserved
    in the store before the Delta commit (`storage.reserve_for_publish`, one transaction): an item whose
    consensus changed since the snapshot is left out of this version and listed in the lineage's
    `changed_during_publish` (a later publish takes its new answer), and while reserved an amend or undo is
    refused for a moment (409). After the commit the reservations become the version's publications
    (`storage.mark_published`); if the publish fails, each is settled by what the dataset holds (removed
    unless its row made it in). Reservations left by a dead publisher (older than
    `storage.RESERVATION_STALE_SECONDS`) are settled that way by the next publish into the dataset, first.
    `storage_options` (deltalake's) open a dataset on an object store, for the publish and those reads alike.
    """
    from datetime import UTC, datetime
    from uuid import uuid4

    from edgemine.review_api import storage
    from edgemine.review_api.db import Database

    policy = policy or SplitPolicy()
    database = Database(db) if isinstance(db, str) else db
    name, token = _store_name(dataset), uuid4().hex
    reserved: dict[int, tuple[str, str]] = {}  # this publish's reservations: item id -> (frame_id, run_id)
    settled = False
    try:
        with database.read() as s:
            if run_id is not None:
                require_run(s, run_id)
            confirmed = storage.confirmed_items(s, run_id=run_id, since=since)
            run_ids = sorted(set(confirmed.column("run_id").to_pylist()))
            lineage = review_lineage(s, run_ids=run_ids) if run_ids else {"mining_runs": []}
        confirmed, superseded = latest_per_frame(confirmed)
        lineage["superseded_confirmations"] = superseded  # frames confirmed by several runs: the latest won
        _settle_stale(database, dataset, name, storage_options)
        confirmed, reserved, left_out = _reserve(database, confirmed, name, token)
        lineage.update(left_out)
        item_of = dict(zip(confirmed.column("frame_id").to_pylist(), confirmed.column("item_id").to_pylist(),
                           strict=True))
        rows = training_rows(confirmed.drop(["item_id", "consensus_method"]), policy=policy)
        lineage["splits"] = json.loads(policy.to_json())
        taxonomy = extend_classes([], *(lineage.get("taxonomy") or {}).values())
        result = publish(rows, dataset, lineage=lineage, taxonomy=taxonomy, frames=frames,
                         gates=PublishGates.warn_only() if gates is None else gates, policy=policy,
                         storage_options=storage_options)
        readable = datetime.now(UTC)  # publish returned: the new version is committed and readable
        latencies: list[float] = []
        if result.added:
            added = set(result.added_ids)
            for fid, decided in zip(rows.column("frame_id").to_pylist(), rows.column("decided_at").to_pylist(),
                                    strict=True):
                if fid in added and decided is not None:
                    decided = decided if decided.tzinfo else decided.replace(tzinfo=UTC)
                    latencies.append((readable - decided).total_seconds())
        added_ids = set(result.added_ids)
        by_run = {r: 0 for r in sorted(set(rows.column("run_id").to_pylist()))}
        for fid, rid in zip(rows.column("frame_id").to_pylist(), rows.column("run_id").to_pylist(), strict=True):
            by_run[rid] += fid in added_ids
        published = {} if result.version is None else {item_of[f]: result.version for f in result.added_ids}
        if reserved or published:
            with database.write() as s:
                removed = storage.settle_reservations(s, dataset=name, token=token, published=published, now=readable)
            settled = True
            if removed < len(reserved):  # see RESERVATION_STALE_SECONDS: this publish took too long
                _log().warning(f"{len(reserved) - removed} of this publish's reservations in {name!r} had gone stale "
                               f"and were settled by another publish; amends to them may have come too late")
    finally:
        try:
            if reserved and not settled:
                _settle(database, dataset, name, reserved, token=token, storage_options=storage_options)
        except Exception as exc:  # noqa: BLE001 - the publish's own error matters more; staleness frees them
            _log().warning(f"could not settle this publish's reservations in {name!r} ({exc}); they hold off "
                           f"amends for {storage.RESERVATION_STALE_SECONDS} s, then the next publish settles them")
        finally:
            if isinstance(db, str):
                database.dispose()
    return ReviewPublish(result, latencies, by_run, left_out)


def _log() -> Any:
    import logging

    return logging.getLogger(__name__)


def _store_name(dataset: str) -> str:
    """How the review store names a dataset (publications, reservations): an object-store URI as given, a path
    (or a file:// URI, the same table) absolute - two publishers naming one table differently must meet."""
    import os

    from edgemine.jobs.dataset_frames import local_path

    path = local_path(dataset)
    return path if "://" in path else os.path.abspath(path)


def _reserve(database: Any, confirmed: pa.Table, name: str, token: str
             ) -> tuple[pa.Table, dict[int, tuple[str, str]], dict[str, list[str]]]:
    """Reserve the snapshot's items for this publish (`storage.reserve_for_publish`); returns the rows that may
    go into the version, the reservations made (item id -> (frame_id, run_id)) and the frames left out, by why,
    for the lineage."""
    from datetime import UTC, datetime

    from edgemine.review_api import storage

    ids = confirmed.column("item_id").to_pylist()
    frames = dict(zip(ids, confirmed.column("frame_id").to_pylist(), strict=True))
    runs = dict(zip(ids, confirmed.column("run_id").to_pylist(), strict=True))
    seen = {int(i): (d, c, r) for i, d, c, r in zip(ids, confirmed.column("decided_at").to_pylist(),
                                                    confirmed.column("category").to_pylist(),
                                                    confirmed.column("root_cause").to_pylist(), strict=True)}
    held = storage.Reservation((), (), ())
    if seen:
        with database.write() as s:
            held = storage.reserve_for_publish(s, seen=seen, dataset=name, token=token, now=datetime.now(UTC))
    keep = {*held.reserved, *held.published}  # published ones are in the dataset already: publish skips them
    left_out = {"changed_during_publish": sorted(frames[i] for i in held.changed),  # published next time
                "in_another_publish": sorted(frames[i] for i in held.elsewhere)}  # that publish adds them
    rows = confirmed.filter(pa.array([i in keep for i in ids], pa.bool_())) if len(keep) < len(ids) else confirmed
    return rows, {i: (frames[i], runs[i]) for i in held.reserved}, left_out


def _settle_stale(database: Any, dataset: str, name: str, storage_options: dict[str, str] | None) -> None:
    """Settle the reservations a dead publisher left in `dataset` (see storage.RESERVATION_STALE_SECONDS)."""
    from datetime import UTC, datetime

    from edgemine.review_api import storage

    with database.read() as s:
        stale = storage.stale_reservations(s, dataset=name, now=datetime.now(UTC))
    if stale:
        _settle(database, dataset, name, stale, token=None, storage_options=storage_options)


def _settle(database: Any, dataset: str, name: str, reservations: Mapping[int, tuple[str, str]], *,
            token: str | None, storage_options: dict[str, str] | None = None) -> None:
    """End reservations by what the dataset holds: an item whose row (its frame, from its run) is there is
    recorded as published at the first version holding it; the others' reservations are removed. `token`:
    this publish's own (it failed); None: stale ones (`storage.settle_reservations`)."""
    from datetime import UTC, datetime

    from edgemine.review_api import storage

    found = _first_versions(dataset, set(reservations.values()), storage_options)
    published = {i: found[key] for i, key in reservations.items() if key in found}
    with database.write() as s:
        storage.settle_reservations(s, dataset=name, published=published, now=datetime.now(UTC), token=token,
                                    item_ids=list(reservations))


def _first_versions(dataset: str, keys: set[tuple[str, str]], storage_options: dict[str, str] | None = None
                    ) -> dict[tuple[str, str], int]:
    """The first version of `dataset` holding each (frame_id, run_id) row; rows not in the latest version are
    absent. A publish only adds rows, so a row stays in every later version: a bisection per row, reading each
    probed version's keys once."""
    from deltalake import DeltaTable

    from edgemine.jobs.datasets import arrow_dataset

    if not keys or not table_exists(dataset, storage_options):
        return {}
    cache: dict[int, set[tuple[str, str]]] = {}

    def rows_at(version: int | None) -> set[tuple[str, str]]:
        dt = DeltaTable(dataset, version=version, storage_options=storage_options)
        v = dt.version()
        if v not in cache:
            t = arrow_dataset(dt).to_table(columns=["frame_id", "run_id"])
            cache[v] = set(zip(t.column("frame_id").cast(pa.string()).to_pylist(),
                               t.column("run_id").cast(pa.string()).to_pylist(), strict=True))
        return cache[v]

    latest_rows = rows_at(None)
    latest = max(cache)
    out: dict[tuple[str, str], int] = {}
    for key in keys:
        if key not in latest_rows:
            continue
        lo, hi = 0, latest
        while lo < hi:
            mid = (lo + hi) // 2
            if key in (cache[mid] if mid in cache else rows_at(mid)):
                hi = mid
            else:
                lo = mid + 1
        out[key] = lo
    return out


def watch_and_publish(
    db: Any,
    dataset: str,
    *,
    interval_s: float = 5.0,
    min_new: int = 1,
    run_id: str | None = None,
    policy: SplitPolicy | None = None,
    stop: Any = None,
    on_publish: Any = None,
    poll_s: float = 0.5,
    frames: FrameMode = DEFAULT_FRAMES,
    gates: PublishGates | None = None,
    on_refused: Callable[[str], None] | None = None,
    storage_options: dict[str, str] | None = None,
) -> list[ReviewPublish]:
    """Continuous publishing: publish when `min_new` new confirmations are waiting, or every `interval_s`.

    Runs until `stop` (a threading.Event, or anything with its `is_set` and `wait`) is set, then publishes
    once more what is waiting (gates applied) and returns every publish that added rows. Each one's
    `latencies_s` is the time from consensus to readable row. A gate refusal means "not yet": the waiting
    confirmations stay waiting (and accumulate), `on_refused` gets the reason (default: the module logger),
    and the next try comes with more confirmations or after `interval_s`. `gates=None`, `storage_options`: as
    publish_from_review.
    """
    import logging
    import threading
    from datetime import timedelta

    from edgemine.review_api import storage
    from edgemine.review_api.db import Database

    if interval_s <= 0 or min_new < 1:
        raise ConfigError(f"interval_s={interval_s} must be > 0 and min_new={min_new} >= 1")
    say = on_refused or logging.getLogger(__name__).warning
    stop = stop or threading.Event()
    database = Database(db) if isinstance(db, str) else db
    published: list[ReviewPublish] = []
    last = time.monotonic()
    done: set[str] = set()
    waiting: set[str] = set()
    watermark = None  # consensus time of the newest confirmation seen; the scan starts a little before it
    # the scan start that first saw a confirmation still unpublished (waiting for min_new/interval, or refused):
    # the publish reads from there, so one that the watermark has moved past is not left out
    pending: list[Any] = []
    refused = False
    try:
        if run_id is not None:
            with database.read() as s:
                require_run(s, run_id)
        while True:
            stopping = stop.is_set()
            since = watermark - timedelta(seconds=5) if watermark is not None else None
            with database.read() as s:
                fresh = storage.confirmed_items(s, run_id=run_id, since=since)
            ids = fresh.column("frame_id").to_pylist()
            # not yet tried (after a refusal: only those that came since); kept over polls, as the scan moves on
            waiting.update(f for f in ids if f not in done)
            if waiting and not pending:
                pending.append(since)
            if fresh.num_rows:
                newest = max(d for d in fresh.column("decided_at").to_pylist() if d is not None)
                watermark = newest if watermark is None else max(watermark, newest)
            elapsed = time.monotonic() - last
            # while refused, try again every interval too (what a gate lacked - agreement, another publisher's
            # rows - can come without a new confirmation), and once more at the stop
            retry = refused and (elapsed >= interval_s or stopping)
            if (waiting and (len(waiting) >= min_new or elapsed >= interval_s or stopping)) or retry:
                try:
                    out = publish_from_review(database, dataset, run_id=run_id, policy=policy,
                                              since=pending[0] if pending else since, frames=frames, gates=gates,
                                              storage_options=storage_options)
                except PublishRefusedError as exc:
                    refused = True  # `pending` stays: the next try re-reads from there, so nothing is lost
                    say(f"not yet publishing {dataset}: {exc}")
                else:
                    refused = False
                    pending.clear()
                    if out.result.added:
                        published.append(out)
                        if on_publish is not None:
                            on_publish(out)
                done.update(waiting)
                waiting.clear()
                last = time.monotonic()
            if stopping:
                return published
            stop.wait(poll_s)
    finally:
        if isinstance(db, str):
            database.dispose()
