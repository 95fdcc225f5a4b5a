"""The queue's hot statements, run on SQLite's own connection instead of through SQLAlchemy.

Each statement is written once, as SQLAlchemy Core, in the `storage/` module that runs it. `hot(session)`
returns an executor for the session's transaction: on PostgreSQL it hands every statement to the session as
usual; on SQLite it compiles each statement once (SQL text, positional parameter names, literal defaults) and
runs it on the session's sqlite3 connection, in the same transaction. Parameters and results go through the column
types' own bind and result processors (obtained once from SQLAlchemy's public `TypeEngine` methods), so
rows come back exactly as `session.execute` would return them: aware datetimes, parsed JSON, booleans.

Why: SQLAlchemy spends ~22 µs of Python on each statement it executes (cache key, execution context,
result object) against ~1 µs for the driver; a `next` + decision runs ~18 statements, all while the
group-commit thread holds the GIL that the event loop needs (benchmarks/review_load.py, docs/BENCHMARKS.md).
Checked against SQLAlchemy statement by statement in tests/review_api/test_hotsql.py.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections import namedtuple
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, InvalidRequestError, MultipleResultsFound, NoResultFound
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Plan:
    """One statement compiled for SQLite with a given set of parameter names."""

    sql: str
    names: tuple[str, ...]  # positional parameters, in order (a name can repeat)
    defaults: dict[str, Any]  # values bound in the statement itself (LIMIT 8, literals)
    binds: tuple[Processor, ...]  # one per position
    results: tuple[Processor, ...]  # one per result column; empty when the statement returns no rows
    row: type | None  # a namedtuple class with the result columns' keys (attribute access like a Row)

    def args(self, params: dict[str, Any]) -> tuple[Any, ...]:
        out = []
        for name, process in zip(self.names, self.binds, strict=True):
            value = params[name] if name in params else self.defaults[name]
            out.append(value if process is None else process(value))  # processors take None too, as in SQLAlchemy
        return tuple(out)

    def convert(self, raw: Sequence[Any]) -> Any:
        assert self.row is not None
        return self.row(*(v if p is None else p(v) for p, v in zip(self.results, raw, strict=True)))


def _plan(stmt: Executable, keys: tuple[str, ...], dialect: Dialect) -> _Plan:
    """Compile once; refuse what the driver path cannot do the way SQLAlchemy would (say so, never guess)."""
    compiled = cast(SQLCompiler, cast(ClauseElement, stmt).compile(dialect=dialect, column_keys=list(keys)))
    names = tuple(compiled.positiontup or ())
    missing = sorted({n for n in names if n not in keys and compiled.binds[n].required})
    if missing:  # SQLAlchemy would refuse too; binding NULL would silently change the query
        raise InvalidRequestError(f"a value is required for bind parameter(s) {missing} of {compiled.string[:80]!r}")
    if getattr(compiled, "insert_prefetch", None) or getattr(compiled, "update_prefetch", None):
        raise InvalidRequestError(f"hot statements pass every column that has a Python-side default; "
                                  f"{compiled.string[:80]!r} leaves some to SQLAlchemy")
    if "__[POSTCOMPILE" in compiled.string:
        raise InvalidRequestError(f"expanding (IN) or literal-execute parameters are not supported on the hot "
                                  f"path: {compiled.string[:80]!r}")
    defaults = dict(compiled.params)
    binds = tuple(compiled.binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names)
    columns = list(getattr(stmt, "exported_columns", ()) or ())
    if not getattr(stmt, "returns_rows", True) or not columns:
        return _Plan(compiled.string, names, defaults, binds, (), None)
    results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
    row = namedtuple("HotRow", [c.key for c in columns], rename=True)  # type: ignore[misc]
    return _Plan(compiled.string, names, defaults, binds, results, row)


_PLANS: dict[tuple[int, tuple[str, ...]], tuple[Executable, _Plan]] = {}


class HotSQL:
    """`first`/`one`/`all`/`scalar`/`rowcount` of a Core statement within the session's transaction.

    Errors are SQLAlchemy's on both stores (`sqlalchemy.exc.IntegrityError`, `NoResultFound`, ...), so
    callers catch one family. Plans are cached per statement object: pass module-level statements, not ones
    built per call (the cache keeps them).
    """

    def __init__(self, session: Session) -> None:
        self._session = weakref.ref(session)  # session.info holds this executor: no reference cycle
        connection = session.connection()
        self.dialect = connection.dialect
        self.raw = connection.connection.driver_connection if self.dialect.name == "sqlite" else None

    @property
    def session(self) -> Session:
        session = self._session()
        if session is None:
            raise InvalidRequestError("the session of this hot-path executor is gone")
        return session

    def _sqlite(self, stmt: Executable, params: dict[str, Any]) -> tuple[_Plan, Any]:
        keys = tuple(params)
        cached = _PLANS.get((id(stmt), keys))
        if cached is None:  # the statement is kept with its plan, so its id is never reused meanwhile
            cached = _PLANS[(id(stmt), keys)] = (stmt, _plan(stmt, keys, self.dialect))
        plan = cached[1]
        assert self.raw is not None
        args = plan.args(params)
        try:
            return plan, self.raw.execute(plan.sql, args)
        except sqlite3.Error as exc:  # the same exception classes as through the session
            raise DBAPIError.instance(plan.sql, args, exc, sqlite3.Error, dialect=self.dialect) from exc

    def all(self, stmt: Executable, params: dict[str, Any]) -> list[Any]:
        if self.raw is None:
            return list(self.session.execute(stmt, params).all())
        plan, cursor = self._sqlite(stmt, params)
        return [plan.convert(r) for r in cursor.fetchall()]

    def first(self, stmt: Executable, params: dict[str, Any]) -> Any | None:
        if self.raw is None:
            return self.session.execute(stmt, params).first()
        plan, cursor = self._sqlite(stmt, params)
        raw = cursor.fetchone()
        cursor.close()  # resets the statement, as `Result.first()` does
        return None if raw is None else plan.convert(raw)

    def one(self, stmt: Executable, params: dict[str, Any]) -> Any:
        """Exactly one row, or SQLAlchemy's `NoResultFound` / `MultipleResultsFound`."""
        if self.raw is None:
            return self.session.execute(stmt, params).one()
        plan, cursor = self._sqlite(stmt, params)
        rows = cursor.fetchmany(2)
        cursor.close()
        if len(rows) != 1:
            raise (NoResultFound("No row was found when one was required") if not rows else
                   MultipleResultsFound("Multiple rows were found when exactly one was required"))
        return plan.convert(rows[0])

    def scalar(self, stmt: Executable, params: dict[str, Any]) -> Any:
        row = self.first(stmt, params)
        return None if row is None else row[0]

    def rowcount(self, stmt: Executable, params: dict[str, Any]) -> int:
        """Run a statement that returns no rows; the number of rows it changed."""
        if self.raw is None:
            return int(self.session.execute(stmt, params).rowcount)  # type: ignore[attr-defined]
        _, cursor = self._sqlite(stmt, params)
        return int(cursor.rowcount)


def hot(session: Session) -> HotSQL:
    """The executor for the session's current transaction (the connection is looked up once per transaction).

    Flushes the session's pending ORM changes first, as `session.execute` autoflushes, so take a fresh
    `hot(session)` after changing ORM objects rather than holding one across the change.
    """
    session.flush()
    found = session.info.get("hotsql")
    transaction = session.get_transaction()
    if found is None or transaction is None or found[0]() is not transaction:  # a new one may hold another connection
        executor = HotSQL(session)  # begins the transaction if none is open
        found = session.info["hotsql"] = (weakref.ref(cast(Any, session.get_transaction())), executor)
    return cast(HotSQL, found[1])
