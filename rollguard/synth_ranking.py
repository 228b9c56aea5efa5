"""Synthetic rankers, users and clicks with known truth, for tests, benchmarks and the demo.

A :class:`Catalogue` holds items with a popularity and a taste vector; a user has a taste
vector too and an activity (how ready to click they are), and how attractive an item is to
a user (the probability of a click once the user looks at it) is
``sigmoid(popularity + affinity · (taste · item) + activity − offset)``: a small
latent-factor model, as matrix factorisation recommenders assume, with users who differ in
how much they click, as real users do (an A/B test's variance; interleaving compares within
a user's request and does not see it). A :class:`Ranker` of known
quality ranks items by that same score plus Gaussian noise of standard deviation ``noise``
(0: ranks by the truth; more noise: a worse ranker; ``personal=0``: by popularity only, the
same list for everyone). Two rankers with the same settings are equally good by
construction; a ranker with less noise is better.

Clicks follow a click model on the list a user is shown:

- the **cascade model** (Craswell, Zoeter, Taylor & Ramsey 2008, "An experimental comparison
  of click position-bias models", WSDM): the user looks down the list and clicks the first
  item that attracts them (with its attractiveness), then stops;
- the **position-based model** (Richardson, Dominowska & Ragno 2007; Craswell et al. 2008):
  the user looks at position i (from 0) with probability 1 / (i + 1) and clicks an item looked
  at with its attractiveness, independently of the others.

:func:`sessions` draws users and both rankers' lists; :func:`interleave_records` and
:func:`ab_records` turn them into the joined records the policy reads (the clicks on the team
-draft interleaving of the two lists, or on the list of the arm that served), skipping the
join; :func:`interleave_events` writes the contract's events (predictions with ``items``,
labels with ``engaged``) for a replay. Everything is deterministic given the seed.

>>> catalogue = Catalogue(items=200, seed=1)
>>> good, bad = Ranker("recs:2", noise=0.5), Ranker("recs:1", noise=3.0)
>>> [s] = sessions(catalogue, [bad, good], n=1, seed=4, k=5)
>>> sorted(s.lists), len(s.lists["recs:2"])
(['recs:1', 'recs:2'], 5)
>>> mean = lambda arm: sum(s.attraction[i] for i in s.lists[arm]) / 5
>>> mean("recs:2") > mean("recs:1")   # less noise: more attractive items
True
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from rollguard.serving.assignment import assign
from rollguard.serving.interleaving import CANDIDATE, team_draft
from rollguard.streams.records import OUTCOME, SCORED, ArmView, JoinedRecord

CLICK_MODELS = ("cascade", "position")


@dataclass(frozen=True)
class Catalogue:
    """``items`` items with a popularity (N(0, 1)) and a taste vector (``dim`` × N(0, 1/dim)).

    ``affinity`` weighs taste against popularity; ``offset`` lowers every attractiveness (a
    larger offset: fewer clicks); ``activity``: the standard deviation of the users' click
    readiness (on the logit scale). Item ids are ``item-0000``, ``item-0001`` …
    """

    items: int = 500
    dim: int = 8
    seed: int = 0
    affinity: float = 2.0
    offset: float = 6.0
    activity: float = 1.5
    popularity: np.ndarray = field(init=False, repr=False, compare=False)
    vectors: np.ndarray = field(init=False, repr=False, compare=False)
    ids: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.seed, 0])
        object.__setattr__(self, "popularity", rng.standard_normal(self.items))
        object.__setattr__(self, "vectors",
                           rng.standard_normal((self.items, self.dim)) / math.sqrt(self.dim))
        object.__setattr__(self, "ids", tuple(f"item-{i:04d}" for i in range(self.items)))

    def users(self, n: int, seed: int) -> np.ndarray:
        """``n`` users: each a taste vector (``dim`` numbers) and an activity (the last)."""
        rng = np.random.default_rng([self.seed, 1, seed])
        users = rng.standard_normal((n, self.dim + 1))
        users[:, -1] *= self.activity
        return users

    def taste(self, users: np.ndarray) -> np.ndarray:
        """How much each user's taste favours each item (users × items)."""
        return self.affinity * (users[:, :self.dim] @ self.vectors.T)

    def logits(self, users: np.ndarray) -> np.ndarray:
        """The true score of every item for every user (users × items)."""
        return self.popularity + self.taste(users) + users[:, -1:] - self.offset

    def attraction(self, users: np.ndarray) -> np.ndarray:
        """P(click | looked at) of every item for every user: sigmoid of :meth:`logits`."""
        return 1.0 / (1.0 + np.exp(-self.logits(users)))


