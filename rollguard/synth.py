"""Synthetic traffic with known truth, for tests, benchmarks and trying rollguard out.

An :class:`Arm` says how good a model is (its accuracy, overall and per segment), how fast
(latency distribution) and how often it fails. :func:`shadow_events` and :func:`ab_events`
produce the contract's events (requests, predictions, labels with delays, some never
labelled) in event-time order, as a replay file holds them; :func:`records` produces the
joined records the policy reads, skipping the join (fast, for statistical simulations).
Both are deterministic given the seed.

>>> events = list(shadow_events("e", Arm("m:1", 0.8), [Arm("m:2", 0.9)], n=3, seed=1))
>>> sorted({e["topic"] for e in events})
['labels', 'predictions', 'requests']
>>> sum(e["topic"] == "predictions" for e in events)
6
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Iterator

from rollguard.streams.records import OUTCOME, SCORED, ArmView, JoinedRecord

SEGMENTS = {"tier": (("vip", 0.2), ("std", 0.8))}


@dataclass(frozen=True)
class Arm:
    """One model version's behaviour on binary traffic."""

    name: str
    accuracy: float
    segment_accuracy: dict[str, float] = field(default_factory=dict)  # "tier=vip" -> acc
    latency_ms: tuple[float, float] = (10.0, 0.3)   # lognormal: median, sigma
    error_rate: float = 0.0

    def accuracy_in(self, segments: dict[str, str]) -> float:
        for key, value in segments.items():
            acc = self.segment_accuracy.get(f"{key}={value}")
            if acc is not None:
                return acc
        return self.accuracy


def _segments(rng: random.Random) -> dict[str, str]:
    out = {}
    for key, choices in SEGMENTS.items():
        x, acc = rng.random(), 0.0
        for value, p in choices:
            acc += p
            if x < acc:
                out[key] = value
                break
        else:
            out[key] = choices[-1][0]
    return out


def _predict(rng: random.Random, arm: Arm, truth: bool, segments: dict[str, str],
             shared: float) -> tuple[bool | None, float | None, float, str | None]:
    """(prediction, score, latency, error). ``shared`` is one uniform draw per request that
    every arm uses, so arms of similar accuracy agree on most requests (as real models do)."""
    latency = arm.latency_ms[0] * pow(2.718281828459045, rng.gauss(0.0, arm.latency_ms[1]))
    if rng.random() < arm.error_rate:
        return None, None, latency, "TimeoutError: model did not answer"
    right = shared < arm.accuracy_in(segments)
    prediction = truth if right else not truth
    score = min(1.0, max(0.0, (0.75 if prediction else 0.25) + rng.uniform(-0.2, 0.2)))
    return prediction, round(score, 4), round(latency, 3), None


def records(champion: Arm, candidates: list[Arm], n: int, seed: int, *,
            mode: str = "shadow", shares: dict[str, float] | None = None,
            experiment: str = "e") -> Iterator[JoinedRecord]:
    """Joined records (SCORED then OUTCOME per request), in event-time order."""
    rng = random.Random(seed)
    arms = [champion, *candidates]
    weights = [shares.get(a.name, 0.0) for a in arms] if shares else None
    for i in range(n):
        truth = rng.random() < 0.5
        segments = _segments(rng)
        shared = rng.random()
        if mode == "shadow":
            chosen = arms
            served = champion.name
        else:
            served = rng.choices([a.name for a in arms], weights)[0]
            chosen = [a for a in arms if a.name == served]
        views = []
        for arm in chosen:
            pred, score, latency, error = _predict(rng, arm, truth, segments, shared)
            views.append(ArmView(arm.name, arm.name == served, pred, score, latency, error,
                                 float(i)))
        views_t = tuple(views)
        rid = f"r{i}"
        yield JoinedRecord(SCORED, float(i), rid, experiment, None, segments, views_t)
        yield JoinedRecord(OUTCOME, i + 0.5, rid, experiment, None, segments, views_t,
                           truth, i + 0.5)


def shadow_events(experiment: str, champion: Arm, candidates: list[Arm], n: int, seed: int,
                  *, start: float = 1_700_000_000.0, rate: float = 10.0,
                  label_delay: tuple[float, float] = (1.0, 30.0), unlabelled: float = 0.1
                  ) -> Iterator[dict]:
    """Contract events of a shadow experiment, sorted by event time (replay-file order)."""
    yield from _events(experiment, champion, candidates, n, seed, start, rate, label_delay,
                       unlabelled, shares=None)


def ab_events(experiment: str, champion: Arm, candidates: list[Arm], n: int, seed: int,
              shares: dict[str, float], *, start: float = 1_700_000_000.0, rate: float = 10.0,
              label_delay: tuple[float, float] = (1.0, 30.0), unlabelled: float = 0.1
              ) -> Iterator[dict]:
    """Contract events of an ab experiment (one served prediction per request)."""
    yield from _events(experiment, champion, candidates, n, seed, start, rate, label_delay,
                       unlabelled, shares=shares)


def _events(experiment, champion, candidates, n, seed, start, rate, label_delay,
            unlabelled, shares) -> Iterator[dict]:
    rng = random.Random(seed)
    arms = [champion, *candidates]
    events: list[tuple[float, int, dict]] = []
    for i in range(n):
        ts = start + i / rate
        truth = rng.random() < 0.5
        segments = _segments(rng)
        shared = rng.random()
        rid = f"{experiment}-{i}"
        unit = f"u{rng.randrange(max(1, n // 4))}"
        events.append((ts, len(events), {"topic": "requests", "request_id": rid,
                                         "experiment": experiment, "ts": ts, "unit": unit,
                                         "segments": segments}))
        if shares is None:
            chosen, served = arms, champion.name
        else:
            served = rng.choices([a.name for a in arms], [shares[a.name] for a in arms])[0]
            chosen = [a for a in arms if a.name == served]
        for arm in chosen:
            pred, score, latency, error = _predict(rng, arm, truth, segments, shared)
            model, version = arm.name.split(":")
            event = {"topic": "predictions", "request_id": rid, "experiment": experiment,
                     "ts": ts + latency / 1000.0, "model": model, "version": version,
                     "served": arm.name == served, "latency_ms": latency}
            if error is not None:
                event["error"] = error
            else:
                event["prediction"] = int(pred)
                event["score"] = score
            events.append((event["ts"], len(events), event))
        if rng.random() >= unlabelled:
            lt = ts + rng.uniform(*label_delay)
            events.append((lt, len(events), {"topic": "labels", "request_id": rid, "ts": lt,
                                             "label": int(truth)}))
    events.sort(key=lambda e: (e[0], e[1]))
    for _, _, event in events:
        yield event
