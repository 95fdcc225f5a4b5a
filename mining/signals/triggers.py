"""Metadata triggers: user rules over manifest columns, weak-supervision style labelling functions.

Each rule is a safe expression (see `mining.rules`) with a name and a weight in [0, 1]; the raw signal is
the largest weight among the rules that fire, and every firing rule becomes a reason ("trigger hard_brake").
It is calibrated against the mined frames like the others: a rule that fires on 1% of frames puts a frame
at p99, one that fires on 30% at p70, so a rule that fires everywhere adds little.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from edgemine.errors import ConfigError
from edgemine.mining.calibration import format_percentile
from edgemine.mining.rules import Rule, compile_rule
from edgemine.mining.signals.base import Need, Signal, SignalInputs, SignalOutput


@dataclass(frozen=True)
class TriggerRule:
    name: str
    expr: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError(f"trigger name={self.name!r} must be a non-empty string")
        if not 0.0 < float(self.weight) <= 1.0:
            raise ConfigError(f"trigger {self.name!r}: weight={self.weight} must be in (0, 1]")


def triggers(table: pa.Table, *, rules: Sequence[TriggerRule]) -> tuple[np.ndarray, list[list[str]]]:
    """(score in [0, 1] per row = max weight of the rules that fired, names of the rules that fired)."""
    compiled = [(r, compile_rule(r.name, r.expr)) for r in rules]
    return _apply(table, compiled)


def _apply(table: pa.Table, compiled: Sequence[tuple[TriggerRule, Rule]]) -> tuple[np.ndarray, list[list[str]]]:
    n = table.num_rows
    score = np.zeros(n)
    fired: list[list[str]] = [[] for _ in range(n)]
    for spec, rule in compiled:
        mask = np.asarray(rule.evaluate(table).to_numpy(zero_copy_only=False), dtype=bool)
        score = np.where(mask, np.maximum(score, spec.weight), score)
        for i in np.flatnonzero(mask):
            fired[int(i)].append(spec.name)
    return score, fired


def parse_rules(rules: Sequence[TriggerRule | Mapping[str, Any]]) -> list[TriggerRule]:
    out: list[TriggerRule] = []
    for i, r in enumerate(rules):
        if isinstance(r, TriggerRule):
            out.append(r)
            continue
        unknown = set(r) - {"name", "expr", "weight"}
        if unknown or "expr" not in r:
            raise ConfigError(f"signals.triggers.rules[{i}]: needs 'name' and 'expr' (and optional 'weight'), "
                              f"got keys {sorted(r)}")
        out.append(TriggerRule(name=str(r.get("name", f"rule{i}")), expr=r["expr"], weight=float(r.get("weight", 1.0))))
    names = [r.name for r in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"signals.triggers.rules: duplicate rule name(s) {dup}")
    return out


class Triggers(Signal):
    name: ClassVar[str] = "trigger"
    calibration = "mined"
    extrapolate = False  # discrete values: no tail to fit
    needs: ClassVar[frozenset[Need]] = frozenset({"table"})
    fired_column: ClassVar[str | None] = "triggers_fired"

    def __init__(self, *, rules: Sequence[TriggerRule | Mapping[str, Any]] = ()) -> None:
        self.rules = parse_rules(rules)
        self._compiled = [(r, compile_rule(r.name, r.expr)) for r in self.rules]  # fails early, naming the rule

    @property
    def columns(self) -> set[str]:
        return set().union(*(c.columns for _, c in self._compiled)) if self._compiled else set()

    def check_columns(self, available: Sequence[str]) -> None:
        for _, c in self._compiled:
            c.check_columns(set(available))

    def table_columns(self, available: Sequence[str]) -> list[str]:
        self.check_columns(available)
        return sorted(self.columns)

    def compute(self, inputs: SignalInputs) -> SignalOutput:
        if inputs.table is None or not self._compiled:
            return SignalOutput(np.full(inputs.n, np.nan), fired=[[] for _ in range(inputs.n)])
        score, fired = _apply(inputs.table, self._compiled)
        return SignalOutput(score, fired=fired)

    def reason(self, raw: float, pct: float, detail: dict[str, float]) -> str:
        return f"trigger score {raw:.2f} ({format_percentile(pct)})"

    def options(self) -> dict[str, Any]:
        return {"rules": [r.__dict__ for r in self.rules]}
