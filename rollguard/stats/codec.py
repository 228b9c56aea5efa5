"""Rebuild any statistic from its ``to_dict()`` state, by its ``"type"`` tag.

An explicit mapping from tag to class: nothing is imported or evaluated from the data.

>>> from rollguard.stats import ServingStats
>>> state = ServingStats().update(latency_ms=12.0).to_dict()
>>> from_dict(state).get()["count"]
1
>>> from_dict({"type": "os.system"})
Traceback (most recent call last):
...
ValueError: unknown statistic type 'os.system'
"""

from __future__ import annotations

from typing import Any

from rollguard.stats.auc import BinnedROCAUC
from rollguard.stats.base import Statistic
from rollguard.stats.calibration import Calibration
from rollguard.stats.classification import (
    BinaryConfusion,
    Brier,
    ClassificationStats,
    LogLoss,
    MulticlassConfusion,
)
from rollguard.stats.counts import Average, Proportion
from rollguard.stats.delay import DelayStats
from rollguard.stats.drift import Drift, FeatureDrift
from rollguard.stats.moments import Correlation, MeanVariance
from rollguard.stats.pairs import PairStats
from rollguard.stats.ranking import (NDCG, HitRate, PrecisionAtK, Preference, RankingStats,
                                     ReciprocalRank, Reward)
from rollguard.stats.regression import RegressionStats
from rollguard.stats.serving import ServingStats
from rollguard.stats.sketch import QuantileSketch
from rollguard.stats.windows import Hourly

#: type tag -> class; every statistic of rollguard.stats is here.
TYPES: dict[str, type[Statistic]] = {
    cls.TYPE: cls
    for cls in (
        Proportion,
        Average,
        MeanVariance,
        Correlation,
        QuantileSketch,
        BinnedROCAUC,
        Calibration,
        LogLoss,
        Brier,
        BinaryConfusion,
        MulticlassConfusion,
        ClassificationStats,
        RegressionStats,
        ServingStats,
        PairStats,
        DelayStats,
        Drift,
        FeatureDrift,
        Hourly,
        HitRate,
        ReciprocalRank,
        NDCG,
        PrecisionAtK,
        Reward,
        Preference,
        RankingStats,
    )
}


def from_dict(d: dict[str, Any]) -> Statistic:
    """The statistic whose ``to_dict()`` is ``d``."""
    tag = d.get("type") if isinstance(d, dict) else None
    cls = TYPES.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise ValueError(f"unknown statistic type {tag!r}")
    return cls.from_dict(d)
