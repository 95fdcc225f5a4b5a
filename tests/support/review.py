"""Review-service test helpers: tiny run dirs built from synthetic logs, a fake clock, an app with people in
it (`make_env`), throwaway PostgreSQL databases. Fixtures that use them are in tests/review_api/conftest.py."""

from __future__ import annotations

import json
import socket
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fastapi.testclient import TestClient

from edgemine.contracts import SIGNAL_COLUMNS

ROOT = Path(__file__).resolve().parents[2]  # the repository
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

# majority's confidence on a run with the default taxonomy (11 answers), every reviewer taken as 0.8 accurate:
# right 0.8, each wrong answer 0.02 (mining.consensus.vote_posteriors)
UNANIMOUS_3 = 0.8**3 / (0.8**3 + 10 * 0.02**3)
SPLIT_2_1 = 0.8 * 0.8 * 0.02 / (0.8 * 0.8 * 0.02 + 0.02 * 0.02 * 0.8 + 9 * 0.02**3)


class FakeClock:
    """The service's clock in tests: starts at T0 and moves only when told."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_run_dir(
    out: Path, logs: Path, reference: Path, *, run_id: str, n: int = 24, bad_rows: int = 0, seed: int = 0
) -> Path:
    """A mining run dir as the mining step writes it: candidates.parquet (+ evidence, manifest columns) and run.json.

    Picks `n` frames of `logs`, rare ones first, with real PNG uris; `bad_rows` extra rows lack a uri.
    """
    out.mkdir(parents=True, exist_ok=True)
    man = pq.read_table(logs / "manifest.parquet")
    gt = pq.read_table(logs / "ground_truth.parquet")
    ref = pq.read_table(reference / "manifest.parquet")
    base = logs.resolve()
    gt_by_id = {r["frame_id"]: r for r in gt.to_pylist()}
    rows = man.to_pylist()
    rare = [r for r in rows if gt_by_id[r["frame_id"]]["is_rare"]]
    normal = [r for r in rows if not gt_by_id[r["frame_id"]]["is_rare"]]
    picked = (rare[seed::3] + normal[seed::7])[:n]
    by_drive: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_drive.setdefault(r["drive_id"], []).append(r)
    ref_rows = ref.to_pylist()
    cols: dict[str, list[Any]] = {k: [] for k in ["frame_id", "rank", "score", "reasons", "scenario_id", "event_id",
                                                  *SIGNAL_COLUMNS, "neighbor_ids", "neighbor_uris",
                                                  "neighbor_distances", "context_uris"]}
    meta_cols = [c for c in man.column_names if c != "frame_id"]
    for c in meta_cols:
        cols[c] = []
    for k, r in enumerate(picked):
        g = gt_by_id[r["frame_id"]]
        cols["frame_id"].append(r["frame_id"])
        cols["rank"].append(k + 1)
        cols["score"].append(1.0 - k / (2 * n))
        cols["reasons"].append([f"novelty p{99.9 - k / 10:.1f}", "entropy 1.2 nats"] if g["is_rare"] else
                               ["uncertainty p95.0"])
        cols["event_id"].append(g["event_id"])
        cols["scenario_id"].append(f"scn-{g['event_id'] or r['drive_id']}")
        for j, s in enumerate(SIGNAL_COLUMNS):
            cols[s].append(round(0.9 - 0.01 * k - 0.1 * j, 3))
        nbrs = ref_rows[(k * 5) % len(ref_rows):][:3]
        cols["neighbor_ids"].append([x["frame_id"] for x in nbrs])
        cols["neighbor_uris"].append([str(reference.resolve() / x["uri"]) for x in nbrs])
        cols["neighbor_distances"].append([0.5 + 0.1 * i for i in range(len(nbrs))])
        drive = by_drive[r["drive_id"]]
        i = r["frame_index"]
        cols["context_uris"].append([str(base / x["uri"]) for x in drive[max(0, i - 2):i + 3] if x is not r])
        for c in meta_cols:
            cols[c].append(str(base / r[c]) if c == "uri" else r[c])
    table = pa.table({k: pa.array(v, man.schema.field(k).type) if k in man.column_names else v
                      for k, v in cols.items()})
    if bad_rows:
        bad = table.slice(0, bad_rows)
        bad = bad.set_column(bad.column_names.index("frame_id"), "frame_id",
                             pc.binary_join_element_wise(bad.column("frame_id"), pa.scalar("-bad"), ""))
        bad = bad.set_column(bad.column_names.index("uri"), "uri", pa.nulls(bad_rows, pa.string()))
        table = pa.concat_tables([table, bad])
    pq.write_table(table, out / "candidates.parquet")
    (out / "run.json").write_text(json.dumps({"run_id": run_id, "encoder": "test", "budget": n}))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])



def fresh_postgres_db(server_url: str) -> str:
    """A new, empty database on the session's server; returns its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + f"/{name}"



# ---------------------------------------------------------------- an app with people in it
@dataclass
class ReviewEnv:
    client: TestClient
    clock: FakeClock
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def app_state(self) -> Any:
        return self.client.app.state.review  # type: ignore[attr-defined]

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def add(self, name: str, role: str = "reviewer") -> str:
        from edgemine.review_api import storage

        with self.app_state.db.write() as s:
            _, token = storage.create_reviewer(s, name=name, role=role, now=self.clock())
        self.tokens[name] = token
        return token

    def import_run(self, run_dir: Path, **policy: Any) -> dict[str, Any]:
        r = self.client.post("/runs/import", json={"run_dir": str(run_dir), **policy}, headers=self.auth("admin"))
        assert r.status_code in (200, 201), r.text
        return r.json()  # type: ignore[no-any-return]

    def next(self, name: str, **params: Any) -> dict[str, Any] | None:
        r = self.client.post("/queue/next", params=params, headers=self.auth(name))
        assert r.status_code in (200, 204), r.text
        return r.json() if r.status_code == 200 else None

    def decide(self, name: str, item_id: int, key: str | None = None, **body: Any) -> Any:
        headers = self.auth(name) | ({"Idempotency-Key": key} if key else {})
        return self.client.post(f"/items/{item_id}/decisions", json=body, headers=headers)


def make_env(url: str, tmp_path: Path, **settings: Any) -> ReviewEnv:
    from edgemine.review_api.app import create_app
    from edgemine.review_api.settings import load_settings

    clock = FakeClock()
    cfg = load_settings(database_url=url, thumbnail_dir=tmp_path / "thumbs", environment="test",
                        ds_refresh_seconds=0, **settings)
    env = ReviewEnv(TestClient(create_app(cfg, clock=clock)), clock)
    env.add("admin", "admin")
    env.add("lead", "lead")
    for name in ("ana", "ben", "cho"):
        env.add(name)
    return env




def env_on_both_stores() -> Any:
    """A module-level `env` fixture (assign it: `env = env_on_both_stores()`) that runs each test of the module
    on SQLite and on a real PostgreSQL (marked `postgres`), with the people of `make_env`."""
    import pytest

    @pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.integration])])
    def env(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
        url = (f"sqlite:///{tmp_path / 'review.db'}" if request.param == "sqlite"
               else fresh_postgres_db(request.getfixturevalue("postgres_url")))
        e = make_env(url, tmp_path)
        with e.client:
            yield e

    return env
