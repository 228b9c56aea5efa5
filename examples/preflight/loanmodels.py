"""The example's two models, trained with River on train.csv when this module is imported.

- ``predict_v1``, the champion: a Hoeffding tree, as in rollguard's demo;
- ``predict_v2``, the candidate: a logistic regression on standardised features. It refuses
  input it cannot use with a ``TypeError`` or ``ValueError`` (a clean, typed error) and
  imputes missing values with the training medians. ``predict_v2.fit`` trains a new one,
  so preflight can draw a learning curve and cross-validate it.

Both take a list of feature dicts and return ``(prediction, score)`` pairs.
"""

import csv
import math
import statistics
from pathlib import Path

from river import linear_model, optim, preprocessing, tree

HERE = Path(__file__).resolve().parent
FEATURES = ("salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears",
            "loan")


def read(name):
    with (HERE / name).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: float(r[k]) for k in FEATURES} for r in rows], [int(r["approved"]) for r in rows]


class Candidate:
    def __init__(self, rows, labels):
        self.medians = {k: statistics.median(r[k] for r in rows) for k in FEATURES}
        self.model = preprocessing.StandardScaler() | linear_model.LogisticRegression(
            optimizer=optim.SGD(0.05))
        for x, y in zip(rows, labels):
            self.model.learn_one(x, y)

    def clean(self, row):
        x = {}
        for k in FEATURES:
            v = row.get(k)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                v = self.medians[k]
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"{k} must be a number, got {type(v).__name__}")
            elif math.isinf(v):
                raise ValueError(f"{k} must be finite, got {v}")
            x[k] = float(v)
        return x

    def __call__(self, rows):
        out = []
        for row in rows:
            p = self.model.predict_proba_one(self.clean(row)).get(1, 0.0)
            p = min(1.0, max(0.0, p)) if p == p else 0.5
            out.append((int(p >= 0.5), p))
        return out

    @staticmethod
    def fit(rows, labels):
        return Candidate(rows, labels)


def _champion(rows, labels):
    model = tree.HoeffdingTreeClassifier(grace_period=50, delta=1e-5)
    for x, y in zip(rows, labels):
        model.learn_one(x, y)

    def predict(batch):
        out = []
        for row in batch:
            p = model.predict_proba_one({k: row.get(k) for k in FEATURES}).get(1, 0.0)
            out.append((int(p >= 0.5), p))
        return out
    return predict


TRAIN = read("train.csv")
predict_v1 = _champion(*TRAIN)
predict_v2 = Candidate(*TRAIN)
