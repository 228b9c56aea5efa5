"""``rollguard status``: each experiment's state, read from what the worker publishes.

Two compacted topics hold it all: ``<prefix>stats`` (the latest statistics snapshot per
experiment, written every snapshot interval) and ``<prefix>control`` (the control events, the
latest per experiment being the state the serving layer applies). :class:`Follower` reads
both from the beginning with ``read_committed`` (the worker writes them in transactions)
and keeps the latest per experiment; :func:`render_experiment` turns them into one table:
mode, arms, traffic, labelled n, the primary metric per arm with Δ and its
confidence-sequence bounds, guardrails, label delay, dead letters, and the decision.

>>> snapshot = {"experiment": "e", "mode": "shadow", "champion": "m:1", "candidates": ["m:2"],
...     "decision": {"seq": 1, "final": None, "last_reason": "started", "champion": "m:1",
...                  "shadow": ["m:2"], "evidence": {"metric": "accuracy", "candidates": {
...         "m:2": {"n": {"m:1": 40, "m:2": 40}, "status": "active", "guardrails": [],
...                 "delta": {"estimate": 0.05, "lower": -0.1, "upper": 0.2}}},
...         "traffic": {"m:1": 1.0}}},
...     "statistics": {"records": 90, "arms": {}, "label_delay": {}}, "counters": {}}
>>> view = ExperimentView("e", snapshot=snapshot)
>>> view.delta("m:2")
(0.05, -0.1, 0.2)
>>> view.traffic()
{'m:1': 1.0}
>>> import io; from rich.console import Console
>>> console = Console(width=100, record=True, color_system=None, file=io.StringIO())
>>> console.print(render_experiment(view))
>>> "+0.050 [-0.100, +0.200]" in console.export_text()
True
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from rollguard.schemas.events import ends_experiment
from rollguard.streams.topics import TopicNames

FINAL = ("promote", "rollback", "hold", "complete")


def is_final(event: dict[str, Any]) -> bool:
    """True for the event that ends an experiment: ``rollback``, ``hold``, ``complete``, or
    a ``promote`` with no bake window after it (docs/events.md).

    >>> is_final({"action": "promote", "champion": "m:2", "traffic": {"m:2": 1}, "shadow": ["m:1"]})
    False
    >>> is_final({"action": "promote", "champion": "m:2", "traffic": {"m:2": 1}, "shadow": []})
    True
    """
    return ends_experiment(event.get("action"), event.get("champion"), event.get("traffic"),
                           event.get("shadow"))
#: the key of the primary metric in an arm's outcome statistics
METRIC_KEY = {"accuracy": "accuracy", "log_loss": "log_loss", "brier": "brier",
              "abs_error": "mae", "sq_error": "mse"}
STATUS_STYLE = {"pass": "green", "fail": "bold red", "undecided": "yellow"}
ACTION_STYLE = {"promote": "bold green", "rollback": "bold red", "hold": "bold yellow",
                "complete": "bold green", "set_traffic": "cyan", "start": "dim",
                "pause": "bold magenta", "resume": "cyan"}


class StatusError(RuntimeError):
    """Status cannot be shown; the message is one sentence saying what to do."""


# -- reading the topics ---------------------------------------------------------------------

@dataclass
class ExperimentView:
    """What the worker published about one experiment: its latest snapshot and control events."""

    name: str
    snapshot: dict[str, Any] | None = None
    snapshot_at: float | None = None         # when the snapshot was written (epoch s)
    control: dict[str, Any] | None = None    # the latest control event (highest seq)
    history: list[dict[str, Any]] = field(default_factory=list)  # control events by seq

    # -- figures ---------------------------------------------------------------------------
    @property
    def decision(self) -> dict[str, Any]:
        return (self.snapshot or {}).get("decision") or {}

    @property
    def evidence(self) -> dict[str, Any]:
        return self.decision.get("evidence") or (self.control or {}).get("evidence") or {}

    @property
    def statistics(self) -> dict[str, Any]:
        return (self.snapshot or {}).get("statistics") or {}

    @property
    def mode(self) -> str:
        return (self.snapshot or self.control or {}).get("mode", "?")

    @property
    def metric(self) -> str:
        return self.evidence.get("metric", "accuracy")

    @property
    def original_champion(self) -> str | None:
        """The champion the experiment started with."""
        if self.snapshot is not None:
            return self.snapshot.get("champion")
        if self.history:
            return self.history[0].get("champion")
        return None

    @property
    def champion(self) -> str | None:
        """Who serves by default now (the promoted candidate after a promote)."""
        if self.control is not None:
            return self.control.get("champion")
        return self.decision.get("champion") or self.original_champion

    def arms(self) -> list[str]:
        champion = self.original_champion
        candidates = list((self.snapshot or {}).get("candidates") or [])
        if not candidates:
            candidates = sorted(self.evidence.get("candidates") or {})
        return [a for a in [champion, *candidates] if a]

    def traffic(self) -> dict[str, float]:
        source = self.control or {}
        traffic = source.get("traffic") or self.evidence.get("traffic") or {}
        return dict(traffic)

    def shadow(self) -> list[str]:
        if self.control is not None:
            return list(self.control.get("shadow") or [])
        return list(self.decision.get("shadow") or [])

    def final(self) -> dict[str, Any] | None:
        """The final decision (see :func:`is_final`), from the control topic or snapshot."""
        if self.control is not None and is_final(self.control):
            return self.control
        final = self.decision.get("final")
        return final or None

    def labelled(self, arm: str) -> int | None:
        outcomes = ((self.statistics.get("arms") or {}).get(arm) or {}).get("outcomes") or {}
        return outcomes.get("count")

    def arm_metric(self, arm: str) -> float | None:
        outcomes = ((self.statistics.get("arms") or {}).get(arm) or {}).get("outcomes") or {}
        return outcomes.get(METRIC_KEY.get(self.metric, self.metric))

    def served(self, arm: str) -> int | None:
        serving = ((self.statistics.get("arms") or {}).get(arm) or {}).get("serving") or {}
        return serving.get("served")

    def track(self, arm: str) -> dict[str, Any]:
        return (self.evidence.get("candidates") or {}).get(arm) or {}

    def delta(self, arm: str) -> tuple[float | None, float | None, float | None]:
        d = self.track(arm).get("delta") or {}
        return d.get("estimate"), d.get("lower"), d.get("upper")

    def test_n(self, arm: str) -> dict[str, int]:
        return dict(self.track(arm).get("n") or {})

    def guardrails(self, arm: str) -> list[tuple[str, str]]:
        return [(g.get("guardrail", "?"), g.get("status", "undecided"))
                for g in self.track(arm).get("guardrails") or []]

    def dead_letters(self) -> tuple[int, int]:
        """(dead letters of this experiment, those of unreadable input no experiment owns)."""
        own = shared = 0
        for key, n in ((self.snapshot or {}).get("counters") or {}).items():
            if "deadletter:" in key:
                if key.startswith("all:"):
                    shared += n
                else:
                    own += n
        return own, shared

    def counter(self, suffix: str) -> int:
        return sum(n for key, n in ((self.snapshot or {}).get("counters") or {}).items()
                   if key.endswith(suffix))


class Follower:
    """Follows the stats and control topics of one prefix; the latest state per experiment.

    ``poll()`` reads what is new (call it as often as you like); ``read_to_end()`` reads
    until the end of both topics as they are now. Neither commits anything.
    """

    def __init__(self, bootstrap: str, topic_prefix: str | None = None,
                 timeout: float = 10.0) -> None:
        from confluent_kafka import Consumer, KafkaException

        from rollguard.kafka.clients import client_config

        self.bootstrap = bootstrap
        self.names = TopicNames(topic_prefix)
        self.views: dict[str, ExperimentView] = {}
        self._consumer = Consumer(client_config(
            bootstrap, **{"group.id": f"rollguard-status-{uuid.uuid4().hex}",
                          "enable.auto.commit": False, "enable.auto.offset.store": False,
                          "isolation.level": "read_committed", "enable.partition.eof": True,
                          "fetch.wait.max.ms": 100, "client.id": "rollguard-status",
                          "socket.connection.setup.timeout.ms": int(timeout * 1000)}))
        try:
            metadata = self._consumer.list_topics(timeout=timeout)
        except KafkaException as exc:
            self._consumer.close()
            raise StatusError(
                f"Kafka at {bootstrap} did not answer ({exc.args[0].str()}): check "
                "--bootstrap-servers and that the broker runs (rollguard kafka status).") from None
        self.topics = [t for t in (self.names.stats, self.names.control) if t in metadata.topics
                       and metadata.topics[t].error is None]
        self._eof: set[tuple[str, int]] = set()
        self._partitions: set[tuple[str, int]] = set()
        if self.topics:
            self._assign(metadata)

    def _assign(self, metadata: Any) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in self.topics
                 for p in metadata.topics[t].partitions]
        self._partitions = {(tp.topic, tp.partition) for tp in parts}
        self._consumer.assign(parts)

    def refresh_topics(self) -> None:
        """Pick up the topics if they did not exist yet (the worker creates them)."""
        if len(self.topics) == 2:
            return
        from confluent_kafka import KafkaException

        try:
            metadata = self._consumer.list_topics(timeout=5.0)
        except KafkaException:
            return
        found = [t for t in (self.names.stats, self.names.control) if t in metadata.topics
                 and metadata.topics[t].error is None]
        if len(found) > len(self.topics):
            self.topics = found
            self._eof.clear()
            self._assign(metadata)

    @property
    def caught_up(self) -> bool:
        return bool(self._partitions) and self._eof >= self._partitions

    def poll(self, timeout: float = 0.0) -> bool:
        """Read what is new; True when something changed."""
        from confluent_kafka import KafkaError

        if not self._partitions:
            self.refresh_topics()
            if not self._partitions:
                return False
        changed = False
        for msg in self._consumer.consume(num_messages=500, timeout=timeout):
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._eof.add((msg.topic(), msg.partition()))
                continue
            self._eof.discard((msg.topic(), msg.partition()))
            changed |= self._take(msg)
        return changed

    def read_to_end(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        self.poll(0.2)
        while self._partitions and not self.caught_up and time.monotonic() < deadline:
            self.poll(0.2)

    def _take(self, msg: Any) -> bool:
        key = msg.key()
        if key is None or msg.value() is None:
            return False
        try:
            name, value = key.decode(), json.loads(msg.value())
        except (UnicodeDecodeError, ValueError):
            return False
        if not isinstance(value, dict):
            return False
        view = self.views.get(name)
        if view is None:
            view = self.views[name] = ExperimentView(name)
        if msg.topic() == self.names.stats:
            view.snapshot = value
            kind, stamp = msg.timestamp()
            view.snapshot_at = stamp / 1000.0 if kind and stamp > 0 else time.time()
            return True
        seq = value.get("seq")
        if not isinstance(seq, int) or any(e.get("seq") == seq for e in view.history):
            return False
        view.history.append(value)
        view.history.sort(key=lambda e: e["seq"])
        view.control = view.history[-1]
        return True

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- rendering ------------------------------------------------------------------------------

def fmt_signed(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.3f}" if abs(x) < 100 else f"{x:+.4g}"


def fmt_num(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if abs(x) < 100 else f"{x:.4g}"


def fmt_count(n: int | None) -> str:
    return "–" if n is None else f"{n:,}"


def fmt_interval(estimate: float | None, lower: float | None, upper: float | None) -> str:
    if estimate is None:
        return "–"
    return f"{fmt_signed(estimate)} [{fmt_signed(lower)}, {fmt_signed(upper)}]"


def _share(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.3g}%"


def _age(at: float | None) -> str:
    if at is None:
        return "no statistics yet"
    seconds = max(0.0, time.time() - at)
    return f"statistics of {seconds:.0f} s ago" if seconds >= 1.5 else "statistics just now"


def _role(view: ExperimentView, arm: str) -> str:
    original, now = view.original_champion, view.champion
    final = view.final() or {}
    if arm == original:
        return "champion" if now == arm else "replaced"
    if arm == now:
        return "promoted"
    if view.track(arm).get("status") == "dropped" or final.get("action") == "rollback":
        return "rolled back"
    if final.get("action") in FINAL:
        return "not promoted"
    return "candidate"


def _traffic_cell(view: ExperimentView, arm: str) -> str:
    traffic, shadow = view.traffic(), view.shadow()
    if traffic.get(arm):
        return _share(traffic[arm])
    return "shadow" if arm in shadow else "0%"


def render_experiment(view: ExperimentView, *, compact: bool = False,
                      reason: bool = True) -> RenderableType:
    """One experiment as a table and a few lines (``compact``: the demo's live display;
    ``reason``: with the last control event's reason)."""
    arms = view.arms()
    original = view.original_champion
    candidates = [a for a in arms if a != original]
    title = Text.assemble((view.name, "bold"), f"  ·  {view.mode}  ·  champion ",
                          (view.champion or "?", "bold"))
    final = view.final()
    if final is not None:
        action = final.get("action", "")
        title.append(f"  ·  {action.upper()}", style=ACTION_STYLE.get(action, ""))
    elif view.control is not None and view.control.get("action") == "promote":
        title.append("  ·  PROMOTED, BAKING", style=ACTION_STYLE.get("promote", ""))
    paused = (view.snapshot or {}).get("decision", {}).get("paused") if final is None else None
    if paused:
        title.append(f"  ·  PAUSED by {paused.get('by')}", style=ACTION_STYLE["pause"])
    alphas = [view.track(a).get("alpha") for a in candidates]
    alpha = min((a for a in alphas if a), default=view.evidence.get("alpha") or 0.05)
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  show_edge=False, expand=False, padding=(0, 1))
    table.add_column("arm", no_wrap=True)
    table.add_column("role", no_wrap=True)
    table.add_column("traffic", justify="right", no_wrap=True)
    table.add_column("labelled", justify="right", no_wrap=True)
    table.add_column(view.metric, justify="right", no_wrap=True)
    table.add_column(f"Δ vs champion, {100 * (1 - alpha):.4g}% CS", justify="right",
                     no_wrap=True)
    for arm in arms:
        delta = "" if arm == original else fmt_interval(*view.delta(arm))
        table.add_row(arm, _role(view, arm), _traffic_cell(view, arm),
                      fmt_count(view.labelled(arm)), fmt_num(view.arm_metric(arm)), delta,
                      style="bold" if arm == view.champion else None)
    lines: list[RenderableType] = [table]
    for arm in candidates:
        n = view.test_n(arm)
        test = "/".join(fmt_count(n.get(a)) for a in (original, arm)) if n else "–"
        lines.append(Text.assemble((f"{arm}  ", "dim"), ("test n ", "dim"), test,
                                   ("  ·  guardrails ", "dim"),
                                   _guardrails_text(view.guardrails(arm))))
    lines.append(_facts(view, compact))
    why = (final or {}).get("reason") or (view.control or {}).get("reason") \
        or view.decision.get("last_reason")
    if why and reason:
        action = (final or view.control or {}).get("action", "")
        label = "decision" if final is not None else "last event"
        lines.append(Text.assemble((f"{label}  ", "dim"),
                                   (f"{action} ", ACTION_STYLE.get(action, "")), why))
    return Group(*lines)


