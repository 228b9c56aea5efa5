"""The demo's recommender: a synthetic film catalogue, two rankers and viewers who click.

The founding A/B example: a service recommends the top 10 films to each viewer, and whether
the viewer watches one of them is the label. What a ranker shows changes what the viewer can
choose, so a candidate scoring in the shadow can never be judged by the viewers; the two
rankers are compared by **interleaving** instead: both rank every page view, the viewer sees
their team-draft merge, and each film watched credits the ranker that placed it.

- ``recs:1``, the champion in production: the most popular films, the same list for everyone;
- ``recs:2``, the candidate: a taste model of each viewer (a latent-factor model, as
  matrix-factorisation recommenders learn), with some error of its own.

The catalogue and the viewers come from :mod:`rollguard.synth_ranking` (known truth: how
attractive each film is to each viewer); a viewer looks down the shown list and watches the
first film that attracts them, or none (the cascade click model). Nothing here says which
ranker is better: the worker finds out from what viewers watch.

>>> views = list(itertools.islice(page_views(seed=7), 3))
>>> views[0].request_id, views[0].experiment
('view-7-000000', 'recs-interleave-v2')
>>> rankers = demo_rankers()
>>> len(rankers["recs:2"].rank(views[0].viewer))
10
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from rollguard.demo.data import FAST, Pace
from rollguard.synth_ranking import Catalogue, Ranker, clicks

#: the recommender experiment of experiments.yaml
RECOMMENDER = "recs-interleave-v2"
CHAMPION, CANDIDATE = "recs:1", "recs:2"
#: films in the catalogue, viewers, films per list
FILMS = 400
VIEWERS = 5000
K = 10
#: page views per loan application (the pace's rate): a quarter as many
RATE_SHARE = 0.25
#: the shared seed of the catalogue and the viewers: the same for every demo seed, so the
#: rankers' quality (the truth) never changes; the traffic varies with the demo's seed
WORLD_SEED = 11


@dataclass(frozen=True)
class PageView:
    """One viewer opening the recommendations page, and when the session ends (its label)."""

    index: int
    request_id: str
    experiment: str
    unit: str                   # the viewer
    viewer: int
    at: float                   # seconds after the traffic starts
    label_delay: float | None   # seconds after the recommendations; None: never known
    draws: tuple[float, ...]    # the viewer's uniform draws for the click model


@dataclass(frozen=True)
class DemoRanker:
    """One ranker version: ``rank(viewer)`` → the top ``K`` film ids, best first."""

    arm: str
    title: str
    ranker: Ranker
    catalogue: Catalogue
    viewers: np.ndarray

    def rank(self, viewer: int) -> list[str]:
        top = self.ranker.rank(self.catalogue, self.viewers[viewer:viewer + 1], K, seed=viewer)
        return [self.catalogue.ids[i] for i in top[0].tolist()]


def world() -> tuple[Catalogue, np.ndarray]:
    """The catalogue and the viewers' tastes."""
    catalogue = Catalogue(items=FILMS, seed=WORLD_SEED)
    return catalogue, catalogue.users(VIEWERS, WORLD_SEED)


def demo_rankers() -> dict[str, DemoRanker]:
    catalogue, viewers = world()
    return {
        CHAMPION: DemoRanker(CHAMPION, "most popular films (the same for everyone)",
                             Ranker(CHAMPION, noise=0.0, personal=0.0), catalogue, viewers),
        CANDIDATE: DemoRanker(CANDIDATE, "taste model of each viewer (latent factors)",
                              Ranker(CANDIDATE, noise=1.0), catalogue, viewers),
    }


class Viewers:
    """What viewers watch: the cascade click model on the list they were shown."""

    def __init__(self) -> None:
        self.catalogue, self.tastes = world()
        self.index = {film: i for i, film in enumerate(self.catalogue.ids)}

    def watched(self, view: PageView, shown: list[str]) -> list[str]:
        index = self.index
        attraction = self.catalogue.attraction(self.tastes[view.viewer:view.viewer + 1])[0]
        return clicks(shown, {film: float(attraction[index[film]]) for film in shown},
                      view.draws)


def page_views(seed: int, pace: Pace = FAST) -> Iterator[PageView]:
    """The endless stream of page views: view ``i`` depends only on ``seed`` and ``pace``."""
    plan = random.Random(f"rollguard-demo-recs/{seed}")
    rate = pace.rate * RATE_SHARE
    at = 0.0
    for i in itertools.count():
        at += plan.expovariate(rate)
        viewer = plan.randrange(VIEWERS)
        never = plan.random() < pace.unlabelled
        delay = min(pace.label_delay_max, -pace.label_delay_mean * math.log(1.0 - plan.random()))
        yield PageView(i, f"view-{seed}-{i:06d}", RECOMMENDER, f"viewer-{viewer:05d}", viewer,
                       at, None if never else round(delay, 3),
                       tuple(plan.random() for _ in range(2 * K)))