@dataclass(frozen=True)
class Ranker:
    """A ranker of known quality: the true score (its taste part weighted by ``personal``)
    plus N(0, ``noise``²) noise of its own (``seed``), top ``k`` first."""

    name: str
    noise: float = 1.0
    personal: float = 1.0
    seed: int = 0

    def rank(self, catalogue: Catalogue, users: np.ndarray, k: int, seed: int) -> np.ndarray:
        """Each user's top ``k`` item indices (users × k), best first."""
        scores = catalogue.popularity + self.personal * catalogue.taste(users)
        if self.noise:
            salt = sum(ord(c) * 31 ** i for i, c in enumerate(self.name)) % 2**31
            rng = np.random.default_rng([catalogue.seed, 2, self.seed, salt, seed])
            scores = scores + self.noise * rng.standard_normal(scores.shape)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1)


@dataclass(frozen=True)
class Session:
    """One request: its user, each ranker's list (item ids, best first), and the user's true
    attractiveness of every item in those lists; ``u`` a uniform draw of its own for the
    click model."""

    index: int
    request_id: str
    unit: str
    lists: dict[str, list[str]]
    attraction: dict[str, float]
    u: tuple[float, ...]


def sessions(catalogue: Catalogue, rankers: Sequence[Ranker], n: int, seed: int, k: int = 10,
             *, users: int | None = None, experiment: str = "e", batch: int = 2000
             ) -> Iterator[Session]:
    """``n`` requests from ``users`` distinct users (default: one user per request), each
    ranked by every ranker."""
    rng = random.Random(seed)
    population = catalogue.users(users, seed) if users else None
    for start in range(0, n, batch):
        size = min(batch, n - start)
        if population is None:
            who = np.arange(start, start + size)
            vectors = catalogue.users(size, seed * 1_000_003 + start)
        else:
            who = np.array([rng.randrange(users) for _ in range(size)])
            vectors = population[who]
        tops = {r.name: r.rank(catalogue, vectors, k, seed * 1_000_003 + start)
                for r in rankers}
        attraction = catalogue.attraction(vectors)
        ids = catalogue.ids
        lists = {name: [[ids[i] for i in row] for row in top.tolist()]
                 for name, top in tops.items()}
        values = {name: np.take_along_axis(attraction, top, axis=1).tolist()
                  for name, top in tops.items()}
        draws = np.random.default_rng([seed, 3, start]).random((size, 2 * k)).tolist()
        for row in range(size):
            index = start + row
            ranked = {name: rows[row] for name, rows in lists.items()}
            attractive: dict[str, float] = {}
            for name, rows in values.items():
                attractive.update(zip(ranked[name], rows[row]))
            yield Session(index, f"{experiment}-{index}", f"user-{int(who[row])}", ranked,
                          attractive, tuple(draws[row]))


def clicks(shown: Sequence[str], attraction: dict[str, float], u: Sequence[float],
           model: str = "cascade") -> list[str]:
    """The items of ``shown`` a user clicks under a click model, given uniform draws ``u``
    (one or two per position).

    >>> clicks(["a", "b", "c"], {"a": 0.0, "b": 1.0, "c": 1.0}, [0.5] * 6)
    ['b']
    >>> clicks(["a", "b", "c"], {"a": 0.0, "b": 1.0, "c": 1.0}, [0.4] * 6, "position")
    ['b']
    """
    if model == "cascade":
        for i, item in enumerate(shown):
            if u[i] < attraction[item]:
                return [item]
        return []
    if model == "position":
        return [item for i, item in enumerate(shown)
                if u[2 * i] < 1.0 / (i + 1) and u[2 * i + 1] < attraction[item]]
    raise ValueError(f"unknown click model {model!r}; known: {', '.join(CLICK_MODELS)}")


