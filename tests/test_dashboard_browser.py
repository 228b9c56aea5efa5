"""The dashboard in a real headless Chromium, on a live worker and a real broker.

A worker decides three experiments from known events; ``rollguard dashboard`` runs beside it
and the browser checks what a person sees: every experiment with its decision and reason,
the Δ chart drawn with its band and the decisions on it, a decision that arrives while the
page is open (no reload), and, after the dashboard restarts, the whole history again — the
same points as ``rollguard replay`` makes from the same events. A second test shows the demo's
recommender (mode interleave) from the pure core's output, without a broker.

Needs Debian's ``chromium`` and ``chromium-driver`` (scripts/system-packages.sh installs
them). Screenshots go to ``$ROLLGUARD_SCREENSHOTS`` if set, else to the test's tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from rollguard.kafka.local import free_port
from rollguard.replay import Replay
from rollguard.schemas import load_experiments
from rollguard.streams.topics import TopicNames
from rollguard.synth import Arm, ab_events, shadow_events
from tests.kafka_helpers import ROOT, WorkerProcess, produce_events, read_topic, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

START = 1_700_000_000.0
#: the canary's events after this event time arrive while its page is open
SPLIT_AT = START + 300.0

EXPERIMENTS = """
- name: better
  task: binary
  mode: shadow
  champion: m:1
  candidates: [m:2]
  primary: {metric: accuracy, margin: 0.01}
  min_samples: 200
  label_ttl: 1h
  allowed_lateness: 2s
  guardrails:
    - {metric: error_rate, max: 0.05}
    - {metric: precision, segment: {tier: vip}, min: 0.5}
- name: worse
  task: binary
  mode: shadow
  champion: m:1
  candidates: [m:3]
  primary: {metric: accuracy, margin: 0.01}
  min_samples: 200
  label_ttl: 1h
  allowed_lateness: 2s
- name: slow
  task: binary
  mode: canary
  champion: m:1
  candidates: [m:2]
  primary: {metric: accuracy, margin: 0.01}
  min_samples: 150
  label_ttl: 1h
  allowed_lateness: 2s
  canary: {steps: [0.2, 0.5]}
  guardrails: [{metric: error_rate, max: 0.05}]
"""

#: the band's fill (rgba(37, 99, 235, 0.18)) over the page's white, as the canvas shows it
BAND_RGB = (216, 227, 251)


def traffic() -> tuple[list[dict], list[dict]]:
    """(what is there before the pages open, the canary's rest that comes while one is open)"""
    events = list(shadow_events("better", Arm("m:1", 0.8), [Arm("m:2", 0.88)], n=1500, seed=1))
    events += shadow_events("worse", Arm("m:1", 0.8), [Arm("m:3", 0.7)], n=1500, seed=2)
    events += ab_events("slow", Arm("m:1", 0.78), [Arm("m:2", 0.9)], n=2400, seed=21,
                        shares={"m:1": 0.7, "m:2": 0.3}, start=START + 200.0)
    # no request just before the split, so that none has its prediction after it: every
    # event the worker reads later is later in event time (as in production)
    cut = {e["request_id"] for e in events
           if e["topic"] == "requests" and SPLIT_AT - 0.5 <= e["ts"] < SPLIT_AT}
    events = sorted((e for e in events if e["request_id"] not in cut), key=lambda e: e["ts"])
    return [e for e in events if e["ts"] < SPLIT_AT], [e for e in events if e["ts"] >= SPLIT_AT]


class DashboardProcess:
    """``rollguard dashboard`` in a subprocess, as a user runs it."""

    def __init__(self, bootstrap: str, prefix: str, port: int, log: Path) -> None:
        self.cmd = [sys.executable, "-m", "rollguard.cli", "dashboard", "--port", str(port),
                    "--bootstrap-servers", bootstrap, "--topic-prefix", prefix]
        self.url = f"http://127.0.0.1:{port}/"
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "DashboardProcess":
        self.proc = subprocess.Popen(self.cmd, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT, cwd=ROOT,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        wait_for(lambda: self.caught_up(), timeout=30, every=0.2)
        return self

    def caught_up(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        try:
            return self.json("api/overview")["status"]["caught_up"]
        except OSError:
            return False

    def json(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            return json.loads(response.read())

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(20)


@pytest.fixture
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("Chromium and its driver are needed for the dashboard's browser test: "
                    "run scripts/system-packages.sh (Debian's chromium and chromium-driver).")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_page_load_timeout(30)
    yield chrome
    chrome.quit()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    where = Path(os.environ.get("ROLLGUARD_SCREENSHOTS") or tmp_path / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


def shoot(browser, where: Path, name: str) -> None:
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1400, min(max(height + 120, 1000), 8000))
    browser.save_screenshot(str(where / f"{name}.png"))
    browser.set_window_size(1400, 1000)


def until(browser, predicate, timeout: float, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.2).until(
        lambda b: predicate(b), message=f"the page did not show {what} within {timeout} s")


def text_of(browser, css: str) -> str:
    """The text a person sees in the elements ``css`` selects, read in one go (the page
    re-renders when figures change: elements found earlier may be gone)."""
    return browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText).join(' ')",
        css)


def attributes(browser, css: str, name: str, value: str) -> dict[str, str]:
    """``{attribute name: attribute value}`` of the elements ``css`` selects, in one go."""
    return browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll(arguments[0])]"
        ".map(e => [e.getAttribute(arguments[1]), arguments[2] === 'innerText' ? e.innerText"
        " : e.getAttribute(arguments[2])]))", css, name, value)


