"""Sample-ratio mismatch: is the served split the configured traffic split?

Lindon & Malek (2022), "Anytime-valid inference for multinomial count data", NeurIPS: under
the null the arm serving each request is a draw from the configured shares θ₀; the
Dirichlet-multinomial mixture (prior Dirichlet(k θ₀)) gives the e-process

    E_t = [ B(k θ₀ + c_t) / B(k θ₀) ] / Π_i θ₀,i^{c_t,i}     (c_t: counts per arm, B: multivariate Beta)

a test martingale under the null (a Bayes factor of the mixture against θ₀), so
``P(sup_t E_t ≥ 1/α) ≤ α`` however often it is read (Ville). Sequentially it is the product of
the mixture's predictive probabilities ``(k θ₀,i + c_i)/(k + n)`` over θ₀,i, so an update is
O(1). ``concentration`` k sets how far from θ₀ the mixture looks: smaller k detects large
mismatches sooner, larger k small ones (the paper's and ``savvi``'s default is 100).

*Changing shares* (canary steps, bandit reallocations). :meth:`set_shares` closes the current
period and starts a new one, with its own counts, against the new shares; the e-process is the
product of the periods' e-values. Each period's factor is a test martingale started afresh given
everything before, so the product is again a test martingale, and the same 1/α threshold holds
over all periods at once.

*Answers.* ``"fail"`` once the e-process has reached 1/α (sticky: that is the event Ville's
inequality bounds) or once an arm with no configured share serves a request; otherwise
``"pass"``. SRM is an alarm: its "pass" means "no mismatch detected", not a proof of no
mismatch, so it never holds a promotion back on its own.

Merge: partials of the same period (same shares) add their counts; the current period's e-value
is recomputed from the summed counts, exactly the whole-stream value (it depends on counts
only). Closed periods' log e-values add. An alarm either part had raised stays raised, so after
a merge the alarm is the union of each part's and the merged process's crossing, each at most
α: run one SRM test per experiment on merged counts where the error must be exactly α.

>>> srm = SRMTest(alpha=0.05, shares={"m:1": 0.9, "m:2": 0.1})
>>> for i in range(2000):
...     _ = srm.update("m:2" if i % 10 == 0 else "m:1")     # served as configured
>>> srm.status(), srm.e_value < 1
('pass', True)
>>> _ = srm.set_shares({"m:1": 0.5, "m:2": 0.5})          # canary step
>>> for i in range(2000):
...     _ = srm.update("m:2" if i % 3 == 0 else "m:1")      # served 1/3, not 1/2
>>> srm.status(), srm.e_value > 20
('fail', True)
>>> SRMTest.from_dict(srm.to_dict()) == srm
True
"""

from __future__ import annotations

import math
from typing import Any, Self

from rollguard.stats.sequential._base import FAIL, PASS, SequentialTest, check_alpha

#: Shares must sum to 1 within this tolerance.
_SUM_TOLERANCE = 1e-6


def _normalise(shares: dict[str, float]) -> dict[str, float]:
    """Arms with a positive share, sorted by name; shares must sum to 1."""
    if not shares:
        raise ValueError("shares must name at least one arm")
    total = 0.0
    for arm, share in shares.items():
        share = float(share)
        if not (math.isfinite(share) and share >= 0.0):
            raise ValueError(f"share of {arm!r} must be a finite number ≥ 0, got {share!r}")
        total += share
    if abs(total - 1.0) > _SUM_TOLERANCE:
        raise ValueError(f"shares must sum to 1, got {total!r}")
    return {arm: float(shares[arm]) for arm in sorted(shares) if shares[arm] > 0.0}


