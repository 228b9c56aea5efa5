"""The join's messages to the evaluators (streams/outbox.py): an experiment with nothing new
from a join partition learns its frontier from one message per outcomes partition, so every
evaluator knows every join partition's frontier after each checkpoint, while a checkpoint
writes a message per experiment with news plus one per partition, not one per experiment."""

from __future__ import annotations

import json

from rollguard.replay import Replay
from rollguard.schemas import parse_experiments
from rollguard.streams import outbox
from rollguard.synth import Arm, shadow_events
from tests.test_history import PARTITIONS, by_experiment, live_path

EXPERIMENT = """
- name: {name}
  task: binary
  mode: shadow
  champion: m:1
  candidates: [m:2]
  primary: {{metric: accuracy, margin: 0.01}}
  min_samples: 150
  allowed_lateness: 2s
"""
QUIET = [f"quiet-{i}" for i in range(8)]  # experiments that started, then went quiet


def experiments():
    return parse_experiments("".join(EXPERIMENT.format(name=n) for n in ["busy", *QUIET]),
                             "experiments.yaml")


def traffic() -> list[dict]:
    """A busy experiment over 300 s of event time; each quiet one has 6 requests at its
    start, then nothing: the join has only frontiers to tell their evaluators."""
    events = list(shadow_events("busy", Arm("m:1", 0.8), [Arm("m:2", 0.88)], n=3000, seed=1,
                                label_delay=(1.0, 5.0)))
    for i, name in enumerate(QUIET):
        events += shadow_events(name, Arm("m:1", 0.8), [Arm("m:2", 0.8)], n=6, seed=10 + i,
                                label_delay=(1.0, 2.0), unlabelled=0.0)
    return sorted(events, key=lambda e: e["ts"])


def test_every_evaluator_knows_every_join_partitions_frontier_after_each_checkpoint():
    exps = experiments()
    checked = []

    def every_evaluator_knows(told, evals):
        for part in evals:
            for name, ev in part.evaluators.items():
                assert ev.merge.frontiers == told, (name, ev.merge.frontiers, told)
                checked.append(name)

    control, _ = live_path(exps, traffic(), seed=3, after_checkpoint=every_evaluator_knows)
    assert set(checked) == {"busy", *QUIET}
    expected = Replay(exps).run_lines(json.dumps(e).encode() for e in traffic())
    assert by_experiment(control) == by_experiment(expected)


def test_a_checkpoint_writes_a_message_per_experiment_with_news_and_one_per_partition(
        monkeypatch):
    written = []
    messages = outbox.Outbox.messages

    def counted(self, settled):
        out = messages(self, settled)
        written.append((len(settled), out))
        return out

    monkeypatch.setattr(outbox.Outbox, "messages", counted)
    live_path(experiments(), traffic(), seed=3)
    late = written[len(written) // 2:]  # the quiet experiments have long been introduced
    frontier_messages = [m for _, out in late for m in out if m.partition is not None]
    assert frontier_messages, "the frontier moved, so it was told"
    for _, out in late:
        own = [m for m in out if m.partition is None]
        assert {m.key for m in own} <= {b"busy"}, "quiet experiments get no batch of their own"
        assert len(out) - len(own) <= PARTITIONS  # the frontier: once per partition