def _join(parts: list[Text], sep: str) -> list[Any]:
    out: list[Any] = []
    for i, part in enumerate(parts):
        if i:
            out.append(sep)
        out.append(part)
    return out


def _guardrails_text(guardrails: list[tuple[str, str]]) -> Text:
    if not guardrails:
        return Text("none")
    text = Text()
    for i, (name, status) in enumerate(guardrails):
        if i:
            text.append(", ")
        text.append(f"{name} ")
        text.append(status, style=STATUS_STYLE.get(status, ""))
    return text


def _facts(view: ExperimentView, compact: bool) -> Text:
    stats = view.statistics
    delay = stats.get("label_delay") or {}
    own, shared = view.dead_letters()
    parts = []
    if delay.get("labels"):
        parts.append(f"label delay p50 {delay.get('delay_p50_s') or 0:.1f} s, "
                     f"p90 {delay.get('delay_p90_s') or 0:.1f} s over "
                     f"{fmt_count(delay.get('labels'))} labels")
        late = (delay.get("late") or 0) + view.counter("late_labels")
        if late:
            parts.append(f"{late:,} late")
    else:
        parts.append("no labels yet")
    unlabelled = view.counter("unlabelled_expired")
    if unlabelled:
        parts.append(f"{unlabelled:,} never labelled (expired)")
    parts.extend(_unpaired(view))
    behind = sum(view.counter(f"late_input:{kind}") for kind in ("requests", "predictions",
                                                                  "labels"))
    if behind:
        parts.append(f"{behind:,} events came in behind the join (late_input: does the "
                     "producer reorder its writes?)")
    dead = f"dead letters {own:,}"
    if shared:
        dead += f" (+{shared:,} unreadable, not tied to an experiment)"
    parts.append(dead)
    evidence = view.evidence
    srm = evidence.get("srm")
    if srm:  # with no records there is no split to test: a "pass" would claim too much
        parts.append(f"SRM {srm.get('status', 'undecided')}" if stats.get("records")
                     else "no traffic yet")
    canary = evidence.get("canary_step")
    if canary and view.final() is None:
        parts.append(f"canary step {canary.get('index')} of {canary.get('of')}")
    bandit = evidence.get("bandit") or {}
    if bandit.get("prob_best"):
        parts.append("P(best) " + ", ".join(f"{a} {p:.2f}" for a, p in bandit["prob_best"].items()))
    if not compact:
        parts.append(f"{fmt_count(stats.get('records'))} records")
        parts.append(_age(view.snapshot_at))
    return Text("  ·  ".join(parts), style="dim")


