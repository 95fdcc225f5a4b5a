"""Scoring signals, one per file, behind a registry: adding a signal is adding a file and a line here.

    from edgemine.mining.signals import make_signal, signal_names
    novelty = make_signal("novelty", k=10)
"""

from __future__ import annotations

from typing import Any

from edgemine.errors import ConfigError
from edgemine.mining.signals.base import Signal, SignalInputs, SignalOutput, knn_reduce
from edgemine.mining.signals.novelty import Novelty, novelty
from edgemine.mining.signals.rarity import Rarity, rarity
from edgemine.mining.signals.triggers import TriggerRule, Triggers, triggers
from edgemine.mining.signals.uncertainty import Uncertainty, uncertainty

SIGNALS: dict[str, type[Signal]] = {cls.name: cls for cls in (Novelty, Uncertainty, Rarity, Triggers)}
ALIASES = {"triggers": "trigger"}  # the issue says "triggers"; the column (and the registry) say "trigger"

__all__ = ["SIGNALS", "Signal", "SignalInputs", "SignalOutput", "TriggerRule", "knn_reduce", "make_signal",
           "novelty", "rarity", "signal_names", "triggers", "uncertainty"]


def signal_names() -> list[str]:
    return sorted(SIGNALS)


def make_signal(name: str, **options: Any) -> Signal:
    """Construct a registered signal; unknown names and options fail listing what exists."""
    name = ALIASES.get(name, name)
    cls = SIGNALS.get(name)
    if cls is None:
        raise ConfigError(f"unknown signal {name!r}; known signals: {', '.join(signal_names())}")
    try:
        return cls(**options)
    except TypeError as exc:
        import inspect

        valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise ConfigError(f"signals.{name}: bad option(s) {sorted(options)}; valid options: {valid}") from exc
