"""Tables and the database handle of the review service (SQLAlchemy 2).

SQLite is the default: WAL journal, `synchronous=FULL` (an acknowledged commit survives a kill or power
cut), and every write transaction starts with `BEGIN IMMEDIATE` under an in-process lock, so writers never
meet SQLite's busy-wait back-off (which sleeps in steps of up to 100 ms). Reads run in their own
deferred transactions and never wait for writers. PostgreSQL is chosen by URL (psycopg 3); there the
queue relies on conditional updates and unique constraints, not on a lock.

The hot path (`run_write`) commits in groups on SQLite: one writer thread takes every operation that
arrived while the previous commit was being synced, runs each in its own savepoint, and commits them
together — one fsync for many requests. Nothing is acknowledged before its group's commit returns.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from edgemine.errors import ConfigError

T = TypeVar("T")
ROLES = ("reviewer", "lead", "admin")
ASSIGNMENT_STATES = ("leased", "decided", "released", "expired")
# queued: waiting for reviews · complete: consensus reached · escalated: waiting for a lead ·
# resolved: a lead decided · gold: the answer is known
ITEM_STATUSES = ("queued", "complete", "escalated", "resolved", "gold")

IdType = BigInteger().with_variant(Integer(), "sqlite")  # SQLite only autoincrements INTEGER keys


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the review store keeps UTC-aware times")
        return value.astimezone(UTC) if dialect.name != "sqlite" else value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[str]: JSON()}


class Reviewer(Base):
    __tablename__ = "reviewers"
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the bearer token
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]


class Run(Base):
    __tablename__ = "runs"
    run_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    source: Mapped[str] = mapped_column(Text)  # the run dir it was imported from
    imported_at: Mapped[datetime]
    active: Mapped[bool] = mapped_column(Boolean, default=True)  # inactive runs serve no items
    n_items: Mapped[int] = mapped_column(Integer, default=0)
    n_gold: Mapped[int] = mapped_column(Integer, default=0)
    categories: Mapped[list[str]]  # the run's category taxonomy (edge-case categories)
    root_causes: Mapped[list[str]]
    overlap_fraction: Mapped[float] = mapped_column(Float)
    overlap_reviews: Mapped[int] = mapped_column(Integer)
    gold_rate: Mapped[float] = mapped_column(Float)
    lease_seconds: Mapped[int] = mapped_column(Integer)
    min_agreement: Mapped[float] = mapped_column(Float)
    ds_min_confidence: Mapped[float] = mapped_column(Float)
    info: Mapped[dict[str, Any]]  # run.json's small fields (encoder, counts, ...)
    # how long after a decision its reviewer may still amend or undo it (added after the first release: a
    # store made before gets the column from `Database.create_all`, with this default for its runs)
    amend_window_seconds: Mapped[int] = mapped_column(Integer, default=600, server_default=text("600"))


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    frame_id: Mapped[str] = mapped_column(String(300))
    rank: Mapped[int] = mapped_column(Integer)
    score: Mapped[float | None] = mapped_column(Float)
    novelty: Mapped[float | None] = mapped_column(Float)
    uncertainty: Mapped[float | None] = mapped_column(Float)
    rarity: Mapped[float | None] = mapped_column(Float)
    trigger: Mapped[float | None] = mapped_column(Float)
    reasons: Mapped[list[str]]
    scenario_id: Mapped[str | None] = mapped_column(String(300))
    event_id: Mapped[str | None] = mapped_column(String(300))
    uri: Mapped[str] = mapped_column(Text)
    drive_id: Mapped[str] = mapped_column(String(300))
    timestamp: Mapped[datetime]
    label: Mapped[str | None] = mapped_column(String(200))
    meta: Mapped[dict[str, Any]]  # the manifest's metadata columns (camera, weather, speed, ...)
    evidence: Mapped[dict[str, Any]]  # neighbor_ids/uris/distances, context_uris
    created_at: Mapped[datetime]
    # queue state
    required_reviews: Mapped[int] = mapped_column(Integer)
    slots_free: Mapped[int] = mapped_column(Integer)  # required - decisions - live leases (gold: unused)
    n_decisions: Mapped[int] = mapped_column(Integer, default=0)
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    gold_verdict: Mapped[str | None] = mapped_column(String(32))
    gold_category: Mapped[str | None] = mapped_column(String(200))
    # consensus
    status: Mapped[str] = mapped_column(String(16), default="queued")
    consensus_verdict: Mapped[str | None] = mapped_column(String(32))
    consensus_category: Mapped[str | None] = mapped_column(String(200))
    consensus_root_cause: Mapped[str | None] = mapped_column(String(200))
    confidence: Mapped[float | None] = mapped_column(Float)
    consensus_method: Mapped[str | None] = mapped_column(String(32))  # majority|dawid_skene|lead|gold
    escalation_reason: Mapped[str | None] = mapped_column(String(32))
    consensus_at: Mapped[datetime | None]
    resolved_by: Mapped[int | None] = mapped_column(ForeignKey("reviewers.id"))
    resolution_notes: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("run_id", "frame_id", name="uq_items_run_frame"),
        # the queue: open regular items in import order (rank order within a run)
        Index("ix_items_open", "id", sqlite_where=text("slots_free > 0 AND NOT is_gold"),
              postgresql_where=text("slots_free > 0 AND NOT is_gold")),
        # one run's open items: its queue in order, and its queue depth from the index alone
        Index("ix_items_open_run", "run_id", "id", "slots_free", "created_at", "is_gold",
              sqlite_where=text("slots_free > 0 AND NOT is_gold"),
              postgresql_where=text("slots_free > 0 AND NOT is_gold")),
        Index("ix_items_gold", "run_id", "id", sqlite_where=text("is_gold"), postgresql_where=text("is_gold")),
        Index("ix_items_status", "run_id", "status"),
        Index("ix_items_scenario", "run_id", "scenario_id"),
        Index("ix_items_consensus_at", "consensus_at"),
    )


class Assignment(Base):
    """One reviewer's hold on one item: a lease while `leased`, history afterwards. Never two per pair."""

    __tablename__ = "assignments"
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("reviewers.id"))
    run_id: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16))
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    leased_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("item_id", "reviewer_id", name="uq_assignments_item_reviewer"),
        # at most one live lease per reviewer: a concurrent second `next` fails and returns the first
        Index("uq_assignments_live", "reviewer_id", unique=True, sqlite_where=text("state = 'leased'"),
              postgresql_where=text("state = 'leased'")),
        Index("ix_assignments_expiry", "expires_at", sqlite_where=text("state = 'leased'"),
              postgresql_where=text("state = 'leased'")),
        Index("ix_assignments_reviewer", "reviewer_id", "id"),
    )


