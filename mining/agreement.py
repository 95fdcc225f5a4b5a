"""Inter-annotator agreement: Cohen's kappa (pairwise), Fleiss' kappa and Krippendorff's alpha.

Pure numpy. Labels are small non-negative integers (class indices); a missing rating is `missing` (-1) in
an integer ratings matrix, or NaN in Krippendorff's reliability matrix. Where a coefficient is undefined
(every rating falls in one class, so chance agreement is 1) the functions return NaN, as scikit-learn does
for Cohen's kappa, instead of raising: a run where everyone agreed on one class is not an error.

Reference values: scikit-learn `cohen_kappa_score`, statsmodels `fleiss_kappa`, `krippendorff.alpha`
(tests/mining/test_agreement.py checks equality on random and crafted data).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Literal, get_args

import numpy as np

from edgemine.errors import ConfigError, SchemaError

AlphaLevel = Literal["nominal", "interval"]
ALPHA_LEVELS: tuple[str, ...] = get_args(AlphaLevel)


def _labels_1d(x: np.ndarray | list[int], *, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise SchemaError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise SchemaError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise SchemaError(f"{name} holds a negative class index {int(arr.min())}")
    return arr.astype(np.int64, copy=False)


def cohen_kappa(a: np.ndarray | list[int], b: np.ndarray | list[int], *, n_classes: int | None = None) -> float:
    """Cohen's kappa of two raters who labelled the same items (`a[i]` and `b[i]` rate item i).

    Returns NaN when chance agreement is 1 (both raters used one and the same class throughout).
    """
    x, y = _labels_1d(a, name="a"), _labels_1d(b, name="b")
    if x.shape != y.shape:
        raise SchemaError(f"a and b must rate the same items: {x.size} vs {y.size} labels")
    if x.size == 0:
        raise SchemaError("cohen_kappa needs at least one item rated by both raters")
    k = int(max(x.max(), y.max()) + 1) if n_classes is None else n_classes
    if k <= max(x.max(), y.max()):
        raise SchemaError(f"n_classes={n_classes} is too small for label {int(max(x.max(), y.max()))}")
    confusion = np.bincount(x * k + y, minlength=k * k).reshape(k, k).astype(np.float64)
    n = confusion.sum()
    observed = np.trace(confusion) / n
    expected = float(confusion.sum(axis=1) @ confusion.sum(axis=0)) / (n * n)
    if np.isclose(expected, 1.0):
        return float("nan")
    return float((observed - expected) / (1.0 - expected))


@dataclass(frozen=True)
class PairwiseKappa:
    """Cohen's kappa for every pair of raters who share at least `min_items` items."""

    rater_a: np.ndarray  # column index of the first rater
    rater_b: np.ndarray
    kappa: np.ndarray  # NaN where undefined
    n_items: np.ndarray  # items both rated

    def mean(self) -> float:
        """Mean over defined pairs (NaN when there is none)."""
        ok = ~np.isnan(self.kappa)
        return float(self.kappa[ok].mean()) if ok.any() else float("nan")


