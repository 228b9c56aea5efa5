"""Rollback on unbounded metrics waits for the asymptotic CS's burn-in (simulations, fixed seeds).

The issue: the asymptotic confidence sequence of unbounded metrics (``abs_error``, ``sq_error``,
unclipped ``log_loss``) gave finite bounds from n = 2. With tied values (integer losses) its
plug-in variance is 0 there and the interval has zero width, so two equal differences below
−δ rolled the candidate back; only promotion waited for ``min_samples``. The fix
(:mod:`rollguard.stats.sequential.asymptotic`): no finite bound before ``burn_in`` = 30
observations — pairs in shadow mode, arm-ordered blocks in the unpaired modes — the point from
which the paper's asymptotic guarantee is used.

What is checked, under continuous monitoring (a look after every outcome):

(a) equal models, integer-valued ``abs_error`` (same distribution for both arms), margin 0, so
    Δ = −δ exactly (the hardest case for rollback): the fraction of runs that EVER roll back
    (U < −δ, the policy's rule) is at most α/2 — the policy rolls back on one side of a
    two-sided 1−α sequence (docs/design.md, as test_sequential_primary.py) — plus 3 Monte-Carlo
    standard errors; the old rule (``burn_in=2``, what the code did before) fails the same test;
(b) a clearly worse candidate is still rolled back, by a stated n;
(c) nothing is rolled back before the burn-in, however lopsided the first outcomes.

Counting every run that ever crosses, also after a promotion would have ended it, makes the
vectorised figures an upper bound on the policy's. The policy-level tests drive
:class:`rollguard.decisions.policy.Policy` itself with an experiment parsed from YAML.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import msgspec
import numpy as np
import pytest

from rollguard.decisions.policy import Policy
from rollguard.schemas import parse_experiments
from rollguard.stats.sequential import AsymptoticCS, DiffMeansCS, MeanCS, PairedMeanCS, from_dict
from rollguard.stats.sequential.asymptotic import DEFAULT_BURN_IN, check_burn_in
from rollguard.stats.sequential.batch import AsymptoticBatch
from rollguard.streams.records import OUTCOME, ArmView, JoinedRecord

ALPHA = 0.05
NOMINAL = ALPHA / 2  # one side of the two-sided 1−α sequence
MIN_SAMPLES = 100
TUNED_N = 2 * MIN_SAMPLES  # what the policy passes (Policy: tuned_n = 2 × min_samples)
BURN_IN = DEFAULT_BURN_IN

#: per-request abs_error 0, 1, 2, 3 (integer labels and predictions): ties are common — two
#: paired differences are equal and negative with probability 0.054
LOSSES = (0.4, 0.3, 0.2, 0.1)
#: heavier: mostly small errors, a rare error of 10
HEAVY = (0.5, 0.25, 0.15, 0.07, 0, 0, 0, 0, 0, 0, 0.03)
#: a clearly worse candidate: the same values, mirrored probabilities (mean loss 2 against 1)
WORSE = (0.1, 0.2, 0.3, 0.4)
#: a moderately worse one: mean loss 1.25, Δ = −0.25
SOMEWHAT_WORSE = (0.3, 0.3, 0.25, 0.15)


def limit(runs: int, p: float = NOMINAL) -> float:
    """α/2 plus three Monte-Carlo standard errors of a rate estimated from ``runs`` runs."""
    return p + 3.0 * math.sqrt(p * (1.0 - p) / runs)


def loss_sampler(probs) -> Callable[[np.random.Generator, int], np.ndarray]:
    """Draws of an integer loss k with probability ``probs[k]``."""
    cumulative = np.cumsum(probs) / np.sum(probs)

    def draw(rng: np.random.Generator, size: int) -> np.ndarray:
        return np.minimum(np.searchsorted(cumulative, rng.random(size), side="right"),
                          len(probs) - 1).astype(float)

    return draw


def paired_first_rollback(cs: AsymptoticBatch, champion, candidate, runs: int, steps: int,
                          seed: int, margin: float = 0.0) -> np.ndarray:
    """Per run, the first n at which U_n < −margin (0: never), looking after every pair.

    Shadow mode: d = score_candidate − score_champion = loss_champion − loss_candidate."""
    rng = np.random.default_rng(seed)
    first = np.zeros(runs, dtype=np.int64)
    for n in range(1, steps + 1):
        cs.update(champion(rng, runs) - candidate(rng, runs))
        upper = cs.interval()[1]
        first[(first == 0) & (upper < -margin)] = n
    return first


# -- (a) equal models, paired (shadow): vectorised, 10,000 runs × 5000 pairs ----------------------
@pytest.mark.parametrize("losses, tuned_n, seed", [
    (LOSSES, 40, 1),        # min_samples 20: the boundary is tight early
    (LOSSES, TUNED_N, 2),   # min_samples 100
    (LOSSES, 1000, 3),      # min_samples 500
    (HEAVY, TUNED_N, 4),
], ids=["0-3,tuned40", "0-3,tuned200", "0-3,tuned1000", "heavy,tuned200"])
def test_paired_equal_models_rarely_rolled_back(losses, tuned_n, seed):
    runs, steps = 10_000, 5000
    draw = loss_sampler(losses)
    first = paired_first_rollback(AsymptoticBatch(runs, ALPHA, tuned_n), draw, draw, runs,
                                  steps, seed)
    # the rule before the fix (bounds from n = 2), on the same draws
    first_old = paired_first_rollback(AsymptoticBatch(runs, ALPHA, tuned_n, burn_in=2), draw,
                                      draw, runs, steps, seed)
    rate, rate_old = (first > 0).mean(), (first_old > 0).mean()
    # (c) never before the burn-in
    assert first[first > 0].min(initial=BURN_IN) >= BURN_IN
    # (a) ≤ α/2 + 3 SE (0.0297 for 10,000 runs). Measured 0.021 / 0.023 / 0.016 / 0.018
    # (tuned 40 / 200 / 1000 / heavy); the old rule 0.113 / 0.081 / 0.066 / 0.059, most of it
    # at n = 2 (0.061 / 0.053 / 0.051 / 0.040): this test fails on it.
    assert rate <= limit(runs), (rate, rate_old)
    assert rate_old > limit(runs), (rate, rate_old)


# -- (a) equal models, unpaired (ab, canary): the objects, and the blocks vectorised -------------
def unpaired_first_rollback(make: Callable[[], DiffMeansCS], champion, candidate, runs: int,
                            steps: int, seed: int, share: float = 0.5,
                            margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per run, the outcome count and block count of the first rollback (0: never), looking
    after every outcome; each outcome is the candidate's with probability ``share``."""
    rng = np.random.default_rng(seed)
    first = np.zeros(runs, dtype=np.int64)
    blocks = np.zeros(runs, dtype=np.int64)
    for r in range(runs):
        cs = make()
        is_cand = (rng.random(steps) < share).tolist()
        champ, cand = champion(rng, steps).tolist(), candidate(rng, steps).tolist()
        for t in range(steps):
            if is_cand[t]:
                cs.update("candidate", -cand[t])
            else:
                cs.update("champion", -champ[t])
            if cs.side_of(-margin) < 0:
                first[r], blocks[r] = t + 1, cs.n_blocks
                break
    return first, blocks


