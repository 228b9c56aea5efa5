"""Classification statistics on labelled outcomes: confusion counts, log-loss, Brier, and the
composite ``ClassificationStats`` the pipeline updates per outcome of an arm (and segment).

Binary outcomes are booleans (the caller maps its labels to positive/negative). Definitions
follow scikit-learn's: precision ``tp / (tp + fp)``, recall ``tp / (tp + fn)``, F1
``2 tp / (2 tp + fp + fn)`` (None, not NaN, when the denominator is zero); log-loss is the mean
of ``-log p(true class)`` with ``p`` clipped to ``[1e-15, 1 - 1e-15]``; Brier the mean of
``(score - y)**2`` (Brier 1950, "Verification of forecasts expressed in terms of probability",
Monthly Weather Review 78). Log-loss, Brier, AUC and calibration use only the outcomes that
carried a score.

>>> stats = ClassificationStats(task="binary")
>>> outcomes = [(True, True, 0.8), (False, False, 0.3), (True, False, 0.4), (False, False, None)]
>>> for y, pred, score in outcomes:
...     _ = stats.update(y, pred, score)
>>> result = stats.get()
>>> result["count"], result["accuracy"], result["precision"], result["recall"], result["scored"]
(4, 0.75, 1.0, 0.5, 3)
>>> round(result["log_loss"], 4), round(result["brier"], 4), result["roc_auc"]
(0.4987, 0.1633, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any, Self

from rollguard.stats.auc import BinnedROCAUC
from rollguard.stats.base import Statistic, ratio
from rollguard.stats.calibration import Calibration
from rollguard.stats.counts import Average

#: Probabilities are clipped to [PROBABILITY_CLIP, 1 - PROBABILITY_CLIP] for the log-loss.
PROBABILITY_CLIP = 1e-15
_LOW, _HIGH = PROBABILITY_CLIP, 1.0 - PROBABILITY_CLIP

#: Multiclass labels beyond ``max_classes`` are counted together under this key.
OTHER_CLASS = None


class LogLoss(Average):
    """Mean binary log-loss of scores (probability of the positive class).

    >>> round(LogLoss().update(True, 0.9).update(False, 0.2).get(), 6)
    0.164252
    """

    TYPE = "log_loss"

    def update(self, y_true: bool, score: float) -> Self:  # type: ignore[override]
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"a score must be a probability in [0, 1], got {score!r}")
        p = score if y_true else 1.0 - score
        if p < _LOW:
            p = _LOW
        elif p > _HIGH:
            p = _HIGH
        self.n += 1
        self.total -= math.log(p)
        return self


class Brier(Average):
    """Mean Brier score ``(score - y)**2`` of binary scores.

    >>> round(Brier().update(True, 0.9).update(False, 0.2).get(), 6)
    0.025
    """

    TYPE = "brier"

    def update(self, y_true: bool, score: float) -> Self:  # type: ignore[override]
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"a score must be a probability in [0, 1], got {score!r}")
        gap = score - 1.0 if y_true else score
        self.n += 1
        self.total += gap * gap
        return self


class BinaryConfusion(Statistic):
    """Confusion counts of binary outcomes, and accuracy, precision, recall and F1.

    >>> BinaryConfusion().update(True, True).update(False, True).update(True, False).get()
    {'count': 3, 'accuracy': 0.3333333333333333, 'precision': 0.5, 'recall': 0.5, 'f1': 0.5}
    """

    TYPE = "binary_confusion"

    def __init__(self) -> None:
        self.tp = self.fp = self.tn = self.fn = 0

    def update(self, y_true: bool, y_pred: bool) -> Self:
        if y_pred:
            if y_true:
                self.tp += 1
            else:
                self.fp += 1
        elif y_true:
            self.fn += 1
        else:
            self.tn += 1
        return self

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    def get(self) -> dict[str, Any]:
        tp, fp, fn = self.tp, self.fp, self.fn
        return {
            "count": self.n,
            "accuracy": ratio(tp + self.tn, self.n),
            "precision": ratio(tp, tp + fp),
            "recall": ratio(tp, tp + fn),
            "f1": ratio(2 * tp, 2 * tp + fp + fn),
        }

    def merge(self, other: BinaryConfusion) -> Self:
        self._check_same_kind(other)
        self.tp += other.tp
        self.fp += other.fp
        self.tn += other.tn
        self.fn += other.fn
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.TYPE, "tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type_tag(d)
        new = cls()
        new.tp, new.fp, new.tn, new.fn = (int(d[k]) for k in ("tp", "fp", "tn", "fn"))
        return new


def _label_order(label: Any) -> tuple[int, str, Any]:
    # a total order over JSON labels of mixed types, "other" last; stable state for __eq__
    if label is OTHER_CLASS:
        return (1, "", 0)
    return (0, type(label).__name__, label)


class MulticlassConfusion(Statistic):
    """Per-class counts (true positives, predicted, actual) of multiclass outcomes; accuracy
    and macro-averaged precision, recall and F1.

    Macro averages run over the classes where the per-class figure is defined (precision:
    classes predicted at least once; recall: classes that occurred), like scikit-learn's
    ``average="macro", zero_division=np.nan``. At most ``max_classes`` labels are counted by
    name; later new labels share one ``other`` class (so merges of partials are exact while the
    stream has at most ``max_classes`` distinct labels). Labels are compared as Python values
    (``1 == 1.0 == True``): give one type of label per experiment.

    >>> m = MulticlassConfusion()
    >>> for y, pred in [("a", "a"), ("b", "a"), ("c", "c"), ("b", "b")]:
    ...     _ = m.update(y, pred)
    >>> result = m.get()
    >>> result["accuracy"], round(result["precision"], 4), round(result["f1"], 4), result["classes"]
    (0.75, 0.8333, 0.7778, 3)
    """

    TYPE = "multiclass_confusion"

    def __init__(self, max_classes: int = 1000) -> None:
        if int(max_classes) != max_classes or max_classes < 1:
            raise ValueError(f"max_classes must be a positive integer, got {max_classes!r}")
        self.max_classes = int(max_classes)
        self.classes: dict[Hashable, list[int]] = {}  # label -> [true positives, predicted, actual]
        self.n = 0
        self.correct = 0

    def _counts(self, label: Hashable) -> list[int]:
        counts = self.classes.get(label)
        if counts is None:
            named = len(self.classes) - (OTHER_CLASS in self.classes)
            if named >= self.max_classes:
                label = OTHER_CLASS
                counts = self.classes.get(label)
            if counts is None:
                counts = self.classes[label] = [0, 0, 0]
        return counts

    def update(self, y_true: Hashable, y_pred: Hashable) -> Self:
        self.n += 1
        true_counts = self._counts(y_true)
        true_counts[2] += 1
        if y_true == y_pred:
            self.correct += 1
            true_counts[0] += 1
            true_counts[1] += 1
        else:
            self._counts(y_pred)[1] += 1
        return self

    def get(self) -> dict[str, Any]:
        precisions = [tp / pred for tp, pred, _ in self.classes.values() if pred]
        recalls = [tp / actual for tp, _, actual in self.classes.values() if actual]
        f1s = [
            2 * tp / (pred + actual) for tp, pred, actual in self.classes.values() if pred + actual
        ]
        return {
            "count": self.n,
            "accuracy": ratio(self.correct, self.n),
            "precision": ratio(sum(precisions), len(precisions)),
            "recall": ratio(sum(recalls), len(recalls)),
            "f1": ratio(sum(f1s), len(f1s)),
            "classes": len(self.classes),
        }

    def merge(self, other: MulticlassConfusion) -> Self:
        self._check_same_kind(other, "max_classes")
        for label, (tp, pred, actual) in other.classes.items():
            counts = (
                self._counts(label)
                if label is not OTHER_CLASS
                else self.classes.setdefault(OTHER_CLASS, [0, 0, 0])
            )
            counts[0] += tp
            counts[1] += pred
            counts[2] += actual
        self.n += other.n
        self.correct += other.correct
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "max_classes": self.max_classes,
            "classes": [
                [label, *self.classes[label]] for label in sorted(self.classes, key=_label_order)
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type_tag(d)
        new = cls(max_classes=d["max_classes"])
        for label, tp, pred, actual in d["classes"]:
            new.classes[label] = [int(tp), int(pred), int(actual)]
            new.n += int(actual)
            new.correct += int(tp)
        return new


class ClassificationStats(Statistic):
    """Everything the pipeline reports on the labelled outcomes of one arm (and segment).

    ``task="binary"``: ``update(y_true: bool, y_pred: bool, score: float | None)``; ``get()``
    gives count, accuracy, precision, recall, F1, and over the outcomes with a score
    (``scored``): log-loss, Brier, ROC AUC (binned, see :mod:`rollguard.stats.auc`) and
    calibration (reliability bins and ECE).
    ``task="multiclass"``: ``update(y_true, y_pred)`` on labels; ``get()`` gives count,
    accuracy and macro precision, recall and F1 (see :class:`MulticlassConfusion`).

    >>> mc = ClassificationStats(task="multiclass").update("cat", "dog").update("dog", "dog")
    >>> mc.get()["accuracy"]
    0.5
    """

    TYPE = "classification"

    def __init__(
        self,
        task: str = "binary",
        *,
        auc_bins: int = 1000,
        calibration_bins: int = 10,
        max_classes: int = 1000,
    ) -> None:
        if task not in ("binary", "multiclass"):
            raise ValueError(f"task must be 'binary' or 'multiclass', got {task!r}")
        self.task = task
        self.binary = task == "binary"
        if self.binary:
            self.confusion: BinaryConfusion | MulticlassConfusion = BinaryConfusion()
            self.log_loss = LogLoss()
            self.brier = Brier()
            self.roc_auc = BinnedROCAUC(bins=auc_bins)
            self.calibration = Calibration(bins=calibration_bins)
        else:
            self.confusion = MulticlassConfusion(max_classes=max_classes)

    def update(self, y_true: Any, y_pred: Any, score: float | None = None) -> Self:
        if score is not None and self.binary and not 0.0 <= score <= 1.0:
            # checked first, so a bad score changes no figure
            raise ValueError(f"a score must be a probability in [0, 1], got {score!r}")
        self.confusion.update(y_true, y_pred)
        if score is not None and self.binary:
            self.log_loss.update(y_true, score)
            self.brier.update(y_true, score)
            self.roc_auc.update(y_true, score)
            self.calibration.update(y_true, score)
        return self

    def _parts(self) -> dict[str, Statistic]:
        if not self.binary:
            return {"confusion": self.confusion}
        return {
            "confusion": self.confusion,
            "log_loss": self.log_loss,
            "brier": self.brier,
            "roc_auc": self.roc_auc,
            "calibration": self.calibration,
        }

    def get(self) -> dict[str, Any]:
        out = self.confusion.get()
        if self.binary:
            out["scored"] = self.log_loss.n
            out["log_loss"] = self.log_loss.get()
            out["brier"] = self.brier.get()
            out["roc_auc"] = self.roc_auc.get()
            out["calibration"] = self.calibration.get()
        return out

    def merge(self, other: ClassificationStats) -> Self:
        self._check_same_kind(other, "task")
        for name, part in self._parts().items():
            part.merge(getattr(other, name))
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.TYPE, "task": self.task} | {
            name: part.to_dict() for name, part in self._parts().items()
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type_tag(d)
        new = cls(task=d["task"])
        if new.binary:
            new.confusion = BinaryConfusion.from_dict(d["confusion"])
            new.log_loss = LogLoss.from_dict(d["log_loss"])
            new.brier = Brier.from_dict(d["brier"])
            new.roc_auc = BinnedROCAUC.from_dict(d["roc_auc"])
            new.calibration = Calibration.from_dict(d["calibration"])
        else:
            new.confusion = MulticlassConfusion.from_dict(d["confusion"])
        return new
