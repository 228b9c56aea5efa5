"""Cross-checks of the sequential tests against independent published implementations.

* ``confseq`` 0.0.11 (Howard, Waudby-Smith & Ramdas's reference code on PyPI; C++, not a
  dependency of rollguard): the reference figures below were computed with it once, with the
  script in this module's ``CONFSEQ_SCRIPT``, and are pinned here.
* ``savvi`` 0.3.1 (Lindon et al.'s anytime-valid inference package, installed with the test
  extra): compared live.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest

from rollguard.stats.sequential import AsymptoticCS, EmpiricalBernsteinCS, QuantileCS, SRMTest
from rollguard.stats.sequential.asymptotic import normal_mixture_radius, normal_mixture_rho

CONFSEQ_SCRIPT = """
import numpy as np
from confseq.predmix import predmix_empbern_twosided_cs
import confseq.boundaries as b
x = np.array([((i * 0.6180339887498949) % 1.0) ** 2 for i in range(1, 2001)])
l, u = predmix_empbern_twosided_cs(x, alpha=0.05, truncation=0.5, running_intersection=True)
l2, u2 = predmix_empbern_twosided_cs(x, alpha=0.1, truncation=0.5, running_intersection=False)
b.normal_mixture_bound(v, 0.05, 500, 0.05, False)            # v in 2, 10, 100, 1000, 10000
b.beta_binomial_log_mixture(S - t*q, t*q*(1-q), n*q*(1-q), q, 1 - q, 0.025, False)
"""


def golden_stream(n: int) -> list[float]:
    """A deterministic stream in [0, 1] (no RNG, so the pinned figures never drift)."""
    return [((i * 0.6180339887498949) % 1.0) ** 2 for i in range(1, n + 1)]


# confseq.predmix.predmix_empbern_twosided_cs on golden_stream(2000), at these times
EB_TIMES = [1, 2, 10, 100, 500, 2000]
EB_ALPHA05_INTERSECTED = (
    [0.0, 0.0, 0.0, 0.2228297964484659, 0.2866154286892103, 0.3079579557268279],
    [1.0, 1.0, 1.0, 0.44200102769305394, 0.3802282334707725, 0.35889178968434354],
)
EB_ALPHA10_RAW = (
    [0.0, 0.0, 0.0, 0.23634137176999248, 0.29041070793148327, 0.30996376665980546],
    [1.0, 1.0, 0.9801615062497424, 0.4314402021788206, 0.3760622600414725, 0.3568651989109226],
)
# confseq.boundaries.normal_mixture_bound(v, alpha=0.05, v_opt=500, alpha_opt=0.05, two-sided)
NORMAL_MIXTURE = {
    2: 19.786192532730833,
    10: 21.16951557223343,
    100: 33.638877257827815,
    1000: 96.81241016338852,
    10000: 333.6857533786599,
}
# confseq.boundaries.beta_binomial_log_mixture, two-sided, alpha_opt 0.025: (q, n_opt, t, S) -> log M
BETA_BINOMIAL = [
    (0.5, 1000, 10, 5, -0.04601857124153241),
    (0.5, 1000, 100, 90, 15.842539467504011),
    (0.5, 1000, 1000, 990, 525.8944293414365),
    (0.5, 1000, 1000, 960, 447.84422970406405),
    (0.5, 1000, 5000, 4980, 3158.7035328529137),
    (0.99, 1000, 10, 5, 4.352079899184101),
    (0.99, 1000, 100, 90, 8.611305281464915),
    (0.99, 1000, 1000, 990, -1.2505537591975227),
    (0.99, 1000, 1000, 960, 22.400124380662476),
    (0.99, 1000, 5000, 4980, 9.863385221823535),
    (0.95, 300, 10, 5, 2.7000291676676103),
    (0.95, 300, 100, 90, 0.6214006589763628),
    (0.95, 300, 1000, 990, 22.467471413539897),
    (0.95, 300, 1000, 960, -0.6172017826185083),
    (0.95, 300, 5000, 4980, 181.13096740030844),
]


@pytest.mark.parametrize(
    ("alpha", "intersect", "expected"),
    [(0.05, True, EB_ALPHA05_INTERSECTED), (0.1, False, EB_ALPHA10_RAW)],
)
def test_empirical_bernstein_equals_confseq_predmix(alpha, intersect, expected):
    # tuned_n=None is the paper's own schedule, which confseq implements; equal to rounding
    cs = EmpiricalBernsteinCS(alpha=alpha, lower=0.0, upper=1.0, tuned_n=None,
                              running_intersection=intersect)
    got = {}
    for t, x in enumerate(golden_stream(2000), start=1):
        cs.update(x)
        got[t] = cs.interval()
    for t, lo, hi in zip(EB_TIMES, *expected, strict=True):
        assert got[t][0] == pytest.approx(lo, abs=1e-12)
        assert got[t][1] == pytest.approx(hi, abs=1e-12)


def test_empirical_bernstein_rescales_to_any_range():
    # the same stream mapped to [-1, 1] gives the same CS mapped the same way
    unit = EmpiricalBernsteinCS(alpha=0.05, lower=0.0, upper=1.0, tuned_n=300)
    wide = EmpiricalBernsteinCS(alpha=0.05, lower=-1.0, upper=1.0, tuned_n=300)
    for x in golden_stream(500):
        unit.update(x)
        wide.update(2 * x - 1)
    for u, w in zip(unit.interval(), wide.interval(), strict=True):
        assert w == pytest.approx(2 * u - 1, abs=1e-12)


def test_asymptotic_radius_equals_confseq_normal_mixture():
    rho = normal_mixture_rho(500, 0.05)
    for v, bound in NORMAL_MIXTURE.items():
        assert normal_mixture_radius(v, rho, 0.05) == pytest.approx(bound, rel=1e-12)
    # and the CS is sigma-hat times that boundary over t
    cs = AsymptoticCS(alpha=0.05, tuned_n=500)
    xs = [3.0 * x for x in golden_stream(1000)]
    for x in xs:
        cs.update(x)
    sd = float(np.std(xs))  # divisor n, as the paper
    assert cs.radius() == pytest.approx(sd * normal_mixture_radius(1000, rho, 0.05) / 1000, rel=1e-9)


@pytest.mark.parametrize(("q", "tuned_n", "t", "s", "expected"), BETA_BINOMIAL)
def test_quantile_mixture_equals_confseq_beta_binomial(q, tuned_n, t, s, expected):
    cs = QuantileCS(alpha=0.025, q=q, tuned_n=tuned_n)
    assert cs.log_mixture(t, s) == pytest.approx(expected, abs=1e-9)


def _import_savvi():
    """savvi's modules (savvi imports matplotlib for its plots: the test extra installs it)."""
    pytest.importorskip("savvi")
    return (
        importlib.import_module("savvi.multinomial"),
        importlib.import_module("savvi.linear_regression"),
    )


