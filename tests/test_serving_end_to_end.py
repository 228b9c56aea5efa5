"""A small model service with two real models uses Router and Reporter against a running
worker: a harmful canary is rolled back and the service follows at once; a good canary rises
through its steps, is promoted and the registry alias flips."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from river import compose, linear_model, preprocessing, tree
from river.datasets import synth

from rollguard.serving import JsonRegistry, RegistryUpdater, Reporter, Router
from rollguard.streams.topics import TopicNames
from tests.kafka_helpers import WorkerProcess, produce_events, read_topic, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXPERIMENTS = """
- name: loan-harmful
  task: binary
  mode: canary
  champion: loan:logistic
  candidates: [loan:stale]
  primary: {metric: accuracy, margin: 0.0}
  min_samples: 100
  canary: {steps: [0.2, 0.5], step_samples: 100}
  allowed_lateness: 1s
  label_ttl: 1h
- name: loan-good
  task: binary
  mode: canary
  champion: loan:logistic
  candidates: [loan:tree]
  primary: {metric: accuracy, margin: 0.0}
  min_samples: 100
  canary: {steps: [0.2, 0.5], step_samples: 100}
  allowed_lateness: 1s
  label_ttl: 1h
"""
#: a decision must reach the routing of the service within this long (measured: tens of ms)
APPLY_BOUND_S = 5.0


def rows(function: int, seed: int, n: int):
    return list(synth.Agrawal(classification_function=function, seed=seed).take(n))


@pytest.fixture(scope="module")
def models():
    """Real models on River's Agrawal loan-approval generator: a logistic regression (the
    champion, ~0.68 accuracy), a Hoeffding tree (better) and a tree trained on an older
    concept (stale training data: worse than the champion)."""
    train = rows(0, 1, 2000)
    logistic = compose.Pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression())
    good = tree.HoeffdingTreeClassifier(grace_period=50)
    stale = tree.HoeffdingTreeClassifier(grace_period=50)
    for x, y in train:
        logistic.learn_one(x, y)
        good.learn_one(x, y)
    for x, y in rows(2, 3, 2000):
        stale.learn_one(x, y)
    return {"loan:logistic": logistic, "loan:tree": good, "loan:stale": stale}


class Service:
    """The model service: routes each request, answers with the served model, reports."""

    def __init__(self, router: Router, reporter: Reporter, models: dict,
                 experiments: tuple[str, ...] = ("loan-harmful", "loan-good")) -> None:
        self.router, self.reporter, self.models = router, reporter, models
        self.experiments = experiments
        self.stop = threading.Event()
        self.served: dict[str, list[tuple[float, str]]] = {}

    def handle(self, experiment: str, i: int, x: dict, y: int) -> None:
        unit = f"customer-{i}"
        request_id = f"{experiment}-{i}"
        route = self.router.route(experiment, unit)
        self.served.setdefault(experiment, []).append((time.time(), route.serve))
        self.reporter.report_request(experiment, request_id, unit=unit, features=x)
        with self.reporter.timed(experiment, request_id, route.serve, served=True, unit=unit) as t:
            proba = self.models[route.serve].predict_proba_one(x)
            t.prediction, t.score = int(proba.get(1, 0.0) >= 0.5), float(proba.get(1, 0.0))
        self.reporter.report_label(request_id, label=y)  # the business learns the truth

    def run(self, traffic: list, rate: float = 400.0) -> None:
        i = 0
        while not self.stop.is_set():
            x, y = traffic[i % len(traffic)]
            for experiment in self.experiments:
                self.handle(experiment, i, x, y)
            i += 1
            time.sleep(1.0 / rate)


def test_canary_rollback_reaches_the_service_and_promotion_flips_the_alias(
        kafka_bootstrap, topic_prefix, tmp_path, models):
    names = TopicNames(topic_prefix)
    produce_events(kafka_bootstrap, names, [], partitions=3)
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(EXPERIMENTS)
    app_id = f"app-{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(kafka_bootstrap, experiments, topic_prefix, app_id, tmp_path / "data",
                           tmp_path / "worker.log", "--instance-id", app_id)
    registry = JsonRegistry(tmp_path / "aliases.json")
    traffic = rows(0, 4, 5000)
    champions = {"loan-harmful": "loan:logistic", "loan-good": "loan:logistic"}
    with worker, Router(kafka_bootstrap, experiments=champions, topic_prefix=topic_prefix) as router, \
            Reporter(kafka_bootstrap, topic_prefix=topic_prefix) as reporter, \
            RegistryUpdater(router, registry, alias="{experiment}") as updater:
        applied: dict[tuple[str, int], float] = {}
        router.on_change(lambda state: applied.setdefault((state.experiment, state.seq),
                                                          time.time()))
        service = Service(router, reporter, models)
        thread = threading.Thread(target=service.run, args=(traffic,), daemon=True)
        thread.start()
        try:
            final = lambda name: (router.state(name) is not None  # noqa: E731
                                  and router.state(name).action in ("promote", "rollback", "hold"))
            wait_for(lambda: final("loan-harmful") and final("loan-good"), timeout=150)
            time.sleep(2.0)  # requests after the decisions
        finally:
            service.stop.set()
            thread.join(10)
        updater.wait_idle(10)
        assert reporter.failed == 0 and reporter.dropped == 0

    control = {}
    for msg in read_topic(kafka_bootstrap, names.control):
        event = json.loads(msg.value())
        control.setdefault(event["experiment"], []).append((msg.timestamp()[1] / 1000.0, event))

    harmful = [e for _, e in control["loan-harmful"]]
    assert harmful[0]["action"] == "start" and harmful[0]["traffic"]["loan:stale"] == 0.2
    assert harmful[-1]["action"] == "rollback" and "accuracy" in harmful[-1]["reason"]
    assert harmful[-1]["traffic"] == {"loan:logistic": 1.0}
    published = control["loan-harmful"][-1][0]
    took = applied[("loan-harmful", harmful[-1]["seq"])] - published
    print(f"rollback applied by the service's router {took * 1000:.0f} ms after it was published")
    assert took < APPLY_BOUND_S
    after = [arm for at, arm in service.served["loan-harmful"]
             if at > applied[("loan-harmful", harmful[-1]["seq"])]]
    assert len(after) > 100 and set(after) == {"loan:logistic"}, \
        "once the rollback is applied, every request goes to the champion"

    good = [e for _, e in control["loan-good"]]
    actions = [e["action"] for e in good]
    assert actions == ["start", "set_traffic", "promote"], actions
    assert good[1]["traffic"]["loan:tree"] == 0.5, "the canary's share rose to the second step"
    assert good[-1]["champion"] == "loan:tree"
    assert registry.get("loan-good") == "loan:tree", "the promotion moved the registry alias"
    assert registry.get("loan-harmful") is None, "a rollback leaves the alias alone"


AB_AND_BANDIT = """
- name: loan-ab
  task: binary
  mode: ab
  champion: loan:logistic
  candidates: [loan:tree]
  traffic: {loan:logistic: 0.5, loan:tree: 0.5}
  primary: {metric: accuracy, margin: 0.0}
  min_samples: 150
  allowed_lateness: 1s
  label_ttl: 1h
