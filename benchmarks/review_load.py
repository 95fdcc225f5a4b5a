"""Review service under load: N reviewer clients loop next -> decide against a store of many candidates.

    .venv/bin/python benchmarks/review_load.py                      # 1M candidates, 32 clients, 30 s, SQLite
    .venv/bin/python benchmarks/review_load.py --candidates 20000 --duration 5     # a quick check
    .venv/bin/python benchmarks/review_load.py --db postgresql://edgemine@127.0.0.1:54329/edgemine

What it does:
1. writes a run dir with `--candidates` rows of candidates.parquet (generated directly, no images) and
   imports it through the real importer (cached in --work between runs: the import is timed once);
2. adds one reviewer per client and starts `edgemine serve` (uvicorn) in its own process;
3. each client, in one asyncio process with a minimal keep-alive HTTP/1.1 client (so the load generator
   stays cheap next to the server on a small machine), loops POST /queue/next -> POST
   /items/{id}/decisions with an Idempotency-Key, optionally thinking `--think-ms` between requests;
4. after `--warmup` seconds it records every request's latency for `--duration` seconds and prints
   p50/p90/p99/max per request kind and overall, and throughput; JSON with the machine's conditions
   goes to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CATEGORIES = ["construction_zone", "animal_on_road", "debris", "emergency_vehicle", "other"]


def write_run(run_dir: Path, n: int, *, run_id: str, seed: int = 0, batch: int = 100_000) -> None:
    """candidates.parquet with the contract's columns and plausible values; uris point nowhere (no images)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tmp = run_dir / "candidates.parquet.tmp"
    writer: pq.ParquetWriter | None = None
    base_us = 1_767_225_600_000_000
    for start in range(0, n, batch):
        k = min(batch, n - start)
        idx = np.arange(start, start + k)
        drive = idx // 3000
        scores = rng.random((k, 4)).astype(np.float32)
        table = pa.table({
            "frame_id": pa.array([f"bench-{i:08d}" for i in idx]),
            "rank": pa.array(idx + 1, pa.int32()),
            "score": pa.array(1.0 - idx / n, pa.float32()),
            "reasons": pa.array([[f"novelty p{99 + s[0]:.2f}", f"entropy {2 * s[1]:.2f} nats"] for s in scores]),
            "scenario_id": pa.array([f"scn-{i // 12:07d}" for i in idx]),
            "event_id": pa.array([f"evt-{i // 30:07d}" for i in idx]),
            "novelty": scores[:, 0], "uncertainty": scores[:, 1], "rarity": scores[:, 2], "trigger": scores[:, 3],
            "neighbor_ids": pa.array([[f"ref-{(i * 7 + j) % 50000:06d}" for j in range(3)] for i in idx]),
            "neighbor_uris": pa.array([[f"/nonexistent/ref/{(i * 7 + j) % 50000:06d}.png" for j in range(3)]
                                       for i in idx]),
            "neighbor_distances": pa.array([[0.4 + 0.1 * j for j in range(3)] for _ in idx], pa.list_(pa.float32())),
            "context_uris": pa.array([[f"/nonexistent/drv/{d}/{(i + j) % 3000:05d}.png" for j in (-2, -1, 1, 2)]
                                      for i, d in zip(idx, drive, strict=True)]),
            "uri": pa.array([f"/nonexistent/drv/{d}/{i % 3000:05d}.png" for i, d in zip(idx, drive, strict=True)]),
            "drive_id": pa.array([f"drv-{d:05d}" for d in drive]),
            "timestamp": pa.array(base_us + idx * 100_000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "label": pa.array(rng.choice(["car", "truck", "pedestrian", "cyclist"], k)),
            "weather": pa.array(rng.choice(["clear", "rain", "fog"], k)),
            "speed_mps": pa.array(rng.random(k).astype(np.float32) * 30),
            "camera": pa.array(["front"] * k),
        })
        if writer is None:
            writer = pq.ParquetWriter(tmp, table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()
    os.replace(tmp, run_dir / "candidates.parquet")
    (run_dir / "run.json").write_text(json.dumps({"run_id": run_id, "budget": n, "generator": "review_load"}))


def prepare(work: Path, db_url: str, n: int, clients: int) -> dict[str, Any]:
    from edgemine.review_api import storage
    from edgemine.review_api.db import Database, Run
    from edgemine.review_api.importer import Policy, import_run
    from edgemine.review_api.settings import load_settings

    run_id = f"bench-{n}"
    run_dir = work / f"run-{n}"
    if not (run_dir / "candidates.parquet").exists():
        t = time.perf_counter()
        write_run(run_dir, n, run_id=run_id)
        print(f"wrote {n} candidates in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    settings = load_settings(database_url=db_url)
    db = Database(settings.database_url)
    db.create_all()
    info: dict[str, Any] = {"run_id": run_id}
    with db.read() as s:
        run = s.get(Run, run_id)
        done = run is not None and run.active
    if not done:
        t = time.perf_counter()
        report = import_run(db, run_dir, policy=Policy.from_settings(settings))
        secs = time.perf_counter() - t
        info.update(import_seconds=round(secs, 1), import_rows_per_second=round(report.inserted / secs),
                    imported=report.inserted, overlap_items=report.overlap)
        print(f"imported {report.inserted} candidates in {secs:.1f}s ({report.inserted / secs:.0f}/s)",
              file=sys.stderr)
    tokens = []
    stamp = uuid.uuid4().hex[:6]
    with db.write() as s:
        for i in range(clients):
            _, token = storage.create_reviewer(s, name=f"bench-{stamp}-{i}", role="reviewer", now=datetime.now(UTC))
            tokens.append(token)
        _, info["lead_token"] = storage.create_reviewer(s, name=f"bench-{stamp}-lead", role="lead",
                                                        now=datetime.now(UTC))
    with db.read() as s:
        from sqlalchemy import func, select

        from edgemine.review_api.db import Decision, Item

        info["items_in_store"] = s.scalar(select(func.count()).select_from(Item))
        info["decisions_before"] = s.scalar(select(func.count()).select_from(Decision))
    db.dispose()
    info["tokens"] = tokens
    return info


# ------------------------------------------------------------------ a minimal keep-alive HTTP/1.1 client
class Conn:
    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {token}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, body: bytes = b"", headers: str = "") -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.auth}{headers}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        data = await self.reader.readexactly(length) if length else b""
        return status, data


async def client(conn: Conn, i: int, stop_at: float, record_from: float, think: float,
                 samples: dict[str, list[float]], counts: dict[str, int]) -> None:
    await conn.open()
    body_edge = json.dumps({"verdict": "edge_case", "category": CATEGORIES[i % len(CATEGORIES)], "seconds": 3.0})
    body_not = json.dumps({"verdict": "not_edge_case", "seconds": 2.0})
    k = 0
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        status, data = await conn.request("POST", "/queue/next")
        t1 = time.perf_counter()
        counts["requests"] += 1
        if t0 >= record_from:
            samples["next"].append(t1 - t0)
        if status == 204:
            counts["empty"] += 1
            break
        if status != 200:
            counts[f"next_{status}"] = counts.get(f"next_{status}", 0) + 1
            continue
        item = json.loads(data)["item"]["id"]
        if think:
            await asyncio.sleep(think)
        k += 1
        body = (body_edge if k % 10 == 0 else body_not).encode()
        t2 = time.perf_counter()
        status, _ = await conn.request("POST", f"/items/{item}/decisions", body,
                                       f"Idempotency-Key: {uuid.uuid4().hex}\r\n")
        t3 = time.perf_counter()
        counts["requests"] += 1
        if t2 >= record_from:
            samples["decide"].append(t3 - t2)
            counts["loops"] += 1
        if status not in (200, 201):
            counts[f"decide_{status}"] = counts.get(f"decide_{status}", 0) + 1
        if think:
            await asyncio.sleep(think)


async def load(port: int, tokens: list[str], *, duration: float, warmup: float, think: float) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"next": [], "decide": []}
    counts: dict[str, int] = {"loops": 0, "empty": 0, "requests": 0}
    start = time.perf_counter()
    record_from = start + warmup
    stop_at = record_from + duration
    conns = [Conn("127.0.0.1", port, t) for t in tokens]
    await asyncio.gather(*(client(c, i, stop_at, record_from, think, samples, counts) for i, c in enumerate(conns)))
    elapsed = min(time.perf_counter(), stop_at) - record_from

    def stats(xs: list[float]) -> dict[str, float]:
        if not xs:
            return {}
        a = np.array(xs) * 1000
        return {"n": int(a.size), "p50_ms": round(float(np.percentile(a, 50)), 2),
                "p90_ms": round(float(np.percentile(a, 90)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2),
                "max_ms": round(float(a.max()), 2), "mean_ms": round(float(a.mean()), 2)}

    return {
        "next": stats(samples["next"]),
        "decide": stats(samples["decide"]),
        "all": stats(samples["next"] + samples["decide"]),
        "loops_per_second": round(counts["loops"] / elapsed, 1),
        "requests_per_second": round((len(samples["next"]) + len(samples["decide"])) / elapsed, 1),
        "errors": {k: v for k, v in counts.items() if k not in ("loops", "requests", "empty")},
        "queue_ran_dry": counts["empty"] > 0,
        "total_requests": counts["requests"],
        "measured_seconds": round(elapsed, 1),
    }


def server_side_latency(port: int, token: str, before: dict[str, list[float]]) -> dict[str, Any]:
    """Latency inside the server (Prometheus histogram, request in -> response out) during the run.

    The difference to the client's figures is time spent in sockets and waiting for a CPU.
    """
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"})
    text = urllib.request.urlopen(req, timeout=30).read().decode()
    out: dict[str, Any] = {}
    now = _buckets(text)
    for route, counts in now.items():
        prev = before.get(route, [0.0] * len(counts))
        diff = [(le, c - p) for (le, c), p in zip(counts, [x for _, x in prev] if prev and isinstance(prev[0], tuple)
                                                   else prev, strict=True)]
        total = diff[-1][1]
        if total <= 0:
            continue
        def quantile(q: float, diff=diff, total=total) -> str:  # noqa: ANN001 - bound per route
            for le, c in diff:
                if c >= q * total:
                    return f"<= {le * 1000:g} ms" if le != float("inf") else "> 5 s"
            return "?"
        out[route] = {"n": int(total), "p50": quantile(0.5), "p99": quantile(0.99)}
    return out


def _buckets(text: str) -> dict[str, list[tuple[float, float]]]:
    import re

    found: dict[str, list[tuple[float, float]]] = {}
    for m in re.finditer(r'edgemine_review_http_request_seconds_bucket\{le="([^"]+)",route="([^"]+)"\} (\S+)', text):
        le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
        found.setdefault(m.group(2), []).append((le, float(m.group(3))))
    return {k: sorted(v) for k, v in found.items() if k in ("/queue/next", "/items/{item_id}/decisions")}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc): a figure that other load on the machine barely moves."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=30.0, help="Measured seconds.")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--think-ms", type=float, default=0.0, help="Pause between requests (0: a tight loop).")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgemine-bench/review"))
    ap.add_argument("--db", default=None, help="Store URL (default: a SQLite file in --work).")
    ap.add_argument("--out", type=Path, default=None, help="Write the JSON result here too.")
    args = ap.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    db_url = args.db or f"sqlite:///{args.work / f'review-{args.candidates}.db'}"
    info = prepare(args.work, db_url, args.candidates, args.clients)
    tokens = info.pop("tokens")
    port = free_port()
    env = {**os.environ, "EDGEMINE_ENVIRONMENT": "test", "EDGEMINE_THUMBNAIL_DIR": str(args.work / "thumbs")}
    server = subprocess.Popen([sys.executable, "-m", "edgemine", "serve", "--db", db_url, "--port", str(port)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.1)
        lead = info.pop("lead_token")
        load_before = os.getloadavg()
        cpu_before = cpu_seconds(server.pid)
        result = asyncio.run(load(port, tokens, duration=args.duration, warmup=args.warmup,
                                  think=args.think_ms / 1000))
        cpu_used = cpu_seconds(server.pid) - cpu_before
        load_after = os.getloadavg()
        result["server_cpu_ms_per_request"] = round(1000 * cpu_used / max(1, result["total_requests"]), 3)
        result["server_side"] = server_side_latency(port, lead, {})  # whole run, warm-up included
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    out = {
        "benchmark": "review_load",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "store": db_url.split("://")[0],
        "candidates": args.candidates,
        "clients": args.clients,
        "think_ms": args.think_ms,
        **info,
        **result,
        "conditions": {
            "cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in load_after], "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "server": "uvicorn, 1 process (uvloop, httptools)",
            "client": "one asyncio process on the same machine",
        },
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