def _unpaired(view: ExperimentView) -> list[str]:
    """Requests that cannot join (join.py's check_pairs), less those whose parts came late.

    >>> view = ExperimentView("e", {"counters": {"predictions_without_pair": 3,
    ...                                          "requests_without_predictions": 2}}, None)
    >>> _unpaired(view)
    ["3 without every arm's prediction (are candidates scored? route.shadow)", '2 requests without predictions']
    """
    late = view.counter("paired_late")
    unpaired = view.counter("predictions_without_pair")
    lone = view.counter("requests_without_predictions")
    parts = []
    if unpaired + lone > late:
        if unpaired:
            parts.append(f"{unpaired:,} without every arm's prediction (are candidates "
                         "scored? route.shadow)")
        if lone:
            parts.append(f"{lone:,} requests without predictions")
        if late:
            parts.append(f"{late:,} of them completed late")
    return parts


def render_status(views: Iterable[ExperimentView], *, compact: bool = False,
                  reason: bool = True) -> RenderableType:
    blocks: list[RenderableType] = []
    for i, view in enumerate(views):
        if i:
            blocks.append(Text(""))
        blocks.append(render_experiment(view, compact=compact, reason=reason))
    return Group(*blocks)


# -- the command ----------------------------------------------------------------------------

def _selected(follower: Follower, experiment: str | None) -> list[ExperimentView]:
    views = sorted(follower.views.values(), key=lambda v: v.name)
    if experiment is not None:
        views = [v for v in views if v.name == experiment]
    return views


