"""How fast the dashboard's pages load in a real browser, with 50 experiments.

    .venv/bin/python bench/bench_dashboard.py [--experiments 50] [--repeat 5]

What the worker would publish for 50 experiments (shadow, ab and canary; some promoted,
some rolled back, some running) is made by the pure core (``Replay`` over synthetic
traffic: control events, statistics snapshots, history points) and produced to the topics
of a fresh prefix, plus one month-long undecided experiment (30 days of event time, one
labelled request every 30 s) for the size of a long history. ``rollguard dashboard`` then
reads them like any dashboard, and headless Chromium (Debian's ``chromium`` and
``chromium-driver``) loads:

- the list page until its 51 rows are rendered;
- the month-long experiment's page until its charts are drawn.

The time is the page's own ``performance.mark("rollguard:rendered")`` (set after each render)
since the navigation started, so it includes the HTML, the scripts, the JSON request and the
rendering; the best, median and worst of ``--repeat`` loads are printed. The aim: the list
in under a second. Uses ``KAFKA_BOOTSTRAP_SERVERS`` (loopback) or starts a local broker.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PYTHON, ROOT, broker, fresh_prefix, log, machine_line  # noqa: E402

KINDS = [
    ("shadow", 0.8, 0.88), ("shadow", 0.8, 0.7), ("shadow", 0.8, 0.8),
    ("ab", 0.8, 0.9), ("canary", 0.78, 0.9),
]


def experiment_yaml(name: str, mode: str) -> str:
    extra = {"shadow": "  guardrails: [{metric: error_rate, max: 0.05}]\n",
             "ab": '  traffic: {"m:1": 0.5, "m:2": 0.5}\n  guardrails: [{metric: srm}]\n',
             "canary": "  canary: {steps: [0.2, 0.5]}\n"}[mode]
    return (f"- name: {name}\n  task: binary\n  mode: {mode}\n  champion: m:1\n"
            "  candidates: [m:2]\n  primary: {metric: accuracy, margin: 0.01}\n"
            f"  min_samples: 200\n  label_ttl: 1h\n  allowed_lateness: 2s\n{extra}")


def published_messages(n_experiments: int) -> list[tuple[str, bytes, bytes]]:
    """(topic kind, key, value) of what a worker would publish for the experiments."""
    import msgspec

    from rollguard.replay import Replay
    from rollguard.schemas import encode, parse_experiments
    from rollguard.synth import Arm, ab_events, shadow_events

    messages: list[tuple[str, bytes, bytes]] = []
    for i in range(n_experiments):
        mode, champion, candidate = KINDS[i % len(KINDS)]
        name = f"exp-{i:02d}-{mode}"
        [exp] = parse_experiments(experiment_yaml(name, mode), "bench.yaml")
        arms = (Arm("m:1", champion), [Arm("m:2", candidate)])
        if mode == "shadow":
            events = shadow_events(name, *arms, n=800, seed=i)
        else:
            events = ab_events(name, *arms, n=1200, seed=i, shares={"m:1": 0.7, "m:2": 0.3}
                               if mode == "canary" else {"m:1": 0.5, "m:2": 0.5})
        replay = Replay([exp], history=True)
        control = replay.run_lines(json.dumps(e).encode() for e in events)
        key = name.encode()
        messages += [("history", key, msgspec.json.encode(p)) for p in replay.take_history()]
        messages += [("control", key, encode(e)) for e in control]
        snapshot = {**replay.evaluators[name].snapshot(), "published_at": time.time()}
        messages.append(("stats", key, msgspec.json.encode(snapshot)))
    messages += month_long()
    return messages


def month_long() -> list[tuple[str, bytes, bytes]]:
    """An undecided experiment over 30 days of event time: its history points, control
    event and snapshot, as the evaluator makes them."""
    import msgspec

    from rollguard.decisions.evaluator import ExperimentEvaluator
    from rollguard.schemas import encode, parse_experiments
    from rollguard.streams.records import Batch
    from rollguard.synth import Arm, records

    [exp] = parse_experiments(
        "{name: month, task: binary, mode: shadow, champion: m:1, candidates: [m:2], "
        "primary: {metric: accuracy, margin: 0.0}, min_samples: 1000, max_samples: 10000000}",
        "bench.yaml")
    evaluator = ExperimentEvaluator(exp, 1)
    step = 30.0  # seconds of event time between two requests: 86,400 in 30 days
    recs = [msgspec.structs.replace(r, ts=1_700_000_000.0 + r.ts * step,
                                    label_ts=None if r.label_ts is None
                                    else 1_700_000_000.0 + r.label_ts * step)
            for r in records(Arm("m:1", 0.8), [Arm("m:2", 0.8)], n=86_400, seed=3,
                             experiment="month")]
    control = evaluator.add_batch(Batch(0, recs, float("inf")))
    points = evaluator.take_history()
    log(f"month-long experiment: {len(points)} history points over 30 days, "
        f"{[e.action for e in control]}")
    snapshot = {**evaluator.snapshot(), "published_at": time.time()}
    return ([("history", b"month", msgspec.json.encode(p)) for p in points]
            + [("control", b"month", encode(e)) for e in control]
            + [("stats", b"month", msgspec.json.encode(snapshot))])


def produce(bootstrap: str, prefix: str, messages: list[tuple[str, bytes, bytes]]) -> None:
    from confluent_kafka import Producer

    from rollguard.kafka.admin import create_contract_topics
    from rollguard.streams.topics import TopicNames

    names = TopicNames(prefix)
    create_contract_topics(bootstrap, names, partitions=1)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "message.max.bytes": 4 * 1024 * 1024})
    for kind, key, value in messages:
        producer.produce(getattr(names, kind), key=key, value=value)
        producer.poll(0)
    assert producer.flush(60) == 0


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        raise SystemExit("Chromium and its driver are needed: run scripts/system-packages.sh.")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def load_ms(chrome, url: str, ready_js: str) -> float:
    """Milliseconds from the navigation's start to the first render that satisfies ready_js."""
    chrome.get("about:blank")
    chrome.get(url)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = chrome.execute_script(f"return ({ready_js}) ? performance.getEntriesByName("
                                     "'rollguard:rendered').map(m => m.startTime) : null")
        if done:
            return done[-1]
        time.sleep(0.02)
    raise SystemExit(f"{url} did not render within 30 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    log(machine_line())
    began = time.monotonic()
    messages = published_messages(args.experiments)
    log(f"{len(messages):,} messages for {args.experiments} + 1 experiments made in "
        f"{time.monotonic() - began:.1f} s")
    with broker() as bootstrap:
        prefix = fresh_prefix("dash")
        produce(bootstrap, prefix, messages)
        from rollguard.kafka.local import free_port

        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        logfile = Path(tempfile.mkdtemp(prefix="rollguard-bench-dash-")) / "dashboard.log"
        proc = subprocess.Popen([PYTHON, "-m", "rollguard.cli", "dashboard", "--port", str(port),
                                 "-b", bootstrap, "--topic-prefix", prefix], cwd=ROOT,
                                stdout=open(logfile, "wb"), stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        chrome = None
        try:
            started = time.monotonic()
            while True:
                try:
                    with urllib.request.urlopen(url + "api/overview", timeout=5) as r:
                        body = json.loads(r.read())
                    if body["status"]["caught_up"] and \
                            len(body["experiments"]) == args.experiments + 1:
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() - started > 60:
                    raise SystemExit(f"the dashboard did not read the topics: {logfile}")
                time.sleep(0.1)
            log(f"the dashboard read {len(messages):,} messages in "
                f"{time.monotonic() - started:.1f} s (from its start)")
            sizes = {}
            for path in ("api/overview", "api/experiments/month"):
                t0 = time.perf_counter()
                with urllib.request.urlopen(url + path, timeout=10) as r:
                    sizes[path] = (len(r.read()), 1000 * (time.perf_counter() - t0))
            chrome = browser()
            rows = f"document.querySelectorAll('tr[data-experiment]').length === " \
                   f"{args.experiments + 1}"
            charts = "document.querySelectorAll('#chart-delta-0 canvas').length === 1"
            results = {}
            for name, page, ready in (("list", url, rows),
                                      ("month-long experiment", url + "experiments/month",
                                       charts)):
                times = [load_ms(chrome, page, ready) for _ in range(args.repeat)]
                results[name] = times
            points = chrome.execute_script("return rollguard.data.series.points")
        finally:
            if chrome is not None:
                chrome.quit()
            proc.terminate()
            proc.wait(20)
    print()
    print(f"dashboard pages in headless Chromium, {args.experiments} experiments + one of "
          f"30 days ({points} history points); {args.repeat} loads each")
    for name, times in results.items():
        print(f"  {name:22} best {min(times):6.0f} ms  median {statistics.median(times):6.0f} ms"
              f"  worst {max(times):6.0f} ms")
    for path, (size, ms) in sizes.items():
        print(f"  GET /{path:22} {size / 1024:7.0f} KiB in {ms:5.0f} ms")
    worst = max(results["list"])
    print(f"  the list page with {args.experiments} experiments loads in "
          f"{'under' if worst < 1000 else 'OVER'} a second (worst {worst:.0f} ms)")


if __name__ == "__main__":
    main()
