"""How much the serving library costs a model service, and how fast control events apply.

Prints:
1. µs per ``Router.route()`` call for several states, against a baseline measured in the
   same process: the bare ``hashlib.sha256`` of the same ``experiment/unit`` string
   (the rule's floor: route() hashes once and looks the arm up). Aim: <= 5 µs.
2. The time from a control event's production (a transactional produce + commit, as the
   rollguard worker does) to the router's applied routing, over N events. Aim: < 1 s.
3. µs per ``Reporter.report_prediction()`` call (build, validate as a consumer would,
   queue), against a bare ``Producer.produce()`` of an already encoded value.

Runs on the broker of ``KAFKA_BOOTSTRAP_SERVERS``, else starts a local one and stops it.

    python bench/bench_router.py [--events 50] [--calls 200000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import Producer

from rollguard.kafka.admin import create_contract_topics
from rollguard.kafka.clients import client_config
from rollguard.serving import Reporter, Router
from rollguard.streams.topics import TopicNames

EXPERIMENT = "churn-v7"


@contextmanager
def kafka():
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    from rollguard.kafka.local import LocalBroker, free_port, rollguard_home

    data_dir = Path(tempfile.mkdtemp(prefix="rollguard-bench-"))
    broker = LocalBroker(port=free_port(), data_dir=data_dir, home=rollguard_home())
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def control(seq: int, action: str = "set_traffic", mode: str = "canary", traffic=None,
            shadow=(), champion: str = "churn:6") -> bytes:
    return json.dumps({"experiment": EXPERIMENT, "seq": seq, "ts": time.time(), "action": action,
                       "mode": mode, "champion": champion,
                       "traffic": traffic or {champion: 1.0}, "shadow": list(shadow),
                       "reason": "bench.", "evidence": {}}).encode()


def per_call_us(function, units: list[str], repeat: int = 5, between=None) -> float:
    """Best of ``repeat`` runs: µs per call of ``function(unit)`` over ``units``.

    ``between()`` runs untimed after each run (to empty a producer's queue).
    """
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for unit in units:
            function(unit)
        best = min(best, time.perf_counter() - started)
        if between is not None:
            between()
    return best / len(units) * 1e6


def bench_route(router: Router, producer: TxProducer, topic: str, calls: int) -> None:
    units = [f"user-{i}" for i in range(calls)]

    def bare_hash(unit: str) -> bytes:
        return hashlib.sha256(f"{EXPERIMENT}/{unit}".encode()).digest()

    baseline = per_call_us(bare_hash, units)
    print(f"\n1. Router.route() per call ({calls:,} distinct units, best of 5)")
    print(f"   baseline: bare sha256 of 'experiment/unit'        {baseline:6.2f} µs")
    states = [
        ("canary, 2 arms (0.9 / 0.1)",
         control(1, "start", traffic={"churn:6": 0.9, "churn:7": 0.1})),
        ("bandit, 3 arms", control(2, mode="bandit",
                                   traffic={"churn:6": 0.5, "churn:7": 0.3, "churn:8": 0.2})),
        ("ab + 1 shadow arm", control(3, mode="ab", traffic={"churn:6": 0.5, "churn:7": 0.5},
                                      shadow=["churn:8"])),
        ("shadow mode (no hashing)", control(4, "set_traffic", "shadow", shadow=["churn:7"])),
        ("rolled back (no hashing)", control(5, "rollback")),
    ]
    for seq, (label, value) in enumerate(states, start=1):
        producer.send(topic, value)
        while (router.state(EXPERIMENT) or None) is None or router.state(EXPERIMENT).seq != seq:
            time.sleep(0.001)
        cost = per_call_us(lambda unit: router.route(EXPERIMENT, unit), units)
        print(f"   {label:<45} {cost:6.2f} µs  ({cost / baseline:4.1f}x baseline)")


class TxProducer:
    """Control events in transactions, as the rollguard worker writes them."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = Producer(client_config(bootstrap, **{
            "linger.ms": 0, "transactional.id": f"bench-{uuid.uuid4().hex}"}))
        self.producer.init_transactions(30)

    def send(self, topic: str, value: bytes) -> float:
        """Produce and commit; the seconds the commit took."""
        started = time.perf_counter()
        self.producer.begin_transaction()
        self.producer.produce(topic, value, EXPERIMENT.encode())
        self.producer.commit_transaction(30)
        return time.perf_counter() - started


