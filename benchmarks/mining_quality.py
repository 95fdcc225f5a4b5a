"""Mining quality on synthetic drive logs with ground truth: event recall, frame precision, category coverage.

    .venv/bin/python benchmarks/mining_quality.py            # 50k fleet frames, 0.5% rare, budget 1%, 30k reference
    .venv/bin/python benchmarks/mining_quality.py --quick    # a ~6k-frame smoke run of the same steps

Steps (each cached under --work, so a re-run only redoes what changed):
1. `edgemine.jobs.synth.generate`: the fleet (`--drives` x `--frames-per-drive`, `--rare-rate`, `--seed`) and known
   reference drives (`--ref-drives`, no rare events, another seed);
2. the baseline model: `edgemine.embeddings.baseline.train_classifier` on the reference's labels (what
   `edgemine train-baseline` runs); its logits give the uncertainty signal;
3. for each `--encoders` variant (`builtin` = the zero-setup default; `builtin-fit` = the same encoder
   standardised on the reference with `fit_builtin`, i.e. `edgemine fit-builtin`): one mining run with the
   default job spec plus the budget, the model and two hard-braking trigger rules, then `edgemine evaluate`
   (the run's candidates against ground truth, beside the plain kNN + temporal-NMS baseline and random, with
   the same number of frames).

Prints the Markdown tables that go in docs/BENCHMARKS.md and writes them with the timings to --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

from mining_matrix import load_avg, synth  # noqa: E402  (benchmarks/ is the script's folder)

RULES = [
    {"name": "hard_brake", "expr": "accel_mps2 < -4", "weight": 0.5},
    {"name": "hard_brake_pedestrian", "expr": 'accel_mps2 < -4 and label == "pedestrian"'},
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgemine-mining-quality"))
    ap.add_argument("--drives", type=int, default=200)
    ap.add_argument("--frames-per-drive", type=int, default=250)
    ap.add_argument("--rare-rate", type=float, default=0.005)
    ap.add_argument("--ref-drives", type=int, default=120)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--budget-fraction", type=float, default=0.01)
    ap.add_argument("--encoders", default="builtin,builtin-fit", help="comma-separated: builtin, builtin-fit")
    ap.add_argument("--epochs", type=int, default=8, help="baseline model training epochs")
    ap.add_argument("--quick", action="store_true", help="24 drives x 250 frames, 2% rare, 24 reference drives")
    ap.add_argument("--out", type=Path, default=None, help="JSON results (default: WORK/results.json)")
    a = ap.parse_args()
    if a.quick:
        a.drives, a.ref_drives, a.rare_rate, a.epochs = 24, 24, 0.02, 3
    work: Path = a.work
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log: dict[str, Any] = {"argv": sys.argv[1:], "load_avg_start": load_avg(), "host": platform.platform(),
                           "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M", time.localtime())}

    tag = f"s{a.seed}-{a.drives}x{a.frames_per_drive}-r{a.rare_rate}-{a.size}px"
    fleet_dir, ref_dir = work / f"fleet-{tag}", work / f"ref-s{a.seed + 100}-{a.ref_drives}x{a.frames_per_drive}"
    t = time.perf_counter()
    fleet = synth(fleet_dir, drives=a.drives, frames_per_drive=a.frames_per_drive, rare_rate=a.rare_rate,
                  size=a.size, seed=a.seed, reference=False)
    ref = synth(ref_dir, drives=a.ref_drives, frames_per_drive=a.frames_per_drive, rare_rate=0.0, size=a.size,
                seed=a.seed + 100, reference=True)
    log["synth_s"] = round(time.perf_counter() - t, 1)
    log["fleet"], log["reference"] = fleet, ref
    print(f"fleet: {fleet['frames']} frames, {fleet['rare_frames']} rare in {fleet['events']} events "
          f"{ {k: v for k, v in fleet['categories'].items() if k != 'normal'} }; reference: {ref['frames']} frames",
          flush=True)

    model = work / f"model-{ref_dir.name}-e{a.epochs}.pt"
    if not model.exists():
        from edgemine.contracts import read_manifest
        from edgemine.embeddings.baseline import train_classifier

        t = time.perf_counter()
        res = train_classifier(read_manifest(ref_dir / "manifest.parquet"), out=model, epochs=a.epochs, seed=0)
        log["train_s"] = round(time.perf_counter() - t, 1)
        print(res.summary(), flush=True)

    from edgemine.jobs.mine import run_mine
    from edgemine.jobs.spec import build_spec
    from edgemine.mining.evaluate import evaluate_run, format_table

    budget = max(1, int(round(a.budget_fraction * fleet["frames"])))
    results: dict[str, Any] = {}
    tables = []
    for variant in [v.strip() for v in a.encoders.split(",") if v.strip()]:
        if variant == "builtin":
            encoder = "builtin"
        elif variant == "builtin-fit":
            fit = work / f"fit-{ref_dir.name}.npz"
            if not fit.exists():
                from edgemine.embeddings.encoders.builtin import fit_builtin

                print(fit_builtin(ref_dir / "manifest.parquet", out=fit, progress=False).summary(), flush=True)
            encoder = f"builtin:{fit.resolve()}"
        else:
            raise SystemExit(f"unknown encoder variant {variant!r}; use builtin or builtin-fit")
        spec = build_spec({
            "frames": str(fleet_dir / "manifest.parquet"), "reference": str(ref_dir / "manifest.parquet"),
            "out": str(work / "runs" / f"{tag}-{variant}"), "budget": budget, "encoder": encoder,
            "models": [f"torchscript:{model.resolve()}"], "embed_dir": str(work / "cache"),
            "index": {"dir": str(work / "cache" / f"refindex-{ref_dir.name}-{variant}")},
            "signals": {"trigger": {"rules": RULES}},
        }, source="benchmark spec")
        load_before = load_avg()
        t = time.perf_counter()
        run = run_mine(spec, log=lambda s: print(s, flush=True))
        seconds = time.perf_counter() - t
        rows = evaluate_run(str(run.run_dir), str(fleet_dir / "ground_truth.parquet"))
        table = format_table(rows)
        missed = [c for c, v in rows[0].coverage.items() if v == 0]
        title = (f"### encoder `{variant}` — budget {budget} ({a.budget_fraction:.0%}), {run.counts['candidates']} "
                 f"selected, run {seconds:.0f}s (load {load_before} → {load_avg()})")
        tables.append(f"{title}\n\n{table}\n\nmissed categories: {', '.join(missed) or 'none'}")
        print("\n" + tables[-1] + "\n", flush=True)
        results[variant] = {"metrics": [m.to_dict() for m in rows], "counts": run.counts, "timings": run.timings,
                            "seconds": round(seconds, 1), "run_dir": str(run.run_dir), "missed": missed}
    log["results"] = results
    log["total_s"] = round(time.perf_counter() - t0, 1)
    log["load_avg_end"] = load_avg()
    out = a.out or work / "results.json"
    out.write_text(json.dumps({**log, "tables": tables}, indent=2, default=str))
    print(f"results -> {out} ({log['total_s']}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