class SRMTest(SequentialTest):
    """Anytime-valid sample-ratio-mismatch test (Lindon & Malek 2022), periods multiplied."""

    TYPE = "sequential.SRMTest"

    def __init__(
        self, alpha: float, shares: dict[str, float], concentration: float = 100.0
    ) -> None:
        self.alpha = check_alpha(alpha)
        if not (math.isfinite(concentration) and concentration > 0):
            raise ValueError(f"concentration must be positive, got {concentration!r}")
        self.concentration = float(concentration)
        self._threshold = math.log(1.0 / self.alpha)
        self.past_log_e = 0.0  # Σ log e-values of closed periods
        self.max_log_e = 0.0  # running maximum of the log e-process (0 at the start: E_0 = 1)
        self.unexpected = 0  # requests served by an arm with no configured share
        self.periods = 0  # closed periods
        self._start(shares)

    def _start(self, shares: dict[str, float]) -> None:
        self.shares = _normalise(shares)
        self.counts = {arm: 0 for arm in self.shares}
        self.n = 0
        self.log_e = 0.0  # current period

    # -- updating ---------------------------------------------------------------------------
    def set_shares(self, shares: dict[str, float]) -> Self:
        """Start a new period against new configured shares (no-op if unchanged)."""
        new = _normalise(shares)
        if new == self.shares:
            return self
        self.past_log_e += self.log_e
        self.periods += 1
        self._start(new)
        return self

    def update(self, arm: str) -> Self:
        """Record that ``arm`` served one request."""
        share = self.shares.get(arm)
        if share is None:
            self.unexpected += 1
            return self
        count = self.counts[arm]
        # predictive probability of the Dirichlet-multinomial mixture over the null's
        self.log_e += math.log(
            (self.concentration * share + count) / ((self.concentration + self.n) * share)
        )
        self.counts[arm] = count + 1
        self.n += 1
        total = self.past_log_e + self.log_e
        if total > self.max_log_e:
            self.max_log_e = total
        return self

    # -- reading ----------------------------------------------------------------------------
    @property
    def log_e_value(self) -> float:
        """Log of the current e-process value (all periods)."""
        return math.inf if self.unexpected else self.past_log_e + self.log_e

    @property
    def e_value(self) -> float:
        """The current e-process value (inf once an unexpected arm served)."""
        log_e = self.log_e_value
        return math.inf if log_e > 709.0 else math.exp(log_e)

    @property
    def p_value(self) -> float:
        """Anytime-valid p-value: 1 / running maximum of the e-process, at most 1."""
        if self.unexpected:
            return 0.0
        return min(1.0, math.exp(-self.max_log_e))

    def status(self) -> str:
        """``"fail"`` once the e-process reached 1/α (sticky), else ``"pass"``."""
        if self.unexpected or self.max_log_e >= self._threshold:
            return FAIL
        return PASS

    def get(self) -> str:
        """Same as :meth:`status` (River's reading method)."""
        return self.status()

    def evidence(self) -> dict[str, Any]:
        n = self.n
        observed = {arm: (c / n if n else None) for arm, c in self.counts.items()}
        return {
            "method": "Dirichlet-multinomial e-process (Lindon & Malek 2022)",
            "n": n,
            "shares": dict(self.shares),
            "observed": observed,
            "unexpected": self.unexpected,
            "periods": self.periods + 1,
            "log_e_value": self.log_e_value if not self.unexpected else None,
            "p_value": self.p_value,
            "alpha": self.alpha,
            "status": self.status(),
        }

    # -- merging and saving -----------------------------------------------------------------
    def _closed_form_log_e(self) -> float:
        k = self.concentration
        log_e = math.lgamma(k) - math.lgamma(k + self.n)
        for arm, share in self.shares.items():
            c = self.counts[arm]
            log_e += math.lgamma(k * share + c) - math.lgamma(k * share) - c * math.log(share)
        return log_e

    def merge(self, other: SRMTest) -> Self:
        """Add a partial of the same current period (same shares); see the module docstring."""
        self._check_same_kind(other, "alpha", "concentration", "shares")
        self.past_log_e += other.past_log_e
        self.periods = max(self.periods, other.periods)
        self.unexpected += other.unexpected
        for arm, c in other.counts.items():
            self.counts[arm] += c
        self.n += other.n
        self.log_e = self._closed_form_log_e()
        self.max_log_e = max(self.max_log_e, other.max_log_e, self.past_log_e + self.log_e)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "alpha": self.alpha,
            "concentration": self.concentration,
            "shares": dict(self.shares),
            "counts": dict(self.counts),
            "n": self.n,
            "log_e": self.log_e,
            "past_log_e": self.past_log_e,
            "max_log_e": self.max_log_e,
            "unexpected": self.unexpected,
            "periods": self.periods,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type(d)
        obj = cls(alpha=d["alpha"], shares=d["shares"], concentration=d["concentration"])
        obj.counts = {arm: int(c) for arm, c in d["counts"].items()}
        for name in ("n", "unexpected", "periods"):
            setattr(obj, name, int(d[name]))
        for name in ("log_e", "past_log_e", "max_log_e"):
            setattr(obj, name, float(d[name]))
        return obj
