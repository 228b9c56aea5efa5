"""Router: follows the control topic of a REAL broker, routes by the rule, fails safe."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Producer

from rollguard.kafka.admin import create_contract_topics
from rollguard.kafka.clients import client_config
from rollguard.serving import Route, Router, UnknownExperiment, assign
from rollguard.streams.topics import TopicNames

EXPERIMENT = "churn-v7"
CHAMPION, CANDIDATE = "churn:6", "churn:7"
UNITS = [f"user-{i}" for i in range(2000)]


def control(seq: int, action: str = "set_traffic", mode: str = "canary", champion: str = CHAMPION,
            traffic: dict | None = None, shadow: list | None = None,
            experiment: str = EXPERIMENT) -> bytes:
    """A control event as rollguard writes it (EVENTS.md)."""
    return json.dumps({
        "experiment": experiment, "seq": seq, "ts": 1_700_000_000.0 + seq, "action": action,
        "mode": mode, "champion": champion, "traffic": traffic or {champion: 1.0},
        "shadow": shadow or [], "reason": f"test event {seq}.", "evidence": {"n": seq},
    }).encode()


def canary(seq: int, share: float, action: str = "set_traffic") -> bytes:
    return control(seq, action, traffic={CHAMPION: 1 - share, CANDIDATE: share})


class ControlProducer:
    """Produces control events in transactions, as rollguard's worker does."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = Producer(client_config(
            bootstrap, **{"linger.ms": 0, "transactional.id": f"test-control-{uuid.uuid4().hex}"}))
        self.producer.init_transactions(30)

    def send(self, topic: str, value: bytes | None, key: str = EXPERIMENT,
             commit: bool = True) -> None:
        self.producer.begin_transaction()
        self.producer.produce(topic, value, key.encode())
        if commit:
            self.producer.commit_transaction(30)
        else:
            self.producer.abort_transaction(30)


@pytest.fixture(scope="module")
def control_producer(kafka_bootstrap):
    return ControlProducer(kafka_bootstrap)


@pytest.fixture
def topics(kafka_bootstrap, topic_prefix) -> TopicNames:
    names = TopicNames(topic_prefix)
    create_contract_topics(kafka_bootstrap, names, partitions=2)
    return names


def wait_until(predicate, timeout: float = 10.0) -> float:
    """Seconds until ``predicate()`` held; fails the test after ``timeout``."""
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.001)
    return time.perf_counter() - start


def router_messages(caplog) -> list[str]:
    """What the router itself logged (pytest also captures librdkafka's silenced logger)."""
    return [r.getMessage() for r in caplog.records if r.name == "rollguard.serving.router"]


def seq_of(router: Router) -> int:
    state = router.state(EXPERIMENT)
    return state.seq if state else 0


# -- without a broker ----------------------------------------------------------------------

def test_before_any_state_the_given_champion_serves():
    @dataclass
    class ExperimentFile:  # what a parsed experiment file offers
        name: str
        champion: str

    for experiments in ({EXPERIMENT: CHAMPION}, [ExperimentFile(EXPERIMENT, CHAMPION)]):
        router = Router("127.0.0.1:1", experiments=experiments)
        assert router.route(EXPERIMENT, "user-1") == Route(CHAMPION, ())
        assert router.route(EXPERIMENT, request_id="req-1").serve == CHAMPION


SHADOW_AND_AB = """
- name: churn-shadow
  task: binary
  mode: shadow
  champion: churn:6
  candidates: [churn:7, churn:8]
  primary: {metric: accuracy, margin: 0.01}
- name: churn-ab
  task: binary
  mode: ab
  champion: churn:6
  candidates: [churn:7]
  primary: {metric: accuracy, margin: 0.01}
"""


def test_given_the_experiment_file_shadow_candidates_score_from_the_first_request(tmp_path):
    """A shadow candidate serves nobody: it is safe to score before the worker's ``start``
    (without it the first requests have no candidate prediction and never join). Traffic to
    a candidate waits for the worker."""
    from rollguard.schemas import load_experiments

    path = tmp_path / "experiments.yaml"
    path.write_text(SHADOW_AND_AB)
    for experiments in (path, str(path), load_experiments(path)):
        router = Router("127.0.0.1:1", experiments=experiments)
        assert router.route("churn-shadow", "user-1") == Route(CHAMPION, ("churn:7", "churn:8"))
        assert {router.route("churn-ab", u) for u in UNITS} == {Route(CHAMPION)}
    # a mapping names champions only: no candidate is known before the worker's start
    assert Router("127.0.0.1:1", experiments={"churn-shadow": CHAMPION}).route(
        "churn-shadow", "user-1") == Route(CHAMPION)