def assert_same_points(published: list[dict], expected: list[dict]) -> None:
    """The worker published the points replay makes; on a difference, say the first."""
    key = lambda p: (p["experiment"], p["point"])  # noqa: E731
    published, expected = sorted(published, key=key), sorted(expected, key=key)
    for live, offline in zip(published, expected):
        differ = {f: (live.get(f), offline[f]) for f in offline if live.get(f) != offline[f]}
        assert key(live) == key(offline) and not differ, \
            f"point {key(offline)}: (live, replay) {differ}"
    assert [key(p) for p in published] == [key(p) for p in expected]


def assert_no_placeholders(browser) -> None:
    """No figure shows as a programmer's placeholder."""
    import re

    text = text_of(browser, "#app")
    assert not re.search(r"\b(null|undefined|NaN|\[object Object\])\b", text), text


def band_pixels(browser, chart_id: str) -> int:
    """Pixels of the chart's canvas painted in the band's colour: the band as drawn."""
    return browser.execute_script("""
        const canvas = document.querySelector(`#${arguments[0]} canvas`);
        if (!canvas) return 0;
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        const [r, g, b] = arguments[1];
        const over = (c, a) => c * a / 255 + 255 * (1 - a / 255);  // on the page's white
        let n = 0;
        for (let i = 0; i < data.length; i += 4) {
          const a = data[i + 3];
          if (Math.abs(over(data[i], a) - r) <= 3 && Math.abs(over(data[i + 1], a) - g) <= 3 &&
              Math.abs(over(data[i + 2], a) - b) <= 3) n++;
        }
        return n;""", chart_id, list(BAND_RGB))


