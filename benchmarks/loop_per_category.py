"""Where a closed loop's rare-slice gain comes from: per-category accuracy of v1 (mined, random control).

    .venv/bin/edgemine loop --out /tmp/loop_s8 --seed 8
    .venv/bin/python benchmarks/loop_per_category.py /tmp/loop_s8                     # the loop's own recipe
    .venv/bin/python benchmarks/loop_per_category.py /tmp/loop_s8 '{"cw05": {"class_weight_power": 0.5}}'

For one finished `edgemine loop` directory: the published train rows of each dataset by (category, whether
the frame truly is that category, from the generator's ground truth), then, for each recipe variant (a JSON
object of LoopConfig overrides; default: none), v1 re-trained post hoc from that loop's v0 on those same
published rows (`jobs/loop.py finetune`, deterministic: the base variant reproduces the loop's v1) and its
accuracy per rare category of the held-out rare slice, beside the common slice. Writes LOOP/per_category.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def main() -> int:
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    import pyarrow.parquet as pq

    from edgemine.contracts import read_manifest
    from edgemine.embeddings.baseline import load_baseline, predict
    from edgemine.jobs.datasets import latest_version, read_dataset
    from edgemine.jobs.loop import LoopConfig, _rows, eval_slices, finetune, per_label_accuracy, slice_scores

    d = Path(sys.argv[1])
    variants = json.loads(sys.argv[2]) if len(sys.argv) == 3 else {"base": {}}
    if not (d / "loop.json").exists():
        raise SystemExit(f"{d} has no loop.json: pass the --out of a finished `edgemine loop`")
    loop = json.loads((d / "loop.json").read_text())
    known = list(load_baseline(d / "models" / "v0.pt")[1]["class_names"])  # v0's classes: the common slice's
    rare, common = eval_slices(d / "eval")
    ref = _rows(d / "reference" / "manifest.parquet", label="label")
    fleet = read_manifest(d / "fleet" / "manifest.parquet").select(["frame_id", "uri", "drive_id", "frame_index"])
    gt = {r["frame_id"]: r for r in pq.read_table(d / "fleet" / "ground_truth.parquet").to_pylist()}
    out: dict = {"seed": loop["config"]["seed"], "published_train": {}, "variants": {}}
    datasets = {"mined": "edge_cases", "random": "edge_cases_random"}
    for who, name in datasets.items():
        ds = str(d / "datasets" / name)
        rows = read_dataset(ds, version=latest_version(ds), columns=["frame_id", "category", "split"]).to_pylist()
        c = Counter((r["category"], "true" if gt[r["frame_id"]]["is_rare"] and gt[r["frame_id"]]["category"]
                     == r["category"] else "false") for r in rows if r["split"] == "train")
        out["published_train"][who] = {f"{k[0]} ({k[1]})": n for k, n in sorted(c.items())}
        print(f"{who}: published train rows by category (truly that category?): {out['published_train'][who]}")
    truth = dict(zip(rare.column("frame_id").to_pylist(), rare.column("label").to_pylist(), strict=True))
    print(f"rare slice: {dict(sorted(Counter(truth.values()).items()))}")
    for vname, overrides in variants.items():
        cfg = dataclasses.replace(LoopConfig(seed=loop["config"]["seed"]), **overrides)
        res = {}
        for who, name in datasets.items():
            ds = str(d / "datasets" / name)
            model = d / "models" / f"posthoc-{vname}-{who}.pt"
            finetune(d / "models" / "v0.pt", ref, ds, latest_version(ds), model, cfg=cfg, fleet=fleet)
            pred = predict(model, rare)
            rare_acc, per_category = per_label_accuracy([truth[f] for f in pred.frame_ids], pred.labels)
            c = slice_scores(model, common, known=known)
            res[who] = {"rare": rare_acc, "common": c["acc"], "per_category": per_category}
            print(f"{vname} {who}: rare {res[who]['rare']:.3f}, common {c['acc']:.3f}; per category "
                  f"{res[who]['per_category']}", flush=True)
        out["variants"][vname] = {"overrides": overrides, **res}
    (d / "per_category.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
