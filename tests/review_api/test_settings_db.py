"""Settings refuse unsafe values outside development; the SQLite store is durable; group commit isolates failures."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from edgemine.errors import ConfigError
from edgemine.review_api.app import create_app
from edgemine.review_api.db import Database, Reviewer, normalize_url
from edgemine.review_api.settings import load_settings
from tests.support.review import T0


def test_unsafe_defaults_are_refused_outside_development() -> None:
    assert load_settings(environment="development", dev_admin_token="dev").dev_admin_token is not None
    with pytest.raises(ConfigError, match="dev_admin_token is only allowed in development"):
        load_settings(environment="production", dev_admin_token="dev")
    with pytest.raises(ConfigError, match="sqlite_synchronous='NORMAL'"):
        load_settings(environment="test", sqlite_synchronous="NORMAL")
    with pytest.raises(ConfigError, match="lease_seconds=5"):
        load_settings(lease_seconds=5)
    with pytest.raises(ConfigError, match="colour"):
        load_settings(colour="red")


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEMINE_DATABASE_URL", "sqlite:////tmp/x.db")
    monkeypatch.setenv("EDGEMINE_GOLD_RATE", "0.25")
    s = load_settings()
    assert (s.database_url, s.gold_rate) == ("sqlite:////tmp/x.db", 0.25)
    monkeypatch.setenv("EDGEMINE_GOLD_RATE", "2")
    with pytest.raises(ConfigError, match="gold_rate"):
        load_settings()


def test_database_urls() -> None:
    assert normalize_url("postgresql://u@h:5/d") == "postgresql+psycopg://u@h:5/d"
    assert normalize_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    with pytest.raises(ConfigError, match="scheme 'mysql'"):
        normalize_url("mysql://u@h/d")


def test_sqlite_is_wal_with_full_sync(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    db.create_all()
    with db.write() as s:
        conn = s.connection()
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    db.dispose()
    with sqlite3.connect(tmp_path / "r.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file


def test_dev_admin_token_only_in_development(tmp_path: Path) -> None:
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'r.db'}", dev_admin_token="let-me-in",
                             thumbnail_dir=tmp_path / "t")
    with TestClient(create_app(settings)) as client:
        me = client.get("/me", headers={"Authorization": "Bearer let-me-in"}).json()
        assert (me["name"], me["role"]) == ("dev-admin", "admin")


def test_group_commit_fails_only_the_failing_operation(tmp_path: Path) -> None:
    """Operations that raise, and ones whose flush fails (spoiling the transaction), fail alone."""
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    db.create_all()
    with db.write() as s:
        s.add(Reviewer(name="taken", role="reviewer", token_hash="taken", active=True, created_at=T0))

    def add(name: str) -> int:
        def op(s):  # noqa: ANN001, ANN202
            if name.endswith("dup"):  # a unique token hash that exists: the flush fails
                s.add(Reviewer(name=name, role="reviewer", token_hash="taken", active=True, created_at=T0))
                s.flush()
            if name.endswith("bad"):
                s.add(Reviewer(name=name, role="reviewer", token_hash=name, active=True, created_at=T0))
                if "0-bad" in name:  # written, then refused; the others are refused while still pending
                    s.flush()
                raise ValueError(f"{name} refused")
            r = Reviewer(name=name, role="reviewer", token_hash=name, active=True, created_at=T0)
            s.add(r)
            s.flush()
            return int(r.id)

        return db.submit_write(op).result(timeout=30)

    results: dict[str, object] = {}

    def worker(name: str) -> None:
        try:
            results[name] = add(name)
        except (ValueError, IntegrityError) as exc:
            results[name] = exc

    names = [f"r{i}" + ("-bad" if i % 5 == 0 else "-dup" if i % 7 == 3 else "") for i in range(40)]
    threads = [threading.Thread(target=worker, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with db.read() as s:
        stored = set(s.scalars(select(Reviewer.name)))
        assert s.scalar(select(func.count()).select_from(Reviewer)) == 1 + 40 - 8 - 5
    for name in names:
        if name.endswith("bad"):
            assert isinstance(results[name], ValueError) and name not in stored
        elif name.endswith("dup"):
            assert isinstance(results[name], IntegrityError) and name not in stored
        else:
            assert isinstance(results[name], int) and name in stored
    db.dispose()