def _nothing_yet(follower: Follower, experiment: str | None, bootstrap: str) -> str:
    prefix = follower.names.prefix
    if not follower.topics:
        return (f"Nothing has been published under the topic prefix '{prefix}' on {bootstrap} "
                f"yet (no {follower.names.stats} or {follower.names.control} topic): start a "
                "worker (rollguard worker) or give the prefix it uses with --topic-prefix.")
    if experiment is not None and follower.views:
        known = ", ".join(sorted(follower.views))
        return (f"No experiment '{experiment}' under the topic prefix '{prefix}': the worker "
                f"has published {known}.")
    return (f"The worker has published no statistics or control event under the topic prefix "
            f"'{prefix}' yet: it publishes once traffic reaches it.")


def show_status(experiment: str | None = None, *, watch: bool = False,
                bootstrap_servers: str | None = None, topic_prefix: str | None = None,
                interval: float = 1.0, duration: float | None = None, timeout: float = 10.0,
                console: Console | None = None) -> None:
    """Print a table per experiment (or only ``experiment``) from the stats and control topics.

    - ``watch``: redraw every ``interval`` seconds until Ctrl-C (or for ``duration`` seconds).
    - ``bootstrap_servers``: default ``KAFKA_BOOTSTRAP_SERVERS``, else ``127.0.0.1:9092``.
    - ``topic_prefix``: default ``ROLLGUARD_TOPIC_PREFIX``, else ``rollguard.``.
    - ``timeout``: seconds to wait for Kafka to answer.

    Raises :class:`StatusError` (one sentence) when Kafka does not answer, or when nothing
    was published yet (without ``watch``; with it, it waits and says so on screen).
    """
    bootstrap = bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:9092"
    console = console or Console(highlight=False)
    wrap, console.soft_wrap = console.soft_wrap, False  # tables wrap at the console's width
    try:
        _show(console, follower_args=(bootstrap, topic_prefix, timeout), experiment=experiment,
              watch=watch, interval=interval, duration=duration)
    finally:
        console.soft_wrap = wrap


