"""End to end at fleet scale: 1M frames with precomputed embeddings (D=128) against a 1M-frame reference.

    .venv/bin/python benchmarks/fleet_e2e.py                          # 1M x 1M, index config ivf_flat_4k
    .venv/bin/python benchmarks/fleet_e2e.py --index auto             # the spec's default index choice
    .venv/bin/python benchmarks/fleet_e2e.py --frames 100000 --reference 100000   # a quick small run

Goal (issue 7): manifest -> candidates in <= 10 min on this machine.

The product path is `edgemine mine JOB.yaml` as a child process (job spec written next to the run: the two
manifests, budget 1000, the index parameters of `--index`, everything else the defaults — novelty k=10,
rarity k=10 excluding the same drive, uncertainty from the manifest's `probs`, Fisher fusion, Spark
`local[*]`, k-center selection). The manifests carry embeddings, so the embed stage is skipped. The parent
samples the RSS of the whole process tree (Python + the Spark JVM) and reads the run's per-stage timings
from run.json.

The raw engine reference (`--raw`, on by default) runs in a second child: bare faiss on the same vectors as
numpy arrays (loaded from the same Parquet files, timed apart), doing the kNN work that dominates the run
with the same index parameters — build the reference index and the index over the fleet's frames, search
the fleet against the reference (k=10, novelty) and against itself (k=10+64, the first pass of the
rarity signal's other-drive search). No Arrow, no Parquet writes, no Spark.

Scratch under /tmp/edgemine-fleet/e2e/. Results: JSON there and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_common import WORK, fleet_manifest, load_avg, load_vectors, machine, run_measured, write_json  # noqa: E402
from fleet_novelty import CONFIGS, factory_string, raw_index  # noqa: E402

BUDGET = 1000
RARITY_MARGIN = 64  # mining.index.VectorIndex.search_other_groups' default margin


def job_yaml(*, frames: Path, reference: Path, out: Path, index: str) -> str:
    import yaml

    spec: dict[str, Any] = {"frames": str(frames), "reference": str(reference), "out": str(out), "budget": BUDGET}
    if index != "auto":
        spec["index"] = dict(CONFIGS[index])
    return yaml.safe_dump(spec, sort_keys=False)


def child_raw(a: argparse.Namespace) -> dict[str, Any]:

    from edgemine.mining.index import IndexParams

    t = time.perf_counter()
    xb = load_vectors(Path(a.ref))
    xq = load_vectors(Path(a.fleet))
    t_load = time.perf_counter() - t
    out: dict[str, Any] = {"mode": "raw", "index": a.index, "load_s": round(t_load, 1)}

    def build(x: np.ndarray) -> tuple[Any, IndexParams]:
        p = IndexParams(**(CONFIGS[a.index] if a.index != "auto" else {})).resolved(count=len(x), dim=x.shape[1])
        return raw_index(x, p), p

    t = time.perf_counter()
    ref_index, p = build(xb)
    out["reference_index_s"] = round(time.perf_counter() - t, 1)
    out["factory"] = factory_string(p)
    t = time.perf_counter()
    frames_index, _ = build(xq)
    out["frames_index_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    ref_index.search(xq, 10)
    out["novelty_search_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    frames_index.search(xq, 10 + RARITY_MARGIN)
    out["rarity_search_s"] = round(time.perf_counter() - t, 1)
    out["knn_total_s"] = round(sum(out[k] for k in ("reference_index_s", "frames_index_s", "novelty_search_s",
                                                     "rarity_search_s")), 1)
    return out


def candidate_quality(run: Path) -> dict[str, Any]:
    """How many candidates are ground-truth rare frames (synth-fleet's is_rare column, carried through)."""
    import pyarrow.parquet as pq

    c = pq.read_table(run / "candidates.parquet", columns=["frame_id", "event_id", "is_rare"])
    rare = np.asarray(c.column("is_rare").to_numpy(zero_copy_only=False), dtype=bool)
    return {"candidates": c.num_rows, "rare_candidates": int(rare.sum()),
            "precision": round(float(rare.mean()), 4) if c.num_rows else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--reference", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--index", default="ivf_flat_4k", help=f"auto (the spec default) or one of {', '.join(CONFIGS)}")
    ap.add_argument("--no-raw", dest="raw", action="store_false", help="skip the raw faiss reference")
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--child", choices=["raw"], help=argparse.SUPPRESS)
    ap.add_argument("--ref", help=argparse.SUPPRESS)
    ap.add_argument("--fleet", help=argparse.SUPPRESS)
    ap.add_argument("--out-json", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.index != "auto" and a.index not in CONFIGS:
        raise SystemExit(f"unknown --index {a.index!r}; use auto or one of {', '.join(CONFIGS)}")
    if a.child:
        write_json(Path(a.out_json), child_raw(a))
        return 0

    ref = fleet_manifest(frames=a.reference, reference=True, dim=a.dim, work=a.work)
    fleet = fleet_manifest(frames=a.frames, reference=False, dim=a.dim, work=a.work)
    base = a.work / "e2e" / f"{a.frames}x{a.reference}-{a.index}"
    base.mkdir(parents=True, exist_ok=True)
    run_dir = base / "run"
    job = base / "job.yaml"
    job.write_text(job_yaml(frames=fleet, reference=ref, out=run_dir, index=a.index))
    edgemine = Path(sys.executable).parent / "edgemine"
    result: dict[str, Any] = {"machine": machine(), "frames": a.frames, "reference": a.reference,
                              "index": a.index, "job": job.read_text()}
    print(f"[{time.strftime('%H:%M:%S')}] edgemine mine {job} (load {load_avg()})", flush=True)
    m = run_measured([str(edgemine), "mine", str(job)], log=base / "mine.log")
    result["mine"] = m
    if m["returncode"] == 0:
        info = json.loads((run_dir / "run.json").read_text())
        result["timings"] = info["timings"]
        result["counts"] = {k: info["counts"].get(k) for k in ("manifest_frames", "scored_frames", "high_frames",
                                                                  "events", "pool", "scenarios", "candidates")}
        result["reference_index_kind"] = info["reference_index"]["kind"]
        result["quality"] = candidate_quality(run_dir)
        print(json.dumps({k: result[k] for k in ("timings", "counts", "quality")}), flush=True)
    else:
        print(f"  FAILED rc={m['returncode']}: see {base / 'mine.log'}", flush=True)
    print(f"  wall {m['wall_s']} s, peak RSS {m['peak_rss_gib']} GiB (largest process "
          f"{m['peak_single_process_gib']} GiB, {m['peak_processes']} processes)", flush=True)
    write_json(base / "results.json", result)
    if a.raw:
        print(f"[{time.strftime('%H:%M:%S')}] raw faiss reference (load {load_avg()})", flush=True)
        js = base / "raw.json"
        me = [sys.executable, str(Path(__file__).resolve())]
        r = run_measured([*me, "--child", "raw", "--ref", str(ref), "--fleet", str(fleet), "--index", a.index,
                          "--out-json", str(js)], log=base / "raw.log")
        result["raw"] = {**json.loads(js.read_text()), **r} if r["returncode"] == 0 else r
        print(json.dumps({k: v for k, v in result["raw"].items() if k != "cmd"}), flush=True)
        write_json(base / "results.json", result)
    if "timings" in result:
        print("\n| stage | edgemine mine s | raw faiss s |\n|---|---:|---:|")
        raw = result.get("raw", {})
        pairs = {"reference_index": "reference_index_s", "frames_index": "frames_index_s", "score": None}
        for stage, secs in result["timings"].items():
            rk = pairs.get(stage)
            rv = raw.get(rk) if rk else (
                round(raw["novelty_search_s"] + raw["rarity_search_s"], 1) if stage == "score" and raw.get(
                    "novelty_search_s") is not None else None)
            print(f"| {stage} | {secs:.1f} | {'' if rv is None else rv} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