class Decision(Base):
    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), unique=True)
    run_id: Mapped[str] = mapped_column(String(200), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("reviewers.id"))
    verdict: Mapped[str] = mapped_column(String(32))
    category: Mapped[str | None] = mapped_column(String(200))
    root_causes: Mapped[list[str]]
    notes: Mapped[str | None] = mapped_column(Text)
    seconds: Mapped[float | None] = mapped_column(Float)  # as reported by the client
    handling_seconds: Mapped[float] = mapped_column(Float)  # lease start to decision, measured by the server
    decided_at: Mapped[datetime]
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False)
    gold_correct: Mapped[bool | None] = mapped_column(Boolean)

    __table_args__ = (
        UniqueConstraint("item_id", "reviewer_id", name="uq_decisions_item_reviewer"),
        UniqueConstraint("reviewer_id", "idempotency_key", name="uq_decisions_idempotency"),
        Index("ix_decisions_reviewer", "reviewer_id", "decided_at"),
    )


AUDIT_ACTIONS = ("decide", "amend", "undo", "resolve")


class DecisionEvent(Base):
    """The audit trail: every version of every decision and every lead resolution, never changed or deleted.

    `decisions` holds only the latest version of each reviewer's decision (what consensus, metrics and exports
    read); an undo deletes that row and keeps it here. `before`/`after` are {verdict, category, root_causes,
    notes} (null before a first decision and after an undo).
    """

    __tablename__ = "decision_events"
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    run_id: Mapped[str] = mapped_column(String(200))
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("reviewers.id"))  # who acted (the lead for "resolve")
    decision_id: Mapped[int | None] = mapped_column(IdType)  # no foreign key: an undo deletes the decision
    action: Mapped[str] = mapped_column(String(16))  # one of AUDIT_ACTIONS
    at: Mapped[datetime]
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))

    __table_args__ = (
        Index("ix_decision_events_item", "item_id", "id"),
        Index("ix_decision_events_decision", "decision_id"),
    )


class Publication(Base):
    """An item published into a dataset version (jobs/publish.py records them after its commit): final."""

    __tablename__ = "publications"
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    dataset: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    published_at: Mapped[datetime]

    __table_args__ = (Index("ix_publications_item", "item_id", "id"),)


