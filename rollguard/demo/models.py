"""The demo's three model versions, trained with River at start-up (about a second).

- ``loan:1``, the champion in production: a Hoeffding tree. The approval rule is linear in
  income, education and loan amount; a tree approximates that boundary with steps.
- ``loan:2``, a genuinely better candidate: a logistic regression on standardised features,
  trained on the same applications; a linear boundary fits the rule.
- ``loan:3``, a genuinely worse candidate for a real reason, a training/serving skew: the
  same logistic regression, but trained on the data warehouse's export, which stores
  ``commission`` in thousands of dollars. Its team measured it on a held-out part of that
  export and it looked as good as ``loan:2``; the serving path sends commission in dollars,
  as it does to every model, so its scaler sees values a thousand times too large.

No model knows which experiment it is in or how it "should" do: what rollguard decides comes
from their predictions on live traffic and the labels that come back.

>>> from rollguard.demo.data import training_rows
>>> models = train_models(seed=7, rows=training_rows(7, 300))
>>> sorted(models)
['loan:1', 'loan:2', 'loan:3']
>>> prediction, score = models["loan:2"].predict(training_rows(7, 1)[0][0])
>>> prediction in (0, 1) and 0.0 <= score <= 1.0
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Row = tuple[dict[str, float], int]

CHAMPION, BETTER, SKEWED = "loan:1", "loan:2", "loan:3"


def warehouse_export(x: dict[str, float]) -> dict[str, float]:
    """An application as the data warehouse exports it: commission in thousands of dollars."""
    return {k: (v / 1000.0 if k == "commission" else v) for k, v in x.items()}


def _identity(x: dict[str, float]) -> dict[str, float]:
    return x


@dataclass
class DemoModel:
    """One trained model version: ``predict(x)`` → ``(prediction, score)`` as served."""

    arm: str
    title: str
    model: Any
    #: what the model's team saw offline: accuracy on held-out rows prepared like its
    #: training data (filled by :func:`evaluate_offline`)
    offline_accuracy: float | None = None
    #: how its training (and offline evaluation) rows were prepared; serving never does this
    training_view: Callable[[dict[str, float]], dict[str, float]] = field(default=_identity)

    def predict(self, x: dict[str, float]) -> tuple[int, float]:
        proba = self.model.predict_proba_one(x)
        score = min(1.0, max(0.0, float(proba.get(1, 0.0))))
        return int(score >= 0.5), score


def _tree() -> Any:
    from river import tree

    return tree.HoeffdingTreeClassifier(grace_period=50, delta=1e-5)


def _logistic() -> Any:
    from river import linear_model, optim, preprocessing

    return preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=optim.SGD(0.05))


def train_models(seed: int, rows: Sequence[Row] | None = None) -> dict[str, DemoModel]:
    """Train the three versions on the same past applications (deterministic given ``seed``)."""
    if rows is None:
        from rollguard.demo.data import training_rows

        rows = training_rows(seed)
    specs = [
        (CHAMPION, "Hoeffding tree (in production)", _tree, _identity),
        (BETTER, "logistic regression, standardised features", _logistic, _identity),
        (SKEWED, "logistic regression on warehouse data (commission in k$)",
         _logistic, warehouse_export),
    ]
    models = {}
    for arm, title, build, view in specs:
        model = build()
        for x, y in rows:
            model.learn_one(view(x), y)
        models[arm] = DemoModel(arm, title, model, training_view=view)
    return models


def evaluate_offline(models: dict[str, DemoModel], rows: Sequence[Row]) -> None:
    """Each model's accuracy on held-out rows prepared as its team prepared its training data."""
    for m in models.values():
        right = sum(m.predict(m.training_view(x))[0] == y for x, y in rows)
        m.offline_accuracy = right / len(rows) if rows else None
