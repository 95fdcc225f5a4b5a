"""`make demo`: the whole story on embedded defaults, one step per stage that has landed.

Each step prints one line; the demo ends by saying where everything is. The demo's sizes live here so
the README, CI and this file agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import typer


@dataclass(frozen=True)
class DemoSizes:
    reference_drives: int = 24
    mining_drives: int = 24
    frames_per_drive: int = 250
    rare_rate: float = 0.02
    size: int = 64
    seed: int = 2026


def run_demo(out: Path, sizes: DemoSizes = DemoSizes()) -> dict[str, object]:
    from jobs.synth import generate

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    ref = generate(out / "reference", drives=sizes.reference_drives, frames_per_drive=sizes.frames_per_drive,
                   size=sizes.size, seed=sizes.seed, reference=True)
    typer.echo(f"[1] reference drives (known data): {ref.frames} frames in {ref.drives} drives -> {ref.out}")
    new = generate(out / "fleet", drives=sizes.mining_drives, frames_per_drive=sizes.frames_per_drive,
                   rare_rate=sizes.rare_rate, size=sizes.size, seed=sizes.seed + 1)
    cats = ", ".join(f"{k}={v}" for k, v in new.categories.items() if k != "normal")
    typer.echo(f"[2] fleet drives to mine: {new.frames} frames, {new.rare_frames} rare in {new.events} events "
               f"({cats}) -> {new.out}")
    elapsed = time.perf_counter() - t0
    typer.echo(f"demo finished in {elapsed:.0f}s; outputs under {out}")
    return {"reference": ref.to_dict(), "fleet": new.to_dict(), "seconds": elapsed}