class PublishReservation(Base):
    """An item a publisher is putting into a dataset right now: reserved before its Delta commit, turned into a
    `publications` row after it, removed if the publish fails. While it lasts (and is younger than
    `storage.audit.RESERVATION_STALE_SECONDS`) the item's reviewers cannot amend or undo their decisions.

    A table of its own, not a `publications` row without a version: stores made before have `version NOT NULL`,
    and `Database.create_all` adds tables, not looser constraints. One row per (item, dataset), so publishers of
    two datasets can each hold the item; `token` names one publish's rows."""

    __tablename__ = "publish_reservations"
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    dataset: Mapped[str] = mapped_column(Text)
    token: Mapped[str] = mapped_column(String(64), index=True)
    reserved_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("item_id", "dataset", name="uq_publish_reservations_item_dataset"),)


def normalize_url(url: str) -> str:
    """Accept `postgresql://` and `postgres://` for psycopg 3; reject anything but SQLite and PostgreSQL."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    if url.startswith(("sqlite://", "postgresql+psycopg://")):
        return url
    scheme = url.split("://", 1)[0] if "://" in url else url
    raise ConfigError(f"database url scheme {scheme!r} is not supported; use sqlite:///FILE or postgresql://...")


def add_missing_columns(engine: Engine) -> list[str]:
    """`ALTER TABLE ... ADD COLUMN` for model columns an existing table lacks (a store made by an older version).

    Only columns a table can gain in place qualify: nullable or with a server default (existing rows take it).
    Idempotent; returns the "table.column" names it added. The same statement works on SQLite and PostgreSQL.
    """
    added: list[str] = []
    with engine.begin() as conn:
        present = inspect(conn)
        tables = set(present.get_table_names())
        for table in Base.metadata.sorted_tables:
            if table.name not in tables:
                continue
            have = {c["name"] for c in present.get_columns(table.name)}
            for column in table.columns:
                if column.name in have:
                    continue
                if not column.nullable and column.server_default is None:
                    raise ConfigError(f"the review store's table {table.name!r} lacks column {column.name!r}, "
                                      "which has no default to add it with; recreate the store")
                ddl = f"{column.type.compile(dialect=conn.dialect)}"
                default = column.server_default
                if default is not None:
                    ddl += f" DEFAULT {default.arg.text if hasattr(default.arg, 'text') else default.arg}"  # type: ignore[attr-defined]
                    if not column.nullable:
                        ddl += " NOT NULL"
                conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {ddl}')
                added.append(f"{table.name}.{column.name}")
    return added


class Database:
    """Engines, sessions and the write discipline of one review store."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 10) -> None:
        self.url = normalize_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self._write_lock = threading.Lock() if self.is_sqlite else None
        self._checkpointer: threading.Thread | None = None
        self._stop = threading.Event()
        if self.is_sqlite:
            # writers take turns under the lock, so two connections are plenty; readers run in parallel
            self.write_engine = self._sqlite_engine(begin="BEGIN IMMEDIATE", synchronous=sqlite_synchronous,
                                                    pool_size=2)
            self.read_engine = self._sqlite_engine(begin="BEGIN", synchronous=sqlite_synchronous,
                                                   pool_size=pool_size)
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="edgemine-wal-checkpoint",
                                                  daemon=True)
            self._checkpointer.start()
        else:
            self.write_engine = create_engine(self.url, pool_size=pool_size, max_overflow=pool_size,
                                              pool_pre_ping=True)
            self.read_engine = self.write_engine
        self._write_sessions = sessionmaker(self.write_engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)
        self._committer: GroupCommitter | None = None
        self._committer_guard = threading.Lock()

    def _sqlite_engine(self, *, begin: str, synchronous: str, pool_size: int) -> Engine:
        engine = create_engine(self.url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=pool_size, max_overflow=pool_size)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            # no checkpoint inside a commit (it would stall the whole commit group): _checkpoint_loop does it
            cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql(begin)

        return engine

    def _checkpoint_loop(self, every: float = 1.0) -> None:
        """Copy the WAL back into the database file about once a second, beside the writers, not in their way.

        PASSIVE never blocks a writer; a checkpoint that cannot finish (a reader still needs old pages) is
        simply retried on the next round.
        """
        while not self._stop.wait(every):
            try:
                raw = self.read_engine.raw_connection()  # autocommit: a checkpoint cannot run in a transaction
                try:
                    raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                finally:
                    raw.close()
            except Exception:  # noqa: BLE001 - a missed round is harmless; the next one catches up
                continue

    def create_all(self) -> None:
        """Create missing tables, columns and indexes added to existing tables since they were made."""
        with self._lock():
            Base.metadata.create_all(self.write_engine)
            add_missing_columns(self.write_engine)
            for table in Base.metadata.sorted_tables:
                for index in table.indexes:
                    index.create(self.write_engine, checkfirst=True)

    def drop_all(self) -> None:
        with self._lock():
            Base.metadata.drop_all(self.write_engine)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        if self._write_lock is None:
            yield
            return
        with self._write_lock:
            yield

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: committed on success, rolled back on any exception."""
        with self._lock(), self._write_sessions() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction (a consistent snapshot; never blocks SQLite writers)."""
        with self._read_sessions() as session, session.begin():
            yield session

    def submit_write(self, fn: Callable[[Session], T]) -> Future[T]:
        """Run `fn(session)` in a write transaction; SQLite shares the transaction with concurrent callers."""
        if not self.is_sqlite:
            future: Future[T] = Future()
            try:
                with self.write() as session:
                    future.set_result(fn(session))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
                future.set_exception(exc)
            return future
        if self._committer is None:
            with self._committer_guard:
                if self._committer is None:
                    self._committer = GroupCommitter(self._write_sessions, self._lock)
        return self._committer.submit(fn)

    async def run_write(self, fn: Callable[[Session], T]) -> T:
        """`submit_write` for async code: SQLite awaits its group commit, PostgreSQL runs in a worker thread."""
        if self.is_sqlite:
            return await asyncio.wrap_future(self.submit_write(fn))
        from sqlalchemy.exc import IntegrityError
        from starlette.concurrency import run_in_threadpool

        def with_retries() -> T:  # a concurrent writer may win a unique-constraint race: run again
            for attempt in range(3):
                try:
                    return self.submit_write(fn).result()
                except IntegrityError:
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")

        return await run_in_threadpool(with_retries)

    def dispose(self) -> None:
        self._stop.set()
        if self._committer is not None:
            self._committer.stop()
            self._committer = None
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()