def test_a_person_sees_the_experiments_the_decisions_and_live_updates(
        kafka_bootstrap, topic_prefix, tmp_path, browser, screenshots):
    from selenium.webdriver.common.by import By

    began = time.monotonic()
    experiments_file = tmp_path / "experiments.yaml"
    experiments_file.write_text(EXPERIMENTS)
    names = TopicNames(topic_prefix)
    before, later = traffic()
    produce_events(kafka_bootstrap, names, before)

    def control() -> list[dict]:
        return [json.loads(m.value()) for m in read_topic(kafka_bootstrap, names.control)]

    # the input never goes idle between the two halves: an idle join partition lets the others
    # run ahead when input comes back, and the records it then reads are applied late
    # (docs/design.md, event time): the points would differ from replay's at the seam
    worker = WorkerProcess(kafka_bootstrap, experiments_file, topic_prefix,
                           f"app-{uuid.uuid4().hex[:6]}", tmp_path / "data",
                           tmp_path / "worker.log", "--idle-after", "600")
    dashboard = DashboardProcess(kafka_bootstrap, topic_prefix, free_port(),
                                 tmp_path / "dashboard.log")
    with worker:
        wait_for(lambda: {(e["experiment"], e["action"]) for e in control()} >= {
            ("better", "promote"), ("worse", "rollback"), ("slow", "set_traffic")}, timeout=60)
        decided = {e["experiment"]: e for e in control() if e["action"] != "start"}
        dashboard.start()
        try:
            # -- the list: every experiment, its decision and reason ----------------------------
            browser.get(dashboard.url)
            until(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "tr[data-experiment]"))
                  == 3, 15, "three experiments")
            rows = attributes(browser, "tr[data-experiment]", "data-experiment", "innerText")
            assert "promote" in rows["better"] and "m:2 is promoted" in rows["better"]
            assert "rollback" in rows["worse"] and "m:3 is rolled back" in rows["worse"]
            assert "set_traffic" in rows["slow"] and "canary" in rows["slow"]
            assert "(95% CS)" in rows["better"] and "shadow" in rows["better"]
            assert_no_placeholders(browser)
            shoot(browser, screenshots, "list")

            # -- one experiment: its chart with the band, the decisions with their reasons ------
            browser.execute_script("document.querySelector('a[href=\"/experiments/better\"]')"
                                   ".click()")  # as a person clicks it
            until(browser, lambda b: band_pixels(b, "chart-delta-0") > 500, 15,
                  "the Δ chart with its band")
            assert "promote" in text_of(browser, "#latest-decision")
            assert decided["better"]["reason"] in text_of(browser, "#latest-decision")
            marks = attributes(browser, "#chart-delta-0 .annotation", "data-action", "title")
            assert set(marks) == {"start", "promote"}
            assert decided["better"]["reason"] in marks["promote"]
            legend = text_of(browser, "#chart-delta-0 .u-legend")
            assert "Δ estimate" in legend and "lower bound (95% CS)" in legend
            assert "−margin (-0.01)" in legend
            guardrails = text_of(browser, "#tests")
            assert "error_rate <= 0.05" in guardrails and "max 0.05" in guardrails
            assert "(95% CS)" in guardrails and "pass" in guardrails
            assert "accuracy (estimate)" in text_of(browser, "#arm-table")
            assert "waiting for a label" in text_of(browser, "#labels")
            assert len(browser.find_elements(By.CSS_SELECTOR, "#decision-table tbody tr")) == 2
            assert browser.execute_script(
                "return document.getElementById('controls').offsetParent") is None, \
                "no control buttons without --allow-control"
            assert_no_placeholders(browser)
            shoot(browser, screenshots, "better")

            # -- a decision arrives while the page is open -----------------------------------
            browser.get(dashboard.url + "experiments/slow")
            until(browser, lambda b: band_pixels(b, "chart-delta-0") > 500, 15, "the chart")
            assert "set_traffic" in text_of(browser, "#latest-decision")
            points_before = browser.execute_script("return rollguard.data.series.points")
            browser.execute_script("window.stillTheSamePage = true")
            shoot(browser, screenshots, "slow-before")
            produce_events(kafka_bootstrap, names, later)
            until(browser, lambda b: "promote" in text_of(b, "#latest-decision"), 45,
                  "the promotion, live")
            assert browser.execute_script("return window.stillTheSamePage") is True
            until(browser, lambda b: b.find_elements(
                By.CSS_SELECTOR, "#chart-delta-0 .annotation[data-action=promote]"), 10,
                "the promotion on the chart")
            assert browser.execute_script("return rollguard.data.series.points") > points_before
            assert len(browser.find_elements(By.CSS_SELECTOR, "#decision-table tbody tr")) == 3
            assert "promote" in text_of(browser, "h1")
            shoot(browser, screenshots, "slow-after")
        finally:
            assert dashboard.stop() == 0, dashboard.log.read_text()

    # -- restarted, the dashboard shows the whole history: the points replay makes ---------------
    replay = Replay(load_experiments(experiments_file), history=True)
    replay.run_lines(json.dumps(e).encode() for e in before + later)
    expected = [json.loads(json.dumps(p)) for p in replay.take_history()]
    published = [json.loads(m.value()) for m in read_topic(kafka_bootstrap, names.history)]
    assert_same_points(published, expected)
    dashboard.start()
    try:
        for name in ("better", "worse", "slow"):
            page = dashboard.json(f"api/experiments/{name}")
            mine = [p for p in expected if p["experiment"] == name]
            assert page["series"]["ts"] == [p["ts"] for p in mine]
            assert [d["seq"] for d in page["decisions"]] == \
                [e["seq"] for p in mine for e in p.get("events", [])]
        browser.get(dashboard.url + "experiments/slow")
        until(browser, lambda b: band_pixels(b, "chart-delta-0") > 500, 15, "the chart")
        assert "promote" in text_of(browser, "#latest-decision")
    finally:
        assert dashboard.stop() == 0
    assert "Traceback" not in dashboard.log.read_text()
    print(f"dashboard end to end: {time.monotonic() - began:.1f} s; screenshots in {screenshots}")


def test_an_interleave_experiment_reads_as_one(browser, screenshots):
    """The demo's recommender (mode interleave), published by the pure core and taken by a
    dashboard without a reader: its candidate is interleaved (not in shadow), its chart is
    drawn, and its page shows the wins and losses and each ranker's figures, no placeholder."""
    import threading

    from rollguard.dashboard import Dashboard
    from tests.test_dashboard import INTERLEAVED, fill, interleave_published

    control, snapshots, points = interleave_published()
    decided = json.loads(control[-1])
    before = [p for p in points if json.loads(p)["ts"] < decided["ts"]]
    dashboard = Dashboard("127.0.0.1:9", TopicNames("t."), port=0, reader=False)
    url = dashboard.start()
    threading.Thread(target=dashboard.serve_forever, daemon=True).start()
    try:
        with dashboard.lock:
            fill(dashboard.board, control[:1], {}, before, published_at=time.time())
        browser.get(url)
        until(browser, lambda b: "recs:2 interleaved" in text_of(b, "tr[data-experiment]"), 15,
              "the candidate interleaved")
        browser.get(url + f"experiments/{INTERLEAVED}")
        until(browser, lambda b: band_pixels(b, "chart-delta-0") > 500, 15, "the Δ chart")
        with dashboard.lock:
            fill(dashboard.board, control, snapshots, points, published_at=time.time())
        until(browser, lambda b: "promote" in text_of(b, "#latest-decision"), 15,
              "the promotion, live")
        tally = decided["evidence"]["interleaving"]["recs:2"]
        assert f"recs:2 won {tally['wins']}, lost {tally['losses']}, tied {tally['ties']}" \
            in text_of(browser, "#tests")
        assert "ndcg_at_k (estimate)" in text_of(browser, "#arm-table")
        assert "preference (estimate)" not in text_of(browser, "#arm-table")
        assert "P(win) − P(loss)" in text_of(browser, "#delta")
        assert_no_placeholders(browser)
        shoot(browser, screenshots, "interleave")
    finally:
        dashboard.close()
