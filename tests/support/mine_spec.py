"""A small mining spec over the `byo` fixture (tests/jobs/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgemine.jobs.spec import MineSpec, build_spec

RULES = [{"name": "hard_brake", "expr": "accel_mps2 < -4"},
         {"name": "hard_brake_pedestrian", "expr": 'accel_mps2 < -4 and label == "pedestrian"'}]


def make_spec(byo: dict[str, Path], out: Path, **kw: Any) -> MineSpec:
    data: dict[str, Any] = {"frames": str(byo["frames"]), "reference": str(byo["reference"]), "out": str(out),
                            "budget": 24, "signals": {"novelty": {"weight": 1.0}, "rarity": {"weight": 1.0},
                                                      "uncertainty": {"weight": 1.0},
                                                      "trigger": {"weight": 1.0, "rules": RULES}},
                            "aggregate": {"threshold": 0.5, "peak_threshold": 0.7, "min_frames": 2},
                            "selection": {"per_event_cap": 3},
                            "evidence": {"neighbors": 3}}
    data.update(kw)
    return build_spec(data)