def bench_latency(router: Router, producer: TxProducer, topic: str, events: int,
                  first_seq: int) -> None:
    applied: dict[int, float] = {}
    arrived = threading.Event()

    def on_change(state) -> None:
        applied[state.seq] = time.perf_counter()
        arrived.set()

    router.on_change(on_change, replay=False)
    commits, after_commit, totals = [], [], []
    for seq in range(first_seq, first_seq + events):
        arrived.clear()
        share = 0.05 + 0.9 * (seq % 10) / 10
        started = time.perf_counter()
        value = control(seq, traffic={"churn:6": 1 - share, "churn:7": share})
        commit = producer.send(topic, value)
        if not arrived.wait(10):
            raise SystemExit(f"control event seq {seq} was not applied within 10 s")
        total = applied[seq] - started
        commits.append(commit)
        after_commit.append(total - commit)
        totals.append(total)
        time.sleep(0.02)  # events arrive one at a time, as decisions do

    def row(label: str, values: list[float]) -> str:
        ms = sorted(v * 1000 for v in values)
        p90 = ms[int(0.9 * (len(ms) - 1))]
        return (f"   {label:<38} median {statistics.median(ms):6.1f} ms   p90 {p90:6.1f} ms   "
                f"max {ms[-1]:6.1f} ms")

    print(f"\n2. Control event to applied routing ({events} events, transactional producer, "
          "read_committed router)")
    print(row("produce + commit_transaction", commits))
    print(row("commit returned -> routing applied", after_commit))
    print(row("total: produce -> routing applied", totals))


def bench_reporter(bootstrap: str, prefix: str, calls: int) -> None:
    names = TopicNames(prefix)
    reporter = Reporter(bootstrap, topic_prefix=prefix)
    bare = Producer(client_config(bootstrap, **{"linger.ms": 20, "compression.type": "lz4"}))
    ids = [f"req-{i}" for i in range(calls)]
    encoded = json.dumps({"request_id": "req-0", "experiment": EXPERIMENT, "ts": 1.0,
                          "model": "churn", "version": "7", "served": True, "prediction": 1,
                          "score": 0.8, "latency_ms": 2.5}).encode()

    def bare_produce(request_id: str) -> None:
        bare.produce(names.predictions, encoded, request_id.encode())
        bare.poll(0)

    def report(request_id: str) -> None:
        reporter.report_prediction(EXPERIMENT, request_id, "churn:7", served=True,
                                   prediction=1, score=0.8, latency_ms=2.5, ts=1.0)

    baseline = per_call_us(bare_produce, ids, repeat=3, between=lambda: bare.flush(60))
    cost = per_call_us(report, ids, repeat=3, between=lambda: reporter.flush(60))
    print(f"\n3. Reporter.report_prediction() per call ({calls:,} calls, best of 3)")
    print(f"   baseline: Producer.produce() of encoded bytes       {baseline:6.2f} µs")
    print(f"   report_prediction (build + validate + queue)        {cost:6.2f} µs  "
          f"({cost / baseline:4.1f}x baseline)")
    reporter.close()
    print(f"   delivered {reporter.delivered:,}, failed {reporter.failed}, "
          f"dropped {reporter.dropped}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    with kafka() as bootstrap:
        prefix = f"bench{uuid.uuid4().hex[:8]}."
        names = TopicNames(prefix)
        create_contract_topics(bootstrap, names, partitions=2)
        producer = TxProducer(bootstrap)
        print(f"broker {bootstrap}, control topic {names.control}")
        with Router(bootstrap, {EXPERIMENT: "churn:6"}, prefix) as router:
            if not router.wait_ready(30):
                raise SystemExit("the router did not catch up with the control topic in 30 s")
            bench_route(router, producer, names.control, args.calls)
            bench_latency(router, producer, names.control, args.events, first_seq=6)
        bench_reporter(bootstrap, prefix, min(args.calls, 50_000))  # within the local queue


if __name__ == "__main__":
    main()
