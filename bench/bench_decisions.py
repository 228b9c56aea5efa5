"""Benchmark of the decision policy (rollguard.decisions): peeking at the boundary, and speed.

1. *Peeking at a boundary candidate.* A candidate exactly at the margin boundary (Δ = −δ) is
   run through :class:`~rollguard.decisions.policy.Policy` for up to N requests, the policy
   deciding after every record (continuous monitoring). Beside it, on the very same outcomes,
   a naive fixed-horizon z-test (two-sided level α; "promote" when the lower end of its 95 %
   interval for Δ clears −δ, the policy's rule with a fixed-horizon interval) looked at after
   every outcome from ``min_samples`` on, and the same z-test looked at once, at N. The
   guarantee is α/2 for promotion at any look; the naive test's single look has that error,
   and peeking multiplies it.
2. *Speed.* µs per record of ``Policy.on_record`` (a request gives two records: SCORED when
   its predictions are in, OUTCOME when its label is) for shadow, ab, canary and bandit with
   typical guardrails (latency p99 ≤ 1.2 × champion, error_rate ≤ 0.01, precision ≥ 0.9 in
   tier=vip, and srm where traffic is split), the candidate close to the champion so the
   experiment runs to the end of the stream.

Traffic: :func:`rollguard.synth.records` (binary, champion accuracy 0.8; the boundary
candidate 0.79 = 0.8 − δ, better on tier=vip and worse elsewhere, so paired differences take
both signs). ab: 50/50. α = 0.05, δ = 0.01, min_samples = 200.

Run: ``.venv/bin/python bench/bench_decisions.py [--runs 1000] [--requests 3000] [--quick]``
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import sys
import time
from multiprocessing import Pool

import msgspec

from rollguard.decisions.policy import Policy
from rollguard.schemas.experiment import Experiment
from rollguard.streams.records import OUTCOME, SCORED
from rollguard.synth import Arm, records

ALPHA = 0.05
MARGIN = 0.01
MIN_SAMPLES = 200
Z = 1.959963984540054  # z_{1 − α/2}
CHAMPION = Arm("m:1", 0.8)
BOUNDARY = Arm("m:2", 0.79, {"tier=vip": 0.9, "tier=std": 0.7625})
GUARDRAILS = [{"metric": "latency_p99_ms", "max_ratio": 1.2},
              {"metric": "error_rate", "max": 0.01},
              {"metric": "precision", "segment": {"tier": "vip"}, "min": 0.9}]


def experiment(**overrides) -> Experiment:
    base = {"name": "bench", "task": "binary", "mode": "shadow", "champion": "m:1",
            "candidates": ["m:2"], "primary": {"metric": "accuracy", "margin": MARGIN},
            "alpha": ALPHA, "min_samples": MIN_SAMPLES}
    base.update(overrides)
    return Experiment.from_dict(base)


# -- 1. peeking -------------------------------------------------------------------------------
def _naive_lower(n: int, total: float, squares: float) -> float:
    mean = total / n
    var = max(squares / n - mean * mean, 0.0) * n / (n - 1)
    return mean - Z * math.sqrt(var / n)


def boundary_run(args: tuple[str, int, int]) -> tuple[float | None, float | None, float | None,
                                                       dict[int, bool]]:
    """One run: (policy promotion time, policy rollback time, naive peeking promotion time,
    {horizon: naive single-look promotion}) in requests."""
    mode, seed, n_requests = args
    horizons = sorted({h for h in (1000, 2000, n_requests) if h <= n_requests})
    policy = Policy(experiment(mode=mode))
    promoted = rolled_back = naive = None
    single: dict[int, bool] = {}
    # shadow: paired differences; ab: per-arm correctness sums
    n = 0
    tot = sq = 0.0
    arm_n, arm_sum = [0, 0], [0.0, 0.0]
    for rec in records(CHAMPION, [BOUNDARY], n_requests, seed, mode=mode,
                       shares={"m:1": 0.5, "m:2": 0.5}):
        if rec.kind != OUTCOME:
            continue
        request = int(rec.ts) + 1
        if policy.final is None:
            for event in policy.on_record(rec):
                if event.action == "promote":
                    promoted = request
                elif event.action == "rollback":
                    rolled_back = request
        correct = {v.arm: float(v.prediction == rec.label) for v in rec.arms}
        if mode == "shadow":
            d = correct["m:2"] - correct["m:1"]
            n, tot, sq = n + 1, tot + d, sq + d * d
            lower = _naive_lower(n, tot, sq) if n >= MIN_SAMPLES else -math.inf
        else:
            [(arm, c)] = correct.items()
            i = arm == "m:2"
            arm_n[i] += 1
            arm_sum[i] += c
            lower = -math.inf
            if min(arm_n) >= MIN_SAMPLES:
                p = [arm_sum[j] / arm_n[j] for j in (0, 1)]
                se = math.sqrt(sum(p[j] * (1 - p[j]) / (arm_n[j] - 1) for j in (0, 1)))
                lower = p[1] - p[0] - Z * se
        if naive is None and lower > -MARGIN:
            naive = request
        if request in horizons:
            single[request] = lower > -MARGIN
    return promoted, rolled_back, naive, single


def peeking(runs: int, n_requests: int, workers: int) -> list[dict]:
    rows = []
    for mode in ("shadow", "ab"):
        start = time.perf_counter()
        with Pool(workers) as pool:
            results = pool.map(boundary_run, [(mode, s, n_requests) for s in range(runs)],
                               chunksize=max(1, runs // (8 * workers)))
        seconds = time.perf_counter() - start
        for h in sorted({h for h in (1000, 2000, n_requests) if h <= n_requests}):
            rows.append({
                "mode": mode, "horizon": h, "runs": runs,
                "naive_peek": sum(r[2] is not None and r[2] <= h for r in results) / runs,
                "naive_once": sum(r[3].get(h, False) for r in results) / runs,
                "policy_promote": sum(r[0] is not None and r[0] <= h for r in results) / runs,
                "policy_rollback": sum(r[1] is not None and r[1] <= h for r in results) / runs,
                "seconds": seconds,
            })
    return rows


# -- 2. speed ---------------------------------------------------------------------------------
def _speed_experiment(mode: str) -> Experiment:
    guards = GUARDRAILS + ([{"metric": "srm"}] if mode != "shadow" else [])
    extra: dict = {}
    if mode == "canary":
        extra["canary"] = {"steps": [0.05, 0.25, 0.5]}
    if mode == "bandit":
        extra["bandit"] = {"min_share": 0.05, "update_every": 200}
    return experiment(mode=mode, guardrails=guards, min_samples=500, **extra)


def _routed_stream(mode: str, n_requests: int, seed: int) -> list:
    """The records a run would see, each request served by the arm the policy's traffic
    draws at the time (recorded once with a policy in the loop, then replayed for timing:
    the policy is deterministic, so the replay makes the same decisions)."""
    policy = Policy(_speed_experiment(mode))
    rng = random.Random(seed)
    out = []
    views: tuple = ()
    cand = Arm("m:2", 0.8, {"tier=vip": 0.9, "tier=std": 0.775})
    for rec in records(CHAMPION, [cand], n_requests, seed, mode="shadow"):
        if mode != "shadow":
            if rec.kind == SCORED:
                shares = policy.traffic
                arm = rng.choices(list(shares), list(shares.values()))[0]
                views = (msgspec.structs.replace(rec.view(arm), served=True),)
            rec = msgspec.structs.replace(rec, arms=views)
        out.append(rec)
        policy.on_record(rec)
    return out


def speed(n_requests: int, repeat: int) -> list[dict]:
    rows = []
    for mode in ("shadow", "ab", "canary", "bandit"):
        stream = _routed_stream(mode, n_requests, seed=1)
        best = math.inf
        for _ in range(repeat):
            policy = Policy(_speed_experiment(mode))
            fed = events = 0
            start = time.perf_counter()
            for rec in stream:
                events += len(policy.on_record(rec))
                fed += 1
                if policy.final is not None:
                    break
            best = min(best, (time.perf_counter() - start) / fed)
        rows.append({"mode": mode, "records": fed, "events": events,
                     "final": policy.final["action"] if policy.final else "—",
                     "us": best * 1e6})
    return rows


# -- report -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--speed-requests", type=int, default=50000)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--quick", action="store_true", help="200 runs, 10000 speed requests")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.speed_requests = 200, 10000
    started = time.perf_counter()
    print(f"# Decision policy — benchmark\n\nMachine: {os.cpu_count()} cores, "
          f"{platform.machine()}, Python {platform.python_version()}.\n")

    print(f"## 1. Boundary candidate (Δ = −δ = −{MARGIN}) under continuous monitoring\n")
    print(f"Share of {args.runs} runs promoted at some look up to the horizon (requests; "
          f"shadow: one paired outcome per request, ab: 50/50 unpaired). Guarantee for the "
          f"policy: ≤ α/2 = {ALPHA / 2} at every horizon.\n")
    print("| mode | horizon | naive z, peeking every outcome | naive z, one look at the "
          "horizon | policy: promoted | policy: rolled back |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in peeking(args.runs, args.requests, args.workers):
        print(f"| {row['mode']} | {row['horizon']} | {row['naive_peek']:.3f} | "
              f"{row['naive_once']:.3f} | {row['policy_promote']:.3f} | "
              f"{row['policy_rollback']:.3f} |")
    se = 3 * math.sqrt(ALPHA / 2 * (1 - ALPHA / 2) / args.runs)
    print(f"\n(3 Monte-Carlo standard errors at α/2 with {args.runs} runs: ±{se:.3f}.)\n")

    print("## 2. Policy speed\n")
    print(f"`Policy.on_record` over {args.speed_requests} requests (2 records each), best of 3; "
          "guardrails: latency_p99_ms ≤ 1.2 × champion, error_rate ≤ 0.01, "
          "precision[tier=vip] ≥ 0.9, + srm (ab, canary, bandit).\n")
    print("| mode | records fed | control events | final | µs per record |")
    print("|---|---:|---:|---|---:|")
    for row in speed(args.speed_requests, repeat=3):
        print(f"| {row['mode']} | {row['records']} | {row['events']} | {row['final']} | "
              f"{row['us']:.1f} |")
    print(f"\nProduced in {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
