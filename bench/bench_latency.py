"""Label → control event latency of the worker under load, on a real broker.

    .venv/bin/python bench/bench_latency.py [--quick] [--partitions 6] [--probes 60]
                                            [--intervals 1.0,0.5] [--fractions 0.5,0.25] [--rate EVENTS_PER_S]

1. **Calibration**, at each checkpoint interval: a backlog of 600,000 load events (three
   undecided shadow experiments, as in bench_throughput.py) is produced, the worker
   (``rollguard worker``, its own process) is started on it, and its maximum rate end to end
   is the lower of its reading rate and how fast its evaluators take the labelled outcomes in
   full flow (from the fifth to the fourth fifth of them; its Prometheus counters, sampled
   every 50 ms), in input events per second. Skipped with ``--rate``.
2. **Latency**, once per load and checkpoint interval: the worker runs while load events are
   produced live at a fraction of that rate (half, a quarter; event time = wall time, labels
   1–5 s after their request). Every
   second a *probe* experiment gets 20 requests with both arms' predictions and their labels
   (the candidate right, the champion wrong: it is promoted after a few labels). A promotion's
   ``ts`` is the event time of the outcome that decided it, which is the wall time its label
   was produced at, so its latency is the time a consumer of the control topic receives it
   minus that ``ts``: the whole path label → join → checkpoint → evaluator → control topic.

Every experiment has ``allowed_lateness: 0s`` here, so the figure is the worker's own delay
(a configured lateness adds itself). Figures go to stdout and to the "Label → control latency"
section of bench/RESULTS.md (unless --quick).
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (PYTHON, broker, fresh_prefix, log, machine_line, produce_raw,  # noqa: E402
                          shadow_traffic, table, write_section)

LOAD = ("churn", "fraud", "upsell")
PROBE_REQUESTS = 20


def experiments_yaml(probes: int) -> str:
    """The three load experiments and ``probes`` probe experiments, no lateness."""
    def one(name: str, min_samples: int) -> str:
        return (f"- name: {name}\n  task: binary\n  mode: shadow\n  champion: m:1\n"
                f"  candidates: [m:2]\n  primary: {{metric: accuracy, margin: 0.01}}\n"
                f"  min_samples: {min_samples}\n  label_ttl: 1h\n  allowed_lateness: 0s\n")
    return "".join([one(name, 500) for name in LOAD]
                   + [one(f"probe-{i:03d}", 5) for i in range(probes)])


def start_worker(bootstrap: str, prefix: str, exp_file: Path, interval: float,
                 app_id: str, metrics_port: int | None = None) -> subprocess.Popen:
    data_dir = tempfile.mkdtemp(prefix="rollguard-bench-latency-")
    metrics = [] if metrics_port is None else ["--metrics-port", str(metrics_port),
                                               "--metrics-host", "127.0.0.1"]
    return subprocess.Popen(
        [PYTHON, "-m", "rollguard.cli", "worker", str(exp_file), "-b", bootstrap,
         "--topic-prefix", prefix, "--app-id", app_id, "--data-dir", data_dir,
         "--checkpoint-interval", str(interval), "--log-level", "WARNING", *metrics],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def metric_sum(port: int, name: str) -> int | None:
    """The sum of every series of metric ``name`` on the worker's /metrics (None: not
    serving yet)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{")))


def messages_read(port: int) -> int | None:
    """``rollguard_input_messages_total``: the input the join has read."""
    return metric_sum(port, "rollguard_input_messages_total")


def outcomes_evaluated(port: int) -> int | None:
    """``rollguard_labelled_outcomes_total`` over every experiment and arm: the records the
    evaluators have taken, in event-time order (as of the last checkpoint)."""
    return metric_sum(port, "rollguard_labelled_outcomes_total")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


# -- 1. the maximum rate ----------------------------------------------------------------------
def calibrate(bootstrap: str, exp_file: Path, partitions: int, n_events: int,
              interval: float) -> float:
    """The worker's maximum rate at checkpoint ``interval``, end to end: the lower of how
    fast it reads a backlog and how fast its evaluators take the labelled outcomes while in
    full flow (from the fifth to the fourth fifth of them), in input events per second. The
    join can read and buffer faster than records are evaluated, and a lagging evaluator can
    catch up faster than the input was read: neither alone is a rate the worker sustains. The
    time to the last outcome would add the pipeline's delay, a few checkpoint intervals."""
    from rollguard.kafka.admin import create_contract_topics
    from rollguard.streams.topics import TopicNames

    names = TopicNames(fresh_prefix("blatc"))
    create_contract_topics(bootstrap, names, partitions=partitions)
    enc = json.dumps

    def messages():
        for event in shadow_traffic(n_events):
            yield getattr(names, event.pop("topic")), event["request_id"].encode(), \
                enc(event).encode()

    total = produce_raw(bootstrap, messages(), total=n_events)
    from rollguard.kafka.local import free_port

    port = free_port()
    worker = start_worker(bootstrap, names.prefix, exp_file, interval,
                          f"blatc-{uuid.uuid4().hex[:6]}", metrics_port=port)
    began, first, all_read = time.monotonic(), None, None
    evaluated, last = 0, None  # the outcomes counter, and when it last grew
    grew: list[tuple[float, int]] = []  # (when, the counter) at each growth
    try:
        while time.monotonic() - began < 300:  # the counters, every 50 ms
            now = time.monotonic()
            read = messages_read(port) or 0
            if read and first is None:
                first = now
            if read >= total and all_read is None:
                all_read = now
            count = outcomes_evaluated(port) or 0
            if count > evaluated:
                evaluated, last = count, now
                grew.append((now, count))
            if all_read is not None and last is not None and now - max(last, all_read) > 3.0:
                break  # everything read, and no outcome evaluated for 3 s: done
            time.sleep(0.05)
        else:
            raise RuntimeError("the worker did not evaluate the calibration backlog in 300 s")
    finally:
        stop(worker)
    t_a, n_a = next((t, n) for t, n in grew if n >= 0.2 * evaluated)
    t_b, n_b = next((t, n) for t, n in grew if n >= 0.8 * evaluated)
    in_flow = (n_b - n_a) / max(1e-9, t_b - t_a) * total / evaluated
    # a lagging evaluator catches up faster than the input came in: never above the reading
    rate = min(in_flow, total / max(1e-9, all_read - first))
    log(f"calibration at {interval:g} s checkpoints: the worker read {total:,} events in "
        f"{all_read - first:.1f} s ({total / max(1e-9, all_read - first):,.0f} events/s); its "
        f"evaluators took {n_b - n_a:,} of the {evaluated:,} labelled outcomes in "
        f"{t_b - t_a:.1f} s ({in_flow:,.0f} events/s) and the last {last - first:.1f} s "
        f"after the first read; its maximum rate end to end, the lower of the two: "
        f"{rate:,.0f} events/s (counters sampled every 50 ms, the outcomes' as of the last "
        "checkpoint)")
    return rate


# -- 2. latency under load --------------------------------------------------------------------
class LiveLoad(threading.Thread):
    """Load events of the three load experiments at ``rate`` events/s, event time = now."""

    def __init__(self, bootstrap: str, names, rate: float, seed: int = 3) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import Producer

        self.names, self.rate, self.rng = names, rate, random.Random(seed)
        self.producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random",
                                  "linger.ms": 5, "enable.idempotence": True})
        self.stopped = threading.Event()
        self.produced = 0

    def send(self, topic: str, event: dict) -> None:
        while True:
            try:
                self.producer.produce(topic, key=event["request_id"].encode(),
                                      value=json.dumps(event).encode())
                return
            except BufferError:
                self.producer.poll(0.01)

    def run(self) -> None:
        names, rng = self.names, self.rng
        labels: list[tuple[float, str, int]] = []  # (due wall time, request id, label)
        per_request = 3.9  # a request, two predictions, 90 % labelled
        began, n = time.time(), 0
        while not self.stopped.is_set():
            now = time.time()
            due = int((now - began) * self.rate / per_request)
            while n < due:
                n += 1
                rid, name = f"load-{n}", LOAD[n % 3]
                truth = rng.random() < 0.5
                self.send(names.requests, {"request_id": rid, "experiment": name, "ts": now})
                for version, right in (("1", 0.8), ("2", 0.79)):
                    guess = truth if rng.random() < right else not truth
                    self.send(names.predictions, {
                        "request_id": rid, "experiment": name, "ts": now, "model": "m",
                        "version": version, "served": version == "1", "prediction": int(guess),
                        "latency_ms": 5.0})
                if rng.random() < 0.9:
                    heapq.heappush(labels, (now + rng.uniform(1, 5), rid, int(truth)))
                self.produced += 3
            while labels and labels[0][0] <= now:
                _, rid, truth = heapq.heappop(labels)
                self.send(names.labels, {"request_id": rid, "ts": time.time(), "label": truth})
                self.produced += 1
            self.producer.poll(0)
            time.sleep(0.002)
        self.producer.flush(30)


