"""The demo's data: loan applications from River's Agrawal generator, replayed as traffic.

River ships the generator (``river.datasets.synth.Agrawal``, Agrawal et al. 1993): each
application has a salary, a commission, an age, an education level, a car, a zip code, a
house value, years of home ownership and a loan amount, and the bank's approval rule
(classification function 8, "disposable income") gives the truth. Feature noise
(``perturbation``) makes the task imperfect, as real data is. Nothing is downloaded.

Everything here is a pure function of the seed: the training and held-out rows, and the
traffic (which row comes when, from which customer, to which experiment, when its label
arrives and which applications are never labelled).

>>> first = list(itertools.islice(traffic(seed=7), 3))
>>> first == list(itertools.islice(traffic(seed=7), 3))
True
>>> sorted(first[0].features)
['age', 'car', 'commission', 'elevel', 'hvalue', 'hyears', 'loan', 'salary', 'zipcode']
>>> first[0].request_id
'app-7-000000'
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

#: the bank's approval rule: Agrawal's classification function 8 (disposable income)
RULE = 8
#: feature noise of the generator: the share of each numeric feature's range it may move by
PERTURBATION = 0.05
#: how many past applications the models are trained on, and held out to check them
TRAIN_ROWS = 2000
HOLDOUT_ROWS = 2000
#: customers applying (a customer may apply more than once; routing is sticky per customer)
CUSTOMERS = 20000


@dataclass(frozen=True)
class Pace:
    """How fast traffic comes and how late labels are."""

    rate: float               # applications per second
    label_delay_mean: float   # seconds, exponential
    label_delay_max: float    # seconds: later labels arrive at this delay
    unlabelled: float         # share of applications whose outcome is never known


FAST = Pace(rate=400.0, label_delay_mean=1.5, label_delay_max=8.0, unlabelled=0.10)
NORMAL = Pace(rate=100.0, label_delay_mean=4.0, label_delay_max=30.0, unlabelled=0.10)


@dataclass(frozen=True)
class Application:
    """One loan application as the demo service receives it, and what becomes known later."""

    index: int
    request_id: str
    experiment: str
    unit: str                   # the customer: sticky routing key
    features: dict[str, float]
    label: int                  # 1: the application falls in the rule's approval class
    at: float                   # seconds after the traffic starts
    label_delay: float | None   # seconds after the prediction; None: never labelled


def _seeds(seed: int) -> dict[str, int]:
    """Independent streams derived from one seed (training, hold-out, traffic, routing)."""
    rng = random.Random(f"rollguard-demo/{seed}")
    return {name: rng.randrange(2**31) for name in ("train", "holdout", "traffic", "plan")}


def _rows(seed: int) -> Iterator[tuple[dict[str, float], int]]:
    from river.datasets import synth  # imported late: River takes a moment to import

    for x, y in synth.Agrawal(classification_function=RULE, seed=seed, perturbation=PERTURBATION):
        yield {k: round(float(v), 2) for k, v in x.items()}, int(y)


def training_rows(seed: int, n: int = TRAIN_ROWS) -> list[tuple[dict[str, float], int]]:
    """The applications of the past the models learn from."""
    return list(itertools.islice(_rows(_seeds(seed)["train"]), n))


def holdout_rows(seed: int, n: int = HOLDOUT_ROWS) -> list[tuple[dict[str, float], int]]:
    """Past applications kept aside to measure the models offline."""
    return list(itertools.islice(_rows(_seeds(seed)["holdout"]), n))


def traffic(seed: int, pace: Pace = FAST,
            weights: Mapping[str, float] | None = None) -> Iterator[Application]:
    """The endless stream of applications: row ``i`` depends only on ``seed``, ``pace`` and
    ``weights`` (experiment name → share of applications; default: :data:`SHARES`)."""
    weights = dict(weights or SHARES)
    names, cumulative = list(weights), list(itertools.accumulate(weights.values()))
    seeds = _seeds(seed)
    plan = random.Random(seeds["plan"])
    at = 0.0
    for i, (x, y) in enumerate(_rows(seeds["traffic"])):
        at += plan.expovariate(pace.rate)                       # Poisson arrivals
        pick = plan.random() * cumulative[-1]
        experiment = names[next(j for j, c in enumerate(cumulative) if pick < c)]
        unit = f"customer-{plan.randrange(CUSTOMERS):05d}"
        never = plan.random() < pace.unlabelled
        delay = min(pace.label_delay_max, -pace.label_delay_mean * math.log(1.0 - plan.random()))
        yield Application(index=i, request_id=f"app-{seed}-{i:06d}", experiment=experiment,
                          unit=unit, features=x, label=y, at=at,
                          label_delay=None if never else round(delay, 3))


def all_traffic(seed: int, pace: Pace = FAST) -> Iterator[object]:
    """The loan applications and the recommender's page views
    (:mod:`rollguard.demo.recommender`), merged in the order they come."""
    import heapq

    from rollguard.demo.recommender import page_views

    return heapq.merge(traffic(seed, pace), page_views(seed, pace), key=lambda item: item.at)


#: the experiments of experiments.yaml and their shares of the applications: the canary sees
#: half (its candidate gets only 20% of that at first), each shadow experiment a quarter
SHARES = {"loan-shadow-v2": 0.25, "loan-shadow-v3": 0.25, "loan-canary-v2": 0.5}
