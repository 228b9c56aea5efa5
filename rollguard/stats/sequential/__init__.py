"""Anytime-valid sequential tests: the statistics behind promote, rollback and guardrails.

Every object is small and mergeable, updated one observation at a time and readable after
every one (O(1)); its bounds hold at every time at once, so the policy may look as often as it
likes and stop whenever it decides (Ville's inequality; Howard, Ramdas, McAuliffe & Sekhon
2021, "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist.). Bounds
adapt to the variance they observe. Pure: no Kafka, no Faust, no clock.

=============================  =============================================================
primary metric, shadow         :class:`PairedMeanCS` — paired differences (betting at the
                               margin, EB, or asymptotic)
primary metric, ab/canary      :class:`DiffMeansCS` — independent arms, changing shares
one stream's mean              :class:`MeanCS` (:class:`BettingCS`,
                               :class:`EmpiricalBernsteinCS`, :class:`AsymptoticCS`)
rate/mean vs a limit           :class:`ThresholdTest`, :class:`DiffThresholdTest`
latency quantiles              :class:`QuantileCS`, :class:`QuantileRatioGuardrail`
score drift (KS distance)      :class:`KSDistanceCS` — DKW on the reference, time-uniform DKW
                               (Howard & Ramdas 2022) on the current scores
sample-ratio mismatch          :class:`SRMTest`
several candidates             :func:`per_candidate_alpha` (Bonferroni α/k)
=============================  =============================================================

>>> from rollguard.stats.sequential import PairedMeanCS, from_dict
>>> cs = PairedMeanCS(alpha=0.05, lower=-1.0, upper=1.0)
>>> for d in [0.0] * 50 + [1.0] * 10:
...     _ = cs.update(d)
>>> from_dict(cs.to_dict()) == cs
True
"""

from __future__ import annotations

from typing import Any

from rollguard.stats.sequential._base import FAIL, PASS, UNDECIDED, SequentialTest, bound_status
from rollguard.stats.sequential.asymptotic import AsymptoticCS
from rollguard.stats.sequential.cdf_distance import KSDistanceCS
from rollguard.stats.sequential.betting import BettingCS
from rollguard.stats.sequential.diff import DiffMeansCS
from rollguard.stats.sequential.eb import EmpiricalBernsteinCS
from rollguard.stats.sequential.mean import (
    DEFAULT_TUNED_N,
    MeanCS,
    PairedMeanCS,
    fixed_horizon_n,
)
from rollguard.stats.sequential.multiple import bonferroni_alpha, per_candidate_alpha
from rollguard.stats.sequential.quantile import LogHistogram, QuantileCS, QuantileRatioGuardrail
from rollguard.stats.sequential.srm import SRMTest
from rollguard.stats.sequential.threshold import DiffThresholdTest, ThresholdTest

#: type tag -> class, for :func:`from_dict`.
TYPES: dict[str, type[SequentialTest]] = {
    cls.TYPE: cls
    for cls in (
        EmpiricalBernsteinCS,
        BettingCS,
        AsymptoticCS,
        MeanCS,
        PairedMeanCS,
        DiffMeansCS,
        ThresholdTest,
        DiffThresholdTest,
        QuantileCS,
        QuantileRatioGuardrail,
        SRMTest,
        KSDistanceCS,
    )
}


def from_dict(d: dict[str, Any]) -> SequentialTest:
    """Rebuild any object of this package from its ``to_dict()`` state, by its type tag.

    >>> from_dict({"type": "os.system"})
    Traceback (most recent call last):
    ...
    ValueError: unknown sequential test type 'os.system'
    """
    tag = d.get("type") if isinstance(d, dict) else None
    try:
        cls = TYPES[tag]  # type: ignore[index]
    except (KeyError, TypeError):
        raise ValueError(f"unknown sequential test type {tag!r}") from None
    return cls.from_dict(d)


__all__ = [
    "DEFAULT_TUNED_N",
    "FAIL",
    "PASS",
    "TYPES",
    "UNDECIDED",
    "AsymptoticCS",
    "BettingCS",
    "DiffMeansCS",
    "DiffThresholdTest",
    "EmpiricalBernsteinCS",
    "KSDistanceCS",
    "LogHistogram",
    "MeanCS",
    "PairedMeanCS",
    "QuantileCS",
    "QuantileRatioGuardrail",
    "SRMTest",
    "SequentialTest",
    "ThresholdTest",
    "bonferroni_alpha",
    "bound_status",
    "fixed_horizon_n",
    "from_dict",
    "per_candidate_alpha",
]
