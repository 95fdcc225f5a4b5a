"""The closed loop's ceiling: what v1 learns per rare category when review is perfect and covers everything.

    .venv/bin/python benchmarks/loop_ceiling.py --out /tmp/ceiling --seed 2026
    .venv/bin/python benchmarks/loop_ceiling.py --out /tmp/ceiling128 --seed 2026 --size 128
    .venv/bin/python benchmarks/loop_ceiling.py --out /tmp/ceiling128 --seed 2026 --size 128 \
        --probe builtin --probe efficientnet_lite0:128

No mining, no review: the loop's data (`LoopConfig`'s drives, `--size` px, the same generator seeds as
`edgemine loop --seed`), its v0 (`train_classifier` on the known drives), then v1 = v0 fine-tuned by the
loop's recipe (replay of v0's training rows, distillation from v0 on them, no class weights) on every truly
rare fleet frame with its true category, each `--edge-weight` times. If a category stays at 0 here, no
selection or review of the same fleet can teach it to this model: the limit is the model (its input size
or capacity), not the mining. Prints and writes OUT/ceiling.json: rare/common accuracy and rare accuracy by
category for v0 and v1, with the number of training frames of each category.

--probe ENCODER (repeat): also a linear probe of a frozen encoder on the same rows - a softmax head (AdamW,
300 full-batch steps, standardised L2-normalised features, the rare frames weighted `--edge-weight`) trained
on the encoder's features of v0's training rows and the rare fleet frames: whether features that were not
trained on these drives (`builtin`, ImageNet `efficientnet_lite0:SIZE`) separate a category the CNN cannot.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--size", type=int, default=64, help="frame size of the generated drives and the model input")
    ap.add_argument("--width", type=int, default=None, help="channels of the model's first conv (default: 16)")
    ap.add_argument("--edge-weight", type=int, default=4, help="repeats of each rare frame in v1's training rows")
    ap.add_argument("--epochs", type=int, default=None, help="v1's fine-tune epochs (default: LoopConfig's)")
    ap.add_argument("--probe", action="append", default=[], metavar="ENCODER",
                    help="also a linear probe of this frozen encoder's features (repeatable)")
    args = ap.parse_args()

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from edgemine.embeddings.baseline import DEFAULT_WIDTH, predict, split_by_drive, train_classifier
    from edgemine.jobs.loop import LoopConfig, _rows, eval_slices, label_scores, per_label_accuracy
    from edgemine.jobs.synth import generate

    cfg = LoopConfig(seed=args.seed, size=args.size)
    width = args.width or DEFAULT_WIDTH
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    fpd = cfg.frames_per_drive
    if not (out / "eval" / "manifest.parquet").exists():  # the same three generator calls as run_loop
        generate(out / "reference", drives=cfg.reference_drives, frames_per_drive=fpd, size=cfg.size,
                 seed=cfg.seed, reference=True)
        generate(out / "fleet", drives=cfg.fleet_drives, frames_per_drive=fpd, rare_rate=cfg.fleet_rare_rate,
                 size=cfg.size, seed=cfg.seed + 1)
        generate(out / "eval", drives=cfg.eval_drives, frames_per_drive=fpd, rare_rate=cfg.eval_rare_rate,
                 size=cfg.size, seed=cfg.seed + 2)
    t_synth = time.perf_counter() - t0
    ref = _rows(out / "reference" / "manifest.parquet", label="label")
    tag = f"s{cfg.size}-w{width}"
    v0 = out / f"v0-{tag}.pt"
    t1 = time.perf_counter()
    train_classifier(ref, out=v0, epochs=cfg.train_epochs, input_size=cfg.size, seed=cfg.seed, width=width)
    t_v0 = time.perf_counter() - t1

    fleet = _rows(out / "fleet" / "manifest.parquet")
    gt = pq.read_table(out / "fleet" / "ground_truth.parquet", columns=["frame_id", "category", "is_rare", "event_id"])
    rare_fleet = fleet.join(gt, "frame_id").filter(pc.field("is_rare"))
    edge = pa.table({"frame_id": rare_fleet.column("frame_id"), "uri": rare_fleet.column("uri"),
                     "drive_id": rare_fleet.column("drive_id"), "label": rare_fleet.column("category")}
                    ).cast(ref.schema)
    held = pa.array(split_by_drive(ref.column("drive_id").to_pylist(), ref.column("frame_id").to_pylist()))
    replay = ref.filter(pc.invert(held))
    rows = pa.concat_tables([replay] + [edge] * args.edge_weight)
    v1 = out / f"v1-{tag}.pt"
    t2 = time.perf_counter()
    train_classifier(rows, out=v1, init_from=v0, epochs=args.epochs or cfg.finetune_epochs, input_size=cfg.size,
                     seed=cfg.seed, val_rows=ref.filter(held), lr=cfg.finetune_lr,
                     class_weight_power=cfg.class_weight_power, distill_weight=cfg.distill_weight,
                     distill_temperature=cfg.distill_temperature,
                     distill_rows=np.arange(rows.num_rows) < replay.num_rows)
    t_v1 = time.perf_counter() - t2

    rare, common = eval_slices(out / "eval")
    report: dict = {"seed": cfg.seed, "size": cfg.size, "width": width, "edge_weight": args.edge_weight,
                    "train_frames_by_category": dict(sorted(Counter(edge.column("label").to_pylist()).items())),
                    "train_events_by_category": dict(sorted(Counter(
                        c for c, _ in set(zip(rare_fleet.column("category").to_pylist(),
                                              rare_fleet.column("event_id").to_pylist(), strict=True))).items())),
                    "seconds": {"synth": round(t_synth, 1), "v0": round(t_v0, 1), "v1": round(t_v1, 1)}}

    def scores(rare_pred: list[str], common_pred: list[str]) -> dict:
        rare_acc, per_category = per_label_accuracy(rare.column("label").to_pylist(), rare_pred)
        c = label_scores(common.column("label").to_pylist(), common_pred, known=[])
        return {"rare": round(rare_acc, 3), "common": round(c["acc"], 3),
                "common_balanced": round(c["balanced_acc"], 3), "per_category": per_category}

    runs = {"v0": v0, "v1": v1}
    for name, model in runs.items():
        pr, pcm = predict(model, rare), predict(model, common)
        if pr.errors or pcm.errors:
            raise SystemExit(f"{name}: {len(pr.errors) + len(pcm.errors)} eval frames did not decode")
        report[name] = scores(pr.labels, pcm.labels)
    for spec in args.probe:
        t3 = time.perf_counter()
        report[f"probe {spec}"] = scores(*linear_probe(spec, ref, edge, rare, common, edge_weight=args.edge_weight,
                                                       seed=cfg.seed))
        report["seconds"][f"probe {spec}"] = round(time.perf_counter() - t3, 1)
    for name in [k for k in report if k == "v0" or k == "v1" or k.startswith("probe ")]:
        r = report[name]
        print(f"{tag} {name}: rare {r['rare']:.3f}, common {r['common']:.3f} (balanced {r['common_balanced']:.3f}); "
              f"per category {r['per_category']}", flush=True)
    events = report["train_events_by_category"]
    frames = {c: f"{n} ({events[c]})" for c, n in report["train_frames_by_category"].items()}
    print(f"{tag}: rare fleet frames (events) by category {frames}; seconds {report['seconds']}")
    (out / f"ceiling-{tag}.json").write_text(json.dumps(report, indent=2))
    return 0


def linear_probe(spec, ref, edge, rare, common, *, edge_weight: int, seed: int) -> tuple[list[str], list[str]]:
    """Predicted labels of the rare and common slices from a softmax head on `spec`'s frozen features."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import torch

    from edgemine.embeddings.decode import decode_batch
    from edgemine.embeddings.encoders import load_encoder

    enc = load_encoder(spec)

    def features(rows) -> np.ndarray:
        uris, out = rows.column("uri").to_pylist(), []
        with ThreadPoolExecutor(2) as pool:
            for s in range(0, len(uris), 256):
                dec = decode_batch(uris[s:s + 256], size=enc.input_size, pool=pool)
                if dec.errors:
                    raise SystemExit(f"probe {spec}: frames did not decode: {dec.errors[:3]}")
                out.append(enc.embed_uint8(dec.images)[0])
        e = np.concatenate(out)
        return e / np.linalg.norm(e, axis=1, keepdims=True).clip(1e-9)

    labels = ref.column("label").to_pylist() + edge.column("label").to_pylist()
    classes = sorted(set(labels))
    x = torch.from_numpy(np.concatenate([features(ref), features(edge)])).float()
    y = torch.tensor([classes.index(c) for c in labels])
    w = torch.cat([torch.ones(ref.num_rows), torch.full((edge.num_rows,), float(edge_weight))])
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    torch.manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], len(classes))
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(300):
        opt.zero_grad()
        loss = (torch.nn.functional.cross_entropy(head((x - mu) / sd), y, reduction="none") * w).sum() / w.sum()
        loss.backward()
        opt.step()

    def labels_of(rows) -> list[str]:
        with torch.no_grad():
            z = torch.from_numpy(features(rows)).float()
            return [classes[i] for i in head((z - mu) / sd).argmax(1).tolist()]

    return labels_of(rare), labels_of(common)


if __name__ == "__main__":
    raise SystemExit(main())
