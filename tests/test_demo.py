"""``rollguard demo``: deterministic traffic, models that differ for real reasons, and the fast
mode end to end: the real worker on the real broker promotes the better candidate, rolls back
the skewed one, walks the canary up its steps and promotes the better recommender by
interleaving."""

from __future__ import annotations

import io
import itertools
import json
import os
import time

import pytest
from rich.console import Console

from rollguard.demo.data import FAST, NORMAL, SHARES, holdout_rows, traffic, training_rows
from rollguard.demo.models import BETTER, CHAMPION, SKEWED, evaluate_offline, train_models
from rollguard.demo.recommender import RECOMMENDER, page_views
from rollguard.demo.run import experiments_text, run_demo
from rollguard.schemas import parse_experiments
from rollguard.streams.topics import TopicNames
from tests.kafka_helpers import read_topic


def _rows(seed: int, n: int, pace=FAST) -> list:
    return list(itertools.islice(traffic(seed, pace), n))


def test_traffic_is_a_pure_function_of_the_seed():
    first = _rows(7, 4000)
    assert first == _rows(7, 4000)
    assert first != _rows(8, 4000)
    # the pace changes when things happen, never what happens
    same = lambda rows: [(a.request_id, a.unit, a.experiment, a.features, a.label,  # noqa: E731
                          a.label_delay is None) for a in rows]
    assert same(first) == same(_rows(7, 4000, NORMAL))

    n = len(first)
    for name, share in SHARES.items():
        assert abs(sum(a.experiment == name for a in first) / n - share) < 0.03
    never = sum(a.label_delay is None for a in first) / n
    assert 0.07 < never < 0.13, "about one application in ten is never labelled"
    delays = [a.label_delay for a in first if a.label_delay is not None]
    assert max(delays) <= FAST.label_delay_max
    assert 0.8 * FAST.label_delay_mean < sum(delays) / len(delays) < 1.2 * FAST.label_delay_mean
    times = [a.at for a in first]
    assert times == sorted(times)
    assert abs(n / times[-1] - FAST.rate) / FAST.rate < 0.1
    assert len({a.unit for a in first}) < n, "customers apply more than once (sticky routing)"
    assert len({a.request_id for a in first}) == n
    assert 0.3 < sum(a.label for a in first) / n < 0.7


def test_the_candidates_differ_for_real_reasons():
    models = train_models(7)
    again = train_models(7)
    rows = holdout_rows(7)
    assert [models[a].predict(x) for a in models for x, _ in rows[:200]] == \
        [again[a].predict(x) for a in again for x, _ in rows[:200]], "training is deterministic"

    def served_accuracy(arm: str) -> float:  # every model gets the same raw request
        return sum(models[arm].predict(x)[0] == y for x, y in rows) / len(rows)

    champion, better, skewed = (served_accuracy(a) for a in (CHAMPION, BETTER, SKEWED))
    assert better > champion + 0.03, "a linear model fits the disposable-income rule better"
    assert skewed < champion - 0.08, "commission in dollars where training had k$ hurts"
    evaluate_offline(models, rows)
    # measured on data prepared like its training data, the skewed model looked fine
    assert abs(models[SKEWED].offline_accuracy - models[BETTER].offline_accuracy) < 0.01
    assert models[SKEWED].offline_accuracy > champion + 0.03
    assert len(training_rows(7)) == 2000


def test_the_experiment_file_is_package_data():
    experiments = parse_experiments(experiments_text(), "experiments.yaml")
    assert [e.name for e in experiments] == [*SHARES, RECOMMENDER]
    assert [e.mode for e in experiments] == ["shadow", "shadow", "canary", "interleave"]
    assert {e.champion for e in experiments} == {CHAMPION, "recs:1"}


def test_page_views_are_a_pure_function_of_the_seed_and_the_candidate_is_preferred():
    from rollguard.demo.recommender import CANDIDATE, Viewers, demo_rankers
    from rollguard.serving.interleaving import preference, team_draft

    views = list(itertools.islice(page_views(7), 600))
    assert views == list(itertools.islice(page_views(7), 600))
    assert views != list(itertools.islice(page_views(8), 600))
    assert abs(len(views) / views[-1].at - FAST.rate / 4) / (FAST.rate / 4) < 0.15
    rankers, viewers = demo_rankers(), Viewers()
    outcomes = []
    for view in views:
        lists = [rankers[arm].rank(view.viewer) for arm in ("recs:1", CANDIDATE)]
        shown = team_draft(*lists, RECOMMENDER, view.request_id)
        outcomes.append(preference(shown, viewers.watched(view, [f for f, _ in shown])))
    compared = [o for o in outcomes if o is not None]
    # the taste model's films are watched more often than the popular ones, by far
    assert len(compared) > 300 and sum(compared) / len(compared) > 0.2


