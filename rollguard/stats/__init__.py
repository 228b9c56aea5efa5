"""Small, mergeable online statistics: the pure core's descriptive figures.

Every statistic follows River's style (``update`` returns self, ``get()`` reads, ``+=`` merges a
partial, ``+`` merges into a copy) and saves its state with ``to_dict()`` (JSON-safe, exact) /
``from_dict(d)``; :func:`rollguard.stats.codec.from_dict` rebuilds any of them from its state.
Nothing here reads a clock or talks to Kafka.

>>> from rollguard.stats import ClassificationStats
>>> partition_0 = ClassificationStats().update(True, True, 0.9)
>>> partition_1 = ClassificationStats().update(False, True, 0.6)
>>> (partition_0 + partition_1).get()["precision"]
0.5
"""

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
from rollguard.stats.codec import from_dict
from rollguard.stats.counts import Average, Proportion
from rollguard.stats.delay import DelayStats
from rollguard.stats.drift import Drift, FeatureDrift
from rollguard.stats.losses import LOSSES, per_request_loss
from rollguard.stats.moments import Correlation, MeanVariance
from rollguard.stats.pairs import PairStats
from rollguard.stats.ranking import (NDCG, HitRate, PrecisionAtK, Preference, RankingStats,
                                     ReciprocalRank, Reward)
from rollguard.stats.regression import RegressionStats
from rollguard.stats.serving import ServingStats, served_shares
from rollguard.stats.sketch import QuantileSketch
from rollguard.stats.windows import Hourly

__all__ = [
    "LOSSES",
    "Average",
    "BinaryConfusion",
    "BinnedROCAUC",
    "Brier",
    "Calibration",
    "ClassificationStats",
    "Correlation",
    "DelayStats",
    "Drift",
    "FeatureDrift",
    "HitRate",
    "Hourly",
    "LogLoss",
    "MeanVariance",
    "MulticlassConfusion",
    "NDCG",
    "PairStats",
    "PrecisionAtK",
    "Preference",
    "Proportion",
    "QuantileSketch",
    "RankingStats",
    "ReciprocalRank",
    "RegressionStats",
    "Reward",
    "ServingStats",
    "Statistic",
    "from_dict",
    "per_request_loss",
    "served_shares",
]
