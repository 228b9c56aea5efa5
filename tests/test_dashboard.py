"""The dashboard's server and what its JSON says, without a browser.

The board is fed what the worker publishes — the pure core's own control events, snapshots
and history points (``rollguard replay`` over synthetic traffic) — as the reader would take
them from the topics. The end-to-end test in a real browser, on a live worker, is
tests/test_dashboard_browser.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import msgspec
import pytest

from rollguard.dashboard import Dashboard
from rollguard.dashboard.board import Board
from rollguard.replay import Replay
from rollguard.schemas import encode, parse_experiments
from rollguard.streams.topics import TopicNames
from rollguard.synth import Arm, ab_events, shadow_events

ROOT = Path(__file__).resolve().parents[1]
#: the demo's recommender experiment
INTERLEAVED = "recs-interleave-v2"

EXPERIMENTS = """
- name: better
  task: binary
  mode: shadow
  champion: m:1
  candidates: [m:2]
  primary: {metric: accuracy, margin: 0.01}
  min_samples: 150
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
  min_samples: 150
  allowed_lateness: 2s
- name: split
  task: binary
  mode: ab
  champion: m:1
  candidates: [m:2]
  traffic: {"m:1": 0.5, "m:2": 0.5}
  primary: {metric: accuracy, margin: 0.01}
  min_samples: 150
  allowed_lateness: 2s
  guardrails: [{metric: srm}]
  bake: {duration: 30s, min_samples: 100}
