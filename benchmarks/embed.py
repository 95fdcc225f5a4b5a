"""Embedding throughput: the Ray Data pipeline vs a bare torch loop of the same model and batch size.

    .venv/bin/python benchmarks/embed.py                       # 100k synthetic 64 px frames (generated once)
    .venv/bin/python benchmarks/embed.py --frames 5000 --quick # a smoke run
    .venv/bin/python benchmarks/embed.py --encoder efficientnet_lite0 --frames 1000 --size 128 --batch-size 64
                                                               # the pretrained encoder, 128 px frames and input

Both sides do the same work per frame: read the PNG, decode and resize it, run the encoder. The bare loop is
one Python process: manifest batches -> `decode_batch` on a thread pool with one thread per core ->
`Encoder.embed_uint8`, torch using every core (or `--bare-threads`). It writes nothing; the pipeline also
writes Parquet shards and errors.parquet. The bare loop runs before and after the pipeline and the ratio uses
their mean, so load drift on a shared machine shows up as a gap between the two bare figures. The pipeline's
time is its whole `embed_manifest` call on an already started Ray (manifest scan + fingerprint, actor
start-up, execution, shard writes, final merge); the Ray start itself is reported separately.

The model is the baseline CNN (`edgemine.embeddings.baseline.BaselineCNN`, the architecture `train-baseline`
exports) with seeded random weights, exported to TorchScript: throughput does not depend on the weights.
`--encoder SPEC` measures another encoder instead (e.g. `efficientnet_lite0`); its input size is
`--input-size`, by default the frames' `--size`. Both sides use the encoder's own minimum frame side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tree_cpu_seconds(root: int | None = None) -> float | None:
    """CPU seconds (user + system, including reaped children) of a process and all its descendants.

    Reads /proc (Linux). On a shared machine wall time depends on the neighbours; CPU time per frame
    does much less, so the benchmark reports both.
    """
    root = os.getpid() if root is None else root
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[pid] = int(fields[1])
        cpu[pid] = sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
    total, stack = 0.0, [root]
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    while stack:
        pid = stack.pop()
        total += cpu.get(pid, 0.0)
        stack.extend(children.get(pid, []))
    return total


def ensure_frames(data: Path, *, frames: int, size: int) -> Path:
    """Generate (once) `frames` synthetic frames at `size` px; returns the manifest path."""
    from edgemine.jobs.synth import generate

    per_drive = 250
    drives = max(1, frames // per_drive)
    stamp = data / "synth.json"
    if stamp.exists():
        params = json.loads(stamp.read_text())["params"]
        if params["drives"] == drives and params["frames_per_drive"] == per_drive and params["size"] == size:
            return data / "manifest.parquet"
        shutil.rmtree(data)
    t0 = time.perf_counter()
    s = generate(data, drives=drives, frames_per_drive=per_drive, rare_rate=0.005, size=size, seed=100)
    print(f"generated {s.frames} frames in {time.perf_counter() - t0:.0f}s -> {data}", file=sys.stderr)
    return data / "manifest.parquet"


def export_baseline(path: Path, *, input_size: int) -> Path:
    import torch

    from edgemine.embeddings.baseline import DEFAULT_WIDTH, MODEL_KIND, BaselineCNN, export_model

    torch.manual_seed(0)
    meta = {"kind": MODEL_KIND, "class_names": ["car", "cyclist", "none", "pedestrian", "truck"],
            "input_size": input_size, "width": DEFAULT_WIDTH, "embedding_dim": 8 * DEFAULT_WIDTH}
    return export_model(BaselineCNN(5, width=DEFAULT_WIDTH), path, meta=meta)


def bare_loop(manifest: Path, *, encoder: str, input_size: int | None, batch_size: int,
              threads: int) -> dict[str, float | None]:
    """Read + decode (thread pool) + forward in one process, no Ray."""
    import torch

    from edgemine.contracts import iter_manifest
    from edgemine.embeddings.decode import decode_batch
    from edgemine.embeddings.encoders import load_encoder

    torch.set_num_threads(threads)
    enc = load_encoder(encoder, input_size=input_size)
    n = 0
    t0, c0 = time.perf_counter(), tree_cpu_seconds()
    with ThreadPoolExecutor(threads) as pool:
        for batch in iter_manifest(manifest, batch_size=batch_size, columns=["frame_id", "drive_id", "timestamp",
                                                                              "uri"]):
            dec = decode_batch(batch.column("uri").to_pylist(), size=enc.input_size, min_side=enc.min_side,
                               pool=pool)
            enc.embed_uint8(dec.images)
            n += len(dec.ok)
    dt, c1 = time.perf_counter() - t0, tree_cpu_seconds()
    cpu_ms = None if c0 is None or c1 is None else round(1000 * (c1 - c0) / max(n, 1), 3)
    return {"frames": n, "seconds": round(dt, 2), "fps": round(n / dt, 1), "cpu_ms_per_frame": cpu_ms}


def model_only(*, encoder: str, input_size: int | None, batch_size: int, threads: int, batches: int = 40,
               max_seconds: float = 20.0) -> float:
    """Forward passes on one pre-decoded batch (`batches` of them, or fewer after `max_seconds`): the model's
    own ceiling, frames/s."""
    import numpy as np
    import torch

    from edgemine.embeddings.encoders import load_encoder

    torch.set_num_threads(threads)
    enc = load_encoder(encoder, input_size=input_size)
    x = np.random.default_rng(0).integers(0, 256, (batch_size, enc.input_size, enc.input_size, 3), dtype=np.uint8)
    enc.embed_uint8(x)
    t0 = time.perf_counter()
    done = 0
    while done < batches and (done == 0 or time.perf_counter() - t0 < max_seconds):
        enc.embed_uint8(x)
        done += 1
    return round(done * batch_size / (time.perf_counter() - t0), 1)


def decode_only(manifest: Path, *, size: int, threads: int, limit: int = 10_000) -> float:
    from edgemine.contracts import read_manifest
    from edgemine.embeddings.decode import decode_batch

    uris = read_manifest(manifest).column("uri").to_pylist()[:limit]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        n = len(decode_batch(uris, size=size, pool=pool).ok)
    return round(n / (time.perf_counter() - t0), 1)


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--actors", type=int, default=0, help="0: the pipeline's default")
    ap.add_argument("--threads-per-actor", type=int, default=0, help="0: the pipeline's default")
    ap.add_argument("--shard-rows", type=int, default=4096)
    ap.add_argument("--decode", default="actor", choices=["actor", "tasks"])
    ap.add_argument("--encoder", default="", help="default: the baseline CNN (random weights, TorchScript)")
    ap.add_argument("--input-size", type=int, default=0, help="the encoder's input size; 0: the frames' --size")
    ap.add_argument("--bare-threads", type=int, default=0,
                    help="torch and decode threads of the bare loop; 0: one per core (1 can be faster on a busy "
                         "machine, where idle OpenMP threads spin against the neighbours)")
    ap.add_argument("--data", type=Path, default=Path("/tmp/edgemine-bench"))
    ap.add_argument("--quick", action="store_true", help="one bare run instead of two")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from edgemine.embeddings.pipeline import embed_manifest
    from edgemine.runtime import ray_runtime

    cores = os.cpu_count() or 1
    bare_threads = args.bare_threads or cores
    data = args.data / f"embed-{args.frames // 1000}k-{args.size}"
    manifest = ensure_frames(data, frames=args.frames, size=args.size)
    input_size = args.input_size or args.size
    encoder = args.encoder or f"torchscript:{export_baseline(args.data / 'baseline-random.pt', input_size=input_size)}"
    load0 = os.getloadavg()

    bare = [bare_loop(manifest, encoder=encoder, input_size=input_size, batch_size=args.batch_size,
                      threads=bare_threads)]
    print(f"bare loop: {bare[0]}", file=sys.stderr)
    out = args.data / "embed-out"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    with ray_runtime(num_cpus=cores):
        ray_start = round(time.perf_counter() - t0, 2)
        time.sleep(2.0)  # let the freshly started Ray settle before measuring its CPU
        t1, c1 = time.perf_counter(), tree_cpu_seconds()
        res = embed_manifest(manifest, encoder=encoder, out=out, input_size=input_size, batch_size=args.batch_size,
                             actors=args.actors or None, threads_per_actor=args.threads_per_actor or None,
                             shard_rows=args.shard_rows, decode=args.decode, device="cpu", progress=True)
        ray_seconds, c2 = time.perf_counter() - t1, tree_cpu_seconds()  # before shutdown: workers still alive
    ray_cpu_ms = None if c1 is None or c2 is None else round(1000 * (c2 - c1) / max(res.n_embedded, 1), 3)
    ray_fps = round(res.n_embedded / ray_seconds, 1)
    print(f"ray pipeline: {res.summary()}", file=sys.stderr)
    if not args.quick:
        bare.append(bare_loop(manifest, encoder=encoder, input_size=input_size, batch_size=args.batch_size,
                              threads=bare_threads))
        print(f"bare loop (again): {bare[1]}", file=sys.stderr)
    bare_fps = sum(float(b["fps"] or 0.0) for b in bare) / len(bare)
    bare_cpu = [float(c) for b in bare if (c := b["cpu_ms_per_frame"]) is not None]
    figures: dict[str, object] = {
        "frames": res.n_frames, "size": args.size, "input_size": res.input_size, "encoder": res.encoder_id,
        "batch_size": args.batch_size,
        "decode": args.decode, "shard_rows": args.shard_rows, "actors": args.actors or "default",
        "bare_threads": bare_threads, "bare_fps": [b["fps"] for b in bare], "ray_fps": ray_fps,
        "ray_seconds": round(ray_seconds, 2),
        "ray_start_seconds": ray_start, "ratio": round(ray_fps / bare_fps, 3),
        "bare_cpu_ms_per_frame": bare_cpu, "ray_cpu_ms_per_frame": ray_cpu_ms,
        # frames per CPU-second, Ray / bare: what the wall-time ratio tends to on an otherwise idle machine
        "cpu_efficiency_ratio": (round(sum(bare_cpu) / len(bare_cpu) / ray_cpu_ms, 3)
                                 if bare_cpu and ray_cpu_ms else None),
        "model_only_fps": model_only(encoder=encoder, input_size=input_size, batch_size=args.batch_size,
                                     threads=cores),
        # one torch thread: what each of the pipeline's single-threaded actors can reach (x cores = its ceiling)
        "model_only_fps_1_thread": model_only(encoder=encoder, input_size=input_size, batch_size=args.batch_size,
                                              threads=1),
        "decode_only_fps": decode_only(manifest, size=args.size, threads=cores),
        "machine": f"{cores} cores, {platform.machine()}, Python {platform.python_version()}",
        "loadavg_before": [round(x, 2) for x in load0], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
