"""Benchmark of rollguard.stats.sequential: error under peeking, sample efficiency, speed.

Prints (and with ``--out FILE`` writes as Markdown):

1. *Peeking.* How often a naive fixed-horizon z-test, looked at after every pair, would promote
   a candidate exactly at the margin boundary, beside the anytime-valid sequences' rate (the
   policy's betting test at the margin, and the empirical-Bernstein and asymptotic CSs).
2. *Sample efficiency.* Labelled outcomes needed to decide, for a grid of effects: paired
   (shadow) against unpaired (ab, 50/50), and the sequential test against two fixed-horizon
   tests of 80 % power: the one-sided test at α (the decision the policy makes, at its nominal
   level: the baseline of the aims) and the two-sided test at α (= one-sided at α/2, the
   promotion error the sequence actually guarantees; the column kept from before). Mean,
   median and 80th percentile of the stopping time, with their Monte Carlo intervals, and the
   ratios against the project's aims (paired ≤ 1/3 of unpaired; sequential ≤ 1.3 × on the mean
   and ≤ 1.6 × on the 80th percentile of the one-sided fixed horizon at the effect it is tuned
   for); also a sequence tuned for one effect run at half and double that effect.
3. *Speed.* µs per update (and per update + read) of each object, beside a River ``Mean``
   update measured in the same process.

Scenario: two binary classifiers of accuracy ≈ 0.8 that agree on 90 % of requests; primary
metric accuracy, margin δ = 0.01, α = 0.05; effect ε = Δ + δ (what the lower bound must clear).
Run: ``nice -n 19 .venv/bin/python bench/bench_sequential.py [--quick]
[--out bench/RESULTS-sequential.md]`` (about 3 min on 2 shared cores; ``--quick`` 25 s).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import textwrap
import time
from collections.abc import Callable

import numpy as np
from scipy.stats import norm

from rollguard.stats.sequential import (
    AsymptoticCS,
    DiffMeansCS,
    DiffThresholdTest,
    EmpiricalBernsteinCS,
    PairedMeanCS,
    QuantileCS,
    QuantileRatioGuardrail,
    SRMTest,
    ThresholdTest,
    fixed_horizon_n,
)
from rollguard.stats.sequential.batch import AsymptoticBatch, BettingBatch, EmpiricalBernsteinBatch

ALPHA = 0.05
MARGIN = 0.01
DISAGREE = 0.10  # the two classifiers disagree on 10 % of requests
BASE_ACCURACY = 0.8


def paired_draw(delta: float) -> Callable[[np.random.Generator, int], np.ndarray]:
    p_plus, p_minus = (DISAGREE + delta) / 2, (DISAGREE - delta) / 2

    def draw(rng: np.random.Generator, runs: int) -> np.ndarray:
        u = rng.random(runs)
        return np.where(u < p_plus, 1.0, np.where(u < p_plus + p_minus, -1.0, 0.0))

    return draw


def paired_sd(delta: float) -> float:
    return math.sqrt(DISAGREE - delta**2)


def unpaired_sd(delta: float) -> float:
    """sd of one (champion, candidate) pair's difference: sqrt(σ_c² + σ_v²)."""
    p_c, p_v = BASE_ACCURACY, BASE_ACCURACY + delta
    return math.sqrt(p_c * (1 - p_c) + p_v * (1 - p_v))


# -- 1. peeking ---------------------------------------------------------------------------------
def peeking(runs: int, horizons: list[int], seed: int = 1) -> list[dict]:
    """Promotion rate of a boundary candidate (Δ = −δ) under a look after every pair."""
    rng = np.random.default_rng(seed)
    draw = paired_draw(-MARGIN)
    eb = EmpiricalBernsteinBatch(runs, ALPHA, -1.0, 1.0, tuned_n=1000)
    bet = BettingBatch(runs, ALPHA, -1.0, 1.0, tuned_n=1000, test_point=-MARGIN)
    asym = AsymptoticBatch(runs, ALPHA, tuned_n=1000)
    total, total_sq = np.zeros(runs), np.zeros(runs)
    z_crit = norm.ppf(1 - ALPHA / 2)
    naive = np.zeros(runs, dtype=bool)
    eb_hit = np.zeros(runs, dtype=bool)
    bet_hit = np.zeros(runs, dtype=bool)
    asym_hit = np.zeros(runs, dtype=bool)
    naive_once = {}
    rows = []
    for t in range(1, max(horizons) + 1):
        d = draw(rng, runs)
        eb.update(d)
        bet.update(d)
        asym.update(d)
        total += d
        total_sq += d * d
        if t >= 100:  # min_samples
            mean = total / t
            sd = np.sqrt(np.maximum(total_sq / t - mean**2, 1e-12))
            z = (mean + MARGIN) / (sd / math.sqrt(t))
            naive |= z > z_crit
            eb_hit |= eb.interval()[0] > -MARGIN
            bet_hit |= bet.side_of(-MARGIN) > 0
            asym_hit |= asym.interval()[0] > -MARGIN
        if t in horizons:
            naive_once[t] = float(((total / t + MARGIN) / (
                np.sqrt(np.maximum(total_sq / t - (total / t) ** 2, 1e-12)) / math.sqrt(t))
                > z_crit).mean())
            rows.append({
                "looks_to": t,
                "naive_peeking": float(naive.mean()),
                "naive_single_look": naive_once[t],
                "eb_cs": float(eb_hit.mean()),
                "betting_cs": float(bet_hit.mean()),
                "asymptotic_cs": float(asym_hit.mean()),
            })
    return rows


