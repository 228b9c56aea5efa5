"""Regression statistics on labelled outcomes of one arm (and segment): MAE, MSE, RMSE.

An integer count and four float sums (absolute error, squared error, true values, predicted
values): merging adds them, so merged partials differ from the whole stream only by float
rounding. Kept in one class rather than four ``Average`` objects because it is updated on the
hot path and one update costs a quarter of four.

>>> reg = RegressionStats()
>>> for y, pred in [(3.0, 2.5), (-0.5, 0.0), (2.0, 2.0), (7.0, 8.0)]:
...     _ = reg.update(y, pred)
>>> {name: round(value, 4) for name, value in reg.get().items()}
{'count': 4, 'mae': 0.5, 'mse': 0.375, 'rmse': 0.6124, 'mean_true': 2.875, 'mean_pred': 3.125}
"""

from __future__ import annotations

import math
from typing import Any, Self

from rollguard.stats.base import Statistic, ratio


class RegressionStats(Statistic):
    """Count, MAE, MSE, RMSE and the means of true and predicted values (None when empty)."""

    TYPE = "regression"

    def __init__(self) -> None:
        self.n = 0
        self.abs_error = 0.0
        self.sq_error = 0.0
        self.sum_true = 0.0
        self.sum_pred = 0.0

    def update(self, y_true: float, y_pred: float) -> Self:
        error = y_pred - y_true
        self.n += 1
        self.abs_error += abs(error)
        self.sq_error += error * error
        self.sum_true += y_true
        self.sum_pred += y_pred
        return self

    def get(self) -> dict[str, Any]:
        mse = ratio(self.sq_error, self.n)
        return {
            "count": self.n,
            "mae": ratio(self.abs_error, self.n),
            "mse": mse,
            "rmse": math.sqrt(mse) if mse is not None else None,
            "mean_true": ratio(self.sum_true, self.n),
            "mean_pred": ratio(self.sum_pred, self.n),
        }

    def merge(self, other: RegressionStats) -> Self:
        self._check_same_kind(other)
        self.n += other.n
        self.abs_error += other.abs_error
        self.sq_error += other.sq_error
        self.sum_true += other.sum_true
        self.sum_pred += other.sum_pred
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "n": self.n,
            "abs_error": self.abs_error,
            "sq_error": self.sq_error,
            "sum_true": self.sum_true,
            "sum_pred": self.sum_pred,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type_tag(d)
        new = cls()
        new.n = int(d["n"])
        new.abs_error, new.sq_error = float(d["abs_error"]), float(d["sq_error"])
        new.sum_true, new.sum_pred = float(d["sum_true"]), float(d["sum_pred"])
        return new
