"""What every signal shares: its inputs, its output, and the small interface the registry holds.

A signal turns per-frame evidence (kNN distances, logits, manifest columns) into one raw value per frame
(NaN where it cannot say anything) plus optional detail columns used in reasons. Calibration to a
percentile and fusion happen elsewhere (`mining.calibration`, `mining.fusion`), so every signal is a pure
function of numpy/Arrow inputs and can be tested without FAISS, Ray or Spark.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import pyarrow as pa

from edgemine.errors import ConfigError

Calibration = Literal["reference", "mined", "absolute"]
Reduce = Literal["kth", "mean"]
Need = Literal["reference_knn", "batch_knn", "logits", "table"]


def check_choice(name: str, value: object, lit: Any) -> None:
    """Raise ConfigError naming `value` and the valid choices of the Literal `lit`."""
    valid = get_args(lit)
    if value not in valid:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(repr, valid))}")


def knn_reduce(distances: np.ndarray, *, k: int, reduce: Reduce = "kth") -> np.ndarray:
    """One number per row from sorted kNN distances: the k-th distance or the mean of the first k.

    Rows with fewer than k finite neighbours use those they have; rows with none give NaN.
    """
    check_choice("reduce", reduce, Reduce)
    if k < 1:
        raise ConfigError(f"k={k} must be >= 1")
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2:
        raise ConfigError(f"distances must be a 2-D (frames, neighbours) array, got shape {d.shape}")
    if d.shape[1] < k:
        raise ConfigError(f"k={k} but only {d.shape[1]} neighbour distances were given")
    d = d[:, :k]
    finite = np.isfinite(d)
    n_ok = finite.sum(axis=1)
    out = np.full(d.shape[0], np.nan)
    has = n_ok > 0
    if reduce == "kth":
        out[has] = d[has, n_ok[has] - 1]
    else:
        out[has] = np.where(finite, d, 0.0).sum(axis=1)[has] / n_ok[has]
    return out


@dataclass
class SignalInputs:
    """Everything a signal may read for one batch of n frames, aligned row by row."""

    n: int
    table: pa.Table | None = None  # manifest columns of these frames
    reference_distances: np.ndarray | None = None  # (n, K) distances to the nearest reference frames
    batch_distances: np.ndarray | None = None  # (n, K) distances to the nearest other mined frames
    logits: Sequence[np.ndarray] = ()  # one (n, C) array per model; NaN rows where a model has none
    probs: np.ndarray | None = None  # (n, C) class probabilities logged in the manifest; NaN rows = none


@dataclass
class SignalOutput:
    raw: np.ndarray  # (n,) float64, NaN where the signal has no value for a frame
    detail: dict[str, np.ndarray] = field(default_factory=dict)  # extra per-frame numbers for reasons
    fired: list[list[str]] | None = None  # names of the rules that fired (signals with a `fired_column` only)


class Signal(ABC):
    """A scoring signal. Subclasses set the class attributes and implement `compute` and `reason`.

    A signal also says which columns it writes (`output_columns`: `<name>_raw`, one `<name>__<detail>` per
    detail value, and its `fired_column` if it fires rules), which manifest columns it reads
    (`table_columns`) and how its reasons read (`reason`, `fired_reason`), so the scoring code
    (`mining.scoring`) and the job that feeds it need no case per signal.
    """

    name: ClassVar[str]
    calibration: ClassVar[Calibration]  # percentile against the reference, the mined frames, or as is
    extrapolate: ClassVar[bool] = True  # continuous values: fit a tail beyond the calibration (see calibration)
    needs: ClassVar[frozenset[Need]]
    # A signal that fires named rules writes them to this list<string> column; those rules, not its
    # percentile, are its reasons ("trigger hard_brake").
    fired_column: ClassVar[str | None] = None
    # The coverage guardrail (mining/coverage.py) reads this signal's percentiles when it is calibrated
    # against the reference's other drives.
    guards_coverage: ClassVar[bool] = False
    neighbours: int = 0  # kNN depth this signal reads (for reference_knn / batch_knn)
    exclude_same_drive: bool = False  # batch_knn: neighbours from other drives only
    condition: str | None = None  # calibrated among the fleet's frames of this metadata value (see `within`)

    @abstractmethod
    def compute(self, inputs: SignalInputs) -> SignalOutput: ...

    @abstractmethod
    def reason(self, raw: float, pct: float, detail: dict[str, float]) -> str:
        """Human-readable reason, e.g. "novelty p99.7 (kNN distance 0.83)"."""

    @classmethod
    def fired_reason(cls, rule: str) -> str:
        """The reason a fired rule gives, e.g. "trigger hard_brake" (signals with a `fired_column`)."""
        return f"{cls.name} {rule}"

    def within(self, condition: str) -> Signal:
        """A copy of this signal calibrated among the fleet's frames of `condition` (e.g. "time_of_day=night"),
        a value the reference lacks: its percentiles rank those frames among themselves rather than against a
        reference they are all far from (`edgemine.jobs.score.Conditions`); `reason` may say so."""
        out = copy.copy(self)
        out.condition = condition
        return out

    @property
    def raw_column(self) -> str:
        return f"{self.name}_raw"

    def detail_column(self, detail: str) -> str:
        return f"{self.name}__{detail}"

    def output_columns(self, output: SignalOutput) -> dict[str, pa.Array]:
        """The columns one batch's `output` is written as: raw value, detail values, fired rules."""
        cols = {self.raw_column: pa.array(output.raw, pa.float64())}
        cols.update({self.detail_column(k): pa.array(v, pa.float64()) for k, v in output.detail.items()})
        if self.fired_column is not None:
            fired = output.fired if output.fired is not None else [[] for _ in range(len(output.raw))]
            cols[self.fired_column] = pa.array(fired, pa.list_(pa.string()))
        return cols

    def read_output(self, table: pa.Table) -> SignalOutput:
        """The inverse of `output_columns`: this signal's output from a table holding its columns."""
        raw = table.column(self.raw_column).to_numpy(zero_copy_only=False).astype(np.float64)
        prefix = self.detail_column("")
        detail = {c[len(prefix):]: table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                  for c in table.column_names if c.startswith(prefix)}
        fired = None
        if self.fired_column is not None and self.fired_column in table.column_names:
            fired = [list(f or ()) for f in table.column(self.fired_column).to_pylist()]
        return SignalOutput(raw, detail=detail, fired=fired)

    def table_columns(self, available: Sequence[str]) -> list[str]:
        """Manifest columns `compute` reads from `inputs.table`; raises ConfigError naming one not `available`."""
        return []

    def options(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}