def test_a_promotion_that_bakes_keeps_the_former_champion_in_play():
    """``promote`` routes by its own traffic and shadow: the new champion serves, the former
    keeps its holdback (or scores in shadow); ``complete`` and ``rollback`` end it."""
    from rollguard.schemas.events import decode_control
    from rollguard.serving.router import ExperimentState, _Table

    def table(seq, action, mode, champion, traffic, shadow=()):
        state = ExperimentState.from_event(decode_control(control(
            seq, action, mode, champion, traffic=traffic, shadow=list(shadow))))
        return state, _Table.of(state)

    state, baking = table(5, "promote", "ab", CANDIDATE, {CANDIDATE: 0.95, CHAMPION: 0.05})
    assert not state.final
    assert {r.serve for r in baking.routes} == {CANDIDATE, CHAMPION}
    state, shadowed = table(5, "promote", "shadow", CANDIDATE, {CANDIDATE: 1.0}, [CHAMPION])
    assert not state.final and shadowed.routes == (Route(CANDIDATE, (CHAMPION,)),)
    state, done = table(6, "complete", "ab", CANDIDATE, {CANDIDATE: 1.0})
    assert state.final and done.routes == (Route(CANDIDATE),)
    state, plain = table(5, "promote", "ab", CANDIDATE, {CANDIDATE: 1.0})  # no bake window
    assert state.final and plain.routes == (Route(CANDIDATE),)


def test_pause_and_resume_route_as_before():
    """A person's ``pause`` and ``resume`` carry the traffic unchanged: a router that knows
    nothing of them keeps routing the same way, and they end nothing."""
    from rollguard.schemas.events import decode_control
    from rollguard.serving.router import ExperimentState, _Table

    shares = {CHAMPION: 0.8, CANDIDATE: 0.2}
    before = _Table.of(ExperimentState.from_event(decode_control(control(
        3, "set_traffic", "canary", CHAMPION, traffic=shares))))
    for seq, action in ((4, "pause"), (5, "resume")):
        state = ExperimentState.from_event(decode_control(control(
            seq, action, "canary", CHAMPION, traffic=shares)))
        assert not state.final and _Table.of(state) == before


def test_an_experiment_without_state_or_champion_is_a_clear_error():
    router = Router("127.0.0.1:1", experiments={EXPERIMENT: CHAMPION})
    with pytest.raises(UnknownExperiment, match="experiments="):
        router.route("fraud-abc", "user-1")
    with pytest.raises(ValueError, match="'model:version'"):
        Router("127.0.0.1:1", experiments={EXPERIMENT: "churn6"})
    with pytest.raises(TypeError, match=r"\.name and \.champion"):
        Router("127.0.0.1:1", experiments=["churn-v7"])


# -- with a real broker ----------------------------------------------------------------------

@pytest.mark.kafka
def test_router_applies_events_in_order_ignores_stale_seq_and_rolls_back_at_once(
        kafka_bootstrap, topics, control_producer):
    seen: list[int] = []
    with Router(kafka_bootstrap, {EXPERIMENT: CHAMPION}, topics.prefix) as router:
        router.on_change(lambda state: seen.append(state.seq))
        assert router.wait_ready(15), "an empty control topic is caught up at once"
        assert router.route(EXPERIMENT, "user-1").serve == CHAMPION  # fail-safe: no state yet

        control_producer.send(topics.control, canary(1, 0.05, "start"))
        wait_until(lambda: seq_of(router) == 1)
        on_candidate = {u for u in UNITS if router.route(EXPERIMENT, u).serve == CANDIDATE}
        shares = {CHAMPION: 0.95, CANDIDATE: 0.05}
        expected = {u for u in UNITS if assign(EXPERIMENT, u, CHAMPION, shares) == CANDIDATE}
        assert on_candidate == expected and 40 < len(on_candidate) < 170

        control_producer.send(topics.control, canary(2, 0.25))
        wait_until(lambda: seq_of(router) == 2)
        grown = {u for u in UNITS if router.route(EXPERIMENT, u).serve == CANDIDATE}
        assert on_candidate < grown, "a unit on the candidate stays there as its share grows"

        # a repeated and an older seq are ignored; seq 3 shows both were read
        control_producer.send(topics.control, canary(2, 0.9))
        control_producer.send(topics.control, canary(1, 0.9))
        control_producer.send(topics.control, canary(3, 0.5))
        wait_until(lambda: seq_of(router) == 3)
        assert router.stale == 2 and seen == [1, 2, 3]
        assert router.state(EXPERIMENT).traffic[CANDIDATE] == 0.5

        produced = time.perf_counter()
        control_producer.send(topics.control, control(4, "rollback"))
        delay = wait_until(lambda: seq_of(router) == 4)
        applied = time.perf_counter() - produced
        print(f"\nrollback: produced+committed to applied routing in {applied * 1000:.1f} ms "
              f"(after commit: {delay * 1000:.1f} ms)")
        assert applied < 10.0  # sanity only; bench/bench_router.py measures it
        assert all(router.route(EXPERIMENT, u) == Route(CHAMPION) for u in UNITS)
        assert router.state(EXPERIMENT).final and router.invalid == 0


