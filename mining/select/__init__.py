"""Selection strategies, one per file, behind a registry.

    from edgemine.mining.select import Caps, Pool, make_strategy
    order = make_strategy("kcenter", diversity=1.0).select(pool, budget=500, caps=Caps(per_event=5))
"""

from __future__ import annotations

from typing import Any

from edgemine.errors import ConfigError
from edgemine.mining.select.base import Caps, CapTracker, Pool, Strategy, check_budget
from edgemine.mining.select.kcenter import KCenter
from edgemine.mining.select.random_pick import RandomPick
from edgemine.mining.select.top_score import TopScore

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (TopScore, KCenter, RandomPick)}

__all__ = ["STRATEGIES", "Caps", "CapTracker", "Pool", "Strategy", "check_budget", "make_strategy", "strategy_names"]


def strategy_names() -> list[str]:
    return sorted(STRATEGIES)


def make_strategy(name: str, **options: Any) -> Strategy:
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ConfigError(f"unknown selection strategy {name!r}; known strategies: {', '.join(strategy_names())}")
    try:
        return cls(**options)
    except TypeError as exc:
        import inspect

        valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise ConfigError(f"selection.{name}: bad option(s) {sorted(options)}; valid options: {valid}") from exc
