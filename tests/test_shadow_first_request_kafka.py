"""A shadow experiment scores its candidates from the very first request when the service's
Router is given the experiment file; given only champions, the first requests (before the
worker's ``start`` reaches the Router) cannot join, and the worker counts every one of them."""

from __future__ import annotations

import random
import time
import uuid

import pytest

from rollguard.kafka.admin import create_contract_topics
from rollguard.serving import Reporter, Route, Router
from rollguard.streams.topics import TopicNames
from tests.kafka_helpers import WorkerProcess, latest_json, wait_for
from tests.test_broker_failures_kafka import wait_working

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXPERIMENTS = """
- name: given-file
  task: binary
  mode: shadow
  champion: churn:6
  candidates: [churn:7]
  primary: {metric: accuracy, margin: 0.01}
  min_samples: 100000
  allowed_lateness: 1s
- name: given-champions
  task: binary
  mode: shadow
  champion: churn:6
  candidates: [churn:7]
  primary: {metric: accuracy, margin: 0.01}
  min_samples: 100000
  allowed_lateness: 1s
"""


def serve(router: Router, reporter: Reporter, experiment: str, n: int, rng: random.Random,
          every: float = 0.01) -> list[Route]:
    """The README's service loop: every arm of the route scores the request; a label later."""
    routes = []
    for i in range(n):
        request_id = f"{experiment}-{i}"
        route = router.route(experiment, unit=f"user-{i}")
        routes.append(route)
        for arm in route.arms:
            reporter.report_prediction(experiment, request_id, arm, served=arm == route.serve,
                                       prediction=rng.randint(0, 1), unit=f"user-{i}")
        reporter.report_label(request_id, label=rng.randint(0, 1))
        time.sleep(every)
    return routes


def test_shadow_candidates_score_from_the_first_request_and_unpaired_ones_are_counted(
        kafka_bootstrap, topic_prefix, tmp_path):
    names = TopicNames(topic_prefix)
    path = tmp_path / "experiments.yaml"
    path.write_text(EXPERIMENTS)
    create_contract_topics(kafka_bootstrap, names, partitions=3)
    app_id, data_dir = f"app-{uuid.uuid4().hex[:6]}", tmp_path / "data"
    rng = random.Random(5)
    with WorkerProcess(kafka_bootstrap, path, names.prefix, app_id, data_dir,
                       tmp_path / "worker.log"):
        wait_working(data_dir, app_id)
        with Router(kafka_bootstrap, experiments=path, topic_prefix=names.prefix) as by_file, \
                Router(kafka_bootstrap, experiments={"given-champions": "churn:6"},
                       topic_prefix=names.prefix) as by_champions, \
                Reporter(kafka_bootstrap, topic_prefix=names.prefix) as reporter:
            assert by_file.wait_ready(15) and by_champions.wait_ready(15)
            assert by_file.state("given-file") is None  # no word from the worker yet
            file_routes = serve(by_file, reporter, "given-file", 300, rng)
            champion_routes = serve(by_champions, reporter, "given-champions", 600, rng)
            reporter.flush()
        assert set(file_routes) == {Route("churn:6", ("churn:7",))}  # from the first request
        unscored = sum(route.shadow == () for route in champion_routes)
        assert 0 < unscored < 600, "the first requests, until the worker's start arrived"

        def counters(name: str) -> dict:
            return latest_json(kafka_bootstrap, names.stats).get(name, {}).get("counters") or {}

        def settled() -> bool:
            stats = latest_json(kafka_bootstrap, names.stats)
            # every request joined: scored and labelled, two records each
            return stats.get("given-file", {}).get("statistics", {}).get("records") == 600 \
                and counters("given-champions").get("predictions_without_pair") == unscored
        wait_for(settled, timeout=60)
    assert "predictions_without_pair" not in counters("given-file")
    assert "paired_late" not in counters("given-champions")
