"""Gates a training-set version must pass before it is published: each a setting, each a refusal or a warning.

A pure check over the version that would result (its splits and categories), the rows it adds (their
reviews) and the review lineage (agreement per mining run). A refusal raises PublishRefusedError listing every
failing gate (and every run below an agreement floor), each with its figure and the CLI flag that would allow it
(`PublishRefusedError.allow`: the PublishGates settings that would); a warning is returned and goes into the
version's lineage (`edgemine.gate_warnings`). `watch_and_publish` treats a refusal as "not yet" and keeps accumulating.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from edgemine.errors import ConfigError, PublishRefusedError

GateAction = Literal["refuse", "warn", "off"]
GATE_ACTIONS = ("refuse", "warn", "off")
AgreementMetric = Literal["krippendorff_alpha", "fleiss_kappa", "cohen_kappa_mean"]
AGREEMENT_METRICS = ("krippendorff_alpha", "fleiss_kappa", "cohen_kappa_mean")


@dataclass(frozen=True)
class PublishGates:
    """What a version must satisfy. The defaults refuse an empty split and warn about an untrained category."""

    # a split of the policy (ratio > 0) with no rows in the version (e.g. val empty: nothing to validate on)
    empty_split: GateAction = "refuse"
    # floor on each mining run's agreement figure (`agreement_metric`, from overlapping reviews); None: no floor.
    # With a floor set, a run whose agreement was not measured (no overlapping reviews) is refused too, and so
    # is a publish whose lineage has no agreement figures at all.
    min_agreement: float | None = None
    agreement_metric: AgreementMetric = "krippendorff_alpha"
    # reviews behind each added row (n_reviews; gold items count their gold answer)
    min_reviews: int = 1
    # a category with rows in the version but none in train: a model cannot learn what val measures
    category_without_train: GateAction = "warn"

    def __post_init__(self) -> None:
        for name in ("empty_split", "category_without_train"):
            if getattr(self, name) not in GATE_ACTIONS:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not one of {list(GATE_ACTIONS)}")
        if self.agreement_metric not in AGREEMENT_METRICS:
            raise ConfigError(f"agreement_metric={self.agreement_metric!r} is not one of {list(AGREEMENT_METRICS)}")
        if self.min_agreement is not None and not -1.0 <= self.min_agreement <= 1.0:
            raise ConfigError(f"min_agreement={self.min_agreement} must be between -1 and 1")
        if self.min_reviews < 0:
            raise ConfigError(f"min_reviews={self.min_reviews} must be >= 0")

    @classmethod
    def warn_only(cls) -> PublishGates:
        """Every default gate warns instead of refusing: what library callers get when they pass no gates
        (`publish_from_review(gates=None)`, e.g. the demo loop); the CLI refuses by default."""
        return cls(empty_split="warn", category_without_train="warn")

    def lineage(self) -> dict[str, Any]:
        return {"empty_split": self.empty_split, "min_agreement": self.min_agreement,
                "agreement_metric": self.agreement_metric, "min_reviews": self.min_reviews,
                "category_without_train": self.category_without_train}


def check_gates(
    gates: PublishGates,
    *,
    dataset: str,
    splits: Mapping[str, int],
    expected_splits: Sequence[str],
    train_by_category: Mapping[str, int],
    categories: Sequence[str],
    added_reviews: Sequence[int],
    agreement: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    """Check one would-be version; returns the warnings, raises PublishRefusedError naming every refusal.

    Every gate is checked before refusing, so one refusal lists each failing gate (and each run below an
    agreement floor) with its figure and the flag that would allow it; the error's `allow` has one key per
    failing gate: the PublishGates value that lets this version through.

    `splits`: rows per split in the version; `train_by_category`: train rows per category in it;
    `categories`: the categories with rows in it; `added_reviews`: n_reviews of each row this publish adds;
    `agreement`: run_id -> agreement figures (review lineage).
    """
    warnings: list[str] = []
    refusals: list[tuple[str, str]] = []  # (gate, message), in check order
    allow: dict[str, object] = {}

    def fail(gate: str, action: str, message: str, allows: object) -> None:
        # `message` is in CLI words (flags); `allows` is the PublishGates value that lets it through
        if action != "refuse":
            warnings.append(message)
            return
        refusals.append((gate, message))
        if gate in allow and gate in ("min_agreement", "min_reviews"):  # several runs/rows: the loosest wins
            before = allow[gate]
            allows = None if before is None or allows is None else min(before, allows)  # type: ignore[call-overload]
        allow[gate] = allows

    if gates.empty_split != "off":
        total = sum(splits.values())
        for name in expected_splits:
            if splits.get(name, 0) == 0:
                have = ", ".join(f"{k}={v}" for k, v in sorted(splits.items()) if v) or "none"
                fail("empty_split", gates.empty_split,
                     f"split {name!r} would have 0 rows in {dataset} ({total} rows: {have}); wait for "
                     f"confirmations from more drives, or allow it with --empty-split warn", "warn")
    if gates.min_reviews > 1 and added_reviews:
        low = sum(1 for n in added_reviews if n < gates.min_reviews)
        if low:
            fail("min_reviews", "refuse",
                 f"{low} of {len(added_reviews)} row(s) to add have fewer than --min-reviews "
                 f"{gates.min_reviews} reviews (fewest: {min(added_reviews)}); raise the run's overlap, "
                 f"or lower it: --min-reviews {min(added_reviews)}",
                 min(added_reviews))
    if gates.min_agreement is not None:
        metric = gates.agreement_metric
        if not agreement:  # rows published without review lineage: a floor set must not pass unchecked
            fail("min_agreement", "refuse",
                 f"no agreement figures to check --min-agreement {gates.min_agreement} against (the lineage has no "
                 f"'agreement' per mining run); publish from the review store, or without a floor "
                 f"(--min-agreement none)", None)
        for run_id in sorted(agreement):
            value = agreement[run_id].get(metric)
            if value is None:
                fail("min_agreement", "refuse",
                     f"run {run_id!r} has no {metric} (no item was reviewed by two or more reviewers), so "
                     f"--min-agreement {gates.min_agreement} cannot be checked; give the run overlapping reviews, "
                     f"or publish without a floor (--min-agreement none)", None)
            elif value < gates.min_agreement:
                fail("min_agreement", "refuse",
                     f"run {run_id!r} has {metric}={value:.3f}, below --min-agreement {gates.min_agreement}; "
                     f"review its disagreements, or lower it: --min-agreement {math.floor(value * 1000) / 1000:.3f}",
                     value)
    if gates.category_without_train != "off" and "train" in expected_splits:
        missing = sorted(c for c in categories if train_by_category.get(c, 0) == 0)
        if missing:
            fail("category_without_train", gates.category_without_train,
                 f"categor{'y' if len(missing) == 1 else 'ies'} {missing} would have no rows in train in "
                 f"{dataset}; allow it with --category-without-train warn|off", "warn")
    if refusals:
        if len(refusals) == 1:
            message = f"publish refused: {refusals[0][1]}"
        else:
            message = f"publish refused, {len(refusals)} problems: " + " ".join(
                f"({i}) {m}{'' if i == len(refusals) else ';'}" for i, (_, m) in enumerate(refusals, 1))
        raise PublishRefusedError(refusals[0][0], message, allow=allow)
    return warnings
