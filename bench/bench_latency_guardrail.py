"""Benchmark of the latency guardrail (QuantileRatioGuardrail): the ratio test against the
former test (two per-arm quantile CSs at α/2, "fail" when disjoint), on the same streams.

Scenario (the issue's): latency_p95_ms against max_ratio 1.1; lognormal latencies (log-mean 3,
log-sd 0.5); each request brings one latency of each arm, up to 10,000 per arm; α = 0.05.

1. *Power*, 20 % slower candidate, read after every 50th request: the vectorised twin of
   tests/test_latency_ratio_guardrail.py, several seeds.
2. *The objects themselves, read after every request*: at the boundary (candidate exactly
   1.1 × in distribution: ever "fail" = false alarm, ever "pass" = false pass) and 20 % slower.
3. *Dependence between the arms of a shadow pair* (twin, every 50th request): log-latency
   correlation 0.8 (within the class's assumption) and −0.8 (outside it).
4. *Cost*: µs per update and per update + status, new and former.

Run: ``.venv/bin/python bench/bench_latency_guardrail.py [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' twin

from rollguard.stats.sequential import FAIL, PASS, UNDECIDED, QuantileCS  # noqa: E402
from rollguard.stats.sequential.quantile import QuantileRatioGuardrail  # noqa: E402
from tests.test_latency_ratio_guardrail import (  # noqa: E402
    ALPHA,
    MAX_RATIO,
    MU,
    Q,
    SIGMA,
    STEPS,
    simulate,
)


class FormerRatioGuardrail:
    """The former rule, for comparison: a QuantileCS per arm at α/2 (tuned_n 1000); "fail"
    when lower(candidate) > max_ratio · upper(champion), "pass" when upper(candidate) ≤
    max_ratio · lower(champion)."""

    def __init__(self, alpha: float, q: float, max_ratio: float) -> None:
        self.max_ratio = max_ratio
        self.arms = {arm: QuantileCS(alpha / 2, q, 1000) for arm in ("champion", "candidate")}

    def update(self, arm: str, x: float) -> FormerRatioGuardrail:
        self.arms[arm].update(x)
        return self

    def status(self) -> str:
        c_lo, c_hi = self.arms["candidate"].interval()
        h_lo, h_hi = self.arms["champion"].interval()
        if c_lo > self.max_ratio * h_hi:
            return FAIL
        if c_hi <= self.max_ratio * h_lo:
            return PASS
        return UNDECIDED


def every_request(ratio: float, runs: int, seed: int) -> dict[str, float]:
    """Both objects on the same streams, read after every request: share of runs that ever
    failed / ever passed, and the median first fail."""
    rng = np.random.default_rng(seed)
    out = {"new_fail": 0, "new_pass": 0, "old_fail": 0, "old_pass": 0}
    first = []
    for _ in range(runs):
        new = QuantileRatioGuardrail(ALPHA, q=Q, max_ratio=MAX_RATIO)
        old = FormerRatioGuardrail(ALPHA, Q, MAX_RATIO)
        cand = rng.lognormal(MU + math.log(ratio), SIGMA, STEPS).tolist()
        champ = rng.lognormal(MU, SIGMA, STEPS).tolist()
        seen = {"new": set(), "old": set()}
        for i in range(STEPS):
            for name, g in (("new", new), ("old", old)):
                if FAIL in seen[name]:
                    continue
                g.update("candidate", cand[i]).update("champion", champ[i])
                s = g.status()
                if s != UNDECIDED and s not in seen[name]:
                    seen[name].add(s)
                    if name == "new" and s == FAIL:
                        first.append(i + 1)
        for name in ("new", "old"):
            out[f"{name}_fail"] += FAIL in seen[name]
            out[f"{name}_pass"] += PASS in seen[name]
    result = {k: v / runs for k, v in out.items()}
    result["new_median_fail"] = float(np.median(first)) if first else math.nan
    return result


def cost(n: int) -> list[tuple[str, float, float]]:
    rng = np.random.default_rng(0)
    lat = rng.lognormal(MU, SIGMA, n).tolist()
    arms = ["candidate" if v < 0.5 else "champion" for v in rng.random(n)]
    rows = []
    for name, make in [("QuantileRatioGuardrail (ratio test), p95", lambda: QuantileRatioGuardrail(
                            ALPHA, q=Q, max_ratio=MAX_RATIO)),
                       ("former: 2 × QuantileCS at α/2, p95", lambda: FormerRatioGuardrail(
                            ALPHA, Q, MAX_RATIO)),
                       ("QuantileRatioGuardrail (ratio test), p99, 1.2", lambda:
                            QuantileRatioGuardrail(ALPHA, q=0.99, max_ratio=1.2)),
                       ("former, p99, 1.2", lambda: FormerRatioGuardrail(ALPHA, 0.99, 1.2))]:
        best = [math.inf, math.inf]
        for _ in range(3):
            for read in (0, 1):
                g = make()
                start = time.perf_counter()
                for i in range(n):
                    g.update(arms[i], lat[i])
                    if read:
                        g.status()
                best[read] = min(best[read], (time.perf_counter() - start) / n * 1e6)
        rows.append((name, best[0], best[1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    args = parser.parse_args()
    runs_twin = 200 if args.quick else 600
    runs_obj = 40 if args.quick else 300

    print("## 1. Power, 20 % slower p95 against max_ratio 1.1, read every 50th request\n")
    print("| seed | runs | ratio test | former test | median first fail (ratio test) |")
    print("|---:|---:|---:|---:|---:|")
    for seed in (24, 124, 224):
        out = simulate(1.2, runs_twin, seed=seed, old=True)
        fail = out["fail"]
        print(f"| {seed} | {runs_twin} | {(fail > 0).mean():.3f} | "
              f"{(out['old_fail'] > 0).mean():.3f} | {int(np.median(fail[fail > 0]))} |",
              flush=True)

    print(f"\n## 2. The objects, read after every request ({runs_obj} runs each)\n")
    print("| candidate | ratio test: ever fail | ever pass | former: ever fail | ever pass |")
    print("|---|---:|---:|---:|---:|")
    for label, ratio, seed in [("at the limit (1.1 ×)", 1.1, 31), ("20 % slower (1.2 ×)", 1.2, 32)]:
        r = every_request(ratio, runs_obj, seed)
        extra = f" (median first fail {r['new_median_fail']:.0f})" if ratio > 1.1 else ""
        print(f"| {label}{extra} | {r['new_fail']:.3f} | {r['new_pass']:.3f} | "
              f"{r['old_fail']:.3f} | {r['old_pass']:.3f} |", flush=True)

    print("\n## 3. Shadow pairs: correlated log-latencies, read every 50th request\n")
    print("| correlation | at the limit: ever fail | ever pass | 20 % slower: fails |")
    print("|---:|---:|---:|---:|")
    for rho in (0.8, -0.8):
        at = simulate(MAX_RATIO, runs_twin, seed=41, correlation=rho)
        slow = simulate(1.2, runs_twin, seed=42, correlation=rho)
        print(f"| {rho} | {(at['fail'] > 0).mean():.3f} | {(at['pass'] > 0).mean():.3f} | "
              f"{(slow['fail'] > 0).mean():.3f} |", flush=True)

    print("\n## 4. Cost per observation (µs, best of 3 passes, random arm per value)\n")
    print("| object | update | update + status |")
    print("|---|---:|---:|")
    for name, up, both in cost(20_000 if args.quick else 100_000):
        print(f"| {name} | {up:.2f} | {both:.2f} |")


if __name__ == "__main__":
    main()