def interleave_records(champion: Ranker, candidate: Ranker, catalogue: Catalogue, n: int,
                       seed: int, k: int = 10, model: str = "cascade", *,
                       experiment: str = "e") -> Iterator[JoinedRecord]:
    """Joined records of mode interleave: both lists, the clicks on their interleaving."""
    for s in sessions(catalogue, [champion, candidate], n, seed, k, experiment=experiment):
        first, second = s.lists[champion.name], s.lists[candidate.name]
        shown = [item for item, _ in team_draft(first, second, experiment, s.request_id)]
        views = (ArmView(champion.name, True, first, None, 1.0, None, float(s.index)),
                 ArmView(candidate.name, False, second, None, 1.0, None, float(s.index)))
        yield JoinedRecord(SCORED, float(s.index), s.request_id, experiment, s.unit, None,
                           views)
        yield JoinedRecord(OUTCOME, s.index + 0.5, s.request_id, experiment, s.unit, None,
                           views, clicks(shown, s.attraction, s.u, model), s.index + 0.5)


def ab_records(champion: Ranker, candidate: Ranker, catalogue: Catalogue, n: int, seed: int,
               k: int = 10, model: str = "cascade", *, experiment: str = "e",
               share: float = 0.5) -> Iterator[JoinedRecord]:
    """Joined records of mode ab: each request served by one ranker (the assignment rule,
    ``share`` to the candidate), the clicks on its list."""
    traffic = {champion.name: 1.0 - share, candidate.name: share}
    for s in sessions(catalogue, [champion, candidate], n, seed, k, experiment=experiment):
        arm = assign(experiment, s.request_id, champion.name, traffic)
        view = (ArmView(arm, True, s.lists[arm], None, 1.0, None, float(s.index)),)
        yield JoinedRecord(SCORED, float(s.index), s.request_id, experiment, s.unit, None, view)
        yield JoinedRecord(OUTCOME, s.index + 0.5, s.request_id, experiment, s.unit, None,
                           view, clicks(s.lists[arm], s.attraction, s.u, model), s.index + 0.5)


def interleave_events(champion: Ranker, candidate: Ranker, catalogue: Catalogue, n: int,
                      seed: int, k: int = 10, model: str = "cascade", *,
                      experiment: str = "e", start: float = 1_700_000_000.0,
                      rate: float = 20.0, label_delay: float = 2.0) -> Iterator[dict]:
    """Contract events of mode interleave in event-time order (replay-file lines): each
    ranker's prediction with ``items``, and a label with the ``engaged`` items."""
    events = []
    counter = itertools.count()
    for s in sessions(catalogue, [champion, candidate], n, seed, k, experiment=experiment):
        ts = start + s.index / rate
        shown = team_draft(s.lists[champion.name], s.lists[candidate.name], experiment,
                           s.request_id)
        for ranker, served in ((champion, True), (candidate, False)):
            model_name, version = ranker.name.split(":")
            events.append((ts, next(counter), {
                "topic": "predictions", "request_id": s.request_id, "experiment": experiment,
                "ts": ts, "model": model_name, "version": version, "served": served,
                "items": s.lists[ranker.name], "unit": s.unit, "latency_ms": 2.0}))
        engaged = clicks([item for item, _ in shown], s.attraction, s.u, model)
        events.append((ts + label_delay, next(counter), {
            "topic": "labels", "request_id": s.request_id, "ts": ts + label_delay,
            "engaged": engaged}))
    events.sort(key=lambda e: (e[0], e[1]))
    for _, _, event in events:
        yield event


def preference_of(record: JoinedRecord) -> int | None:
    """+1 / −1 / 0 for the candidate (the second arm) on an interleaved outcome, None without
    a click: what the policy feeds its test, recomputed for checks."""
    first, second = record.arms
    shown = team_draft(first.prediction, second.prediction, record.experiment,
                       record.request_id)
    found = set(record.label)
    cand = sum(1 for item, team in shown if item in found and team == CANDIDATE)
    champ = sum(1 for item, team in shown if item in found and team != CANDIDATE)
    if cand == champ == 0:
        return None
    return (cand > champ) - (cand < champ)
