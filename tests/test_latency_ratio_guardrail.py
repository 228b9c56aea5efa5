"""The latency guardrail's ratio test (:class:`QuantileRatioGuardrail`): its error guarantees
and its power by simulation (fixed seeds), its agreement with a brute-force reading, its state.

Scenario (the issue's): ``latency_p95_ms`` against ``max_ratio: 1.1``; lognormal latencies,
log-mean 3 and log-sd 0.5 (median 20 ms, a heavy right tail); each request brings one latency
of each arm, up to 10,000 per arm; the guardrail is read after every 50th request (the proof in
the class covers a read after every value; the every-value rates of the object itself, from
fewer runs, are in bench/bench_latency_guardrail.py). Tolerances: error rates are asserted at
α + 3 Monte-Carlo standard errors (binomial), power at 0.95 on its measured value.

:class:`RatioTwin` runs many streams at once: the same bins and the same two statistics as the
object, from constants read off one object, evaluated on every bin of a window (the object
scans only the bins it must; :func:`test_twin_equals_the_object_after_every_value` checks
both agree after every value). Values outside the window are counted in its end bins, which
can only lower the statistics; the twin counts the readings where that could have changed an
answer, and the tests require none.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.special import gammaln

from rollguard.stats.sequential import FAIL, PASS, UNDECIDED, QuantileRatioGuardrail, from_dict
from rollguard.stats.sequential.batch import quantile_rank_paths

ALPHA = 0.05
Q = 0.95  # latency_p95_ms
MAX_RATIO = 1.1
MU, SIGMA = 3.0, 0.5  # lognormal latencies (ms)
STEPS = 10_000  # requests per arm
EVERY = 50  # read after every 50th request
Z_Q = 1.6448536269514722  # standard normal 0.95-quantile


def three_standard_errors(p: float, runs: int) -> float:
    return 3.0 * math.sqrt(p * (1.0 - p) / runs)


class RatioTwin:
    """Vectorised twin of :class:`QuantileRatioGuardrail` over ``runs`` streams that each take
    one candidate and one champion latency per step; optionally also the former test's answer
    (two :class:`QuantileCS` at α/2, tuned_n 1000, "fail" when the candidate's lower bound is
    above ``max_ratio`` × the champion's upper bound) on the same values."""

    def __init__(self, runs: int, guard: QuantileRatioGuardrail, lo: float, hi: float,
                 steps: int, old: bool = False) -> None:
        self.g = guard
        hist = guard.hists[1]
        self.min_value, self.log_gamma = hist.min_value, hist._log_gamma
        self.k0, self.k1 = hist.key(lo), hist.key(hi)
        width = self.k1 - self.k0 + 1
        self.cand = np.zeros((runs, width), dtype=np.int32)  # candidate latency / max_ratio
        self.champ = np.zeros((runs, width), dtype=np.int32)
        self.rows = np.arange(runs)
        self.n = 0
        self.lga = gammaln(guard._a + np.arange(steps + 1))
        self.lgb = gammaln(guard._b + np.arange(steps + 1))
        self.edge_bound = 0  # readings where an end bin could have changed an answer
        self.old = old
        if old:
            self.r0 = hist.key(lo * guard.max_ratio)  # candidate latency, window × max_ratio
            self.raw = np.zeros((runs, hist.key(hi * guard.max_ratio) - self.r0 + 1),
                                dtype=np.int32)
            self.s_low, self.r_up = quantile_rank_paths(steps, guard.q, guard.alpha / 2, 1000)

    def _keys(self, x: np.ndarray, k0: int, width: int) -> np.ndarray:
        """LogHistogram.key, clipped to the window."""
        with np.errstate(divide="ignore"):
            k = np.ceil(np.log(x / self.min_value) / self.log_gamma)
        k = np.where(x <= self.min_value, 0, np.maximum(1, k)).astype(np.int64)
        return np.clip(k - k0, 0, width - 1)

    def update(self, cand: np.ndarray, champ: np.ndarray) -> None:
        width = self.cand.shape[1]
        self.cand[self.rows, self._keys(cand / self.g.max_ratio, self.k0, width)] += 1
        self.champ[self.rows, self._keys(champ, self.k0, width)] += 1
        if self.old:
            self.raw[self.rows, self._keys(cand, self.r0, self.raw.shape[1])] += 1
        self.n += 1

    # the object's terms (QuantileRatioGuardrail._term), on arrays
    def _lift(self, ell, lam, log_pi_other, log_side):
        """log(w + (1 − w)·max(0, (e^ell − min(π_other, D/λ))/π_side))."""
        g = self.g
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            log_other = np.where(lam > 0, np.minimum(log_pi_other, g._log_d - np.log(lam)),
                                 log_pi_other)
            y = ell + np.log1p(-np.exp(log_other - ell)) - log_side + g._log_1w
            lifted = np.logaddexp(g._log_w, y)
        return np.where(ell <= log_other, g._log_w, lifted)

    def _log_mixture(self, s):
        g, n = self.g, self.n
        return (self.lga[s] + self.lgb[n - s] - math.lgamma(g._a + g._b + n) - g._log_norm
                - s * g._logit_q - n * g._log_1q)

    def _few(self, s):
        g, nq = self.g, self.n * self.g.q
        lam = nq - s - 1e-9
        v = self._lift(self._log_mixture(s), lam, g._log_pi_hi, g._log_pi_lo)
        return np.where(s <= math.floor(nq), v, g._log_w)

    def _many(self, c):
        g, nq = self.g, self.n * self.g.q
        lam = c - nq - 1e-9
        v = self._lift(self._log_mixture(c), lam, g._log_pi_lo, g._log_pi_hi)
        return np.where(c >= math.ceil(nq), v, g._log_w)

    def _minimum(self, values: np.ndarray) -> np.ndarray:
        inner = values[:, 1:-1].min(axis=1)
        ends = np.minimum(values[:, 0], values[:, -1])
        h = self.g._threshold
        self.edge_bound += int(((inner >= h) & (ends < h)).sum())
        return np.minimum(inner, ends)

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """The fail and pass statistics (logs of the e-values) of every run."""
        cy, cx = np.cumsum(self.cand, axis=1), np.cumsum(self.champ, axis=1)
        fail = self._minimum(self._few(cy) + self._many(cx - self.champ))
        pas = self._minimum(self._many(cy - self.cand) + self._few(cx))
        return fail, pas

    def status(self) -> tuple[np.ndarray, np.ndarray]:
        """(fail, pass) as booleans, with the object's precedence (fail first)."""
        fail, pas = self.statistics()
        h = self.g._threshold
        return fail >= h, (pas >= h) & (fail < h)

    def old_fail(self) -> np.ndarray:
        """The former test's "fail" on the same values (QuantileCS's ranks, bins' outer edges)."""
        t = self.n - 1
        s_low, r_up = int(self.s_low[t]), int(self.r_up[t])
        if s_low < 0 or r_up > self.n:
            return np.zeros(len(self.rows), dtype=bool)
        k_cand = (np.cumsum(self.raw, axis=1) >= s_low + 1).argmax(axis=1)
        k_champ = (np.cumsum(self.champ, axis=1) >= r_up).argmax(axis=1)
        lower = self.min_value * np.exp((k_cand + self.r0 - 1) * self.log_gamma) * (1 - 1e-12)
        upper = self.min_value * np.exp((k_champ + self.k0) * self.log_gamma) * (1 + 1e-12)
        failed = lower > self.g.max_ratio * upper
        # an end bin holds values beyond it: a bound read there is not the object's. The
        # champion's upper bound past the top (and the candidate's lower bound not) can only
        # be higher, so no fail; the other cases are counted and must not occur
        top_champ = k_champ == self.champ.shape[1] - 1
        unsure = (k_cand == 0) | (k_cand == self.raw.shape[1] - 1) | (k_champ == 0)
        self.edge_bound += int((unsure & (failed | top_champ)).sum())
        return failed & ~top_champ


def window(ratio: float, sigma: float = SIGMA, z_q: float = Z_Q) -> tuple[float, float]:
    """Latencies (candidate / max_ratio and champion) spanning both quantiles ± 1 log-sd."""
    shift = math.log(ratio / MAX_RATIO)
    lo = math.exp(MU + sigma * (z_q - 1.0) + min(0.0, shift))
    hi = math.exp(MU + sigma * (z_q + 1.0) + max(0.0, shift))
    return lo, hi


def simulate(ratio: float, runs: int, seed: int, *, steps: int = STEPS, q: float = Q,
             z_q: float = Z_Q, correlation: float = 0.0, old: bool = False,
             load: float = 0.0) -> dict:
    """Each run: candidate latencies ``ratio`` × the champion's in distribution (every quantile
    × ratio), ``correlation`` between the two log-latencies of a request (0: independent, as
    in the A/B modes; > 0: shadow pairs). ``load`` > 0: both arms' latencies move together
    over time, × exp(load · sin(2π · 2t / steps)) at step t (two busy and two quiet periods,
    as a window of two days would see). Returns the first step each run failed / passed
    (0: never) and, with ``old``, the first step the former test failed."""
    rng = np.random.default_rng(seed)
    guard = QuantileRatioGuardrail(ALPHA, q=q, max_ratio=MAX_RATIO)
    lo, hi = window(ratio, z_q=z_q)
    twin = RatioTwin(runs, guard, lo * math.exp(-load), hi * math.exp(load), steps=steps,
                     old=old)
    first_fail = np.zeros(runs, dtype=np.int64)
    first_pass = np.zeros(runs, dtype=np.int64)
    first_old = np.zeros(runs, dtype=np.int64)
    chunk = 1000
    for start in range(0, steps, chunk):
        z_champ = rng.standard_normal((chunk, runs))
        z_cand = (correlation * z_champ
                  + math.sqrt(1.0 - correlation**2) * rng.standard_normal((chunk, runs)))
        champ = np.exp(MU + SIGMA * z_champ)
        cand = np.exp(MU + math.log(ratio) + SIGMA * z_cand)
        if load:
            phase = np.arange(start, start + chunk) * (4.0 * math.pi / steps)
            busy = np.exp(load * np.sin(phase))[:, None]
            champ, cand = champ * busy, cand * busy
        for i in range(chunk):
            twin.update(cand[i], champ[i])
            t = start + i + 1
            if t % EVERY == 0:
                failed, passed = twin.status()
                first_fail[(first_fail == 0) & failed] = t
                first_pass[(first_pass == 0) & passed] = t
                if old:
                    first_old[(first_old == 0) & twin.old_fail()] = t
    assert twin.edge_bound == 0, "the window was too narrow for some readings"
    return {"fail": first_fail, "pass": first_pass, "old_fail": first_old}


# -- the twin is the object ---------------------------------------------------------------------
def brute_force_status(g: QuantileRatioGuardrail) -> str:
    """The two statistics as minima over every occupied bin (no witness, no pruning)."""
    h = g._threshold
    values = {}
    for kind in (FAIL, PASS):
        below, best = [0, 0], 0.0 if not g._keys else math.inf
        for k in g._keys:
            at = [g.hists[i].counts.get(k, 0) for i in (0, 1)]
            best = min(best, g._term(kind, 0, below[0], at[0]) + g._term(kind, 1, below[1], at[1]))
            below = [below[0] + at[0], below[1] + at[1]]
        values[kind] = best
    return FAIL if values[FAIL] >= h else PASS if values[PASS] >= h else UNDECIDED


def test_twin_equals_the_object_after_every_value():
    # three streams: slower (fails), at the boundary, faster (passes); after every pair the
    # object's status (witness + block search) equals the twin's (every bin of a wide window)
    # and, every 25th pair, a brute-force minimum over every occupied bin
    rng = np.random.default_rng(20)
    ratios = np.array([1.3, 1.1, 0.9])
    steps = 2500
    objects = [QuantileRatioGuardrail(ALPHA, q=Q, max_ratio=MAX_RATIO) for _ in ratios]
    twin = RatioTwin(3, objects[0], math.exp(MU - 5 * SIGMA), math.exp(MU + 6 * SIGMA), steps)
    seen = set()
    for t in range(steps):
        champ = rng.lognormal(MU, SIGMA, 3)
        cand = rng.lognormal(MU + np.log(ratios), SIGMA)
        twin.update(cand, champ)
        for obj, c, h in zip(objects, cand, champ, strict=True):
            obj.update("candidate", float(c)).update("champion", float(h))
        failed, passed = twin.status()
        expected = np.where(failed, FAIL, np.where(passed, PASS, UNDECIDED))
        got = [obj.status() for obj in objects]
        assert got == list(expected), (t, got, expected)
        if t % 25 == 0:
            assert got == [brute_force_status(obj) for obj in objects]
        seen.update((r, s) for r, s in enumerate(got))
    assert twin.edge_bound == 0
    assert (0, FAIL) in seen and (2, PASS) in seen  # both answers were exercised


# -- (a) at the boundary: false alarm and false pass at most α ------------------------------------
@pytest.mark.parametrize("correlation", [0.0, 0.8], ids=["independent", "shadow-pairs-0.8"])
def test_at_the_limit_neither_fails_nor_passes_beyond_alpha(correlation):
    # the candidate's latencies are exactly 1.1 × the champion's in distribution: a "fail" is a
    # false alarm (rollback of a candidate within the limit), a "pass" a false pass. Looking
    # after every 50th of 10,000 requests per arm. Independent arms (A/B modes) and shadow
    # pairs whose log-latencies correlate at 0.8 (positively quadrant dependent).
    runs = 1000
    out = simulate(MAX_RATIO, runs, seed=21 if correlation == 0 else 22, correlation=correlation)
    tolerance = three_standard_errors(ALPHA, runs)  # 0.021
    false_alarm, false_pass = (out["fail"] > 0).mean(), (out["pass"] > 0).mean()
    print(f"boundary, correlation {correlation}: ever failed {false_alarm:.3f}, "
          f"ever passed {false_pass:.3f} of {runs} runs")
    # measured: 0.003 / 0.004 independent, 0.000 / 0.000 with correlation 0.8
    assert false_alarm <= ALPHA + tolerance
    assert false_pass <= ALPHA + tolerance


def test_at_the_limit_of_the_median_neither_fails_nor_passes_beyond_alpha():
    # the same at the median (latency_p50_ms), where a quantile carries the most information
    runs = 1000
    out = simulate(MAX_RATIO, runs, seed=23, q=0.5, z_q=0.0, steps=5000)
    tolerance = three_standard_errors(ALPHA, runs)
    false_alarm, false_pass = (out["fail"] > 0).mean(), (out["pass"] > 0).mean()
    print(f"boundary, p50: ever failed {false_alarm:.3f}, ever passed {false_pass:.3f}")
    # measured: 0.004 / 0.000
    assert false_alarm <= ALPHA + tolerance and false_pass <= ALPHA + tolerance


def test_at_the_limit_under_a_load_that_moves_both_arms_the_error_stays_below_alpha():
    # The bake window watches a new champion for hours, through busy and quiet periods that
    # slow both arms alike; the proof assumes one distribution per arm. Here both arms'
    # latencies are scaled by a common load that swings from e^-1 to e^1 (×0.37 to ×2.7)
    # twice over the run, the candidate exactly at 1.1 × the champion at every moment:
    # a "fail" is still a false alarm, a "pass" a false pass.
    runs = 600
    out = simulate(MAX_RATIO, runs, seed=27, load=1.0)
    tolerance = three_standard_errors(ALPHA, runs)
    false_alarm, false_pass = (out["fail"] > 0).mean(), (out["pass"] > 0).mean()
    print(f"boundary under a moving load: ever failed {false_alarm:.3f}, "
          f"ever passed {false_pass:.3f} of {runs} runs")
    # measured: 0.002 / 0.002
    assert false_alarm <= ALPHA + tolerance and false_pass <= ALPHA + tolerance


# -- (b) a 20 % slower candidate is caught --------------------------------------------------------
def test_a_twenty_percent_slower_candidate_fails_in_95_percent_of_runs():
    # p95 1.2 × the champion's against max_ratio 1.1; the former test (two per-arm intervals at
    # α/2, disjoint) on the very same values for comparison
    runs = 600
    out = simulate(1.2, runs, seed=24, old=True)
    power, old_power = (out["fail"] > 0).mean(), (out["old_fail"] > 0).mean()
    median = int(np.median(out["fail"][out["fail"] > 0]))
    print(f"20 % slower: ratio test fails in {power:.3f} of {runs} runs by {STEPS} per arm "
          f"(median {median}); the former test in {old_power:.3f}")
    # measured: 0.988 (median 3,200 per arm; 0.987 with seed 124); the former test 0.728
    assert power >= 0.95
    assert (out["pass"] > 0).sum() == 0  # and never passes
    assert old_power < power


# -- (c) an equal or faster candidate passes ------------------------------------------------------
@pytest.mark.parametrize("ratio", [1.0, 0.8])
def test_an_equal_or_faster_candidate_passes(ratio):
    # "pass" claims the candidate's p95 is within 1.1 × the champion's with confidence; an
    # equal candidate is 1/1.1 of the limit, about as far inside as the 20 % slower one is out
    runs = 300
    out = simulate(ratio, runs, seed=25, steps=20_000)
    passed = out["pass"] > 0
    by_10k = ((out["pass"] > 0) & (out["pass"] <= STEPS)).mean()
    print(f"ratio {ratio}: passes in {by_10k:.3f} of {runs} runs by {STEPS} per arm, "
          f"{passed.mean():.3f} by 20,000 (median {int(np.median(out['pass'][passed]))})")
    # measured: equal, all by 10,000 (median 2,925); 0.8 ×: all (median 500)
    assert passed.all() and (out["fail"] > 0).sum() == 0
    assert by_10k >= 0.97


def test_end_to_end_objects_decide():
    # the object itself, read after every value: a 1.3 × slower p95 fails, an equal one passes
    rng = np.random.default_rng(26)
    for ratio, expected in [(1.3, FAIL), (1.0, PASS)]:
        g = QuantileRatioGuardrail(ALPHA, q=Q, max_ratio=MAX_RATIO)
        answer = UNDECIDED
        for c, h in zip(rng.lognormal(MU + math.log(ratio), SIGMA, 20000),
                        rng.lognormal(MU, SIGMA, 20000), strict=True):
            g.update("candidate", float(c)).update("champion", float(h))
            if g.status() != UNDECIDED:
                answer = g.status()
                break
        assert answer == expected
        evidence = g.evidence()
        key = "e_fail" if expected == FAIL else "e_pass"
        assert evidence[key] >= 1 / ALPHA and evidence["status"] == expected


# -- (d) state -----------------------------------------------------------------------------------
def _fed(g: QuantileRatioGuardrail, seed: int, n: int = 3000) -> QuantileRatioGuardrail:
    rng = np.random.default_rng(seed)
    for arm, x in zip(rng.random(n) < 0.5, rng.lognormal(MU, SIGMA, n), strict=True):
        g.update("candidate" if arm else "champion", float(x * (1.25 if arm else 1.0)))
    return g


def test_state_round_trips_and_continues_exactly():
    g = _fed(QuantileRatioGuardrail(ALPHA, q=Q, max_ratio=MAX_RATIO), seed=27)
    state = json.loads(json.dumps(g.to_dict()))
    restored = from_dict(state)
    assert isinstance(restored, QuantileRatioGuardrail) and restored == g
    assert restored.to_dict() == g.to_dict() and restored.status() == g.status()
    assert restored.e_values() == g.e_values()
    _fed(g, seed=28)
    _fed(restored, seed=28)
    assert restored == g and restored.status() == g.status()
    json.dumps(g.evidence(), allow_nan=False)  # JSON-safe figures
    # the state is the two histograms: it grows with the bins occupied, not with the values
    bins = len(g.to_dict()["candidate"]) + len(g.to_dict()["champion"])
    _fed(g, seed=30, n=20000)
    assert len(g.to_dict()["candidate"]) + len(g.to_dict()["champion"]) < 1.5 * bins


def test_merged_partitions_equal_the_whole_stream():
    whole = QuantileRatioGuardrail(ALPHA, q=Q, max_ratio=MAX_RATIO)
    parts = [QuantileRatioGuardrail(ALPHA, q=Q, max_ratio=MAX_RATIO) for _ in range(3)]
    rng = np.random.default_rng(29)
    for i, (c, h) in enumerate(zip(rng.lognormal(MU + 0.2, SIGMA, 4000),
                                   rng.lognormal(MU, SIGMA, 4000), strict=True)):
        whole.update("candidate", float(c)).update("champion", float(h))
        parts[i % 3].update("candidate", float(c)).update("champion", float(h))
    merged = parts[0] + parts[1] + parts[2]
    assert merged == whole
    assert merged.status() == whole.status() and merged.e_values() == whole.e_values()
    with pytest.raises(ValueError):
        merged + QuantileRatioGuardrail(ALPHA, q=Q, max_ratio=1.2)


def test_a_state_of_the_former_test_is_refused_with_a_reason():
    old = {"type": QuantileRatioGuardrail.TYPE, "alpha": 0.05, "max_ratio": 1.1,
           "arms": {"champion": {}, "candidate": {}}}
    with pytest.raises(ValueError, match="former test"):
        QuantileRatioGuardrail.from_dict(old)
