"""Novelty search at fleet scale: 1M fleet frames x 1M reference frames (D=128), k=10.

    .venv/bin/python benchmarks/fleet_novelty.py                       # every config below, 1M x 1M
    .venv/bin/python benchmarks/fleet_novelty.py --frames 100000 --configs ivf_flat   # a quick small run
    .venv/bin/python benchmarks/fleet_novelty.py --configs ivf_flat,ivf_pq --modes project,raw

Goals (issue 7): build + search <= 3 min, recall@10 >= 0.95 against exact search on a 10k query sample,
peak RSS <= 4 GB.

Each (config, mode) runs in its own child process; the parent samples the child's process tree RSS
(Python plus any Ray processes) and records the load average around it. Modes:

- `project`: what `edgemine mine` does for novelty — `edgemine.mining.index.build_index` over streamed (ids, vectors)
  batches of the reference manifest (`edgemine.vectors.list_matrix` checks each batch as the run does), then
  `VectorIndex.search(x, 10)` over streamed 16,384-row batches of the fleet manifest (the run's
  `score_batch_rows`). Only the 10k sample's neighbours are kept, to score recall.
- `raw`: bare faiss on the same vectors as two numpy arrays already in memory (loading them is timed
  apart): the same factory string, training sample and search parameters, one `search` call over all
  queries. The reference ratio for the project path.
- `sharded`: `edgemine.mining.sharded_index.ShardedIndex` over `--shards` Ray actors (each builds its own index of
  the same kind over its slice), `search_batches` fanned out and merged. Ray's start is timed apart.
- `exact` (run once, cached): `IndexFlatL2` ground truth for the 10k sample.

Data: `edgemine synth-fleet` manifests (jobs/synth/fleet.py), generated once under /tmp/edgemine-fleet.
Results: JSON under /tmp/edgemine-fleet/novelty/, and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_common import (  # noqa: E402
    WORK,
    fleet_manifest,
    iter_vectors,
    load_avg,
    load_vectors,
    machine,
    recall_at_k,
    run_measured,
    write_json,
)

K = 10
SAMPLE = 10_000
QUERY_BATCH = 16_384  # MineSpec.score_batch_rows

# Index parameters tried (mining.index.IndexParams fields). `hnsw` is what `index.kind: auto` picks above
# 200k reference frames today; the IVF rows are the alternatives measured against the goals.
CONFIGS: dict[str, dict[str, Any]] = {
    "hnsw": {"kind": "hnsw"},  # M=32, efConstruction=200, efSearch=256 (the spec's defaults)
    "hnsw_fast": {"kind": "hnsw", "hnsw_m": 16, "ef_construction": 40, "ef_search": 64},
    "ivf_flat": {"kind": "ivf_flat", "nlist": 1024, "nprobe": 6},
    "ivf_flat_4k": {"kind": "ivf_flat", "nlist": 4096, "nprobe": 16},
    "ivf_flat_default": {"kind": "ivf_flat"},  # nlist ~4*sqrt(n) = 4000, nprobe 32
    "ivf_pq": {"kind": "ivf_pq", "nlist": 1024, "nprobe": 6, "pq_m": 32, "refine": "sq8", "k_factor": 4},
    "ivf_pq_default": {"kind": "ivf_pq"},  # nlist 4000, nprobe 32, PQ64x8 + SQ8 refine, k_factor 4
    "ivf_pq_4k": {"kind": "ivf_pq", "nlist": 4096, "nprobe": 16, "pq_m": 64, "refine": "sq8", "k_factor": 8},
}
DEFAULT_CONFIGS = "ivf_flat,ivf_flat_4k,ivf_pq,ivf_pq_default,ivf_pq_4k,hnsw_fast,hnsw"


def _params(name: str) -> Any:
    from edgemine.mining.index import IndexParams

    return IndexParams(**CONFIGS[name])


def factory_string(p: Any) -> str:
    """The faiss factory string for resolved IndexParams (what mining.index builds)."""
    if p.kind == "ivf_flat":
        return f"IVF{p.nlist},Flat"
    if p.kind == "ivf_pq":
        refine = {"none": "", "sq8": ",Refine(SQ8)", "flat": ",RFlat"}[p.refine]
        return f"IVF{p.nlist},PQ{p.pq_m}x{p.pq_nbits}{refine}"
    if p.kind == "hnsw":
        return f"HNSW{p.hnsw_m},Flat"
    return "Flat"


def raw_index(x: np.ndarray, p: Any) -> Any:
    """Bare faiss doing what `edgemine.mining.index.build_index` does for resolved IndexParams `p`, over a matrix
    already in memory: same factory string, training sample and search parameters."""
    import faiss

    index: Any = faiss.index_factory(x.shape[1], factory_string(p), faiss.METRIC_L2)
    if p.kind == "hnsw":
        index.hnsw.efConstruction = p.ef_construction
    if p.kind in ("ivf_flat", "ivf_pq"):
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.seed = p.seed
        if p.kind == "ivf_pq":
            pq_ivf: Any = faiss.downcast_index(ivf)
            pq_ivf.do_polysemous_training = False
        # build_index trains on a sample of the first whole batches that reach train_size rows: the same here
        head = x[: -(-p.train_size // QUERY_BATCH) * QUERY_BATCH]
        rng = np.random.default_rng(p.seed)
        km_n = min(len(head), p.train_size)
        index.train(head[rng.choice(len(head), km_n, replace=False)] if km_n < len(head) else head)
    index.add(x)
    if p.kind in ("ivf_flat", "ivf_pq"):
        faiss.extract_index_ivf(index).nprobe = min(p.nprobe, p.nlist or p.nprobe)
        if p.kind == "ivf_pq" and p.refine != "none":
            index.k_factor = float(p.k_factor)
    elif p.kind == "hnsw":
        index.hnsw.efSearch = p.ef_search
    return index


def sample_rows(n: int, seed: int = 0) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, min(SAMPLE, n), replace=False))


def index_bytes(index: Any, scratch: Path) -> int:
    """Size of the index as `faiss.write_index` stores it (written to disk, not serialised in memory, so the
    measurement does not add a copy of the index to the peak RSS)."""
    import faiss

    faiss.write_index(index, str(scratch))
    try:
        return scratch.stat().st_size
    finally:
        scratch.unlink()


# ------------------------------------------------------------------ children
def child_exact(a: argparse.Namespace) -> dict[str, Any]:
    import faiss

    ref, fleet = Path(a.ref), Path(a.fleet)
    t = time.perf_counter()
    flat = faiss.IndexFlatL2(a.dim)
    for v in iter_vectors(ref):
        flat.add(v)
    import pyarrow.dataset as ds

    rows = sample_rows(ds.dataset(str(fleet), format="parquet").count_rows())
    q = np.empty((len(rows), a.dim), np.float32)
    seen = 0
    for v in iter_vectors(fleet):
        sel = rows[(rows >= seen) & (rows < seen + len(v))]
        q[np.searchsorted(rows, sel)] = v[sel - seen]
        seen += len(v)
    t_load = time.perf_counter() - t
    t = time.perf_counter()
    _, ids = flat.search(q, K)
    t_search = time.perf_counter() - t
    np.save(a.out_ids, ids)
    return {"mode": "exact", "load_s": round(t_load, 1), "search_s": round(t_search, 1), "queries": len(rows)}


def child_project(a: argparse.Namespace) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.dataset as ds

    from edgemine.mining.index import build_index
    from edgemine.vectors import list_matrix

    p = _params(a.config)
    ref, fleet = Path(a.ref), Path(a.fleet)
    count = ds.dataset(str(ref), format="parquet").count_rows()

    def ref_batches() -> Any:
        for b in ds.dataset(str(ref), format="parquet").to_batches(columns=["frame_id", "embedding"],
                                                                      batch_size=QUERY_BATCH):
            m = list_matrix(b.column(1), name="embedding", frame_ids=b.column(0), dim=a.dim)
            yield pa.table({"frame_id": b.column(0)}).filter(pa.array(m.usable)), m.values[m.usable]

    t = time.perf_counter()
    idx = build_index(ref_batches(), count=count, dim=a.dim, encoder="manifest", params=p)
    t_build = time.perf_counter() - t
    rows = sample_rows(ds.dataset(str(fleet), format="parquet").count_rows())
    found = np.full((len(rows), K), -1, np.int64)
    t = time.perf_counter()
    seen, n_q = 0, 0
    for b in ds.dataset(str(fleet), format="parquet").to_batches(columns=["frame_id", "embedding"],
                                                                    batch_size=QUERY_BATCH):
        m = list_matrix(b.column(1), name="embedding", frame_ids=b.column(0), dim=a.dim)
        _, ids = idx.search(m.values[m.usable], K)
        sel = rows[(rows >= seen) & (rows < seen + b.num_rows)]
        found[np.searchsorted(rows, sel)] = ids[sel - seen]
        seen += b.num_rows
        n_q += int(m.usable.sum())
    t_search = time.perf_counter() - t
    np.save(a.out_ids, found)
    return {"mode": "project", "config": a.config, "factory": factory_string(idx._params),
            "params": asdict(idx._params), "build_s": round(t_build, 1), "search_s": round(t_search, 1),
            "queries": n_q, "reference": idx.count, "index_bytes": index_bytes(idx.index, Path(a.out_ids + ".faiss"))}


def child_raw(a: argparse.Namespace) -> dict[str, Any]:

    t = time.perf_counter()
    xb = load_vectors(Path(a.ref))
    xq = load_vectors(Path(a.fleet))
    t_load = time.perf_counter() - t
    p = _params(a.config).resolved(count=len(xb), dim=xb.shape[1])
    t = time.perf_counter()
    index = raw_index(xb, p)
    t_build = time.perf_counter() - t
    t = time.perf_counter()
    _, ids = index.search(xq, K)
    t_search = time.perf_counter() - t
    np.save(a.out_ids, ids[sample_rows(len(xq))])
    return {"mode": "raw", "config": a.config, "factory": factory_string(p), "load_s": round(t_load, 1),
            "build_s": round(t_build, 1), "search_s": round(t_search, 1), "queries": len(xq),
            "reference": int(index.ntotal), "index_bytes": index_bytes(index, Path(a.out_ids + ".faiss"))}


def child_sharded(a: argparse.Namespace) -> dict[str, Any]:
    import pyarrow.dataset as ds
    import ray

    from edgemine.mining.sharded_index import ShardedIndex

    p = _params(a.config)
    ref, fleet = Path(a.ref), Path(a.fleet)
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    t_ray = time.perf_counter() - t
    count = ds.dataset(str(ref), format="parquet").count_rows()
    t = time.perf_counter()
    idx = ShardedIndex.build(iter_vectors(ref, ids=True, batch_rows=QUERY_BATCH), count=count, dim=a.dim,
                             encoder="manifest", shards=a.shards, params=p)
    t_build = time.perf_counter() - t
    n = ds.dataset(str(fleet), format="parquet").count_rows()
    rows = sample_rows(n)
    found = np.full((len(rows), K), -1, np.int64)
    t = time.perf_counter()
    seen = 0
    for _, ids in idx.search_batches(iter_vectors(fleet, batch_rows=QUERY_BATCH), K):
        sel = rows[(rows >= seen) & (rows < seen + len(ids))]
        found[np.searchsorted(rows, sel)] = ids[sel - seen]
        seen += len(ids)
    t_search = time.perf_counter() - t
    np.save(a.out_ids, found)
    kinds = sorted({i["kind"] for i in idx.infos})
    idx.shutdown()
    ray.shutdown()
    return {"mode": "sharded", "config": a.config, "shards": a.shards, "shard_kinds": kinds,
            "ray_start_s": round(t_ray, 1), "build_s": round(t_build, 1), "search_s": round(t_search, 1),
            "queries": seen, "reference": count}


CHILDREN = {"exact": child_exact, "project": child_project, "raw": child_raw, "sharded": child_sharded}


# ------------------------------------------------------------------ parent
def fmt_row(r: dict[str, Any]) -> str:
    total = r.get("build_s", 0) + r.get("search_s", 0)
    size = f"{r['index_bytes'] / r['reference']:.0f}" if r.get("index_bytes") else "—"
    load = f"{r['load_avg_before'][0]:.1f} → {r['load_avg_after'][0]:.1f}"
    mode = r["mode"] + (f" ({r['shards']} shards)" if r["mode"] == "sharded" else "")
    extra = f" (+{r['load_s']:.0f} s load)" if r.get("load_s") else (
        f" (+{r['ray_start_s']:.0f} s Ray start)" if r.get("ray_start_s") else "")
    return (f"| {r['config']} | {mode} | `{r.get('factory', '—')}` | {r['build_s']:.0f} | {r['search_s']:.0f} | "
            f"**{total:.0f}**{extra} | {r['recall_at_10']:.3f} | {r['peak_rss_gib']:.2f} | {size} | {load} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1_000_000, help="fleet frames (queries)")
    ap.add_argument("--reference", type=int, default=1_000_000, help="reference frames (indexed)")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma-separated, from {', '.join(CONFIGS)}")
    ap.add_argument("--modes", default="project,raw", help="comma-separated: project, raw, sharded")
    ap.add_argument("--sharded-configs", default="ivf_flat", help="configs also run in sharded mode")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--work", type=Path, default=WORK)
    # child mode (internal)
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--ref", help=argparse.SUPPRESS)
    ap.add_argument("--fleet", help=argparse.SUPPRESS)
    ap.add_argument("--out-ids", help=argparse.SUPPRESS)
    ap.add_argument("--out-json", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        res = CHILDREN[a.child](a)
        write_json(Path(a.out_json), res)
        return 0

    for c in a.configs.split(","):
        if c not in CONFIGS:
            raise SystemExit(f"unknown config {c!r}; known: {', '.join(CONFIGS)}")
    ref = fleet_manifest(frames=a.reference, reference=True, dim=a.dim, work=a.work)
    fleet = fleet_manifest(frames=a.frames, reference=False, dim=a.dim, work=a.work)
    out = a.work / "novelty" / f"{a.frames}x{a.reference}"
    out.mkdir(parents=True, exist_ok=True)
    common = ["--ref", str(ref), "--fleet", str(fleet), "--dim", str(a.dim), "--shards", str(a.shards)]
    me = [sys.executable, str(Path(__file__).resolve())]

    def child(mode: str, config: str | None) -> dict[str, Any]:
        tag = f"{mode}-{config}" if config else mode
        ids, js = out / f"{tag}.npy", out / f"{tag}.json"
        cmd = [*me, "--child", mode, *common, "--out-ids", str(ids), "--out-json", str(js)]
        if config:
            cmd += ["--config", config]
        print(f"[{time.strftime('%H:%M:%S')}] {tag} (load {load_avg()})", flush=True)
        m = run_measured(cmd, log=out / f"{tag}.log")
        if m["returncode"] != 0:
            print(f"  FAILED rc={m['returncode']}, see {out / f'{tag}.log'}", flush=True)
            return {"mode": mode, "config": config, "failed": True, **m}
        res = {**json.loads(js.read_text()), **m}
        print(f"  {json.dumps({k: v for k, v in res.items() if k not in ('cmd', 'params')})}", flush=True)
        return res

    exact_ids = out / "exact.npy"
    # results accumulate over invocations: a (mode, config) measured again replaces its earlier row
    prev = out / "results.json"
    results: list[dict[str, Any]] = json.loads(prev.read_text())["results"] if prev.exists() else []

    def keep(r: dict[str, Any]) -> None:
        results[:] = [x for x in results if (x["mode"], x.get("config")) != (r["mode"], r.get("config"))] + [r]

    if not exact_ids.exists():
        keep(child("exact", None))
    exact = np.load(exact_ids)
    modes = a.modes.split(",")
    sharded_cfgs = set(a.sharded_configs.split(","))
    for config in a.configs.split(","):
        for mode in modes:
            if mode == "sharded" and config not in sharded_cfgs:
                continue
            r = child(mode, config)
            if not r.get("failed"):
                r["recall_at_10"] = recall_at_k(np.load(out / f"{mode}-{config}.npy"), exact)
                print(f"  recall@10 {r['recall_at_10']:.4f}", flush=True)
            keep(r)
            write_json(out / "results.json", {"machine": machine(), "frames": a.frames, "reference": a.reference,
                                              "results": results})
    print("\n| config | path | faiss index | build s | search s | total s | recall@10 | peak RSS GiB | "
          "index B/vector | load avg |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        if r["mode"] != "exact" and not r.get("failed"):
            print(fmt_row(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