@pytest.mark.kafka
def test_shadow_mode_and_promote(kafka_bootstrap, topics, control_producer):
    with Router(kafka_bootstrap, {EXPERIMENT: CHAMPION}, topics.prefix) as router:
        router.wait_ready(15)
        control_producer.send(topics.control, control(1, "start", "shadow", shadow=[CANDIDATE]))
        wait_until(lambda: seq_of(router) == 1)
        assert router.route(EXPERIMENT, "user-1") == Route(CHAMPION, (CANDIDATE,))
        assert router.route(EXPERIMENT, request_id="req-9").arms == (CHAMPION, CANDIDATE)

        # ab with an extra shadow arm: every unit is scored by the arm it is not served by
        control_producer.send(topics.control, control(
            2, mode="ab", traffic={CHAMPION: 0.5, CANDIDATE: 0.5}, shadow=["churn:8"]))
        wait_until(lambda: seq_of(router) == 2)
        routes = {router.route(EXPERIMENT, u) for u in UNITS}
        assert routes == {Route(CHAMPION, ("churn:8",)), Route(CANDIDATE, ("churn:8",))}

        control_producer.send(topics.control, control(3, "promote", champion=CANDIDATE,
                                                      traffic={CANDIDATE: 1.0}))
        wait_until(lambda: seq_of(router) == 3)
        assert {router.route(EXPERIMENT, u) for u in UNITS} == {Route(CANDIDATE, ())}


@pytest.mark.kafka
def test_malformed_control_events_are_counted_skipped_and_change_nothing(
        kafka_bootstrap, topics, control_producer, caplog):
    caplog.set_level(logging.WARNING, logger="rollguard.serving.router")
    with Router(kafka_bootstrap, {EXPERIMENT: CHAMPION}, topics.prefix) as router:
        router.wait_ready(15)
        control_producer.send(topics.control, canary(1, 0.25, "start"))
        wait_until(lambda: seq_of(router) == 1)
        before = [router.route(EXPERIMENT, u) for u in UNITS]
        bad = [b"{not json", b'{"experiment": "churn-v7", "seq": "five"}',
               control(2, traffic={CHAMPION: 0.5, CANDIDATE: 0.1}),  # shares sum to 0.6
               json.dumps({**json.loads(canary(2, 0.9)), "seq": 0}).encode()]
        for value in bad:
            control_producer.send(topics.control, value)
        control_producer.send(topics.control, None)  # a tombstone: ignored, not "invalid"
        wait_until(lambda: router.invalid == len(bad))
        assert [router.route(EXPERIMENT, u) for u in UNITS] == before
        control_producer.send(topics.control, canary(2, 0.5))  # the thread still runs
        wait_until(lambda: seq_of(router) == 2)
    warnings = [m for m in router_messages(caplog) if "Skipped" in m]
    assert len(warnings) == len(bad)
    assert all(message.count("\n") == 0 for message in warnings)
    assert "seq" in warnings[1] and "traffic" in warnings[2]


@pytest.mark.kafka
def test_a_new_router_reads_the_state_from_the_beginning_and_skips_aborted_events(
        kafka_bootstrap, topics, control_producer):
    control_producer.send(topics.control, canary(1, 0.05, "start"))
    control_producer.send(topics.control, canary(2, 0.25))
    control_producer.send(topics.control, canary(1, 0.05, "start"), key="fraud-abc")
    control_producer.send(topics.control, control(3, "promote", champion=CANDIDATE,
                                                  traffic={CANDIDATE: 1.0}), commit=False)
    with Router(kafka_bootstrap, {EXPERIMENT: CHAMPION}, topics.prefix) as router:
        assert router.wait_ready(15)
        # caught up: the state is there the moment wait_ready returns, no polling needed
        state = router.state(EXPERIMENT)
        assert state.seq == 2 and state.traffic[CANDIDATE] == 0.25
        # the value names the experiment, not the key: the third event is a stale churn-v7 one
        assert (router.applied, router.stale) == (2, 1) and set(router.states()) == {EXPERIMENT}
        replayed: list[int] = []
        router.on_change(lambda s: replayed.append(s.seq))  # a late listener hears the state
        assert replayed == [2]


