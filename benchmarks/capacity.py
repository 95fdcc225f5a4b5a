"""The capacity model for 100M frames a day (docs/CAPACITY.md), every number derived from a measurement.

    .venv/bin/python benchmarks/capacity.py            # measures what it needs, reads the fleet results, prints

Measured here, in this run (2 threads, this machine):
- FLOPs per frame of the baseline CNN (`edgemine.embeddings.baseline.BaselineCNN`, what `train-baseline` exports) at
  64 px (the benchmarks' size) and 224 px (a production input size), with torch's FlopCounterMode;
- its CPU forward throughput at 64 px (batch 256, 2 threads), i.e. the FLOP rate the CPU achieves;
- decode + resize of a 1280x720 camera JPEG to 224 px with Pillow, single thread (what each GPU worker's
  CPUs must keep up with).

Read from the fleet benchmarks' results under /tmp/edgemine-fleet (run them first):
- fleet_novelty.py: index bytes per vector (IVF-PQ) and kNN search throughput;
- spark_aggregation.py: warm rows/s/core at 10M rows;
- fleet_e2e.py: the 1M x 1M run with the default index (`--index auto`): the whole job's time.

Taken from other sections of docs/BENCHMARKS.md (constants below, each with its source): the embedding
pipeline's CPU cost per frame and the review service's server CPU per request.

Assumptions (stated, not measured: this machine has no GPU and no reviewers) are the ASSUME_* constants.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_common import WORK, load_avg, machine, write_json  # noqa: E402

FRAMES_PER_DAY = 100_000_000
# docs/BENCHMARKS.md "Embedding", quiet machine, default layout (19:45): 2,536 frames/s, 0.67 CPU ms/frame.
EMBED_PIPELINE_CPU_MS = 0.67
EMBED_PIPELINE_FPS_2CORES = 2_536
# docs/BENCHMARKS.md "Review service load": 1.14 ms server CPU per request (tight loop), 2 requests per
# decision (POST /queue/next, POST /items/{id}/decisions), 401 decisions/s from one uvicorn process.
REVIEW_SERVER_MS_PER_REQUEST = 1.14
REVIEW_DECISIONS_PER_S_ONE_PROCESS = 401
REVIEW_TRIPLE_SHARE = 0.20  # the benchmark's overlap policy: 20% of items get 3 blind reviews

ASSUME_GPU = "NVIDIA T4"
ASSUME_GPU_PEAK_TFLOPS = 65.0  # FP16 tensor-core peak (datasheet)
ASSUME_GPU_EFFICIENCY = 0.25  # fraction of peak a small CNN reaches under autocast with large batches
ASSUME_INPUT_PX = 224
ASSUME_BUDGET_RATE = 0.001  # candidates per frame: the e2e benchmark's budget (1,000 of 1M)
ASSUME_HUMAN_S_PER_REVIEW = 10.0  # a reviewer's time per item (look, decide, category)
ASSUME_REVIEWER_HOURS = 6.0  # productive reviewing hours per reviewer per day
ASSUME_AGG_WINDOW_H = 1.0  # the daily aggregation should finish within this
ASSUME_REFERENCE_FRAMES = 10_000_000  # known-data reference the novelty signal searches
ASSUME_RETENTION_DAYS = 30  # days of fleet frames kept indexed (rarity, "more like this")


def measure_model(threads: int = 2) -> dict[str, Any]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from edgemine.embeddings.baseline import BaselineCNN

    torch.set_num_threads(threads)
    model = BaselineCNN(5).eval()
    flops = {}
    for px in (64, ASSUME_INPUT_PX):
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model(torch.zeros(1, 3, px, px))
        flops[px] = int(fc.get_total_flops())
    x = torch.rand(256, 3, 64, 64)
    with torch.no_grad():
        for _ in range(3):
            model(x)
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < 10.0:
            model(x)
            n += len(x)
    fps = n / (time.perf_counter() - t)
    try:  # a production-size backbone for scale (architecture only: no weights are downloaded)
        from edgemine.embeddings.encoders.torchvision_encoder import import_torchvision

        big = import_torchvision().models.resnet50(weights=None).eval()
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            big(torch.zeros(1, 3, ASSUME_INPUT_PX, ASSUME_INPUT_PX))
        resnet50 = int(fc.get_total_flops())
    except ImportError:
        resnet50 = None
    return {"flops_per_frame": flops, "resnet50_flops_224": resnet50,
            "params": sum(p.numel() for p in model.parameters()),
            "cpu_fps_64px": round(fps), "cpu_threads": threads,
            "cpu_gflops_achieved": round(fps * flops[64] / 1e9, 1)}


def measure_decode(n: int = 200) -> dict[str, Any]:
    from PIL import Image

    rng = np.random.default_rng(0)
    h, w = 720, 1280
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 255 // (w + h))], axis=-1)
    img = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)  # gradients + sensor noise
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    t = time.process_time()
    for _ in range(n):
        im = Image.open(io.BytesIO(data))
        im.draft("RGB", (ASSUME_INPUT_PX * 2, ASSUME_INPUT_PX * 2))  # JPEG DCT scaling, as a decoder should
        np.asarray(im.convert("RGB").resize((ASSUME_INPUT_PX, ASSUME_INPUT_PX), Image.Resampling.BILINEAR))
    draft_ms = (time.process_time() - t) / n * 1000
    t = time.process_time()
    for _ in range(n):
        im = Image.open(io.BytesIO(data))
        np.asarray(im.convert("RGB").resize((ASSUME_INPUT_PX, ASSUME_INPUT_PX), Image.Resampling.BILINEAR))
    full_ms = (time.process_time() - t) / n * 1000
    return {"jpeg_bytes": len(data), "size": f"{w}x{h}", "cpu_ms_full_decode": round(full_ms, 2),
            "cpu_ms_draft_decode": round(draft_ms, 2)}


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--novelty", type=Path, default=None, help="fleet_novelty results.json")
    ap.add_argument("--agg", type=Path, default=None, help="spark_aggregation results.json")
    ap.add_argument("--e2e", type=Path, default=None, help="fleet_e2e results.json (default index)")
    ap.add_argument("--pq-config", default="ivf_pq_default", help="fleet_novelty config whose index size is used")
    ap.add_argument("--search-config", default="ivf_flat_default", help="fleet_novelty config whose speed is used")
    a = ap.parse_args()
    res: dict[str, Any] = {"machine": machine(), "load_avg_before": load_avg()}
    res["model"] = measure_model()
    res["decode"] = measure_decode()
    res["load_avg_after"] = load_avg()
    nov = _read(a.novelty or a.work / "novelty" / "1000000x1000000" / "results.json")
    agg = _read(a.agg or a.work / "agg" / "results.json")
    F = FRAMES_PER_DAY
    lines: list[str] = []

    def row(what: str, value: str, how: str) -> None:
        lines.append(f"| {what} | {value} | {how} |")

    # ---- embedding
    m, d = res["model"], res["decode"]
    flops = m["flops_per_frame"][ASSUME_INPUT_PX]
    gpu_rate = ASSUME_GPU_PEAK_TFLOPS * 1e12 * ASSUME_GPU_EFFICIENCY
    gpu_h = F * flops / gpu_rate / 3600
    row("Embed: model FLOPs/frame", f"{flops / 1e6:.0f} MFLOP at {ASSUME_INPUT_PX} px "
        f"({m['flops_per_frame'][64] / 1e6:.1f} at 64 px)", "FlopCounterMode on BaselineCNN")
    row("Embed: GPU-hours/day (compute)", f"**{gpu_h:.2f}**",
        f"{F:.0e} × {flops / 1e6:.0f} MFLOP / ({ASSUME_GPU_PEAK_TFLOPS:.0f} TFLOP/s × {ASSUME_GPU_EFFICIENCY}) / 3600")
    if m.get("resnet50_flops_224"):
        r50 = m["resnet50_flops_224"]
        row("Embed: GPU-hours/day with a ResNet-50-size backbone", f"**{F * r50 / gpu_rate / 3600:.1f}**",
            f"{r50 / 1e9:.1f} GFLOP/frame at {ASSUME_INPUT_PX} px (FlopCounterMode, resnet50), same GPU rate")
    dec_core_h = F * d["cpu_ms_draft_decode"] / 1000 / 3600
    row("Embed: decode core-hours/day", f"**{dec_core_h:,.0f}** ({dec_core_h / 24:,.0f} cores busy all day)",
        f"{F:.0e} × {d['cpu_ms_draft_decode']} ms (1280×720 JPEG → {ASSUME_INPUT_PX} px, measured) / 3.6e6")
    cpu_core_h = F * EMBED_PIPELINE_CPU_MS / 1000 / 3600
    row("Embed: CPU-only at 64 px (cross-check)", f"{cpu_core_h:,.0f} core-hours/day",
        f"{F:.0e} × {EMBED_PIPELINE_CPU_MS} ms/frame (embedding benchmark, Ray pipeline) / 3.6e6")
    res["embed"] = {"gpu_hours_per_day": gpu_h, "decode_core_hours_per_day": dec_core_h,
                    "cpu_core_hours_64px": cpu_core_h}
    # ---- index size
    if nov:
        by = {(r.get("config"), r.get("mode")): r for r in nov["results"] if not r.get("failed")}
        pq_r = by.get((a.pq_config, "project")) or by.get((a.pq_config, "raw"))
        if pq_r:
            bpv = pq_r["index_bytes"] / pq_r["reference"]
            pqm = pq_r.get("params", {}).get("pq_m") or 32
            code_only = pqm + 8
            for label, n in (("reference", ASSUME_REFERENCE_FRAMES), ("fleet, 1 day", F),
                             (f"fleet, {ASSUME_RETENTION_DAYS} days", F * ASSUME_RETENTION_DAYS)):
                row(f"Index size with PQ: {label} ({n:.0e} vectors)",
                    f"**{n * bpv / 1e9:,.1f} GB** ({n * code_only / 1e9:,.1f} GB codes + ids only)",
                    f"{bpv:.0f} B/vector measured ({pq_r['factory']}, recall@10 {pq_r.get('recall_at_10', 0):.3f});"
                    f" {pqm} B PQ code + 8 B id without the refine vectors")
            res["index"] = {"bytes_per_vector": bpv, "code_only_bytes": code_only}
        s_r = by.get((a.search_config, "raw"))
        p_r = by.get((a.search_config, "project"))
        if s_r and p_r:
            qps_core = p_r["queries"] / p_r["search_s"] / 2
            shards = ASSUME_REFERENCE_FRAMES / p_r["reference"]
            core_h = F * shards / qps_core / 3600
            row(f"Novelty kNN: core-hours/day vs a {ASSUME_REFERENCE_FRAMES:.0e} reference",
                f"**{core_h:,.0f}** ({core_h / 24:,.0f} cores)",
                f"{qps_core:,.0f} queries/s/core against 1M ({p_r['factory']}, project path, measured) × "
                f"{shards:.0f} shards of 1M (every query visits every shard)")
            res["novelty"] = {"qps_per_core_1m": qps_core, "core_hours_per_day": core_h}
    # ---- the whole mining job (fleet_e2e.py, default index)
    e2e = _read(a.e2e or a.work / "e2e" / "1000000x1000000-auto" / "results.json")
    if e2e and "timings" in e2e:
        secs, cores_used = e2e["timings"]["total"], e2e["machine"]["cpus"]
        jobs = F / e2e["frames"]
        core_h = jobs * secs * cores_used / 3600
        row(f"Mining (`edgemine mine`, {e2e['frames']:.0e}-frame jobs vs a {e2e['reference']:.0e} reference): "
            "core-hours/day", f"**{core_h:,.0f}** ({core_h / 24:,.1f} cores busy all day)",
            f"{jobs:.0f} jobs × {secs:.0f} s × {cores_used} cores (fleet_e2e.py, manifest → candidates, measured)")
        res["mining"] = {"core_hours_per_day": core_h, "job_s": secs}
    # ---- Spark
    if agg:
        sp = [r for r in agg["results"] if r.get("engine") == "spark"]
        big = max(sp, key=lambda r: r["rows"]) if sp else None
        if big:
            warm = big.get("warm_run_s") or big["run_s"]
            rate = big["rows"] / warm / big["cores"]
            cores = F / (rate * ASSUME_AGG_WINDOW_H * 3600)
            row("Spark aggregation: cores", f"**{cores:,.1f}** to finish in {ASSUME_AGG_WINDOW_H:.0f} h "
                f"({F / (rate * 86400):.2f} cores spread over the day)",
                f"{F:.0e} / ({rate:,.0f} rows/s/core at {big['rows']:,} rows, warm, measured × 3600)")
            res["spark"] = {"rows_per_s_core": rate, "cores_1h": cores}
    # ---- review
    items = F * ASSUME_BUDGET_RATE
    reviews = items * (1 + 2 * REVIEW_TRIPLE_SHARE)
    human_h = reviews * ASSUME_HUMAN_S_PER_REVIEW / 3600
    row("Review: items/day", f"{items:,.0f}", f"{F:.0e} × budget rate {ASSUME_BUDGET_RATE}")
    row("Review: reviews/day", f"{reviews:,.0f}", f"items × (1 + 2 × {REVIEW_TRIPLE_SHARE}) (20% get 3 reviews)")
    row("Review: reviewer-hours/day", f"**{human_h:,.0f}** ({human_h / ASSUME_REVIEWER_HOURS:,.0f} reviewers)",
        f"reviews × {ASSUME_HUMAN_S_PER_REVIEW:.0f} s / 3600; {ASSUME_REVIEWER_HOURS:.0f} productive h per reviewer")
    server_s = reviews * 2 * REVIEW_SERVER_MS_PER_REQUEST / 1000
    row("Review: service CPU", f"{server_s / 60:,.0f} CPU-min/day; peak need "
        f"{reviews / (8 * 3600):.1f} decisions/s vs {REVIEW_DECISIONS_PER_S_ONE_PROCESS} per process",
        f"reviews × 2 requests × {REVIEW_SERVER_MS_PER_REQUEST} ms (review benchmark); all reviews in 8 h")
    res["review"] = {"items": items, "reviews": reviews, "reviewer_hours": human_h, "server_cpu_s": server_s}
    print("| quantity | per day (100M frames) | derivation |\n|---|---|---|")
    print("\n".join(lines))
    print(f"\nmeasured here: {json.dumps({'model': m, 'decode': d})}")
    write_json(a.work / "capacity.json", {**res, "table": lines})
    return 0


if __name__ == "__main__":
    sys.exit(main())
