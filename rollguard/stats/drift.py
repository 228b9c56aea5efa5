"""Drift of a stream of numbers (scores, numeric features) against a reference: PSI and KS.

The reference is either the first ``reference_size`` values the statistic sees (default 1000)
or an explicit sample given at construction (e.g. read from the reference file an experiment
names). Reference and current values go into two :class:`~rollguard.stats.sketch.QuantileSketch`
with the same bucket mapping, so both are exactly mergeable and can be compared bucket by
bucket. Note what "first N" means once merged: every partial (one per partition) takes its own
first N values as reference, so the merged reference is the first N values *of each
partition*. An explicit reference is the same in every partial and is not added up on merge.

- **PSI** (population stability index; Siddiqi 2006, "Credit risk scorecards", Wiley; Yurdakul
  2018, "Statistical properties of population stability index", WMU dissertation):
  ``sum_b (cur_b - ref_b) * ln(cur_b / ref_b)`` over ``psi_bins`` (default 10) bins cut at the
  reference's quantiles, read from the reference sketch at ``get()`` time (cuts fall on bucket
  edges, so a bin's reference share is 1/psi_bins up to one bucket's mass); shares below
  ``psi_epsilon`` (1e-4) are raised to it so an empty bin gives a large finite value.
  Usual reading: < 0.1 stable, 0.1–0.25 moderate shift, > 0.25 major shift.
- **KS** (two-sample Kolmogorov–Smirnov distance): ``max |CDF_ref - CDF_cur|`` over the
  bucket edges. It is the exact KS distance of the two samples after rounding each value to
  its bucket (relative width ``gamma - 1``, about ``2 * relative_accuracy``): never above the
  exact KS, and below it by at most the largest share either sample has in one bucket, which
  ``get()`` reports as ``ks_max_error``.

>>> import random
>>> rng = random.Random(7)
>>> drift = Drift(reference_size=2000)
>>> for _ in range(2000):
...     _ = drift.update(rng.gauss(0.0, 1.0))
>>> for _ in range(2000):
...     _ = drift.update(rng.gauss(1.0, 1.0))   # the mean moved by one standard deviation
>>> result = drift.get()
>>> result["psi"] > 0.25, 0.3 < result["ks"] < 0.5
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Self

from rollguard.stats.base import Statistic
from rollguard.stats.sketch import QuantileSketch


class Drift(Statistic):
    """PSI and KS of a value stream against its reference (see the module docstring).

    ``get()`` gives ``reference`` and ``current`` (counts), ``psi``, ``ks`` and
    ``ks_max_error`` (None until both samples have values).

    >>> d = Drift(reference=[0.1, 0.2, 0.3, 0.4])
    >>> _ = d.update(0.1).update(0.25).update(0.3).update(0.45)
    >>> d.get()["ks"]
    0.25
    """

    TYPE = "drift"

    def __init__(
        self,
        reference_size: int = 1000,
        reference: Iterable[float] | None = None,
        *,
        relative_accuracy: float = 0.01,
        max_buckets: int = 2048,
        psi_bins: int = 10,
        psi_epsilon: float = 1e-4,
    ) -> None:
        if int(psi_bins) != psi_bins or psi_bins < 1:
            raise ValueError(f"psi_bins must be a positive integer, got {psi_bins!r}")
        if not 0.0 < psi_epsilon < 1.0:
            raise ValueError(f"psi_epsilon must be in (0, 1), got {psi_epsilon!r}")
        self.psi_bins = int(psi_bins)
        self.psi_epsilon = float(psi_epsilon)
        self.reference = QuantileSketch(
            relative_accuracy=relative_accuracy, max_buckets=max_buckets
        )
        self.current = QuantileSketch(relative_accuracy=relative_accuracy, max_buckets=max_buckets)
        self.fixed_reference = reference is not None
        if reference is not None:
            for x in reference:
                self.reference.update(x)
            self.reference_size = self.reference.count
        else:
            if int(reference_size) != reference_size or reference_size < 0:
                raise ValueError(
                    f"reference_size must be a non-negative integer, got {reference_size!r}"
                )
            self.reference_size = int(reference_size)

    def update(self, x: float) -> Self:
        if not self.fixed_reference and self.reference.count < self.reference_size:
            self.reference.update(x)
        else:
            self.current.update(x)
        return self

    def get(self) -> dict[str, Any]:
        n_ref, n_cur = self.reference.count, self.current.count
        out: dict[str, Any] = {
            "reference": n_ref,
            "current": n_cur,
            "psi": None,
            "ks": None,
            "ks_max_error": None,
        }
        if n_ref == 0 or n_cur == 0:
            return out
        ref = dict(self.reference.ordered_counts())
        cur = dict(self.current.ordered_counts())
        bins = self.psi_bins
        ref_bins, cur_bins = [0] * bins, [0] * bins
        cum_ref = cum_cur = 0
        ks = 0.0
        largest_share = 0.0
        for position in sorted(ref.keys() | cur.keys()):
            r, c = ref.get(position, 0), cur.get(position, 0)
            # the PSI bin of a bucket: how many reference quantile cuts lie below it
            b = min(bins - 1, cum_ref * bins // n_ref)
            ref_bins[b] += r
            cur_bins[b] += c
            cum_ref += r
            cum_cur += c
            ks = max(ks, abs(cum_ref / n_ref - cum_cur / n_cur))
            largest_share = max(largest_share, r / n_ref, c / n_cur)
        eps = self.psi_epsilon
        psi = 0.0
        for r, c in zip(ref_bins, cur_bins):
            p_ref, p_cur = max(r / n_ref, eps), max(c / n_cur, eps)
            psi += (p_cur - p_ref) * math.log(p_cur / p_ref)
        out.update(psi=psi, ks=ks, ks_max_error=largest_share)
        return out

    def merge(self, other: Drift) -> Self:
        self._check_same_kind(other, "fixed_reference", "psi_bins", "psi_epsilon")
        if self.fixed_reference:
            if self.reference != other.reference:
                raise ValueError("cannot merge drift statistics with different explicit references")
        else:
            # each partial spends its own first-N budget (a join partition's deltas share
            # one budget between them), so the budgets need not be equal to merge
            self.reference.merge(other.reference)
        self.current.merge(other.current)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "reference_size": self.reference_size,
            "fixed_reference": self.fixed_reference,
            "psi_bins": self.psi_bins,
            "psi_epsilon": self.psi_epsilon,
            "reference": self.reference.to_dict(),
            "current": self.current.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type_tag(d)
        new = cls(
            reference_size=d["reference_size"], psi_bins=d["psi_bins"], psi_epsilon=d["psi_epsilon"]
        )
        new.fixed_reference = bool(d["fixed_reference"])
        new.reference = QuantileSketch.from_dict(d["reference"])
        new.current = QuantileSketch.from_dict(d["current"])
        return new


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class FeatureDrift(Statistic):
    """A :class:`Drift` per numeric feature of the requests.

    ``update(features)`` takes a request's ``features`` object; values that are not finite
    numbers (strings, booleans, None, NaN) are skipped. With ``references`` (feature name ->
    reference sample, e.g. from the experiment's reference file) exactly those features are
    tracked; otherwise the first ``max_features`` feature names seen, each against its own
    first ``reference_size`` values (merged partials stay exact while there are at most
    ``max_features`` names).

    >>> fd = FeatureDrift(references={"age": [30.0, 40.0, 50.0]})
    >>> _ = fd.update({"age": 41.0, "country": "DE"}).update({"age": 52.0})
    >>> fd.get()["age"]["current"], list(fd.get())
    (2, ['age'])
    """

    TYPE = "feature_drift"

    def __init__(
        self,
        reference_size: int = 1000,
        references: Mapping[str, Iterable[float]] | None = None,
        *,
        max_features: int = 256,
        relative_accuracy: float = 0.01,
        psi_bins: int = 10,
    ) -> None:
        self.reference_size = int(reference_size)
        self.max_features = int(max_features)
        self.relative_accuracy = float(relative_accuracy)
        self.psi_bins = int(psi_bins)
        self.fixed_features = references is not None
        self.features: dict[str, Drift] = {}
        for name, sample in (references or {}).items():
            self.features[str(name)] = Drift(
                reference=sample, relative_accuracy=relative_accuracy, psi_bins=psi_bins
            )

    def _new_drift(self) -> Drift:
        return Drift(
            self.reference_size, relative_accuracy=self.relative_accuracy, psi_bins=self.psi_bins
        )

    def update(self, features: Mapping[str, Any]) -> Self:
        tracked = self.features
        for name, value in features.items():
            if not _numeric(value):
                continue
            drift = tracked.get(name)
            if drift is None:
                if self.fixed_features or len(tracked) >= self.max_features:
                    continue
                drift = tracked[name] = self._new_drift()
            drift.update(value)
        return self

    def get(self) -> dict[str, dict[str, Any]]:
        return {name: self.features[name].get() for name in sorted(self.features)}

    def merge(self, other: FeatureDrift) -> Self:
        self._check_same_kind(
            other,
            "max_features",
            "relative_accuracy",
            "psi_bins",
            "fixed_features",
        )
        for name in sorted(other.features):
            drift = other.features[name]
            if name in self.features:
                self.features[name].merge(drift)
            elif not self.fixed_features and len(self.features) < self.max_features:
                self.features[name] = drift.copy()
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "reference_size": self.reference_size,
            "max_features": self.max_features,
            "relative_accuracy": self.relative_accuracy,
            "psi_bins": self.psi_bins,
            "fixed_features": self.fixed_features,
            "features": {name: self.features[name].to_dict() for name in sorted(self.features)},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type_tag(d)
        new = cls(
            reference_size=d["reference_size"],
            max_features=d["max_features"],
            relative_accuracy=d["relative_accuracy"],
            psi_bins=d["psi_bins"],
        )
        new.fixed_features = bool(d["fixed_features"])
        new.features = {name: Drift.from_dict(state) for name, state in d["features"].items()}
        return new