# -- 2. sample efficiency -----------------------------------------------------------------------
POWER = 0.8
#: The effect whose tuning is also run at half and double the effect.
TUNED_EFFECT = 0.03


def one_sided_n(effect: float, sd: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """Samples a fixed-horizon *one-sided* z-test at level α needs for ``power`` at ``effect``.

    ``ceil(((z_{1−α} + z_power) · sd / effect)²)``: the test "promote when the mean of n
    differences clears −δ by z_{1−α} standard errors", the decision the policy makes, at its
    nominal level α (the sequence's promotion side errs with at most α/2)."""
    z = norm.ppf(1.0 - alpha) + norm.ppf(power)
    return math.ceil((z * sd / effect) ** 2)


def paired_stopping(delta: float, tuned_n: float, runs: int, cap: int, seed: int,
                    method: str = "betting") -> np.ndarray:
    """Pairs (= labels) until the paired CS promotes (L > −δ); ``inf`` if not by ``cap``.

    ``method``: "betting" (the policy's: exact at −δ) or "eb" (empirical Bernstein)."""
    rng = np.random.default_rng(seed)
    draw = paired_draw(delta)
    if method == "betting":
        cs = BettingBatch(runs, ALPHA, -1.0, 1.0, tuned_n=tuned_n, test_point=-MARGIN)
        promoted = lambda: cs.side_of(-MARGIN) > 0  # noqa: E731
    else:
        cs = EmpiricalBernsteinBatch(runs, ALPHA, -1.0, 1.0, tuned_n=tuned_n)
        promoted = lambda: cs.interval()[0] > -MARGIN  # noqa: E731
    stop = np.full(runs, np.inf)
    for t in range(1, cap + 1):
        cs.update(draw(rng, runs))
        newly = promoted() & np.isinf(stop)
        stop[newly] = t
        if not np.isinf(stop).any():
            break
    return stop


def unpaired_stopping(delta: float, tuned_blocks: float, runs: int, cap: int,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels (both arms, 50/50) until the DiffMeansCS promotes; ``inf`` if not by ``cap``.

    Configured as the policy does (betting at the margin). Also returns, per run, the
    candidate's labels at the stop and the labels still waiting in incomplete blocks (NaN for
    runs not decided by ``cap``)."""
    rng = np.random.default_rng(seed)
    stop = np.full(runs, np.inf)
    extra = np.full((runs, 2), np.nan)
    for r in range(runs):
        cs = DiffMeansCS(ALPHA, 0.0, 1.0, tuned_n=tuned_blocks, test_points=(-MARGIN,))
        cand = rng.random(cap) < 0.5
        u = rng.random(cap)
        # the same draws and comparisons as one at a time, as Python objects (faster to loop)
        arms = np.where(cand, "candidate", "champion").tolist()
        outcomes = (u < np.where(cand, BASE_ACCURACY + delta, BASE_ACCURACY)).astype(float)
        update, side_of = cs.update, cs.side_of
        for t, (arm, x) in enumerate(zip(arms, outcomes.tolist())):
            update(arm, x)
            if side_of(-MARGIN) > 0:
                stop[r] = t + 1
                extra[r] = cs.counts()["candidate"], cs.evidence()["pending"]
                break
    return stop, extra


def summary(stop: np.ndarray, cap: int, by: int | None = None) -> dict:
    """Median, mean, 80th percentile of the stopping time (undecided runs counted at ``cap``),
    95 % Monte Carlo intervals of the mean (normal) and of the p80 (order statistics), the
    share undecided at ``cap`` and the share decided by ``by`` labels."""
    censored = np.minimum(stop, cap)
    runs = len(censored)
    ordered = np.sort(censored)
    half = 1.96 * math.sqrt(runs * 0.8 * 0.2)
    lo_k = max(0, math.floor(runs * 0.8 - half) - 1)
    hi_k = min(runs - 1, math.ceil(runs * 0.8 + half) - 1)
    se = float(np.std(censored, ddof=1)) / math.sqrt(runs)
    mean = float(np.mean(censored))
    return {
        "median": float(np.median(censored)),
        "mean": mean,
        "mean_ci": (mean - 1.96 * se, mean + 1.96 * se),
        "p80": float(np.quantile(censored, 0.8)),
        "p80_ci": (float(ordered[lo_k]), float(ordered[hi_k])),
        "undecided": float(np.isinf(stop).mean()),
        "decided_by": None if by is None else float((stop <= by).mean()),
    }


def fixed_sizes(effect: float) -> dict:
    """The fixed-horizon sizes at ``effect`` (labels; unpaired: both arms, 2 × per arm)."""
    delta = effect - MARGIN
    return {
        "fixed_paired": fixed_horizon_n(effect, paired_sd(delta), ALPHA, POWER),
        "fixed_unpaired": 2 * fixed_horizon_n(effect, unpaired_sd(delta), ALPHA, POWER),
        "one_sided_paired": one_sided_n(effect, paired_sd(delta)),
        "one_sided_unpaired": 2 * one_sided_n(effect, unpaired_sd(delta)),
    }


def efficiency(effects: list[float], runs_paired: int, runs_unpaired: int) -> list[dict]:
    rows = []
    for k, effect in enumerate(effects):
        delta = effect - MARGIN
        sizes = fixed_sizes(effect)
        n_fix_paired, n_fix_unpaired = sizes["fixed_paired"], sizes["fixed_unpaired"]
        n1_paired, n1_unpaired = sizes["one_sided_paired"], sizes["one_sided_unpaired"]
        cap_p, cap_u = 8 * n_fix_paired, 8 * n_fix_unpaired
        tuned = summary(paired_stopping(delta, n_fix_paired, runs_paired, cap_p, 10 + k), cap_p,
                        n1_paired)
        default = summary(paired_stopping(delta, 1000, runs_paired, cap_p, 20 + k), cap_p)
        eb = summary(paired_stopping(delta, n_fix_paired, runs_paired, cap_p, 10 + k, "eb"),
                     cap_p)
        # diagnostic: the same runs, the sequence tuned at the one-sided size instead
        tuned_1s = summary(paired_stopping(delta, n1_paired, runs_paired, cap_p, 10 + k), cap_p,
                           n1_paired)
        stop_u, extra_u = unpaired_stopping(delta, n_fix_unpaired / 2, runs_unpaired, cap_u,
                                            30 + k)
        unpaired = summary(stop_u, cap_u, n1_unpaired)
        decided = np.isfinite(stop_u)
        unpaired["candidate_share"] = float(np.sum(extra_u[decided, 0]) / np.sum(stop_u[decided]))
        unpaired["pending"] = float(np.mean(extra_u[decided, 1]))
        rows.append({
            "effect": effect,
            **sizes,
            "paired_tuned": tuned,
            "paired_default": default,
            "paired_eb_tuned": eb,
            "paired_tuned_1s": tuned_1s,
            "unpaired_tuned": unpaired,
        })
    return rows


def off_tuning(tuned_effect: float, factors: list[float], runs_paired: int,
               runs_unpaired: int) -> list[dict]:
    """Sequences tuned for ``tuned_effect`` run at ``factor × tuned_effect``; baselines at the
    true effect."""
    tuned = fixed_sizes(tuned_effect)
    rows = []
    for k, factor in enumerate(factors):
        effect = factor * tuned_effect
        delta = effect - MARGIN
        sizes = fixed_sizes(effect)
        cap_p, cap_u = 8 * sizes["fixed_paired"], 8 * sizes["fixed_unpaired"]
        paired = summary(paired_stopping(delta, tuned["fixed_paired"], runs_paired, cap_p,
                                         40 + k), cap_p, sizes["one_sided_paired"])
        stop_u, _ = unpaired_stopping(delta, tuned["fixed_unpaired"] / 2, runs_unpaired, cap_u,
                                      50 + k)
        rows.append({"factor": factor, "effect": effect, **sizes, "paired": paired,
                     "unpaired": summary(stop_u, cap_u, sizes["one_sided_unpaired"])})
    return rows


# -- 3. speed -------------------------------------------------------------------------------------
def time_per_call(fn: Callable[[int], object], n: int) -> float:
    """µs per call of ``fn(i)``, best of three passes."""
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def speed(n: int) -> list[dict]:
    from river import stats as river_stats

    rng = np.random.default_rng(0)
    bits = [float(v) for v in (rng.random(n) < 0.8)]
    diffs = [float(v) for v in rng.choice([-1.0, 0.0, 0.0, 0.0, 1.0], n)]
    normals = [float(v) for v in rng.normal(size=n)]
    latencies = [float(v) for v in rng.lognormal(3.0, 0.5, n)]
    arms = ["candidate" if v < 0.3 else "champion" for v in rng.random(n)]
    served = ["m:2" if v < 0.1 else "m:1" for v in rng.random(n)]

    river_mean = river_stats.Mean()
    baseline = time_per_call(lambda i: river_mean.update(bits[i]), n)
    rows = [{"object": "river.stats.Mean (baseline)", "update": baseline, "update_read": None}]

    def add(name, make, update, read):
        obj = make()
        up = time_per_call(lambda i: update(obj, i), n)
        obj2 = make()
        both = time_per_call(lambda i: (update(obj2, i), read(obj2)), n)
        rows.append({"object": name, "update": up, "update_read": both})

    add("EmpiricalBernsteinCS", lambda: EmpiricalBernsteinCS(ALPHA, 0.0, 1.0),
        lambda o, i: o.update(bits[i]), lambda o: o.interval())
    add("AsymptoticCS", lambda: AsymptoticCS(ALPHA),
        lambda o, i: o.update(normals[i]), lambda o: o.interval())
    add("PairedMeanCS (bounded, EB)", lambda: PairedMeanCS(ALPHA, -1.0, 1.0),
        lambda o, i: o.update(diffs[i]), lambda o: o.interval())
    add("PairedMeanCS (bounded, betting at −δ: the policy's)",
        lambda: PairedMeanCS(ALPHA, -1.0, 1.0, test_points=(-MARGIN,)),
        lambda o, i: o.update(diffs[i]), lambda o: o.side_of(-MARGIN))
    add("DiffMeansCS (bounded, 70/30, betting at −δ)",
        lambda: DiffMeansCS(ALPHA, 0.0, 1.0, test_points=(-MARGIN,)),
        lambda o, i: o.update(arms[i], bits[i]), lambda o: o.side_of(-MARGIN))
    add("ThresholdTest", lambda: ThresholdTest(ALPHA, 0.0, 1.0, max=0.01),
        lambda o, i: o.update(bits[i]), lambda o: o.status())
    add("DiffThresholdTest", lambda: DiffThresholdTest(ALPHA, 0.0, 1.0, max=0.01),
        lambda o, i: o.update(arms[i], bits[i]), lambda o: o.status())
    add("QuantileCS (p99)", lambda: QuantileCS(ALPHA, 0.99),
        lambda o, i: o.update(latencies[i]), lambda o: o.interval())
    add("QuantileRatioGuardrail (p99)", lambda: QuantileRatioGuardrail(ALPHA, 0.99, 1.2),
        lambda o, i: o.update(arms[i], latencies[i]), lambda o: o.status())
    add("SRMTest", lambda: SRMTest(ALPHA, {"m:1": 0.9, "m:2": 0.1}),
        lambda o, i: o.update(served[i]), lambda o: o.status())
    return rows


# -- output -----------------------------------------------------------------------------------
def verdicts(eff: list[dict], off: list[dict]) -> str:
    """The aims, met or not, by how much, computed from the figures above."""
    lines = ["### Against the aims\n"]
    worst_pair = max(r["paired_tuned"]["mean"] / r["unpaired_tuned"]["mean"] for r in eff)
    lines.append(f"- Paired needs at most a third of the labels of unpaired: worst ratio "
                 f"{worst_pair:.2f} — {'met' if worst_pair <= 1 / 3 else 'NOT met'}.")
    for stat, aim, name in (("mean", AIM_MEAN, "mean"), ("p80", AIM_P80, "80th percentile")):
        for kind in ("paired", "unpaired"):
            ratios = [(r["effect"], r[f"{kind}_tuned"][stat] / r[f"one_sided_{kind}"],
                       r[f"{kind}_tuned"][f"{stat}_ci"][0] / r[f"one_sided_{kind}"])
                      for r in eff]
            missed = [(e, x, lo) for e, x, lo in ratios if x > aim]
            head = (f"- Sequential ≤ {aim} × the one-sided fixed horizon (α, 80 % power) on the "
                    f"{name}, {kind}, at the tuned effect:")
            if not missed:
                lines.append(f"{head} met at every ε (worst "
                             f"{max(x for _, x, _ in ratios):.2f}).")
            else:
                text = ", ".join(
                    f"ε = {e}: {x:.2f} × (over by {100 * (x / aim - 1):.0f} %"
                    f"{'' if lo > aim else '; within Monte Carlo error of the aim'})"
                    for e, x, lo in missed)
                met = "NOT met at any ε" if len(missed) == len(ratios) else "met except"
                lines.append(f"{head} {met}: {text}.")
    for kind in ("paired", "unpaired"):
        worst = max(r[f"{kind}_tuned"]["mean"] / r[f"fixed_{kind}"] for r in eff)
        lines.append(f"- (Earlier aim, against the two-sided test at α = one-sided at α/2: ≤ 1.5 × "
                     f"on the mean, {kind}: {'met' if worst <= 1.5 else 'NOT met'}, worst "
                     f"{worst:.2f}.)")
    lines.append(holds_back(eff, off))
    lines.append(BETTING_NOT_EB)
    return "\n".join(lines) + "\n"


def diff_law(effect: float, kind: str) -> tuple[float, float]:
    """P(d = +1), P(d = −1) of one paired difference or one unpaired 1 + 1 block's difference."""
    delta = effect - MARGIN
    if kind == "paired":
        return (DISAGREE + delta) / 2, (DISAGREE - delta) / 2
    p_c, p_v = BASE_ACCURACY, BASE_ACCURACY + delta
    return p_v * (1 - p_c), p_c * (1 - p_v)


def oracle_mean(effect: float, kind: str, cap: float | None = None) -> float:
    """Mean labels / n₁ of the oracle power-one test at level α/2: log(2/α) / g*, g* the best
    growth rate E log(1 + λ (d + δ)) of the betting capital at −δ for the true law of d (the
    likelihood-ratio bet, Wald's lower bound on E τ); ``cap`` bounds λ on the scale of d, as
    the betting CS's truncation does (¾ on [0, 1] = 0.375 on [−1, 1])."""
    from scipy.optimize import minimize_scalar

    p_plus, p_minus = diff_law(effect, kind)
    p_zero = 1.0 - p_plus - p_minus

    def loss(lam: float) -> float:
        return -(p_plus * math.log1p(lam * (1 + MARGIN))
                 + p_minus * math.log1p(lam * (MARGIN - 1)) + p_zero * math.log1p(lam * MARGIN))

    top = (1.0 - 1e-9) / (1.0 - MARGIN) if cap is None else cap
    growth = -minimize_scalar(loss, bounds=(0.0, top), method="bounded").fun
    sizes = fixed_sizes(effect)
    n1 = sizes["one_sided_paired"] if kind == "paired" else sizes["one_sided_unpaired"] / 2
    return math.log(2.0 / ALPHA) / growth / n1


def oracle(alpha_side: float) -> dict:
    """Stopping time, in units of n₁, of the oracle power-one test at one-sided level
    ``alpha_side`` in the Brownian approximation (no overshoot): the log-capital of the
    likelihood-ratio bet drifts by ε²/2σ² per label with variance ε²/σ², so the time to reach
    a = log(1/α') is inverse Gaussian with mean 2a and shape a² (units σ²/ε²)."""
    from scipy.stats import invgauss

    a = math.log(1.0 / alpha_side)
    n1 = (norm.ppf(1 - ALPHA) + norm.ppf(POWER)) ** 2
    dist = invgauss(2.0 / a, scale=a * a)
    return {"mean": dist.mean() / n1, "p80": dist.ppf(0.8) / n1, "by_n1": dist.cdf(n1)}


#: The betting CS's truncation (¾ on [0, 1]) on the scale of a difference in [−1, 1].
BET_CAP = 0.75 / 2


def holds_back(eff: list[dict], off: list[dict]) -> str:
    """What keeps the sequential test above the one-sided baseline, with this run's figures."""
    level = (norm.ppf(1 - ALPHA / 2) + norm.ppf(POWER)) ** 2 / (
        norm.ppf(1 - ALPHA) + norm.ppf(POWER)) ** 2
    half, full = oracle(ALPHA / 2), oracle(ALPHA)

    def span(values: list[float], digits: int = 2) -> str:
        return f"{min(values):.{digits}f}–{max(values):.{digits}f}"

    kinds = ("paired", "unpaired")
    mean2 = [r[f"{k}_tuned"]["mean"] / r[f"fixed_{k}"] for r in eff for k in kinds]
    mean1 = [r[f"{k}_tuned"]["mean"] / r[f"one_sided_{k}"] for r in eff for k in kinds]
    p80_1 = [r[f"{k}_tuned"]["p80"] / r[f"one_sided_{k}"] for r in eff for k in kinds]
    best = [oracle_mean(r["effect"], k) for r in eff for k in kinds]
    capped = {(r["effect"], k): oracle_mean(r["effect"], k, BET_CAP) for r in eff for k in kinds}
    binding = [(e, k, x) for (e, k), x in capped.items() if x > 1.02 * oracle_mean(e, k)]
    learnt = [r[f"{k}_tuned"]["mean"] / r[f"one_sided_{k}"] / capped[(r["effect"], k)]
              for r in eff for k in kinds]
    retune = [r["paired_tuned_1s"]["mean"] / r["paired_tuned"]["mean"] for r in eff]
    retune80 = [r["paired_tuned_1s"]["p80"] / r["paired_tuned"]["p80"] for r in eff]
    pending = [100 * r["unpaired_tuned"]["pending"] / r["unpaired_tuned"]["mean"] for r in eff]
    off_mean = [r[k]["mean"] / r[f"one_sided_{k}"] for r in off for k in kinds]
    cap_text = ("binds where the best bet is larger, raising the oracle's mean to "
                + "; ".join(f"{x:.2f} × n₁ ({k}, ε = {e})" for e, k, x in binding)
                if binding else "does not bind in this grid")
    text = f"""What holds it back. (1) *The level.* The sequence promotes with error at most α/2
(one side of a two-sided 1−α sequence: one sequence serves promotion and rollback; the guarantee
measured in section 1), while the baseline is a one-sided test at α. A fixed-horizon test with
the sequence's own promotion error (the two-sided column, one-sided at α/2) already needs
((z₀.₉₇₅ + z₀.₈)/(z₀.₉₅ + z₀.₈))² = {level:.2f} × n₁; against that test the sequence needs
{span(mean2)} × on the mean. (2) *The price of anytime validity*, which is mostly in the spread
of the stopping time. A power-one test (one that looks at every label and eventually promotes
any ε > 0) at one-sided level α' needs on average at least log(1/α')/g* labels, g* the growth
rate of the best bet (Wald's identity): at α/2, {span(best)} × n₁ for this workload's laws of
d (≈ ε²/2σ² per label), reached by the likelihood-ratio bet for the known ε. Its stopping time
is then about inverse Gaussian (Brownian approximation, no overshoot): p80 = {half['p80']:.2f}
× n₁, deciding by n₁ in {100 * half['by_n1']:.0f} % of runs (at level α: {full['mean']:.2f} ×
on the mean, {full['p80']:.2f} × at p80, {100 * full['by_n1']:.0f} %). So no test that
minimises the expected labels at level α/2 meets p80 ≤ {AIM_P80} × n₁ here. (3) *The betting
CS's tuning.* Its truncation (λ ≤ ¾ on [0, 1], {BET_CAP} on the differences' scale)
{cap_text}; `tuned_n` hardly matters at
the tuned effect (tuning the paired sequence at n₁ instead of the two-sided size changes the
mean by × {span(retune)} and the p80 by × {span(retune80)}), but does off it (half and double
the tuned effect: {span(off_mean)} × n₁ on the mean). Against the oracle with the same
truncation, the measured means are {span(learnt)} ×: what a bet learnt from the data seen so
far costs. (4) *The blocks' incomplete last block* costs nothing measurable at 50/50: the
unpaired sequence stops with {span(pending, 1)} % of its labels waiting in incomplete blocks.
Meeting the p80 aim would take a promotion side at level α (a one-sided sequence for
promotion, at the cost of the rollback side's error), or a test that concentrates its power
near a planned horizon (group-sequential; the fixed-horizon test itself has p80 = {level:.2f}
× n₁ at α/2) and so gives up deciding early: changes of the statistics, not made here."""
    return "\n" + textwrap.fill(" ".join(text.split()), width=96) + "\n"


BETTING_NOT_EB = """
Why the policy tests at the margin by betting: the empirical-Bernstein CS (the EB columns)
pays ψ_E(λ) = −log(1−λ) − λ per unit of squared deviation (Fan et al.'s inequality, tight only
for jumps of the full range). Paired differences of two classifiers that mostly agree have a
small variance for their range (0.1 on [−1, 1]), so the best bet for a large effect is large
and the penalty then costs about 40 % of the growth rate at ε = 0.06 (see the EB column). The
betting capital Π_i (1 + λ_i (y_i − m)) at the one value m = −δ the decision needs
(Waudby-Smith & Ramdas 2023) is O(1) per update and grows near the Kullback-Leibler optimum;
the interval in the evidence is a certified outer bound of the betting CS
(rollguard/stats/sequential/betting.py).
"""

AIM_MEAN, AIM_P80 = 1.3, 1.6


def markdown(peek: list[dict], eff: list[dict], off: list[dict], fast: list[dict], args,
             seconds: float) -> str:
    out = []
    out.append("# Sequential tests — benchmark results\n")
    out.append(
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, numpy {np.__version__}; load average "
        f"{os.getloadavg()[0]:.1f} at the end, niceness {os.nice(0)}. Produced by "
        f"`.venv/bin/python bench/bench_sequential.py{' --quick' if args.quick else ''}"
        f"{' --out ' + args.out if args.out else ''}` in {seconds:.0f} s on "
        f"{time.strftime('%Y-%m-%d')}.\n")
    out.append(
        "Scenario: two binary classifiers of accuracy ≈ 0.8 that disagree on 10 % of requests "
        "(paired difference d ∈ {−1, 0, 1}, var ≈ 0.1); unpaired: independent outcomes of "
        f"each arm, 50/50 split (var of a pair's difference ≈ 0.32). Margin δ = {MARGIN}, "
        f"α = {ALPHA}; decisions after every observation.\n")
    out.append("## 1. Peeking at a boundary candidate (Δ = −δ)\n")
    out.append(f"Share of {args.peek_runs} runs promoted at some look between 100 and N pairs "
               "(the policy's rule L > −δ; betting CS: the policy's test for bounded metrics, "
               "exact at −δ; the naive test: two-sided z-test at α, "
               "\"promote\" when its one-sided statistic clears z₀.₉₇₅).\n")
    out.append("| looks up to N | naive z, peeking | naive z, one look at N | betting CS | EB CS "
               "| asymptotic CS |")
    out.append("|---:|---:|---:|---:|---:|---:|")
    for r in peek:
        out.append(f"| {r['looks_to']} | {r['naive_peeking']:.3f} | {r['naive_single_look']:.3f} "
                   f"| {r['betting_cs']:.3f} | {r['eb_cs']:.3f} | {r['asymptotic_cs']:.3f} |")
    out.append("\nThe guarantee is α/2 = 0.025 for promotion (one side of a two-sided 1−α "
               "sequence) at every look; the naive test's single-look error is that too, and "
               "peeking multiplies it.\n")
    out.append("## 2. Labelled outcomes needed to promote\n")
    out.append(
        "Effect ε = Δ + δ (what the lower bound must clear). Labels: paired, one labelled "
        "request scores both arms, so labels = pairs; unpaired, labels of both arms together "
        "(per arm: half, 50/50).\n")
    out.append(
        "Fixed horizons, 80 % power, normal approximation with the true sd σ of the "
        "workload's difference at Δ = ε − δ (paired: σ = √(0.1 − Δ²) per request; unpaired: "
        "σ = √(p_c(1−p_c) + p_v(1−p_v)) per pair of one label of each arm, p_v = p_c + Δ, "
        "and the size is 2n labels):\n")
    out.append(
        "- **n₁, the baseline of the aims: one-sided z-test at α** (the decision the policy "
        "makes, at its nominal level): n₁ = ⌈((z_{1−α} + z₀.₈) · σ / ε)²⌉ = "
        "⌈(2.486 · σ / ε)²⌉ (`one_sided_n` in the bench);\n"
        "- **fixed (kept from before): two-sided z-test at α**, equivalently one-sided at α/2, "
        "the promotion error the sequence guarantees: n = ⌈((z_{1−α/2} + z₀.₈) · σ / ε)²⌉ = "
        "⌈(2.802 · σ / ε)²⌉ (`fixed_horizon_n`), 1.27 × n₁.\n")
    out.append(
        f"Sequential: stopping time of L_t > −δ; median, mean and 80th percentile over runs "
        f"({args.paired_runs} paired, {args.unpaired_runs} unpaired; fixed seeds), runs "
        f"undecided at 8 × the two-sided size counted at that cap. \"tuned\": `tuned_n` = the "
        f"two-sided fixed-horizon size (in pairs/blocks) of that ε, as the docs recommend; "
        f"\"default\": `tuned_n` = 1000. Sequential columns use the policy's test (betting at −δ; "
        f"unpaired: `DiffMeansCS`, arm-ordered blocks, run object by object) unless they say EB "
        f"(the empirical-Bernstein CS the policy used before, for comparison).\n")
    out.append("| ε | fixed paired | seq. paired tuned (median / mean / p80) | "
               "seq. paired default (median / mean) | EB paired tuned (median / mean) | "
               "fixed unpaired | seq. unpaired tuned (median / mean / p80) |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|")
    for r in eff:
        pt, pd, ut = r["paired_tuned"], r["paired_default"], r["unpaired_tuned"]
        pe = r["paired_eb_tuned"]
        out.append(
            f"| {r['effect']} | {r['fixed_paired']} | {pt['median']:.0f} / {pt['mean']:.0f} / "
            f"{pt['p80']:.0f} | {pd['median']:.0f} / {pd['mean']:.0f} | "
            f"{pe['median']:.0f} / {pe['mean']:.0f} | {r['fixed_unpaired']} | "
            f"{ut['median']:.0f} / {ut['mean']:.0f} / {ut['p80']:.0f} |")

    def ci(s: dict, stat: str, n: float) -> str:
        lo, hi = s[f"{stat}_ci"]
        return f"**{s[stat] / n:.2f}** [{lo / n:.2f}, {hi / n:.2f}]"

    out.append("\n### Against the decision's baseline: one-sided fixed horizon at α, 80 % power "
               f"(aims: mean ≤ {AIM_MEAN} ×, p80 ≤ {AIM_P80} ×)\n")
    out.append("Ratios sequential / n₁ with 95 % Monte Carlo intervals; \"by n₁\": share of runs "
               "promoted within n₁ labels (the fixed test's power there is 0.80); "
               "\"in cap\": share promoted within the cap.\n")
    out.append("| ε | n₁ paired | paired mean / n₁ | paired p80 / n₁ | by n₁ | in cap "
               "| n₁ unpaired (per arm) | unpaired mean / n₁ | unpaired p80 / n₁ | by n₁ "
               "| in cap |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in eff:
        pt, ut = r["paired_tuned"], r["unpaired_tuned"]
        n1p, n1u = r["one_sided_paired"], r["one_sided_unpaired"]
        out.append(
            f"| {r['effect']} | {n1p} | {ci(pt, 'mean', n1p)} | {ci(pt, 'p80', n1p)} "
            f"| {pt['decided_by']:.2f} | {1 - pt['undecided']:.3f} | {n1u} ({n1u // 2}) "
            f"| {ci(ut, 'mean', n1u)} | {ci(ut, 'p80', n1u)} | {ut['decided_by']:.2f} "
            f"| {1 - ut['undecided']:.3f} |")
    out.append("\nPaired, the same runs with the sequence tuned at n₁ instead (`tuned_n` = n₁; "
               "a diagnostic of the tuning, not the documented setting) — mean / n₁ (p80 / n₁): "
               + "; ".join(f"ε = {r['effect']}: "
                           f"{r['paired_tuned_1s']['mean'] / r['one_sided_paired']:.2f} "
                           f"({r['paired_tuned_1s']['p80'] / r['one_sided_paired']:.2f})"
                           for r in eff) + ".\n")
    out.append("Unpaired, at the stop: the candidate's share of the labels "
               + ", ".join(f"{r['unpaired_tuned']['candidate_share']:.3f}" for r in eff)
               + "; labels waiting in incomplete blocks, mean "
               + ", ".join(f"{r['unpaired_tuned']['pending']:.0f}" for r in eff)
               + f" (ε = {', '.join(str(r['effect']) for r in eff)}).\n")

    out.append("\nRatios against the two-sided fixed horizon (the earlier baseline) — mean "
               "stopping time (median; 80th percentile):\n")
    out.append("| ε | paired / unpaired (aim ≤ 0.33) | seq. / fixed, paired tuned "
               "| seq. / fixed, unpaired tuned | seq. / fixed, paired default "
               "| EB / fixed, paired tuned |")
    out.append("|---:|---:|---:|---:|---:|---:|")

    def ratio(s: dict, n: float) -> str:
        return f"{s['mean'] / n:.2f} ({s['median'] / n:.2f}; {s['p80'] / n:.2f})"

    for r in eff:
        pt, pd, ut = r["paired_tuned"], r["paired_default"], r["unpaired_tuned"]
        out.append(
            f"| {r['effect']} | {pt['mean'] / ut['mean']:.2f} ({pt['median'] / ut['median']:.2f})"
            f" | {ratio(pt, r['fixed_paired'])} | {ratio(ut, r['fixed_unpaired'])}"
            f" | {ratio(pd, r['fixed_paired'])}"
            f" | {ratio(r['paired_eb_tuned'], r['fixed_paired'])} |")
    undecided = max(max(r[k]["undecided"] for k in ("paired_tuned", "paired_default",
                                                    "paired_eb_tuned", "paired_tuned_1s",
                                                    "unpaired_tuned"))
                    for r in eff)
    out.append(f"\nLargest share of runs undecided at the cap: {undecided:.3f}.\n")

    out.append(f"### Tuned for ε = {TUNED_EFFECT}, run at half and double that effect\n")
    tuned = fixed_sizes(TUNED_EFFECT)
    out.append(f"`tuned_n` = {tuned['fixed_paired']} pairs (paired), "
               f"{tuned['fixed_unpaired'] / 2:.0f} blocks (unpaired): the tuning of "
               f"ε = {TUNED_EFFECT} above; baselines n₁ at the true effect; same runs counts, "
               f"other seeds. Ratios / n₁ with 95 % Monte Carlo intervals.\n")
    out.append("| true ε | n₁ paired | paired mean / n₁ | paired p80 / n₁ | by n₁ | in cap "
               "| n₁ unpaired | unpaired mean / n₁ | unpaired p80 / n₁ | by n₁ | in cap |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in off:
        p, u = r["paired"], r["unpaired"]
        n1p, n1u = r["one_sided_paired"], r["one_sided_unpaired"]
        out.append(
            f"| {r['effect']:g} ({r['factor']:g} ×) | {n1p} | {ci(p, 'mean', n1p)} "
            f"| {ci(p, 'p80', n1p)} | {p['decided_by']:.2f} | {1 - p['undecided']:.3f} | {n1u} "
            f"| {ci(u, 'mean', n1u)} | {ci(u, 'p80', n1u)} | {u['decided_by']:.2f} "
            f"| {1 - u['undecided']:.3f} |")
    same = {r["effect"]: r for r in eff}
    notes = []
    for r in off:
        own = same.get(round(r["effect"], 10))
        if own is not None:
            notes.append(
                f"at ε = {r['effect']:g} the sequence tuned for its own effect needs "
                f"{own['paired_tuned']['mean'] / r['one_sided_paired']:.2f} × (paired) and "
                f"{own['unpaired_tuned']['mean'] / r['one_sided_unpaired']:.2f} × (unpaired) "
                f"on the mean")
    if notes:
        out.append("\nFor comparison, " + "; ".join(notes) + ".\n")
    out.append(verdicts(eff, off))
    out.append("## 3. Cost per observation\n")
    out.append(f"µs per call, best of 3 passes of {args.speed_n} calls; ratio against the River "
               "`Mean.update` baseline measured in the same process.\n")
    out.append("| object | update µs | × baseline | update + read µs |")
    out.append("|---|---:|---:|---:|")
    base = fast[0]["update"]
    for r in fast:
        read = "" if r["update_read"] is None else f"{r['update_read']:.2f}"
        out.append(f"| {r['object']} | {r['update']:.2f} | {r['update'] / base:.1f} | {read} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke run)")
    parser.add_argument("--out", help="also write the Markdown report to this file")
    args = parser.parse_args(argv)
    args.peek_runs = 1000 if args.quick else 4000
    args.paired_runs = 300 if args.quick else 2000
    args.unpaired_runs = 30 if args.quick else 500
    args.speed_n = 20000 if args.quick else 100000
    effects = [0.02, 0.04] if args.quick else [0.015, 0.02, 0.03, 0.04, 0.06]
    start = time.perf_counter()
    peek = peeking(args.peek_runs, [1000, 5000, 20000] if not args.quick else [1000, 5000])
    eff = efficiency(effects, args.paired_runs, args.unpaired_runs)
    off = off_tuning(TUNED_EFFECT, [0.5, 2.0], args.paired_runs, args.unpaired_runs)
    fast = speed(args.speed_n)
    report = markdown(peek, eff, off, fast, args, time.perf_counter() - start)
    sys.stdout.write(report)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