def test_srm_e_value_equals_savvi_multinomial():
    multinomial, _ = _import_savvi()
    theirs = multinomial.Multinomial(0.05, np.array([0.75, 0.25]), k=100)
    ours = SRMTest(alpha=0.05, shares={"a": 0.75, "b": 0.25}, concentration=100)
    rng = np.random.default_rng(3)
    for t, is_b in enumerate(rng.random(3000) < 0.29, start=1):  # a mismatch: 29 % vs 25 %
        theirs.update(np.array([0, 1]) if is_b else np.array([1, 0]))
        ours.update("b" if is_b else "a")
        if t in (1, 10, 100, 1000, 3000):
            assert ours.e_value == pytest.approx(theirs.odds, rel=1e-9)
    assert ours.status() == "fail"  # and the mismatch was found (e ≥ 20)


def test_asymptotic_cs_matches_savvi_t_mixture_for_large_n():
    # savvi's intercept-only anytime-valid t-test (Lindon et al.) is a normal mixture with
    # unknown variance; with prior scale phi = our rho it tends to the same bound as n grows:
    # the relative width difference is O(1/n) (t versus normal), 0.3 % at n = 1000 here.
    _, linear_regression = _import_savvi()
    tuned_n, alpha = 1000, 0.05
    theirs = linear_regression.LinearRegression(alpha, 1, phi=normal_mixture_rho(tuned_n, alpha))
    ours = AsymptoticCS(alpha=alpha, tuned_n=tuned_n)
    rng = np.random.default_rng(3)
    for t, y in enumerate(rng.normal(0.3, 2.0, 5000), start=1):
        theirs.update(np.array([y, 1.0]))
        ours.update(y)
        if t in (1000, 5000):
            lo, hi = theirs.calculate_conf_int()[0]
            our_lo, our_hi = ours.interval()
            assert ours.mean == pytest.approx(theirs.beta[0], abs=1e-8)
            tolerance = 3.0 / t  # relative width: 0.26 % observed at 1000, 0.05 % at 5000
            assert (hi - lo) / (our_hi - our_lo) == pytest.approx(1.0, abs=tolerance)
    assert math.isfinite(our_lo)
