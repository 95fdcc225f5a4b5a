"""The closed loop over several seeds: rare-slice gain (mined vs random control) and common accuracy, per seed.

    .venv/bin/python benchmarks/loop_seeds.py                    # seeds 1 2 3 at LoopConfig's defaults
    .venv/bin/python benchmarks/loop_seeds.py --seeds 2026       # the seed v1's recipe was chosen on

Each seed is one `edgemine loop` (jobs/loop.py `run_loop`, the LoopConfig defaults that `make demo` runs, only
`seed` changed: other synthetic drives, another v0, other reviewer error draws), run one after the other under
WORK/seed-N. The goal (issue 16) is checked per seed:

- rare-slice gain of v1 (mined review) > 0 and >= 2x the random control's gain (a random gain <= 0 counts as 0);
- common accuracy of v1 (mined review) >= v0's common accuracy - 0.01.

Prints the Markdown table that goes in docs/BENCHMARKS.md ("Closed loop") and writes every seed's LoopResult
with the verdicts to --out (JSON). A seed that misses says by how much.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

from mining_matrix import load_avg  # noqa: E402  (benchmarks/ is the script's folder)

COMMON_TOLERANCE = 0.01
nan = float("nan")
GAIN_RATIO = 2.0


def verdict(models: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The goal on one seed's accuracies: each part, its margin (>= 0 is met) and whether both hold."""
    v0, mined, rnd = models["v0"], models["v1_mined"], models["v1_random"]
    gain_m, gain_r = mined["rare_acc"] - v0["rare_acc"], rnd["rare_acc"] - v0["rare_acc"]
    need = GAIN_RATIO * max(gain_r, 0.0)
    gain_margin = gain_m - need if gain_m > 0 else gain_m - max(need, 1e-9)
    common_margin = mined["common_acc"] - (v0["common_acc"] - COMMON_TOLERANCE)
    return {"gain_mined": gain_m, "gain_random": gain_r, "gain_margin": gain_margin,
            "common_delta": mined["common_acc"] - v0["common_acc"], "common_margin": common_margin,
            "met": gain_margin >= 0 and common_margin >= 0}


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| seed | v0 rare / common | v1 mined: rare / common (Δ common) / published | "
            "v1 random: rare / common (Δ common) / published | gain mined vs random | goal | "
            "balanced common v0 → mined, random |")
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        m, v = r["models"], r["verdict"]
        v0, mined, rnd = m["v0"], m["v1_mined"], m["v1_random"]
        miss = []
        if v["gain_margin"] < 0:
            miss.append(f"gain short by {-v['gain_margin']:.3f}")
        if v["common_margin"] < 0:
            miss.append(f"common short by {-v['common_margin']:.3f}")
        goal = "met" if v["met"] else "**missed**: " + ", ".join(miss)
        lines.append(
            f"| {r['seed']} | {v0['rare_acc']:.3f} / {v0['common_acc']:.3f} "
            f"| {mined['rare_acc']:.3f} / {mined['common_acc']:.3f} ({v['common_delta']:+.3f}) "
            f"/ {r['published_mined']} "
            f"| {rnd['rare_acc']:.3f} / {rnd['common_acc']:.3f} "
            f"({rnd['common_acc'] - v0['common_acc']:+.3f}) / {r['published_random']} "
            f"| {v['gain_mined']:+.3f} vs {v['gain_random']:+.3f} | {goal} "
            f"| {v0.get('common_balanced_acc', nan):.3f} → {mined.get('common_balanced_acc', nan):.3f}, "
            f"{rnd.get('common_balanced_acc', nan):.3f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgemine-loop-seeds"))
    ap.add_argument("--out", type=Path, default=None, help="JSON results (default: WORK/results.json)")
    a = ap.parse_args()

    from edgemine.jobs.loop import LoopConfig, run_loop

    rows: list[dict[str, Any]] = []
    for seed in a.seeds:
        out = a.work / f"seed-{seed}"
        if (out / "review.db").exists():
            raise SystemExit(f"{out} holds an earlier run; remove it or pass another --work")
        cfg = LoopConfig(seed=seed)
        t0 = time.perf_counter()
        res = run_loop(out, cfg, log=lambda m, s=seed: print(f"  seed {s}: {m}", flush=True))
        rows.append({"seed": seed, "seconds": round(time.perf_counter() - t0, 1), "load_avg": load_avg(),
                     "models": res.models, "verdict": verdict(res.models),
                     "published_mined": res.selections["mined"]["published"],
                     "published_random": res.selections["random"]["published"],
                     "rare_in_selection": {k: res.selections[k]["rare"] for k in ("mined", "random")},
                     "finetune": res.finetune, "timings": res.timings})
        print(markdown(rows[-1:]), flush=True)
    table = markdown(rows)
    met = sum(r["verdict"]["met"] for r in rows)
    print(f"\n{table}\n\ngoal met on {met} of {len(rows)} seeds")
    out_json = a.out or a.work / "results.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps({"config": asdict(LoopConfig()), "seeds": rows, "table": table,
                                    "machine": f"{platform.machine()}, {os.cpu_count()} cpus"}, indent=2,
                                   default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