@pytest.mark.kafka
def test_routing_is_thread_safe_while_events_apply(kafka_bootstrap, topics, control_producer):
    allowed = {Route(CHAMPION), Route(CANDIDATE)}
    errors: list[BaseException] = []
    stop = threading.Event()

    def hammer(router: Router) -> None:
        try:
            while not stop.is_set():
                for unit in UNITS[:200]:
                    assert router.route(EXPERIMENT, unit) in allowed
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with Router(kafka_bootstrap, {EXPERIMENT: CHAMPION}, topics.prefix) as router:
        router.wait_ready(15)
        threads = [threading.Thread(target=hammer, args=(router,)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for seq in range(1, 21):
            control_producer.send(topics.control, canary(seq, seq / 20))
        wait_until(lambda: seq_of(router) == 20)
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors


@pytest.mark.kafka
def test_router_in_asyncio(kafka_bootstrap, topics, control_producer):
    control_producer.send(topics.control, canary(1, 0.5, "start"))

    async def service() -> set[str]:
        async with Router(kafka_bootstrap, {EXPERIMENT: CHAMPION}, topics.prefix) as router:
            assert await router.wait_ready_async(15)
            return {router.route(EXPERIMENT, u).serve for u in UNITS}

    assert asyncio.run(service()) == {CHAMPION, CANDIDATE}


@pytest.mark.kafka
def test_unreachable_broker_serves_the_champion_with_one_warning(caplog, capfd):
    from rollguard.kafka.local import free_port

    caplog.set_level(logging.WARNING, logger="rollguard.serving.router")
    with Router(f"127.0.0.1:{free_port()}", {EXPERIMENT: CHAMPION}) as router:
        assert not router.wait_ready(3)
        assert router.route(EXPERIMENT, "user-1") == Route(CHAMPION)
    warnings = router_messages(caplog)
    assert len(warnings) == 1 and "cannot read the control topic" in warnings[0]
    assert "rdkafka" not in capfd.readouterr().err  # librdkafka's own lines stay off stderr


@pytest.mark.kafka
def test_fail_safe_to_the_champion_while_the_broker_is_down_and_back_after(caplog):
    """Stops a broker of its own (never the session's) to take the control topic away."""
    from rollguard.kafka.local import LocalBroker, free_port, rollguard_home

    caplog.set_level(logging.WARNING, logger="rollguard.serving.router")
    data_dir = Path(tempfile.mkdtemp(prefix="rollguard-test-failsafe-"))
    broker = LocalBroker(port=free_port(), data_dir=data_dir, home=rollguard_home())
    broker.start()
    try:
        names = TopicNames("failsafe.")
        create_contract_topics(broker.bootstrap, names, partitions=1)
        producer = ControlProducer(broker.bootstrap)
        producer.send(names.control, canary(1, 0.5, "start"))
        producer.send(names.control, control(1, "start", "shadow", shadow=[CANDIDATE],
                                             experiment="churn-shadow"), key="churn-shadow")
        with Router(broker.bootstrap, {EXPERIMENT: CHAMPION}, names.prefix,
                    fail_safe_after=0.5) as router:
            assert router.wait_ready(15)
            assert {router.route(EXPERIMENT, u).serve for u in UNITS} == {CHAMPION, CANDIDATE}
            broker.stop()
            down = wait_until(lambda: router.failed_safe, timeout=20)
            print(f"\nbroker stopped: champion-only routing after {down:.2f} s")
            assert {router.route(EXPERIMENT, u) for u in UNITS} == {Route(CHAMPION)}
            # the champion serves the shadow experiment anyway: its candidate keeps scoring
            assert router.route("churn-shadow", "user-1") == Route(CHAMPION, (CANDIDATE,))
            broker.start()
            up = wait_until(lambda: not router.failed_safe, timeout=30)
            print(f"broker restarted: state routing again after {up:.2f} s")
            assert {router.route(EXPERIMENT, u).serve for u in UNITS} == {CHAMPION, CANDIDATE}
        messages = router_messages(caplog)
        assert sum("cannot read the control topic" in m for m in messages) == 1
        assert sum("served by its champion" in m for m in messages) == 1
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
