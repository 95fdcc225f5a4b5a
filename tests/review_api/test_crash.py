"""Crash test: many clients submit decisions, the server gets SIGKILL, restarts, and every 2xx is there."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from edgemine.review_api import storage
from edgemine.review_api.db import Database, Decision
from edgemine.review_api.importer import Policy, import_run
from edgemine.review_api.settings import load_settings

pytestmark = [pytest.mark.integration]

N_CLIENTS = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(db_url: str, port: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EDGEMINE_ENVIRONMENT": "test", "EDGEMINE_THUMBNAIL_DIR": str(tmp_path / "thumbs")}
    proc = subprocess.Popen([sys.executable, "-m", "edgemine", "serve", "--db", db_url, "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
    proc.kill()
    raise RuntimeError("server did not start in 60 s")


def test_sigkill_loses_no_acknowledged_decision(tmp_path: Path, run_dirs: dict[str, Path]) -> None:
    db_url = f"sqlite:///{tmp_path / 'review.db'}"
    settings = load_settings(database_url=db_url, environment="test")
    db = Database(db_url)
    db.create_all()
    # every item needs 3 reviews, so the 16 clients keep finding work for the whole test
    import_run(db, run_dirs["small"], policy=Policy.from_settings(settings, overlap_fraction=1.0, overlap_reviews=3))
    tokens = []
    with db.write() as s:
        for i in range(N_CLIENTS):
            _, token = storage.create_reviewer(s, name=f"r{i}", role="reviewer", now=datetime.now(UTC))
            tokens.append(token)
    db.dispose()

    port = _free_port()
    server = _start(db_url, port, tmp_path)
    acked: list[dict[str, Any]] = []  # decisions that got a 2xx
    in_flight: dict[int, dict[str, Any]] = {}  # client -> the request that was cut off by the kill
    lock = threading.Lock()
    stop = threading.Event()

    def client(i: int) -> None:
        headers = {"Authorization": f"Bearer {tokens[i]}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=5) as http:
            while not stop.is_set():
                try:
                    r = http.post("/queue/next")
                    if r.status_code == 204:
                        return
                    item = r.json()["item"]["id"]
                    body = {"verdict": "edge_case" if i % 2 else "not_edge_case", "seconds": 1.0}
                    if i % 2:
                        body["category"] = "debris"
                    req = {"item": item, "key": uuid.uuid4().hex, "body": body}
                    with lock:
                        in_flight[i] = req
                    d = http.post(f"/items/{item}/decisions", json=body, headers={"Idempotency-Key": req["key"]})
                    if d.status_code in (200, 201):
                        with lock:
                            acked.append({**req, "id": d.json()["id"]})
                            in_flight.pop(i, None)
                except (httpx.TransportError, ValueError, KeyError):
                    return  # the server is gone

    threads = [threading.Thread(target=client, args=(i,)) for i in range(N_CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 40 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(server.pid, signal.SIGKILL)  # mid-traffic, no shutdown hooks
    server.wait(10)
    stop.set()
    for t in threads:
        t.join(10)
    assert len(acked) >= 40, "the clients did not get going before the kill"

    # the store is intact and holds every acknowledged decision, as acknowledged
    with sqlite3.connect(tmp_path / "review.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    server = _start(db_url, port, tmp_path)
    try:
        db = Database(db_url)
        with db.read() as s:
            stored = {d.id: d for d in s.scalars(select(Decision))}
        assert [a["id"] for a in acked if a["id"] not in stored] == []
        for a in acked:
            d = stored[a["id"]]
            assert (d.item_id, d.idempotency_key, d.verdict) == (a["item"], a["key"], a["body"]["verdict"])
        # requests cut off by the kill are safe to retry with their key: recorded once, never twice
        for i, req in list(in_flight.items()):
            r = httpx.post(f"http://127.0.0.1:{port}/items/{req['item']}/decisions", json=req["body"],
                           headers={"Authorization": f"Bearer {tokens[i]}", "Idempotency-Key": req["key"]},
                           timeout=10)
            assert r.status_code in (200, 201), r.text
        with db.read() as s:
            rows = s.execute(select(Decision.item_id, Decision.reviewer_id, Decision.idempotency_key)).all()
        assert len({(r[0], r[1]) for r in rows}) == len(rows)  # nobody decided an item twice
        keys = Counter(r[2] for r in rows)
        assert all(keys[req["key"]] == 1 for req in in_flight.values())
        db.dispose()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)