def _ratings_2d(ratings: np.ndarray, *, missing: int) -> np.ndarray:
    arr = np.asarray(ratings)
    if arr.ndim != 2:
        raise SchemaError(f"ratings must be 2-D (items x raters), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise SchemaError(f"ratings must hold integer class indices, got dtype {arr.dtype}")
    bad = (arr < 0) & (arr != missing)
    if bad.any():
        raise SchemaError(f"ratings hold a negative class index {int(arr[bad][0])} other than missing={missing}")
    return arr.astype(np.int64, copy=False)


def pairwise_cohen_kappa(
    ratings: np.ndarray, *, n_classes: int | None = None, missing: int = -1, min_items: int = 2
) -> PairwiseKappa:
    """Cohen's kappa for each pair of raters (columns of `ratings`, items x raters) on the items both rated."""
    if min_items < 1:
        raise ConfigError(f"min_items={min_items} must be >= 1")
    r = _ratings_2d(ratings, missing=missing)
    k = n_classes if n_classes is not None else int(r.max() + 1) if r.size else 1
    out_a, out_b, out_k, out_n = [], [], [], []
    present = r != missing
    for i, j in combinations(range(r.shape[1]), 2):
        both = present[:, i] & present[:, j]
        n = int(both.sum())
        if n < min_items:
            continue
        out_a.append(i)
        out_b.append(j)
        out_k.append(cohen_kappa(r[both, i], r[both, j], n_classes=k))
        out_n.append(n)
    return PairwiseKappa(np.array(out_a, np.int64), np.array(out_b, np.int64), np.array(out_k, np.float64),
                         np.array(out_n, np.int64))


def category_counts(ratings: np.ndarray, *, n_classes: int, missing: int = -1) -> np.ndarray:
    """Items x classes table: how many raters put item i in class j (Fleiss' input)."""
    r = _ratings_2d(ratings, missing=missing)
    if r.size and r.max() >= n_classes:
        raise SchemaError(f"label {int(r.max())} is out of range for n_classes={n_classes}")
    counts = np.zeros((r.shape[0], n_classes), np.int64)
    rows, cols = np.nonzero(r != missing)
    np.add.at(counts, (rows, r[rows, cols]), 1)
    return counts


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an items x classes count table; every item needs the same number (>= 2) of ratings."""
    table = np.asarray(counts, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] == 0:
        raise SchemaError(f"counts must be a non-empty 2-D table (items x classes), got shape {table.shape}")
    if (table < 0).any():
        raise SchemaError("counts must be non-negative")
    per_item = table.sum(axis=1)
    n = per_item[0]
    if not np.all(per_item == n):
        raise SchemaError(
            f"Fleiss' kappa needs the same number of ratings per item; got between {int(per_item.min())} "
            f"and {int(per_item.max())}"
        )
    if n < 2:
        raise SchemaError(f"Fleiss' kappa needs >= 2 ratings per item, got {int(n)}")
    n_items = table.shape[0]
    p_class = table.sum(axis=0) / (n_items * n)
    p_item = (np.square(table).sum(axis=1) - n) / (n * (n - 1))
    p_bar, p_e = p_item.mean(), float(np.square(p_class).sum())
    if np.isclose(p_e, 1.0):
        return float("nan")
    return float((p_bar - p_e) / (1.0 - p_e))


def krippendorff_alpha(reliability: np.ndarray, *, level: AlphaLevel = "nominal") -> float:
    """Krippendorff's alpha from a raters x units matrix of values, NaN where a rater did not rate a unit.

    Units rated by fewer than two raters are not pairable and do not count. Returns NaN when the pairable
    values hold a single value (no disagreement is possible).
    """
    if level not in ALPHA_LEVELS:
        raise ConfigError(f"level={level!r} is not one of {list(ALPHA_LEVELS)}")
    data = np.asarray(reliability, dtype=np.float64)
    if data.ndim != 2:
        raise SchemaError(f"reliability must be 2-D (raters x units), got shape {data.shape}")
    values = np.unique(data[~np.isnan(data)])
    if values.size == 0:
        return float("nan")
    # units x values: how many raters gave each value to each unit
    idx = np.searchsorted(values, np.nan_to_num(data.T, nan=values[0]))
    counts = np.zeros((data.shape[1], values.size), np.float64)
    units, raters = np.nonzero(~np.isnan(data.T))
    np.add.at(counts, (units, idx[units, raters]), 1.0)
    m = counts.sum(axis=1)
    pairable = m >= 2
    counts, m = counts[pairable], m[pairable]
    if counts.shape[0] == 0:
        return float("nan")
    weights = 1.0 / (m - 1.0)
    coincidence = (counts * weights[:, None]).T @ counts - np.diag((counts * weights[:, None]).sum(axis=0))
    n_c = coincidence.sum(axis=1)
    n = n_c.sum()
    nominal = level == "nominal"
    delta = 1.0 - np.eye(values.size) if nominal else np.square(values[:, None] - values[None, :])
    observed = float((coincidence * delta).sum())
    expected = float((np.outer(n_c, n_c) * delta).sum()) / (n - 1.0)
    if expected == 0.0:
        return float("nan")
    return 1.0 - observed / expected
