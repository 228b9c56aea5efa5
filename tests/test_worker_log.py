"""The worker's log, as a person or a log shipper reads it: a start line, a line per decision
with its reason, a rate-limited summary of dead letters, a stop line; no terminal escape
codes in a file; and with ``--log-format json`` one JSON object per line."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import re
import sys
import uuid

import pytest

from rollguard.logs import (DeadLetterSummary, JsonFormatter, faust_logging_config,
                            log_decision, quiet_spinner, setup_logging)
from rollguard.schemas import load_experiments
from rollguard.streams.topics import TopicNames
from tests.kafka_helpers import WorkerProcess, produce_events, read_topic, wait_for
from tests.test_worker_kafka import EXPERIMENTS, replay_of, traffic


# -- without a broker -----------------------------------------------------------------------------
def _json_line(logger_name: str, emit) -> dict:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(logger_name)
    logger.handlers[:], logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    emit(logger)
    [line] = stream.getvalue().splitlines()
    return json.loads(line)


def test_a_json_line_has_time_level_logger_message_and_its_fields():
    line = _json_line("rollguard.test.json", lambda logger: log_decision(
        {"experiment": "e", "seq": 7, "action": "rollback", "ts": 12.5, "reason": "worse."},
        logger=logger))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert (line["level"], line["logger"]) == ("INFO", "rollguard.test.json")
    assert line["message"] == "decision: e seq 7 rollback: worse."
    assert (line["experiment"], line["seq"], line["action"], line["reason"]) == \
        ("e", 7, "rollback", "worse.")


def test_a_json_line_carries_an_exception_on_one_line():
    def emit(logger):
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("it failed")
    line = _json_line("rollguard.test.exc", emit)
    assert line["message"] == "it failed" and "ValueError: boom" in line["exception"]


def test_dead_letters_are_summarised_at_most_once_per_30_s():
    now = [0.0]
    summary = DeadLetterSummary(every=30.0, clock=lambda: now[0])
    assert summary.line() is None  # nothing to say
    summary.add({"deadletter:predictions:not_json": 2, "deadletter:labels:missing": 1,
                 "late_predictions": 5})
    now[0] = 4.0
    assert summary.line() == "dead letters in the last 4 s: 2 not_json on predictions, " \
                             "1 missing on labels"
    summary.add({"deadletter:predictions:not_json": 1})
    now[0] = 20.0
    assert summary.line() is None  # 16 s after the last line: it waits
    summary.add({"deadletter:requests:unknown_experiment": 4})
    now[0] = 34.5
    assert summary.line() == "dead letters in the last 30 s: 4 unknown_experiment on " \
                             "requests, 1 not_json on predictions"
    summary.add({"deadletter:labels:nan": 1})
    now[0] = 40.0
    assert summary.line() is None and summary.line(force=True).endswith("1 nan on labels")


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_fausts_spinner_is_off_unless_stdout_is_a_terminal():
    class Worker:
        spinner = object()
    piped, terminal = Worker(), Worker()
    quiet_spinner(piped, _Stream(tty=False))
    quiet_spinner(terminal, _Stream(tty=True))
    assert piped.spinner is None and terminal.spinner is not None


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_fausts_own_lines_take_the_chosen_format(fmt, capsys):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    rollguard_logger = logging.getLogger("rollguard")
    saved_rollguard = rollguard_logger.handlers[:], rollguard_logger.level, \
        rollguard_logger.propagate
    try:
        setup_logging("INFO", fmt)
        logging.config.dictConfig(faust_logging_config("WARNING"))
        logging.getLogger("faust.transport").warning("Heartbeat failed")
        logging.getLogger("faust.transport").info("not shown below WARNING")
        err = capsys.readouterr().err
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        rollguard_logger.handlers[:] = saved_rollguard[0]
        rollguard_logger.setLevel(saved_rollguard[1])
        rollguard_logger.propagate = saved_rollguard[2]
    [line] = err.splitlines()
    assert "\x1b" not in line
    if fmt == "json":
        assert json.loads(line)["message"] == "Heartbeat failed"
        assert json.loads(line)["logger"] == "faust.transport"
    else:
        assert line.endswith(" WARNING faust.transport: Heartbeat failed")


def test_an_unknown_log_format_is_one_sentence(tmp_path):
    import subprocess

    path = tmp_path / "e.yaml"
    path.write_text(EXPERIMENTS)
    done = subprocess.run([sys.executable, "-m", "rollguard.cli", "worker", str(path),
                           "--log-format", "xml", "-b", "127.0.0.1:1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: --log-format must be text or json, got 'xml'."


# -- a real run -----------------------------------------------------------------------------------
ESCAPES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # ESC, backspace … (tab and newline allowed)


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_log_of_a_real_run(fmt, kafka_bootstrap, topic_prefix, tmp_path):
    names = TopicNames(topic_prefix)
    path = tmp_path / "experiments.yaml"
    path.write_text(EXPERIMENTS)
    events = traffic()
    bad = [("predictions", b"n1", b"{not json"), ("predictions", b"n2", b"not json either"),
           ("labels", b"m1", b'{"ts": 5.0, "label": 1}')]
    produce_events(kafka_bootstrap, names, events, raw=bad)
    _, expected = replay_of(load_experiments(path), events)
    app_id = f"app-{uuid.uuid4().hex[:6]}"
    proc = WorkerProcess(kafka_bootstrap, path, topic_prefix, app_id, tmp_path / "data",
                         tmp_path / "worker.log", "--log-format", fmt)
    with proc:
        wait_for(lambda: len(read_topic(kafka_bootstrap, names.control)) >= len(expected), 90)
        wait_for(lambda: "dead letters in the last" in proc.log_text(), 30)
        assert proc.stop() == 0
    raw = proc.log.read_bytes()
    text = raw.decode("utf-8")
    assert not ESCAPES.search(text), f"control characters in the log: {text[:200]!r}"
    assert "Traceback" not in text

    if fmt == "json":
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        for line in lines:
            assert {"time", "level", "logger", "message"} <= set(line), line
    else:
        pattern = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+) ([\w.]+): (.*)$")
        lines = []
        for line in text.splitlines():
            match = pattern.match(line)
            assert match, f"not a log line: {line!r}"
            lines.append({"level": match.group(1), "logger": match.group(2),
                          "message": match.group(3)})
    messages = [line["message"] for line in lines]

    [start] = [m for m in messages if m.startswith(f"rollguard worker {app_id} on ")]
    assert f" on {kafka_bootstrap}: experiments better, worse;" in start
    assert "(3 partitions)" in start

    decisions = [line for line in lines if line["message"].startswith("decision: ")]
    assert [line["message"] for line in decisions] and len(decisions) == len(expected)
    for event in expected:
        wanted = f"decision: {event['experiment']} seq {event['seq']} {event['action']}: " \
                 f"{event['reason']}"
        [line] = [line for line in decisions if line["message"] == wanted]
        if fmt == "json":
            assert (line["experiment"], line["seq"], line["action"], line["reason"]) == \
                (event["experiment"], event["seq"], event["action"], event["reason"])

    # the dead letters by reason: in one line, unless they came in checkpoints on either side
    # of a line (the next waits 30 s, or for the stop)
    summaries = [line for line in lines if line["message"].startswith("dead letters in the last")]
    counted: dict[str, int] = {}
    for summary in summaries:
        assert summary["level"] == "WARNING"
        listed = re.fullmatch(r"dead letters in the last \d+ s: (.*)", summary["message"])
        for n, problem, kind in re.findall(r"(\d+) (\w+) on (\w+)", listed.group(1)):
            counted[f"{kind}:{problem}"] = counted.get(f"{kind}:{problem}", 0) + int(n)
        if fmt == "json":
            assert sum(summary["dead_letters"].values()) == sum(
                int(n) for n in re.findall(r"(\d+) \w+ on", summary["message"]))
    assert counted == {"predictions:not_json": 2, "labels:missing": 1}
    assert len(summaries) <= 2

    assert re.fullmatch(rf"rollguard worker {app_id} stopped after \d+ s: "
                        rf"{len(expected)} decisions published by this worker", messages[-1])
