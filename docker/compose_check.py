"""What .ci/compose checks of a running `docker compose up`, through Kafka's published port.

Run inside the rollguard image on the host's network (so 127.0.0.1:PORT is the published
port), with the experiments file the workers run:

    python compose_check.py wait first|final  -b 127.0.0.1:PORT --topic-prefix rollguard. \
        --experiments /app/rollguard/demo/experiments.yaml --timeout 300
    python compose_check.py compare -b 127.0.0.1:PORT --topic-prefix rollguard. \
        --experiments /app/rollguard/demo/experiments.yaml
    python compose_check.py evaluator loan-canary-v2 --members 3 -b 127.0.0.1:PORT ...
    python compose_check.py deciding loan-canary-v2 --killed-at EPOCH_MS -b 127.0.0.1:PORT ...

``wait first`` returns at the first decision (a control event other than ``start``), ``wait
final`` once every experiment has its final one; both print the control events as they come.
``compare`` reads every committed control event and checks that it equals, field by field,
what ``rollguard replay EXPERIMENTS --from-kafka`` makes of the input topics, and that each
was published once. ``evaluator`` waits until the consumer group is stable with ``--members``
members, and prints the address of the worker that evaluates an experiment (its consumer owns
the experiment's partition of the internal outcomes topic). ``deciding`` checks that an
experiment had published no verdict (promote, rollback, hold, complete) before a moment (the
Kafka timestamps of its committed control events, the worker's clock): that a worker killed
then was killed while the experiment was still deciding. Each failure is one sentence on
stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def fail(sentence: str) -> None:
    sys.stdout.flush()  # the sentence comes last in a log of both
    print(sentence, file=sys.stderr)
    sys.exit(1)


def experiment_names(path: str) -> list[str]:
    from rollguard.schemas import load_experiments

    return [e.name for e in load_experiments(path)]


def wait(args: argparse.Namespace) -> None:
    from rollguard.status import Follower, StatusError, is_final

    names = experiment_names(args.experiments)
    deadline = time.monotonic() + args.timeout
    follower = None
    while follower is None:
        try:
            follower = Follower(args.bootstrap_servers, args.topic_prefix)
        except StatusError as exc:
            if time.monotonic() > deadline:
                fail(f"Kafka did not answer on its published port: {exc}")
            time.sleep(1)
    seen: set[tuple[str, int]] = set()
    began = time.monotonic()
    with follower:
        while True:
            follower.poll(0.5)
            views = follower.views
            for name in sorted(views):
                for event in views[name].history:
                    if (name, event["seq"]) not in seen:
                        seen.add((name, event["seq"]))
                        print(f"[{time.monotonic() - began:6.1f} s] {name} seq {event['seq']} "
                              f"{event['action']}", flush=True)
            decided = [n for n in names if n in views
                       and any(e["action"] != "start" for e in views[n].history)]
            final = [n for n in names if n in views and views[n].control is not None
                     and is_final(views[n].control)]
            if (args.until == "first" and decided) or (args.until == "final"
                                                        and len(final) == len(names)):
                return
            if time.monotonic() > deadline:
                missing = [n for n in names if n not in (final if args.until == "final"
                                                         else decided)]
                fail(f"No {'decision' if args.until == 'first' else 'final decision'} for "
                     f"{', '.join(missing)} within {args.timeout:g} s.")


#: the actions that give an experiment's verdict: after one, it is no longer deciding
VERDICTS = ("promote", "rollback", "hold", "complete")


def control_events(bootstrap: str, topic: str) -> list[dict]:
    """Every committed message of the control topic, in order."""
    return [event for _, event in control_messages(bootstrap, topic)]


def control_messages(bootstrap: str, topic: str) -> list[tuple[int, dict]]:
    """Every committed message of the control topic, in order: (its Kafka timestamp in ms,
    the event)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "rollguard-compose-check",
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "enable.partition.eof": True})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            fail(f"The control topic {topic} cannot be read ({meta.error}).")
        parts = [TopicPartition(topic, p, 0) for p in meta.partitions]
        consumer.assign(parts)
        remaining, events = {p.partition for p in parts}, []
        deadline = time.monotonic() + 30
        while remaining and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        remaining.discard(msg.partition())
                    continue
                if msg.value() is not None:
                    events.append((msg.timestamp()[1], json.loads(msg.value())))
        if remaining:
            fail(f"The control topic {topic} could not be read to its end within 30 s.")
        return events
    finally:
        consumer.close()