@pytest.mark.kafka
@pytest.mark.slow
def test_fast_demo_reaches_its_decisions_on_the_real_broker(kafka_bootstrap, tmp_path):
    out = io.StringIO()
    began = time.monotonic()
    result = run_demo(fast=True, seed=7, bootstrap_servers=kafka_bootstrap, work_dir=tmp_path,
                      plain=True, console=Console(file=out, width=120, color_system=None))
    seconds = time.monotonic() - began
    text = out.getvalue()
    assert result.exit_code == 0, text
    assert seconds < 120, f"--fast took {seconds:.0f} s"

    # what the worker published on the control topic, read back from Kafka
    control = [json.loads(m.value())
               for m in read_topic(kafka_bootstrap, TopicNames(result.topic_prefix).control)]
    actions = {name: [e["action"] for e in sorted(control, key=lambda e: e["seq"])
                      if e["experiment"] == name] for name in SHARES}
    # the promoted versions bake, the former champion still in play, then complete
    assert actions["loan-shadow-v2"] == ["start", "promote", "complete"]
    assert actions["loan-shadow-v3"] == ["start", "rollback"]
    assert actions["loan-canary-v2"] == ["start", "set_traffic", "promote", "complete"]
    recs = [e for e in sorted(control, key=lambda e: e["seq"]) if e["experiment"] == RECOMMENDER]
    assert [e["action"] for e in recs] == ["start", "promote"]
    assert recs[1]["champion"] == "recs:2" and recs[1]["mode"] == "interleave"
    tally = recs[1]["evidence"]["interleaving"]["recs:2"]
    assert tally["wins"] > tally["losses"] and "interleaved lists" in recs[1]["reason"]
    assert result.decisions["loan-shadow-v2"]["action"] == "complete"
    assert result.decisions["loan-shadow-v2"]["champion"] == BETTER
    assert "no breach" in result.decisions["loan-shadow-v2"]["reason"]

    promoted = next(e for e in result.history["loan-shadow-v2"] if e["action"] == "promote")
    assert promoted["champion"] == BETTER and promoted["shadow"] == [CHAMPION]
    delta = promoted["evidence"]["candidates"][BETTER]["delta"]
    assert delta["lower"] > -0.01 and delta["paired"] is True
    assert "accuracy" in promoted["reason"] and "every guardrail passes" in promoted["reason"]

    rolled_back = result.decisions["loan-shadow-v3"]
    assert rolled_back["action"] == "rollback" and rolled_back["champion"] == CHAMPION
    assert rolled_back["evidence"]["candidates"][SKEWED]["delta"]["upper"] < -0.01
    assert "worse than the champion" in rolled_back["reason"]

    canary = result.history["loan-canary-v2"]
    shares = [e["traffic"].get(BETTER, 0.0) for e in canary]
    # the share grows as the worker's analyses pass; after the promotion the former
    # champion keeps its 10 % holdback until the bake window completes
    assert shares == [0.2, 0.5, 0.9, 1.0]

    assert result.champion_alias == (CHAMPION, BETTER)
    registry = json.loads((tmp_path / "aliases.json").read_text())
    assert registry["champion"] == BETTER and registry["recs-champion"] == "recs:2"

    # it stopped what it started; the worker stopped cleanly
    assert result.worker_exit_code == 0
    with pytest.raises(ProcessLookupError):
        os.kill(result.worker_pid, 0)
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "Traceback" not in log

    # what a user sees: progress, each decision with reason and evidence, where to look next
    assert "applications answered" in text and "labels reported" in text
    assert "Decisions" in text and "evidence: loan:2 vs loan:1" in text
    assert "candidate traffic: 20% → 50% → 90% → 100%" in text
    assert "interleaving: recs:2 won" in text
    assert "alias champion = loan:1 → loan:2" in text
    assert f"rollguard status -b {kafka_bootstrap} --topic-prefix {result.topic_prefix}" in text
    assert "Traceback" not in text
