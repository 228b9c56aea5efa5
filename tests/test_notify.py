"""Webhook notifications without a broker: the payload a hook receives, the `notify:` key of
the experiment file, and the attempts against a real local HTTP server (http.server in a
thread) that answers, fails with 500s, hangs past the timeout, or is not there at all."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest

from rollguard.notify import Notifier, deliver, encode_payload, payload, redact, slack_text
from rollguard.schemas.experiment import CONTROL_ACTIONS, ExperimentError, parse_experiments


# -- a local hook -----------------------------------------------------------------------------
class Hook:
    """A local HTTP server recording every POST; ``behave(n)`` picks the answer to the n-th
    request (from 1): an HTTP status, ``("hang", seconds)``, or ``(status, headers)``."""

    def __init__(self, behave: Callable[[int], object] = lambda n: 200) -> None:
        self.behave = behave
        self.requests: list[dict] = []  # {"at", "path", "headers", "body", "json"}
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with hook.lock:
                    hook.requests.append({"at": time.time(), "path": self.path,
                                          "headers": dict(self.headers), "body": body})
                    n = len(hook.requests)
                answer = hook.behave(n)
                headers = {}
                if isinstance(answer, tuple) and answer[0] == "hang":
                    time.sleep(answer[1])
                    answer = 200
                elif isinstance(answer, tuple):
                    answer, headers = answer
                try:
                    self.send_response(answer)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False  # a hanging answer does not hold the test up
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self) -> list[dict]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "Hook":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


EVENT = {
    "experiment": "churn-v7", "seq": 3, "ts": 1700000279.5, "action": "rollback",
    "mode": "canary", "champion": "churn:6", "traffic": {"churn:6": 1.0}, "shadow": [],
    "reason": "churn:7 is rolled back: its p99 latency is more than 1.2 x the champion's "
              "(ratio > 1.31 with 95% confidence) & its errors < 1%.",
    "evidence": {
        "metric": "accuracy", "alpha": 0.05, "margin": 0.01, "min_samples": 500,
        "records": 1200, "traffic": {"churn:6": 1.0},
        "candidates": {"churn:7": {
            "alpha": 0.05, "status": "dropped", "n": {"churn:6": 600, "churn:7": 580},
            "delta": {"estimate": 0.01, "lower": -0.02, "upper": 0.04, "margin": 0.01,
                      "paired": False, "method": "betting CS (Waudby-Smith & Ramdas 2023)"},
            "guardrails": [{"guardrail": "latency_p99_ms <= 1.2 x champion", "status": "fail",
                            "method": "two-sample sequential test", "e_fail": 31.2,
                            "arms": {"champion": {"n": 600}, "candidate": {"n": 580}}}]}},
        "canary_step": {"step": 1, "share": 0.05, "outcomes": 580}}}


# -- the payload ------------------------------------------------------------------------------
def test_the_payload_carries_the_decision_and_what_a_receiver_dedupes_on():
    body = payload(EVENT)
    for key in ("experiment", "seq", "ts", "action", "mode", "champion", "traffic", "reason"):
        assert body[key] == EVENT[key]
    assert body["id"] == "churn-v7/3"
    assert json.loads(encode_payload(body)) == body  # JSON as it is posted


def test_the_evidence_is_summarised_without_the_tests_internals():
    evidence = payload(EVENT)["evidence"]
    assert evidence["metric"] == "accuracy" and evidence["records"] == 1200
    assert evidence["traffic"] == {"churn:6": 1.0}
    assert evidence["canary_step"] == {"step": 1, "share": 0.05, "outcomes": 580}
    assert evidence["candidates"] == {"churn:7": {
        "status": "dropped", "n": {"churn:6": 600, "churn:7": 580},
        "delta": {"estimate": 0.01, "lower": -0.02, "upper": 0.04},
        "guardrails": {"latency_p99_ms <= 1.2 x champion": "fail"}}}


def test_the_text_is_one_slack_line():
    text = slack_text({**EVENT, "reason": EVENT["reason"] + "\nsecond line"})
    assert "\n" not in text
    assert text.startswith("rollguard · churn-v7 · rollback (seq 3): churn:7 is rolled back")
    # Slack's three escapes, so that "<" is not read as a link and "&" as an entity
    assert "&lt; 1%" in text and "&amp;" in text and "<" not in text
    assert payload(EVENT)["text"] == slack_text(EVENT)


def test_logs_show_a_hook_without_its_secret_path():
    assert redact("https://hooks.slack.com/services/T0/B0/SECRET") == "https://hooks.slack.com/…"
    assert redact("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"


# -- attempts ---------------------------------------------------------------------------------
def test_a_hook_that_answers_gets_one_json_post():
    with Hook() as hook:
        result = deliver(hook.url(), encode_payload(payload(EVENT)),
                         headers={"Idempotency-Key": "churn-v7/3"})
        assert result.ok and result.attempts == 1 and result.status == 200
        [request] = hook.requests
        assert request["headers"]["Content-Type"] == "application/json"
        assert request["headers"]["Idempotency-Key"] == "churn-v7/3"
        assert json.loads(request["body"])["reason"] == EVENT["reason"]


def test_500s_are_tried_again_with_growing_pauses_until_it_answers():
    with Hook(lambda n: 500 if n < 3 else 200) as hook:
        result = deliver(hook.url(), b"{}", attempts=5, backoff=0.2)
        assert result.ok and result.attempts == 3
        at = [r["at"] for r in hook.requests]
        assert at[1] - at[0] >= 0.18 and at[2] - at[1] >= 0.38  # 0.2 s, then 0.4 s


def test_a_hook_that_keeps_failing_is_given_up_after_its_attempts():
    with Hook(lambda n: 500) as hook:
        result = deliver(hook.url(), b"{}", attempts=3, backoff=0.05)
        assert not result.ok and result.attempts == 3 and len(hook.requests) == 3
        assert result.status == 500 and result.problem.startswith("HTTP 500")


def test_a_hook_that_does_not_answer_in_time_is_tried_again_then_given_up():
    with Hook(lambda n: ("hang", 3.0)) as hook:
        began = time.monotonic()
        result = deliver(hook.url(), b"{}", timeout=0.3, attempts=2, backoff=0.1)
        took = time.monotonic() - began
        assert not result.ok and result.attempts == 2 and len(hook.requests) == 2
        assert result.problem == "no answer within 0.3 s"
        assert took < 2.0, "each attempt waits the timeout, not the hook"


def test_a_hook_that_is_down_is_given_up_after_its_attempts():
    result = deliver(f"http://127.0.0.1:{closed_port()}/hook", b"{}", attempts=3, backoff=0.05)
    assert not result.ok and result.attempts == 3 and result.problem == "connection refused"


def test_a_client_error_or_a_redirect_is_not_tried_again():
    with Hook(lambda n: 404) as hook:
        result = deliver(hook.url(), b"{}", attempts=5, backoff=0.05)
        assert not result.ok and result.attempts == 1 and result.problem.startswith("HTTP 404")
    with Hook(lambda n: (302, {"Location": "http://127.0.0.1:1/elsewhere"})) as hook:
        result = deliver(hook.url(), b"{}", attempts=5, backoff=0.05)
        assert not result.ok and result.attempts == 1 and "redirect" in result.problem


def test_429_waits_as_long_as_retry_after_asks():
    with Hook(lambda n: (429, {"Retry-After": "0.5"}) if n == 1 else 200) as hook:
        result = deliver(hook.url(), b"{}", attempts=3, backoff=0.01)
        assert result.ok and result.attempts == 2
        assert hook.requests[1]["at"] - hook.requests[0]["at"] >= 0.45


def test_stopping_abandons_the_pauses():
    with Hook(lambda n: 500) as hook:
        stop_at = time.monotonic() + 0.3
        result = deliver(hook.url(), b"{}", attempts=10, backoff=5.0,
                         should_stop=lambda: time.monotonic() > stop_at)
        assert result.abandoned and not result.ok and result.attempts == 1


# -- the notifier's handling of one control message (no broker) ----------------------------------
def _hooks(text: str):
    [exp] = parse_experiments(BASE + text, "experiments.yaml")
    return exp


BASE = """
name: churn-v7
task: binary
mode: shadow
champion: churn:6
candidates: [churn:7]
primary: {metric: accuracy}
"""


def test_one_decision_goes_to_the_hooks_that_list_its_action(caplog):
    with Hook() as good, Hook(lambda n: 500) as bad:
        exp = _hooks(f"""