"""


@pytest.fixture(scope="module")
def published():
    """(control events, snapshots, history points) as the worker would publish them."""
    experiments = parse_experiments(EXPERIMENTS, "experiments.yaml")
    events = list(shadow_events("better", Arm("m:1", 0.8), [Arm("m:2", 0.88)], n=900, seed=1))
    events += shadow_events("worse", Arm("m:1", 0.8), [Arm("m:3", 0.7)], n=900, seed=2)
    events += ab_events("split", Arm("m:1", 0.8), [Arm("m:2", 0.9)], n=1800, seed=3,
                        shares={"m:1": 0.5, "m:2": 0.5})
    events.sort(key=lambda e: e["ts"])
    replay = Replay(experiments, history=True)
    control = [encode(e) for e in replay.run_lines(json.dumps(e).encode() for e in events)]
    snapshots = {name: msgspec.json.encode({**ev.snapshot(), "published_at": 1000.0})
                 for name, ev in replay.evaluators.items()}
    points = [msgspec.json.encode(p) for p in replay.take_history()]
    return control, snapshots, points


def fill(board: Board, control, snapshots, points, *, published_at: float = 1000.0) -> None:
    for value in points:
        board.take("history", b"k", value, published_at=published_at)
    for value in control:
        board.take("control", b"k", value, published_at=published_at)
    for value in snapshots.values():
        board.take("stats", b"k", value, published_at=published_at)


def test_the_list_shows_each_experiment_with_its_decision_and_evidence(published):
    board = Board()
    fill(board, *published)
    rows = {r["name"]: r for r in board.overview(now=1012.0)["experiments"]}
    assert list(rows) == ["better", "split", "worse"]
    better = rows["better"]
    assert better["mode"] == "shadow" and better["champion"] == "m:2"
    assert better["original_champion"] == "m:1" and better["candidates"] == ["m:2"]
    assert better["state"] == "promote" and better["latest"]["action"] == "promote"
    assert better["latest"]["reason"].startswith("m:2 is promoted")
    assert better["latest"]["age_s"] == 12.0
    assert better["traffic"] == {"m:2": 1.0} and better["guardrails"]["pass"] == 2
    [delta] = better["deltas"]
    assert delta["lower"] < delta["estimate"] < delta["upper"] and delta["confidence"] == 0.95
    assert better["labelled"]["m:1"] == better["labelled"]["m:2"] > 700
    assert rows["worse"]["state"] == "rollback" and rows["worse"]["deltas"][0]["upper"] < -0.01
    assert rows["split"]["state"] == "complete" and rows["split"]["srm"] in ("pass", "undecided")


def test_the_experiment_page_has_the_history_the_decisions_and_the_figures(published):
    control, snapshots, points = published
    board = Board()
    fill(board, control, snapshots, points)
    page = board.detail("split", now=1000.0)
    series = page["series"]
    mine = [json.loads(p) for p in points if json.loads(p)["experiment"] == "split"]
    assert series["points"] == len(mine) and series["ts"] == [p["ts"] for p in mine]
    assert series["delta"]["m:2"]["lower"] == [p["candidates"]["m:2"]["delta"]["lower"]
                                               for p in mine]
    assert series["bake"] is not None and series["srm_p"] is not None
    assert set(series["traffic"]) == {"m:1", "m:2"} and series["traffic"]["m:2"][-1] == 1.0
    assert [d["action"] for d in page["decisions"]] == ["start", "promote", "complete"]
    assert [d["final"] for d in page["decisions"]] == [False, False, True]
    assert page["margin"] == 0.01 and page["confidence"] == 0.95
    assert {a["arm"]: a["role"] for a in page["arms"]} == {"m:1": "former champion",
                                                           "m:2": "promoted"}
    assert page["arms"][0]["outcomes"]["accuracy"] is not None
    assert page["srm"]["status"] in ("pass", "undecided") and page["srm"]["confidence"] == 0.95
    assert {s["key"] for s in page["segments"]} == {"tier"}
    labels = page["labels"]
    assert labels["scored"] == 1800 and 0 < labels["labelled"] < 1800
    assert labels["pending"] + labels["labelled"] + labels["expired"] == labels["scored"]
    better = board.detail("better", now=1000.0)
    rows = {g["guardrail"]: g for g in better["tests"][0]["guardrails"]}
    assert rows["error_rate <= 0.05"]["limit"] == "max 0.05"
    assert rows["error_rate <= 0.05"]["status"] == "pass"
    assert rows["precision[tier=vip] >= 0.5"]["limit"] == "min 0.5"
    assert board.detail("nope") is None


def test_reading_the_topics_again_changes_nothing_and_compaction_loses_no_decision(published):
    control, snapshots, points = published
    board = Board()
    fill(board, control, snapshots, points)
    before = board.detail("split", now=1000.0)
    version = board.version
    fill(board, control, {}, points)  # the same messages again
    assert board.version == version, "duplicates of points and control events change nothing"
    # a compacted control topic keeps the latest event per experiment; the points keep the rest
    compacted = Board()
    latest = {json.loads(c)["experiment"]: c for c in control}
    fill(compacted, list(latest.values()), snapshots, points)
    after = compacted.detail("split", now=1000.0)
    assert [(d["seq"], d["action"], d["reason"]) for d in after["decisions"]] == \
        [(d["seq"], d["action"], d["reason"]) for d in before["decisions"]]
    assert after["state"] == "complete" and after["series"] == before["series"]


def test_dead_letters_are_shown_by_reason_and_the_latest_with_their_sentence(published):
    control, snapshots, points = published
    board = Board()
    fill(board, control, snapshots, points)
    value = json.dumps({"request_id": "y", "experiment": "better", "ts": 1.0, "model": "m",
                        "version": "9", "served": False, "prediction": 1}).encode()
    headers = {"rollguard.error": b"prediction rejected: arm 'm:9' is not part of it.",
               "rollguard.topic": b"t.predictions", "rollguard.offset": b"7"}
    assert board.take("deadletter", b"y", value, headers=headers, published_at=990.0) == "better"
    assert board.take("deadletter", b"z", b"{not json", headers=headers) == ""
    page = board.detail("better", now=1000.0)
    assert page["dead_letters"]["recent"][0]["error"].startswith("prediction rejected")
    assert board.overview()["unattributed_dead_letters"]["total"] == 1


@pytest.fixture
def served(published):
    dashboard = Dashboard("127.0.0.1:9", TopicNames("t."), port=0, reader=False)
    url = dashboard.start()
    threading.Thread(target=dashboard.serve_forever, daemon=True).start()
    yield dashboard, url
    dashboard.close()


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def interleave_published(n: int = 3000):
    """The demo's recommender experiment (mode interleave, rollguard/demo/experiments.yaml) as
    the worker publishes it: (control events, snapshots, history points)."""
    import yaml

    from rollguard.synth_ranking import Catalogue, Ranker, interleave_events

    demo = yaml.safe_load((ROOT / "rollguard" / "demo" / "experiments.yaml").read_text())
    experiments = parse_experiments(yaml.safe_dump([e for e in demo
                                                    if e["mode"] == "interleave"]), "demo.yaml")
    events = interleave_events(Ranker("recs:1", noise=3.0), Ranker("recs:2", noise=0.5),
                               Catalogue(items=200, seed=1), n, 4, experiment=INTERLEAVED)
    replay = Replay(experiments, history=True)
    control = [encode(e) for e in replay.run_lines(json.dumps(e).encode() for e in events)]
    snapshots = {name: msgspec.json.encode({**ev.snapshot(), "published_at": 1000.0})
                 for name, ev in replay.evaluators.items()}
    return control, snapshots, [msgspec.json.encode(p) for p in replay.take_history()]


def test_an_interleave_experiment_shows_its_wins_and_losses_and_the_rankers_figures():
    control, snapshots, points = interleave_published()
    board = Board()
    fill(board, control, snapshots, points)
    [row] = board.overview(now=1000.0)["experiments"]
    assert (row["mode"], row["state"], row["champion"]) == ("interleave", "promote", "recs:2")
    page = board.detail(INTERLEAVED, now=1000.0)
    [test] = page["tests"]
    evidence = json.loads(control[-1])["evidence"]
    assert test["interleaving"] == evidence["interleaving"]["recs:2"]
    assert test["interleaving"]["wins"] > test["interleaving"]["losses"]
    assert sum(test["interleaving"][k] for k in ("wins", "losses", "ties")) == \
        test["n"]["recs:2"]
    for arm in page["arms"]:  # the arms' own ranking figures (preference has none per arm)
        assert {"hit_rate_at_k", "ndcg_at_k"} <= set(arm["outcomes"]), arm
        assert None not in arm["outcomes"].values()
    assert page["series"]["delta"]["recs:2"]["lower"][-1] > 0


def test_the_server_serves_the_pages_the_json_and_the_vendored_chart_library(served, published):
    dashboard, url = served
    with dashboard.lock:
        fill(dashboard.board, *published)
    status, kind, body = get(url)
    assert status == 200 and kind.startswith("text/html") and b"dashboard.js" in body
    assert b"cdn" not in body.lower() and b"https://" not in body
    assert get(url + "experiments/better")[2] == body, "one shell for every page"
    overview = json.loads(get(url + "api/overview")[2])
    assert [e["name"] for e in overview["experiments"]] == ["better", "split", "worse"]
    page = json.loads(get(url + "api/experiments/better")[2])
    assert page["latest"]["action"] == "promote" and page["series"]["points"] > 20
    status, _, body = get(url + "api/experiments/nope")
    assert status == 404 and "nothing was published about experiment 'nope'" in \
        json.loads(body)["error"]
    for name in ("dashboard.js", "dashboard.css", "vendor/uPlot.iife.min.js",
                 "vendor/uPlot.min.css", "vendor/uPlot.LICENSE.txt"):
        status, _, body = get(url + "static/" + name)
        assert status == 200 and body, name
    assert b"MIT License" in get(url + "static/vendor/uPlot.LICENSE.txt")[2]
    assert get(url + "static/../server.py")[0] == 404


def test_an_open_page_learns_what_changed_since_what_it_shows(served, published):
    dashboard, url = served
    control, snapshots, points = published
    shown = json.loads(get(url + "api/overview")[2])["version"]
    assert json.loads(get(url + f"api/changes?since={shown}")[2]) == \
        {"version": shown, "restarted": False, "changed": []}
    with dashboard.lock:
        dashboard.board.take("control", None, control[0], published_at=1.0)
    changes = json.loads(get(url + f"api/changes?since={shown}")[2])
    assert changes["changed"] == [json.loads(control[0])["experiment"]]
    assert changes["version"] == shown + 1
    # a page that saw a dashboard before this one restarted fetches everything again
    assert json.loads(get(url + "api/changes?since=99999")[2])["restarted"] is True


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rollguard.cli", "dashboard", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.kafka
def test_a_taken_port_is_one_sentence(kafka_bootstrap):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--port", str(port), "-b", kafka_bootstrap)
    assert result.returncode == 1
    assert f"Port {port} on 127.0.0.1 is taken" in result.stderr
    assert "choose another with --port" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_unreachable_broker_is_one_sentence():
    began = time.monotonic()
    result = run_cli("--port", "0", "-b", "127.0.0.1:1")
    assert result.returncode == 1 and time.monotonic() - began < 30
    assert "No Kafka broker answers at 127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_every_file_the_pages_load_ships_in_the_package():
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["rollguard.dashboard"]
    package = root / "rollguard" / "dashboard"
    files = [p.relative_to(package).as_posix() for p in (package / "static").rglob("*")
             if p.is_file()]
    assert {"static/index.html", "static/dashboard.js", "static/vendor/uPlot.iife.min.js",
            "static/vendor/uPlot.LICENSE.txt"} <= set(files)
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), \
            f"{name} is not package data in pyproject.toml"
    page = (package / "static" / "index.html").read_text()
    assert "http://" not in page and "https://" not in page, "nothing from elsewhere"