- name: loan-bandit
  task: binary
  mode: bandit
  champion: loan:logistic
  candidates: [loan:tree, loan:stale]
  primary: {metric: accuracy, margin: 0.0}
  min_samples: 60
  bandit: {min_share: 0.1, update_every: 100}
  allowed_lateness: 1s
  label_ttl: 1h
"""


def test_ab_split_and_bandit_allocation_reach_the_service(kafka_bootstrap, topic_prefix,
                                                          tmp_path, models):
    names = TopicNames(topic_prefix)
    produce_events(kafka_bootstrap, names, [], partitions=3)
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(AB_AND_BANDIT)
    app_id = f"app-{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(kafka_bootstrap, experiments, topic_prefix, app_id, tmp_path / "data",
                           tmp_path / "worker.log", "--instance-id", app_id)
    champions = {"loan-ab": "loan:logistic", "loan-bandit": "loan:logistic"}
    with worker, Router(kafka_bootstrap, experiments=champions, topic_prefix=topic_prefix) as router, \
            Reporter(kafka_bootstrap, topic_prefix=topic_prefix) as reporter:
        applied: dict[tuple[str, int], float] = {}
        router.on_change(lambda state: applied.setdefault((state.experiment, state.seq),
                                                          time.time()))
        service = Service(router, reporter, models, experiments=("loan-ab", "loan-bandit"))
        thread = threading.Thread(target=service.run, args=(rows(0, 5, 5000),), daemon=True)
        thread.start()
        try:
            final = lambda name: (router.state(name) is not None  # noqa: E731
                                  and router.state(name).action in ("promote", "rollback", "hold"))
            wait_for(lambda: final("loan-ab") and final("loan-bandit"), timeout=180)
        finally:
            service.stop.set()
            thread.join(10)

    control: dict[str, list[dict]] = {}
    for msg in read_topic(kafka_bootstrap, names.control):
        event = json.loads(msg.value())
        control.setdefault(event["experiment"], []).append(event)

    ab = control["loan-ab"]
    assert [e["action"] for e in ab] == ["start", "promote"] and ab[-1]["champion"] == "loan:tree"
    split = [arm for at, arm in service.served["loan-ab"]
             if applied[("loan-ab", 1)] < at < applied[("loan-ab", 2)]]
    share = split.count("loan:tree") / len(split)
    assert len(split) > 200 and abs(share - 0.5) < 4 * (0.25 / len(split)) ** 0.5 + 0.05, \
        f"between start and promote the tree served {share:.2f} of {len(split)} requests " \
        "(configured 0.5; units repeat, so the tolerance is 4 binomial sd + 0.05)"

    bandit = control["loan-bandit"]
    moves = [e for e in bandit if e["action"] == "set_traffic"]
    assert moves, "Thompson sampling moved traffic"
    assert all(min(e["traffic"].values()) >= 0.1 - 1e-6 for e in moves), "min_share kept"
    assert moves[-1]["traffic"]["loan:tree"] > 0.5, "traffic moved to the best arm"
    assert bandit[-1]["action"] == "promote" and bandit[-1]["champion"] == "loan:tree"
    posteriors = bandit[-1]["evidence"]["bandit"]["posteriors"]
    assert set(posteriors) == {"loan:logistic", "loan:tree", "loan:stale"}
    served = [arm for at, arm in service.served["loan-bandit"]]
    assert served.count("loan:tree") > served.count("loan:stale"), \
        "the service followed the allocation"
