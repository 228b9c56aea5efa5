"""One join partition: offsets make replays harmless, bad input is dead-lettered, a bug in
the core dead-letters the message instead of stopping the worker, state survives a restart."""

from __future__ import annotations

import json
import math

import pytest

from rollguard.schemas import parse_experiments
from rollguard.streams.partition import JoinPartition

EXPERIMENT = """
name: e
task: binary
mode: shadow
champion: m:1
candidates: [m:2]
primary: {metric: accuracy}
allowed_lateness: 1s
"""


def exp(text=EXPERIMENT):
    return parse_experiments(text, "x.yaml")


def prediction(rid, version, ts, served):
    return json.dumps({"request_id": rid, "experiment": "e", "ts": ts, "model": "m",
                       "version": version, "served": served, "prediction": 1}).encode()


def test_messages_below_the_restored_offsets_change_nothing():
    part = JoinPartition(0, exp())
    part.on_message("predictions", 0, b"r1", prediction("r1", "1", 1.0, True))
    part.on_message("predictions", 1, b"r1", prediction("r1", "2", 1.0, False))
    meta = json.loads(json.dumps(part.meta()))
    restored = JoinPartition(0, exp())
    restored.load_meta(meta)
    restored.on_message("predictions", 1, b"r1", prediction("r1", "2", 1.0, False))  # a replay
    assert restored.events_since_settle == 0 and restored.joiner.pending() == 0
    restored.on_message("predictions", 2, b"r2", prediction("r2", "1", 2.0, True))
    assert restored.joiner.pending() == 1


def test_a_bug_in_the_core_dead_letters_the_message_and_the_partition_goes_on(monkeypatch):
    part = JoinPartition(3, exp())

    def broken(event):
        raise KeyError("boom")

    monkeypatch.setattr(part.joiner, "on_label", broken)
    part.on_message("labels", 7, b"r1", b'{"request_id": "r1", "ts": 1, "label": 1}')
    [dead] = part.take_dead_letters()
    assert dead.partition == 3 and dead.offset == 7
    assert "could not be processed" in dead.error and dead.error.endswith(".")
    part.on_message("predictions", 0, b"r1", prediction("r1", "1", 1.0, True))
    assert part.joiner.pending() == 1


def test_every_experiment_gets_a_batch_with_the_frontier_even_without_records():
    [one] = exp()
    two = parse_experiments(EXPERIMENT.replace("name: e", "name: f"), "y.yaml")[0]
    part = JoinPartition(0, [one, two])
    part.on_message("predictions", 0, b"r1", prediction("r1", "1", 10.0, True))
    batches = dict(part.settle())
    assert set(batches) == {"e", "f"}
    assert batches["f"].records == [] and batches["f"].frontier == 9.0
    idle = dict(part.settle(quiet=True))
    assert idle["e"].frontier == math.inf, "read to the end and quiet: idle"


def test_state_built_for_another_definition_is_refused():
    part = JoinPartition(0, exp())
    meta = part.meta()
    changed = JoinPartition(0, exp(EXPERIMENT.replace("accuracy", "brier")))
    with pytest.raises(ValueError, match="experiment 'e' differs"):
        changed.load_meta(meta)


def test_webhooks_may_change_on_a_running_experiment_but_nothing_else():
    from rollguard.schemas import parse_experiments
    from rollguard.streams.partition import fingerprint

    base = ("{name: e, task: binary, mode: shadow, champion: m:1, candidates: [m:2], "
            "primary: {metric: accuracy}%s}")
    [plain] = parse_experiments(base % "", "a.yaml")
    [hooked] = parse_experiments(base % ", notify: [{url: 'https://example.com/hook'}]", "b.yaml")
    [other] = parse_experiments(base % ", min_samples: 7", "c.yaml")
    assert fingerprint(plain) == fingerprint(hooked)
    assert fingerprint(plain) != fingerprint(other)
    assert fingerprint(plain) == __import__("hashlib").sha256(
        plain.to_dict_json().encode()).hexdigest()[:16], "state saved before stays valid"