def compare(args: argparse.Namespace) -> None:
    live = control_events(args.bootstrap_servers, f"{args.topic_prefix}control")
    began = time.monotonic()
    proc = subprocess.run(
        ["rollguard", "replay", args.experiments, "--from-kafka", "-b", args.bootstrap_servers,
         "--topic-prefix", args.topic_prefix], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        fail(f"rollguard replay failed with code {proc.returncode}: "
             f"{proc.stderr.strip().splitlines()[-1:] or ''}")
    replayed = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    key = lambda e: (e["experiment"], e["seq"])  # noqa: E731
    twice = sorted({key(e) for e in live if sum(key(f) == key(e) for f in live) > 1})
    if twice:
        fail(f"Control events were published more than once: {twice}.")
    live, replayed = sorted(live, key=key), sorted(replayed, key=key)
    brief = lambda events: [(e["experiment"], e["seq"], e["action"]) for e in events]  # noqa: E731
    if brief(live) != brief(replayed):
        fail(f"The control topic holds {brief(live)} but replay makes {brief(replayed)}.")
    for a, b in zip(live, replayed):
        for field in sorted(set(a) | set(b)):
            if a.get(field) != b.get(field):
                fail(f"{key(b)} differs in {field}: live {a.get(field)!r}, replay "
                     f"{b.get(field)!r}.")
    print(f"The {len(live)} control events on {args.topic_prefix}control equal rollguard "
          f"replay's over the same topics ({time.monotonic() - began:.1f} s), each published "
          f"once: {', '.join(f'{e[0]} {e[2]}' for e in brief(live) if e[2] != 'start')}.")


def deciding(args: argparse.Namespace) -> None:
    """Fail unless the experiment had published no verdict before ``--killed-at``."""
    experiment, killed_at = args.until_or_name, args.killed_at
    if killed_at is None:
        fail("deciding: say --killed-at, the kill's time in milliseconds since the epoch.")
    events = [(ts, e) for ts, e in control_messages(args.bootstrap_servers,
                                                    f"{args.topic_prefix}control")
              if e.get("experiment") == experiment]
    for ts, e in events:  # the log: each event's time to the kill
        print(f"{(ts - killed_at) / 1000:+8.1f} s  {experiment} seq {e['seq']} {e['action']}")
    before = [(ts, e) for ts, e in events if ts <= killed_at]
    if not before:
        fail(f"{experiment} had published no control event, not even its start, before the "
             f"kill, so the kill did not land while it was deciding.")
    ts, last = before[-1]
    ago = (killed_at - ts) / 1000
    if last["action"] in VERDICTS:
        fail(f"{experiment} had already published {last['action']} (seq {last['seq']}) "
             f"{ago:.1f} s before the kill, so the kill did not land while it was deciding.")
    after = [f"{e['action']} {(ts - killed_at) / 1000:.1f} s after" for ts, e in events
             if ts > killed_at]
    print(f"{experiment} was still deciding: its last event before the kill was "
          f"{last['action']} (seq {last['seq']}, {ago:.1f} s before)"
          + (f"; then {', '.join(after)}" if after else ""))


def evaluator(args: argparse.Namespace) -> None:
    """Print the address of the worker whose consumer owns the partition of the internal
    outcomes topic that an experiment's records go to: the worker that evaluates it, once the
    group is stable with ``--members`` members."""
    from confluent_kafka import Consumer, ConsumerGroupState, TopicPartition
    from confluent_kafka.admin import AdminClient

    experiment = args.until_or_name
    topic = f"{args.topic_prefix}{args.app_id}.outcomes"
    deadline = time.monotonic() + args.timeout
    consumer = Consumer({"bootstrap.servers": args.bootstrap_servers, "enable.auto.commit": False,
                         "group.id": "rollguard-compose-check"})
    partition = None
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        while partition is None and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error() is None and msg.key() == experiment.encode():
                    partition = msg.partition()
                    break
    finally:
        consumer.close()
    if partition is None:
        fail(f"No record of {experiment} on {topic} within {args.timeout:g} s.")
    admin = AdminClient({"bootstrap.servers": args.bootstrap_servers})
    while True:
        group = admin.describe_consumer_groups([args.app_id])[args.app_id].result(timeout=10)
        owners = [member.host.lstrip("/") for member in group.members
                  if any(tp.topic == topic and tp.partition == partition
                         for tp in (member.assignment.topic_partitions
                                    if member.assignment else []))]
        if group.state == ConsumerGroupState.STABLE and len(group.members) == args.members \
                and owners:
            print(owners[0])
            return
        if time.monotonic() > deadline:
            fail(f"The consumer group {args.app_id} was not stable with {args.members} members, "
                 f"one of them owning {topic}[{partition}], within {args.timeout:g} s (it is "
                 f"{group.state.name.lower()} with {len(group.members)}).")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["wait", "compare", "evaluator", "deciding"])
    parser.add_argument("until_or_name", nargs="?", default="final",
                        help="wait: first or final; evaluator, deciding: the experiment")
    parser.add_argument("--app-id", default="rollguard")
    parser.add_argument("-b", "--bootstrap-servers", required=True)
    parser.add_argument("--topic-prefix", default="rollguard.")
    parser.add_argument("--experiments", required=True)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--members", type=int, default=1,
                        help="evaluator: the members the group must have")
    parser.add_argument("--killed-at", type=int,
                        help="deciding: the kill's time, milliseconds since the epoch")
    args = parser.parse_args()
    if args.command == "wait" and args.until_or_name not in ("first", "final"):
        parser.error("wait: say first or final")
    args.until = args.until_or_name
    {"wait": wait, "compare": compare, "evaluator": evaluator,
     "deciding": deciding}[args.command](args)


if __name__ == "__main__":
    main()