notify:
  - {{url: "{good.url('/all')}"}}
  - {{url: "{good.url('/promotions')}", actions: [promote]}}
  - {{url: "{bad.url()}", attempts: 2}}
""")
        notifier = Notifier("127.0.0.1:1", "t.control", "g", {exp.name: exp.notify},
                            backoff=0.05)
        with caplog.at_level(logging.INFO, logger="rollguard.notify"):
            assert notifier.handle(b"churn-v7", json.dumps(EVENT).encode()) is True
            start = {**EVENT, "seq": 1, "action": "start"}
            assert notifier.handle(b"churn-v7", json.dumps(start).encode()) is True
            assert notifier.handle(b"another", json.dumps(EVENT).encode()) is True
        assert [r["path"] for r in good.requests] == ["/all"]  # not start, not another's
        assert len(bad.requests) == 2
        [line] = [r for r in caplog.records if "gave up" in r.getMessage()]
        assert line.levelno == logging.WARNING
        message = line.getMessage()
        assert message.startswith(f"notifications: gave up posting churn-v7 seq 3 (rollback) "
                                  f"to http://127.0.0.1:{bad.port}/… after 2 attempts in ")
        assert "HTTP 500" in message and message.endswith("the decision stands, only this "
                                                          "post is lost.")
        assert notifier.posted == 1 and notifier.given_up == 1


def test_a_stopping_notifier_leaves_an_unfinished_message_uncommitted():
    with Hook(lambda n: 500) as bad:
        exp = _hooks(f'notify: [{{url: "{bad.url()}", attempts: 10}}]')
        notifier = Notifier("127.0.0.1:1", "t.control", "g", {exp.name: exp.notify},
                            backoff=5.0)
        notifier._deadline = time.monotonic() + 0.2
        notifier._stop_asked.set()
        assert notifier.handle(b"churn-v7", json.dumps(EVENT).encode()) is False


# -- the experiment file's notify: ---------------------------------------------------------------
def test_notify_defaults_to_every_decision_but_start():
    exp = _hooks('notify: [{url: "https://hooks.slack.com/services/T0/B0/X"}]')
    [hook] = exp.notify
    assert hook.actions == tuple(a for a in CONTROL_ACTIONS if a != "start")
    assert {"set_traffic", "promote", "rollback", "hold", "complete"} <= set(hook.actions)
    assert (hook.timeout, hook.attempts) == (5.0, 5)
    assert parse_experiments(exp.to_dict_json(), "again.json") == [exp]


def test_an_experiment_without_notify_writes_no_notify_key():
    # its definition, and so the fingerprint the worker's state is checked against, is as before
    assert "notify" not in _hooks("").to_dict()


@pytest.mark.parametrize("entry, key, says", [
    ('{url: "ftp://hooks.example.com/x"}', "notify[0].url", "must be an http or https URL"),
    ('{url: "hooks.slack.com/services/x"}', "notify[0].url", "must be an http or https URL"),
    ('{url: "http://example.com:99999/x"}', "notify[0].url", "port from 1 to 65535"),
    ('{url: "https://a.example/x", actions: [promote, promte]}', "notify[0].actions[1]",
     "must be one of"),
    ('{url: "https://a.example/x", actions: [promote, promote]}', "notify[0].actions",
     "lists promote twice"),
    ('{url: "https://a.example/x", timeout: 2m}', "notify[0].timeout", "at most 60s"),
    ('{url: "https://a.example/x", attempts: 0}', "notify[0].attempts", "between 1 and 10"),
    ('{url: "https://a.example/x", secret: 1}', "notify[0].secret", "is not a known key"),
    ('{actions: [promote]}', "notify[0].url", "is missing"),
])
def test_a_bad_hook_is_one_sentence_naming_its_key(entry, key, says):
    with pytest.raises(ExperimentError) as caught:
        _hooks(f"notify: [{entry}]")
    message = str(caught.value)
    assert message.startswith(f"experiments.yaml: experiment 'churn-v7': key '{key}' ")
    assert says in message and message.endswith(".") and "\n" not in message


def test_the_same_url_twice_is_refused():
    with pytest.raises(ExperimentError, match=r"notify\[1\].url' repeats notify\[0\]"):
        _hooks('notify: [{url: "https://a.example/x"}, {url: "https://a.example/x"}]')


def test_a_message_that_is_not_a_control_event_is_skipped_with_a_warning(caplog):
    exp = _hooks('notify: [{url: "http://127.0.0.1:1/hook"}]')
    notifier = Notifier("127.0.0.1:1", "t.control", "g", {exp.name: exp.notify})
    with caplog.at_level(logging.WARNING, logger="rollguard.notify"):
        assert notifier.handle(b"churn-v7", b"{not json") is True
        assert notifier.handle(b"churn-v7", b'{"seq": 1}') is True
    assert [r.getMessage() for r in caplog.records] == [
        "notifications: a message of t.control for churn-v7 is not a control event; skipped"] * 2


def test_a_worker_notifies_only_when_an_experiment_has_hooks():
    from rollguard.agents.runtime import WorkerConfig
    from rollguard.streams.topics import TopicNames

    quiet = WorkerConfig("b:9092", [_hooks("")], names=TopicNames("p."), app_id="app")
    assert Notifier.for_worker(quiet) is None
    loud = WorkerConfig("b:9092", [_hooks('notify: [{url: "http://h.example/x"}]')],
                        names=TopicNames("p."), app_id="app", instance_id="w1")
    notifier = Notifier.for_worker(loud)
    assert (notifier.topic, notifier.group, notifier.instance_id) == \
        ("p.control", "app-notify", "w1-notify")
    assert list(notifier.hooks) == ["churn-v7"]