class ControlReader(threading.Thread):
    """Every control event, with the wall time it was received."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import Consumer

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                                  "auto.offset.reset": "earliest",
                                  "isolation.level": "read_committed",
                                  "fetch.wait.max.ms": 5})
        self.consumer.subscribe([topic])
        self.received: list[tuple[float, dict]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            for msg in self.consumer.consume(100, timeout=0.05):
                if msg.error() is None:
                    self.received.append((time.time(), json.loads(msg.value())))
        self.consumer.close()


def probe(load: LiveLoad, name: str) -> None:
    """Requests and predictions of a probe experiment, then their labels, all now."""
    names = load.names
    for i in range(PROBE_REQUESTS):
        rid, now = f"{name}-{i}", time.time()
        load.send(names.requests, {"request_id": rid, "experiment": name, "ts": now})
        for version in ("1", "2"):
            load.send(names.predictions, {
                "request_id": rid, "experiment": name, "ts": now, "model": "m",
                "version": version, "served": version == "1",
                "prediction": 1 if version == "2" else 0, "latency_ms": 5.0})
    load.producer.flush(10)
    for i in range(PROBE_REQUESTS):
        load.send(names.labels, {"request_id": f"{name}-{i}", "ts": time.time(), "label": 1})
    load.producer.poll(0)


def measure(bootstrap: str, exp_file: Path, partitions: int, rate: float, interval: float,
            probes: int) -> dict:
    from rollguard.kafka.admin import create_contract_topics
    from rollguard.streams.topics import TopicNames

    names = TopicNames(fresh_prefix("blat"))
    create_contract_topics(bootstrap, names, partitions=partitions)
    reader = ControlReader(bootstrap, names.control)
    reader.start()
    worker = start_worker(bootstrap, names.prefix, exp_file, interval,
                          f"blat-{uuid.uuid4().hex[:6]}")
    load = LiveLoad(bootstrap, names, rate)
    try:
        load.start()
        time.sleep(15)  # the group forms, the load reaches its pace
        began = time.time()
        for i in range(probes):
            probe(load, f"probe-{i:03d}")
            time.sleep(1.0)
        time.sleep(5)
        offered = load.produced / (time.time() - began + 15)
    finally:
        load.stopped.set()
        load.join(30)
        stop(worker)
        reader.stopped.set()
        reader.join(10)
    promoted = [(got, event) for got, event in reader.received
                if event["action"] == "promote" and event["experiment"].startswith("probe-")]
    latencies = sorted(got - event["ts"] for got, event in promoted)
    slowest = sorted(((got - event["ts"], event["experiment"]) for got, event in promoted),
                     reverse=True)[:5]
    log("  slowest probes: " + ", ".join(f"{name} {s:.2f} s" for s, name in slowest))
    if worker.returncode not in (0, None, -15) and worker.stderr is not None:
        log(worker.stderr.read()[-2000:])
    return {"interval": interval, "rate": rate, "offered": offered, "probes": probes,
            "promoted": len(latencies), "latencies": latencies}


def quantile(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20 probes, a short calibration")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--probes", type=int, default=None)
    ap.add_argument("--intervals", default="1.0,0.5", help="checkpoint intervals to measure")
    ap.add_argument("--rate", type=float, default=None, help="load events/s (default: the "
                    "--fractions of the calibrated maximum)")
    ap.add_argument("--fractions", default="0.5,0.25", help="loads, as fractions of the "
                    "calibrated maximum")
    args = ap.parse_args()
    probes = args.probes or (20 if args.quick else 100)
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="rollguard-bench-latency-"))
    exp_file = work / "experiments.yaml"
    exp_file.write_text(experiments_yaml(probes))
    runs = []
    with broker() as bootstrap:
        # each interval's own maximum: more frequent checkpoints cost throughput, and "half
        # the worker's maximum rate" is half of what the worker so configured sustains
        for interval in (float(x) for x in args.intervals.split(",")):
            maximum = None
            if args.rate is None:
                maximum = calibrate(bootstrap, exp_file, args.partitions,
                                    60_000 if args.quick else 600_000, interval)
            rates = [args.rate] if args.rate else [maximum * float(f)
                                                   for f in args.fractions.split(",")]
            for rate in rates:
                log(f"latency: load {rate:,.0f} events/s, checkpoint interval {interval} s, "
                    f"{probes} probes ...")
                run = measure(bootstrap, exp_file, args.partitions, rate, interval, probes)
                lat = run["latencies"]
                log(f"  {run['promoted']}/{probes} probes promoted; latency median "
                    f"{statistics.median(lat) if lat else float('nan'):.3f} s, p99 "
                    f"{quantile(lat, 0.99):.3f} s, max {max(lat, default=float('nan')):.3f} s")
                runs.append({**run, "maximum": maximum})
    rows = [[f"{r['rate'] / r['maximum']:.2f} × max" if r["maximum"] else "given",
             f"{r['interval']:g} s",
             f"{r['maximum']:,.0f}" if r["maximum"] else "—",
             f"{r['offered']:,.0f}", f"{r['promoted']} / {r['probes']}",
             f"{statistics.median(r['latencies']) * 1000:.0f}" if r["latencies"] else "—",
             f"{quantile(r['latencies'], 0.9) * 1000:.0f}",
             f"{quantile(r['latencies'], 0.99) * 1000:.0f}",
             f"{max(r['latencies'], default=float('nan')) * 1000:.0f}"] for r in runs]
    body = "\n".join([
        f"Command: `python bench/bench_latency.py` ({(time.monotonic() - began) / 60:.1f} min). "
        f"Machine: {machine_line()}.",
        "",
        f"The worker (`rollguard worker`, its own process, {args.partitions} partitions) on a "
        "single local broker on the same cores. "
        + ("The maximum is calibrated at each checkpoint interval: on a backlog of 600,000 "
           "events, the lower of the worker's reading rate and how fast its evaluators take "
           "the labelled outcomes in full flow (the fifth to the fourth fifth of them), in input "
           "events per second: its rate end to end, with no load generator beside it. Loads at "
           "fractions of it. "
           if args.rate is None else
           f"Load given: {args.rate:,.0f} events/s. ")
        + "Load: three undecided shadow experiments, live event times, labels 1–5 s after "
        "their request, produced by a Python thread of the benchmark on the same two cores. "
        "A probe not promoted within 5 s of the last one counts as not promoted (its latency "
        "is above the table's). Probes: one experiment a second gets 20 requests and labels that "
        "promote it; latency = when a consumer of the control topic received the `promote` "
        "minus its `ts` (the wall time its deciding label was produced). Every experiment has "
        "`allowed_lateness: 0s`.",
        "",
        table(["load", "checkpoint interval", "maximum (events/s)",
               "load offered (events/s)", "probes promoted",
               "median (ms)", "p90 (ms)", "p99 (ms)", "max (ms)"], rows),
    ])
    print(body)
    if not args.quick:
        write_section("Label → control latency", body)


if __name__ == "__main__":
    main()