def test_unpaired_equal_models_rarely_rolled_back_objects():
    """DiffMeansCS itself (random 50/50 arrivals, its own blocks), over the first 400 outcomes
    (~200 blocks): where the old rule's false rollbacks were (5 % of runs by 10 outcomes)."""
    runs, steps = 2000, 400
    draw = loss_sampler(LOSSES)
    first, blocks = unpaired_first_rollback(lambda: DiffMeansCS(ALPHA, tuned_n=TUNED_N), draw,
                                            draw, runs, steps, seed=5)
    first_old, _ = unpaired_first_rollback(lambda: DiffMeansCS(ALPHA, tuned_n=TUNED_N, burn_in=2),
                                           draw, draw, runs, steps, seed=5)
    rate, rate_old = (first > 0).mean(), (first_old > 0).mean()
    # (c) no rollback before 30 completed blocks (≥ 60 outcomes)
    assert blocks[blocks > 0].min(initial=BURN_IN) >= BURN_IN
    # (a) ≤ α/2 + 3 SE (0.036 for 2000 runs). Measured 0.010; the old rule 0.064.
    assert rate <= limit(runs), (rate, rate_old)
    assert rate_old > limit(runs), (rate, rate_old)


#: a canary at 5 % (600 outcomes), 25 % (1000) then 50 % (3400), as (champion outcomes per
#: block, blocks): the arm-ordered blocks DiffMeansCS forms at a steady share — 19 + 1, 3 + 1 and
#: 1 + 1 outcomes, 30 + 250 + 1700 blocks in 5000 outcomes
CANARY = ((19, 600 // 20), (3, 1000 // 4), (1, 3400 // 2))


def canary_block_differences(draw, rng: np.random.Generator, runs: int):
    """The block differences DiffMeansCS feeds its CS through the canary steps, in order:
    mean(candidate scores) − mean(champion scores) of each block, scores = −loss."""
    for k_champion, n_blocks in CANARY:
        for _ in range(n_blocks):
            champion = sum(draw(rng, runs) for _ in range(k_champion)) / k_champion
            yield champion - draw(rng, runs)


def test_unpaired_canary_equal_models_rarely_rolled_back_to_5000_outcomes():
    """The long horizon, vectorised: the CS of the block differences through a whole canary
    (5000 outcomes, 1980 blocks; its value only changes when a block completes, so this is a
    look after every outcome)."""
    runs = 10_000
    draw = loss_sampler(LOSSES)
    rates = {}
    for burn_in in (BURN_IN, 2):
        cs = AsymptoticBatch(runs, ALPHA, TUNED_N, burn_in=burn_in)
        rng = np.random.default_rng(6)
        first = np.zeros(runs, dtype=np.int64)
        for j, d in enumerate(canary_block_differences(draw, rng, runs), start=1):
            cs.update(d)
            first[(first == 0) & (cs.interval()[1] < 0.0)] = j
        if burn_in == BURN_IN:
            assert first[first > 0].min(initial=BURN_IN) >= BURN_IN  # (c)
        rates[burn_in] = (first > 0).mean()
    # (a) ≤ α/2 + 3 SE (0.0297). Measured 0.020; the old rule 0.070.
    assert rates[BURN_IN] <= limit(runs), rates
    assert rates[2] > limit(runs), rates


# -- (b) power: a worse candidate is still rolled back ----------------------------------------
def test_paired_worse_candidates_are_rolled_back():
    runs = 10_000
    champion = loss_sampler(LOSSES)
    clearly = paired_first_rollback(AsymptoticBatch(runs, ALPHA, TUNED_N), champion,
                                    loss_sampler(WORSE), runs, 200, seed=7)
    # Δ = −1 (sd of d 1.41): every run rolled back by 100 pairs, none before the burn-in
    # (measured: 64 % at n = 30, the first n allowed; 99 % by 62, all by 94)
    assert clearly.min() >= BURN_IN and (clearly > 0).all() and clearly.max() <= 100
    assert (clearly == BURN_IN).mean() >= 0.5
    somewhat = paired_first_rollback(AsymptoticBatch(runs, ALPHA, TUNED_N), champion,
                                     loss_sampler(SOMEWHAT_WORSE), runs, 2000, seed=8)
    # Δ = −0.25 (sd 1.44): rolled back by 2000 pairs in ≥ 99 % of runs (measured: all, by 1445;
    # median n 237)
    assert somewhat[somewhat > 0].min() >= BURN_IN
    assert (somewhat > 0).mean() >= 0.99


def test_unpaired_clearly_worse_candidate_is_rolled_back():
    runs = 300
    first, blocks = unpaired_first_rollback(lambda: DiffMeansCS(ALPHA, tuned_n=TUNED_N),
                                            loss_sampler(LOSSES), loss_sampler(WORSE), runs,
                                            400, seed=9)
    # Δ = −1, 50/50: every run rolled back by 400 outcomes (measured: all by 144, the median at
    # 30 blocks, 68 outcomes), never before 30 blocks
    assert (first > 0).all() and blocks.min() >= BURN_IN


# -- through the Policy ------------------------------------------------------------------------
def regression_experiment(mode: str, margin: float = 0.0):
    [exp] = parse_experiments(f"""
{{name: e, task: regression, mode: {mode}, champion: m:1, candidates: [m:2],
  primary: {{metric: abs_error, margin: {margin}}}, min_samples: {MIN_SAMPLES}}}""", "test.yaml")
    return exp


def run_policy(mode: str, champion, candidate, n: int, seed: int):
    """Outcome records of a regression with label 0, so each prediction is its abs_error; ab
    mode serves each request from the policy's current traffic. Returns the final dict (or
    None), the candidate's evidence in the final event, and the records fed."""
    rng = np.random.default_rng(seed)
    policy = Policy(regression_experiment(mode))
    champ, cand, u = champion(rng, n).tolist(), candidate(rng, n).tolist(), rng.random(n).tolist()
    for i in range(n):
        views = (ArmView("m:1", True, champ[i], None, 1.0, None, float(i)),
                 ArmView("m:2", False, cand[i], None, 1.0, None, float(i)))
        if mode != "shadow":
            served = 1 if u[i] < policy.traffic.get("m:2", 0.0) else 0
            views = (msgspec.structs.replace(views[served], served=True),)
        events = policy.on_record(JoinedRecord(OUTCOME, float(i), f"r{i}", "e", None, None,
                                               views, 0.0, float(i)))
        if policy.final is not None:
            return policy.final, events[-1].evidence["candidates"]["m:2"], i + 1
    return None, None, n


@pytest.mark.parametrize("mode", ["shadow", "ab"])
def test_policy_equal_models_no_early_rollback(mode):
    """Equal models through the Policy, looking after every outcome, 500 runs × 300 outcomes:
    the window where the old rule's false rollbacks were (most within 10 outcomes)."""
    runs, steps = 500, 300
    draw = loss_sampler(LOSSES)
    rolled_back = 0
    for seed in range(runs):
        final, evidence, _ = run_policy(mode, draw, draw, steps, seed)
        if final is not None and final["action"] == "rollback":
            rolled_back += 1
            # (c) never before 30 pairs (shadow) or blocks (ab: then each arm has ≥ 30)
            assert min(evidence["n"].values()) >= BURN_IN, evidence
    # (a) ≤ α/2 + 3 SE (0.046 for 500 runs). Measured 0.008 (shadow) and 0.010 (ab); the old
    # rule 0.058 and 0.058 over the same runs (shadow: 24 of its 29 at 2 pairs).
    assert rolled_back / runs <= limit(runs), rolled_back


@pytest.mark.parametrize("mode, cap", [("shadow", 100), ("ab", 400)])
def test_policy_rolls_back_a_clearly_worse_candidate(mode, cap):
    for seed in range(20):
        final, evidence, records = run_policy(mode, loss_sampler(LOSSES), loss_sampler(WORSE),
                                              cap, seed)
        # (b) Δ = −1: rolled back in every run within the cap (measured: shadow by 30–83
        # pairs, 10 of 20 at 30; ab by 62–154 outcomes), (c) on at least 30 pairs or blocks
        assert final is not None and final["action"] == "rollback", (seed, final)
        assert "abs_error" in final["reason"]
        assert evidence["delta"]["upper"] < 0.0
        assert min(evidence["n"].values()) >= BURN_IN and records >= BURN_IN


# -- (c) the rule itself, in every class, and the state ---------------------------------------
def test_no_bound_before_the_burn_in_whatever_the_values():
    objects = [AsymptoticCS(ALPHA, TUNED_N), MeanCS(ALPHA, tuned_n=TUNED_N),
               PairedMeanCS(ALPHA, tuned_n=TUNED_N)]
    twin = AsymptoticBatch(2, ALPHA, TUNED_N)
    for n in range(1, BURN_IN):
        for obj in objects:
            obj.update(-3.0)  # the candidate 3 worse on every request: ties, σ̂ = 0
            assert obj.interval() == (-math.inf, math.inf)
        twin.update(np.array([-3.0, 0.0]))
        assert np.isinf(twin.interval()[1]).all()
    assert [o.side_of(0.0) for o in objects[1:]] == [0, 0]
    assert objects[0].evidence()["upper"] is None and objects[0].evidence()["burn_in"] == BURN_IN
    for obj in objects:
        obj.update(-3.0)
    assert [o.side_of(0.0) for o in objects[1:]] == [-1, -1]  # from the 30th on, it decides
    unpaired = DiffMeansCS(ALPHA, tuned_n=TUNED_N)
    for _ in range(BURN_IN - 1):
        unpaired.update("champion", 0.0).update("candidate", -3.0)
    assert unpaired.n_blocks == BURN_IN - 1 and unpaired.side_of(0.0) == 0
    unpaired.update("champion", 0.0).update("candidate", -3.0)
    assert unpaired.side_of(0.0) == -1


def test_burn_in_is_saved_checked_and_merged():
    rng = np.random.default_rng(10)
    xs = rng.integers(0, 4, 50).astype(float)
    whole, parts = AsymptoticCS(burn_in=40), [AsymptoticCS(burn_in=40) for _ in range(2)]
    for i, x in enumerate(xs):
        whole.update(x)
        parts[i % 2].update(x)
    # each part (25 values) is still in its burn-in; merged they are past it: the burn-in
    # counts the merged n, as the whole stream does
    assert parts[0].interval() == (-math.inf, math.inf)
    merged = parts[0] + parts[1]
    assert merged.interval() == pytest.approx(whole.interval(), rel=1e-12)
    assert math.isfinite(merged.interval()[1])
    state = json.loads(json.dumps(whole.to_dict()))
    assert state["burn_in"] == 40 and from_dict(state) == whole
    old = dict(state)
    del old["burn_in"]  # a state saved before the burn-in existed: today's default
    assert from_dict(old).burn_in == DEFAULT_BURN_IN
    with pytest.raises(ValueError, match="burn_in"):
        whole + AsymptoticCS()
    with pytest.raises(ValueError, match="burn_in"):
        MeanCS(ALPHA, tuned_n=TUNED_N, burn_in=3) + MeanCS(ALPHA, tuned_n=TUNED_N)
    for bad in (1, 0, 2.5, True, -30):
        with pytest.raises(ValueError):
            check_burn_in(bad)
    restored = DiffMeansCS.from_dict(DiffMeansCS(ALPHA, burn_in=50).to_dict())
    assert restored.blocks_cs.core.burn_in == 50


def test_batch_twin_equals_the_object_through_the_burn_in():
    rng = np.random.default_rng(11)
    xs = rng.integers(0, 4, (2, 80)).astype(float)
    twin = AsymptoticBatch(2, ALPHA, TUNED_N, burn_in=25)
    objects = [AsymptoticCS(ALPHA, TUNED_N, burn_in=25) for _ in range(2)]
    for t in range(80):
        twin.update(xs[:, t])
        lo, hi = twin.interval()
        for r, obj in enumerate(objects):
            obj.update(xs[r, t])
            assert (lo[r], hi[r]) == pytest.approx(obj.interval(), rel=1e-12)
