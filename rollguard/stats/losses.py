"""Per-request losses of the primary metrics (lower is better), for paired differences.

The experiment's ``primary.metric`` names one of ``LOSSES``; a shadow pair's difference is
``champion_loss - candidate_loss`` (see :class:`~rollguard.stats.pairs.PairStats`), so a positive
mean favours the candidate. ``accuracy`` is the 0/1 loss (1 when wrong); ``log_loss`` and
``brier`` need the score (probability of the positive class) and a boolean label;
``abs_error`` and ``sq_error`` are for regression.

>>> per_request_loss("accuracy", y_true=True, y_pred=False)
1.0
>>> round(per_request_loss("log_loss", y_true=True, score=0.8), 6)
0.223144
>>> per_request_loss("sq_error", y_true=3.0, y_pred=1.5)
2.25
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from rollguard.stats.classification import PROBABILITY_CLIP


def _zero_one(y_true: Any, y_pred: Any, score: float | None) -> float:
    return 0.0 if y_true == y_pred else 1.0


def _needs_score(metric: str, score: float | None) -> float:
    if score is None:
        raise ValueError(f"the {metric} loss needs a score")
    return score


def _log_loss(y_true: Any, y_pred: Any, score: float | None) -> float:
    p = _needs_score("log_loss", score)
    p = p if y_true else 1.0 - p
    return -math.log(min(max(p, PROBABILITY_CLIP), 1.0 - PROBABILITY_CLIP))


def _brier(y_true: Any, y_pred: Any, score: float | None) -> float:
    gap = _needs_score("brier", score) - (1.0 if y_true else 0.0)
    return gap * gap


def _abs_error(y_true: Any, y_pred: Any, score: float | None) -> float:
    return abs(float(y_pred) - float(y_true))


def _sq_error(y_true: Any, y_pred: Any, score: float | None) -> float:
    gap = float(y_pred) - float(y_true)
    return gap * gap


#: metric name -> loss(y_true, y_pred, score)
LOSSES: dict[str, Callable[[Any, Any, float | None], float]] = {
    "accuracy": _zero_one,
    "log_loss": _log_loss,
    "brier": _brier,
    "abs_error": _abs_error,
    "sq_error": _sq_error,
}


def per_request_loss(
    metric: str, y_true: Any, y_pred: Any = None, score: float | None = None
) -> float:
    """The loss of one prediction under ``metric`` (one of ``LOSSES``)."""
    try:
        loss = LOSSES[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(LOSSES)}") from None
    return loss(y_true, y_pred, score)
