"""Check ``missing``: missing-value rates, training set against the production window.

A value is missing when it is null, NaN, or its key is absent from the request. A feature
fails when its missing rate in production exceeds the training set's by more than
``drift.missing_max_increase`` (point estimates: the rates of these two samples). Features
production sends that the training set lacks are listed (models usually ignore them).

>>> missing_rate([1, None, float("nan"), 4])
0.5
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rollguard.preflight.base import FAIL, PASS, SKIPPED, CheckResult, Context
from rollguard.preflight.data import is_missing

__all__ = ["MissingCheck", "missing_rate"]


def missing_rate(values: Sequence[Any]) -> float:
    return sum(is_missing(v) for v in values) / len(values) if values else 0.0


class MissingCheck:
    name = "missing"
    title = "Missing values (training set vs production window)"

    def run(self, context: Context) -> CheckResult:
        started = time.perf_counter()
        limit = context.config.drift.missing_max_increase
        production = context.production
        if not len(production):
            return CheckResult(self.name, SKIPPED, self.title,
                               ["The production window holds no request."], {})
        rows = []
        for name in context.schema:
            train_rate = missing_rate(context.train.column(name))
            prod_rate = missing_rate(production.column(name))
            status = FAIL if prod_rate - train_rate > limit else PASS
            rows.append({"feature": name, "train": round(train_rate, 6),
                         "production": round(prod_rate, 6),
                         "increase": round(prod_rate - train_rate, 6), "status": status})
        extra = sorted({key for row in production.rows for key in row} - set(context.schema)
                       - {context.config.target})
        failed = [r for r in rows if r["status"] == FAIL]
        sentences = [f"{r['feature']} is missing in {100 * r['production']:.3g}% of production "
                     f"requests against {100 * r['train']:.3g}% of training rows (+"
                     f"{100 * r['increase']:.3g} points > {100 * limit:g}; point estimates)."
                     for r in failed]
        if not failed:
            sentences.append(f"No feature is missing in production more often than in training"
                             f" by more than {100 * limit:g} points.")
        if extra:
            sentences.append(f"Production sends features the training set lacks: "
                             f"{', '.join(extra[:10])}.")
        return CheckResult(self.name, FAIL if failed else PASS, self.title, sentences,
                           {"features": rows, "max_increase": limit, "extra_features": extra},
                           seconds=time.perf_counter() - started)