class GroupCommitter:
    """A writer thread that commits the operations queued while it was busy as one transaction.

    Each operation runs in a savepoint, so one that raises is rolled back alone and gets its own error (an
    ORM flush that fails takes the whole transaction down: that operation gets its error and the others
    run again); if the commit itself fails, every operation of the group gets that error. Results are
    handed out only after the commit, so a caller never sees an answer that a crash could take back.
    """

    def __init__(self, sessions: sessionmaker[Session], lock: Callable[[], Any], max_group: int = 64) -> None:
        self._sessions, self._lock, self._max = sessions, lock, max_group
        self._queue: queue.SimpleQueue[tuple[Callable[[Session], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="edgemine-group-commit", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[Session], T]) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put((fn, future))
        return future

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < self._max:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._run(group)
                    return
                group.append(nxt)
            self._run(group)

    def _run(self, group: list[tuple[Callable[[Session], Any], Future[Any]]]) -> None:
        while group:
            spoiled = self._attempt(group)
            if spoiled is None:
                return
            # an ORM flush failed and took the transaction down with it: that operation gets its error, the
            # others (rolled back, never acknowledged) run again in a new transaction
            index, error = spoiled
            group[index][1].set_exception(error)
            group = group[:index] + group[index + 1:]

    def _attempt(self, group: list[tuple[Callable[[Session], Any], Future[Any]]]) -> tuple[int, Exception] | None:
        """Run the group in one transaction and hand out the outcomes after the commit; or, when an operation
        spoiled the session (a failed flush), roll everything back and return that operation and its error."""
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            with self._lock(), self._sessions() as session, session.begin():
                # savepoints in plain SQL on the driver's connection: SQLAlchemy's nested transactions cost
                # more Python than the hot operations themselves (see hotsql.py)
                raw: Any = session.connection().connection.driver_connection  # sqlite3.Connection
                for index, (fn, future) in enumerate(group):
                    raw.execute("SAVEPOINT edgemine_op")
                    try:
                        result = fn(session)
                        session.flush()  # ORM changes belong to this operation's savepoint
                        raw.execute("RELEASE edgemine_op")
                        outcomes.append((future, result, None))
                    except Exception as exc:  # noqa: BLE001 - this operation alone fails
                        if not session.is_active:  # the failed flush rolled the whole transaction back
                            session.rollback()
                            return index, exc
                        raw.execute("ROLLBACK TO edgemine_op")
                        raw.execute("RELEASE edgemine_op")
                        session.expunge_all()  # forget ORM objects the rollback took back
                        outcomes.append((future, None, exc))
        except Exception as exc:  # noqa: BLE001 - the commit failed: nobody's work is durable
            for _, future in group:
                future.set_exception(exc)
            return None
        for future, result, error in outcomes:
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
        return None
