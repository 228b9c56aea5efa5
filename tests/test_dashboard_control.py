"""The dashboard's buttons, on a live worker and a real broker: off unless the dashboard runs
with ``--allow-control``, refused without the operator's token, and a press in a real
headless Chromium reaches the worker, whose control event (with who and why) the page
shows."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
import uuid

import pytest

from rollguard.kafka.local import free_port
from rollguard.streams.topics import TopicNames
from rollguard.synth import Arm, shadow_events
from tests.kafka_helpers import ROOT, WorkerProcess, produce_events, read_topic, wait_for
from tests.test_dashboard_browser import DashboardProcess, browser, screenshots, shoot, until  # noqa: F401

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXPERIMENT = """
name: steered
task: binary
mode: shadow
champion: m:1
candidates: [m:2]
primary: {metric: accuracy, margin: 0.01}
min_samples: 100000
allowed_lateness: 1s
"""
TOKEN = "open-sesame"


def post(url: str, body: dict, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["X-Rollguard-Token"] = token
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class ControlledDashboard(DashboardProcess):
    def __init__(self, bootstrap, prefix, port, log, *extra: str) -> None:
        super().__init__(bootstrap, prefix, port, log)
        self.cmd += list(extra)


def test_buttons_need_allow_control_and_the_token_and_reach_the_worker(
        kafka_bootstrap, topic_prefix, tmp_path, browser, screenshots):  # noqa: F811
    from selenium.webdriver.common.by import By

    path = tmp_path / "experiments.yaml"
    path.write_text(EXPERIMENT)
    names = TopicNames(topic_prefix)
    events = sorted(shadow_events("steered", Arm("m:1", 0.8), [Arm("m:2", 0.8)], n=300,
                                  seed=4), key=lambda e: e["ts"])
    produce_events(kafka_bootstrap, names, events, partitions=2)
    control = lambda: [json.loads(m.value()) for m in read_topic(kafka_bootstrap, names.control)]  # noqa: E731

    # without a token, --allow-control is refused in one sentence
    refused = subprocess.run([sys.executable, "-m", "rollguard.cli", "dashboard",
                              "--allow-control", "-b", kafka_bootstrap, "--topic-prefix",
                              topic_prefix], capture_output=True, text=True, cwd=ROOT,
                             timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert refused.returncode == 1 and "--allow-control needs a token" in refused.stderr
    assert refused.stderr.count("\n") == 1

    with WorkerProcess(kafka_bootstrap, path, topic_prefix, f"app-{uuid.uuid4().hex[:6]}",
                       tmp_path / "data", tmp_path / "worker.log"):
        wait_for(lambda: [e["action"] for e in control()] == ["start"], timeout=90)
        plain = DashboardProcess(kafka_bootstrap, topic_prefix, free_port(),
                                 tmp_path / "plain.log").start()
        try:
            status, answer = post(plain.url + "api/experiments/steered/control",
                                  {"action": "pause", "reason": "x"}, TOKEN)
            assert status == 403 and "--allow-control" in answer["error"]
        finally:
            plain.stop()

        board = ControlledDashboard(kafka_bootstrap, topic_prefix, free_port(),
                                    tmp_path / "board.log", "--allow-control",
                                    "--control-token", TOKEN).start()
        try:
            url = board.url + "api/experiments/steered/control"
            status, answer = post(url, {"action": "pause", "reason": "x"}, "guess")
            assert status == 403 and "token is missing or wrong" in answer["error"]
            status, answer = post(url, {"action": "pause", "reason": " "}, TOKEN)
            assert status == 400 and answer["error"] == \
                "Give a reason: it is recorded in the control event."
            status, answer = post(board.url + "api/experiments/nope/control",
                                  {"action": "pause", "reason": "x"}, TOKEN)
            assert status == 404 and answer["error"].startswith(
                "No experiment 'nope' has started on this topic prefix")
            assert [e["action"] for e in control()] == ["start"], "refusals change nothing"

            # a person presses "pause" on the page
            browser.get(board.url + "experiments/steered")
            until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#controls button"), 30,
                  "the control buttons")
            browser.find_element(By.CSS_SELECTOR, "#controls [name=reason]").send_keys(
                "release freeze")
            browser.find_element(By.CSS_SELECTOR, "#controls [name=by]").send_keys("ana")
            browser.find_element(By.CSS_SELECTOR, "#controls [name=token]").send_keys(TOKEN)
            browser.find_element(By.CSS_SELECTOR, "#controls button[data-action=pause]").click()
            until(browser, lambda b: "steered seq 2 pause" in b.find_element(
                By.CSS_SELECTOR, ".control-answer").text, 60, "the worker's answer")
            shoot(browser, screenshots, "control-paused")
            # pressing it again: the worker refuses, and the page says why
            browser.find_element(By.CSS_SELECTOR, "#controls button[data-action=pause]").click()
            until(browser, lambda b: "already paused (by ana: release freeze)" in
                  b.find_element(By.CSS_SELECTOR, ".control-answer").text, 60, "the refusal")
        finally:
            board.stop()
    pause = control()[-1]
    assert (pause["seq"], pause["action"]) == (2, "pause")
    assert pause["evidence"]["manual"]["by"] == "ana"
    assert pause["evidence"]["manual"]["reason"] == "release freeze"