def _show(console: Console, *, follower_args: tuple, experiment: str | None, watch: bool,
          interval: float, duration: float | None) -> None:
    bootstrap, topic_prefix, timeout = follower_args
    with Follower(bootstrap, topic_prefix, timeout=timeout) as follower:
        follower.read_to_end()
        if not watch:
            views = _selected(follower, experiment)
            if not views:
                raise StatusError(_nothing_yet(follower, experiment, bootstrap))
            console.print(render_status(views))
            return
        from rich.live import Live

        def screen() -> RenderableType:
            views = _selected(follower, experiment)
            head = Text(f"rollguard status · {bootstrap} · prefix {follower.names.prefix} · "
                        f"{time.strftime('%H:%M:%S')} · Ctrl-C to stop", style="dim")
            body = render_status(views) if views else Text(
                _nothing_yet(follower, experiment, bootstrap), style="yellow")
            return Group(head, Text(""), body)

        until = None if duration is None else time.monotonic() + duration
        try:
            with Live(screen(), console=console, auto_refresh=False,
                      redirect_stdout=False, redirect_stderr=False) as live:
                while until is None or time.monotonic() < until:
                    deadline = time.monotonic() + interval
                    while time.monotonic() < deadline:
                        follower.poll(min(0.2, max(0.0, deadline - time.monotonic())))
                    follower.refresh_topics()
                    live.update(screen(), refresh=True)
        except KeyboardInterrupt:
            pass
