"""What the demo shows while it runs and when it ends.

Everything about the experiments comes from the worker's stats and control topics, read by
:class:`rollguard.status.Follower` exactly as ``rollguard status`` reads them; the service's
own counters (applications answered, events delivered, labels reported) come from the
service. In a terminal a :class:`rich.live.Live` screen is redrawn; elsewhere (CI, a pipe) a
few plain lines are printed every few seconds. Control events are printed as they arrive.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from rollguard.status import (ACTION_STYLE, FINAL, ExperimentView, fmt_count, fmt_interval,
                              render_experiment)

#: seconds between two progress lines when the output is not a terminal
PLAIN_EVERY = 5.0


def _now_offset(started: float | None) -> str:
    return "[   –   ]" if started is None else f"[{time.time() - started:5.1f} s]"


def traffic_text(view: ExperimentView) -> str:
    """The serving shares of a control event, e.g. ``loan:1 80% / loan:2 20%``."""
    traffic, shadow = view.traffic(), view.shadow()
    text = " / ".join(f"{arm} {100 * share:.3g}%" for arm, share in traffic.items() if share)
    if shadow:
        text += " (shadow: " + ", ".join(shadow) + ")"
    return text


def event_line(name: str, event: dict[str, Any], started: float | None) -> Text:
    """One control event as it arrives."""
    action = event.get("action", "?")
    at = "" if started is None else f"[{max(0.0, event.get('ts', started) - started):5.1f} s]  "
    line = Text.assemble((at, "dim"), (f"{name:<15} ", "bold"),
                         (f"{action:<11} ", ACTION_STYLE.get(action, "")))
    if action in ("start", "set_traffic"):
        shares = " / ".join(f"{a} {100 * s:.3g}%" for a, s in (event.get("traffic") or {}).items()
                            if s)
        if event.get("shadow"):
            shares += " (shadow: " + ", ".join(event["shadow"]) + ")"
        line.append(f"traffic {shares}")
        if action == "set_traffic":
            line.append(f"  ·  {event.get('reason', '')}", style="dim")
    else:
        line.append(event.get("reason", ""))
    return line


class Progress:
    """The demo's progress: a live screen in a terminal, plain lines otherwise."""

    def __init__(self, console: Console, *, live: bool, header: str, order: list[str]) -> None:
        self.console = console
        self.order = order
        self.use_live = live
        self.header = header
        self._live: Any = None
        self._last_plain = 0.0
        self._printed: set[tuple[str, int]] = set()
        self.every = PLAIN_EVERY  # seconds between two plain progress lines

    def __enter__(self) -> Progress:
        if self.use_live:
            from rich.live import Live

            self._live = Live(Text(self.header), console=self.console, auto_refresh=False,
                              transient=True, redirect_stdout=False, redirect_stderr=False,
                              vertical_overflow="crop")
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def print(self, renderable: RenderableType) -> None:
        if self._live is not None:
            self._live.console.print(renderable)
        else:  # a log: one line per line, never wrapped by rich
            self.console.print(renderable, soft_wrap=True)

    def events(self, views: dict[str, ExperimentView], started: float | None) -> None:
        """Print the control events not printed yet, in order."""
        fresh = []
        for name, view in views.items():
            for event in view.history:
                key = (name, event.get("seq", 0))
                if key not in self._printed:
                    self._printed.add(key)
                    fresh.append((event.get("ts", 0.0), name, event))
        for _, name, event in sorted(fresh, key=lambda item: (item[0], item[1])):
            self.print(event_line(name, event, started))

    def update(self, views: dict[str, ExperimentView], service: Any, started: float | None,
               worker_state: str) -> None:
        head = self._service_line(service, started, worker_state)
        if self._live is not None:
            blocks: list[RenderableType] = [Text(self.header, style="bold"), head, Text("")]
            for name in self._ordered(views):
                view = views[name]  # decided: its reason was printed above as an event
                blocks.append(render_experiment(view, compact=True, reason=view.final() is None))
                blocks.append(Text(""))
            if not views:
                blocks.append(Text("waiting for the worker's first statistics ...", style="dim"))
            self._live.update(Group(*blocks), refresh=True)
            return
        now = time.monotonic()
        if now - self._last_plain < self.every:
            return
        self._last_plain = now
        self.console.print(head, soft_wrap=True)
        for name in self._ordered(views):
            self.console.print(Text("   ") + self._plain_line(views[name]), soft_wrap=True)

    def _ordered(self, views: dict[str, ExperimentView]) -> list[str]:
        return [n for n in self.order if n in views] + sorted(set(views) - set(self.order))

    @staticmethod
    def _service_line(service: Any, started: float | None, worker_state: str) -> Text:
        if service is None:
            return Text(f"{_now_offset(started)}  starting ...", style="dim")
        reporter = service.reporter
        worker = f"  ·  worker {worker_state}" if worker_state else ""  # "": runs elsewhere
        return Text(f"{_now_offset(started)}  {service.requests:,} applications answered, "
                    f"{reporter.delivered:,} events delivered, {service.labels:,} labels "
                    f"reported ({service.pending_labels:,} due later){worker}")

    @staticmethod
    def _plain_line(view: ExperimentView) -> Text:
        original = view.original_champion
        parts = [Text(f"{view.name:<15} ", style="bold")]
        for arm in view.arms():
            if arm == original:
                continue
            n = view.test_n(arm)
            parts.append(Text(f"{arm} n {fmt_count(n.get(original))}/{fmt_count(n.get(arm))} "
                              f"Δ {view.metric} {fmt_interval(*view.delta(arm))}  "))
        parts.append(Text(f"traffic {traffic_text(view)}  "))
        final = view.final()
        if final is not None:
            action = final.get("action", "")
            parts.append(Text(action.upper(), style=ACTION_STYLE.get(action, "")))
        return Text.assemble(*parts)


def models_table(models: dict[str, Any], training_rows: int, holdout_rows: int) -> Table:
    table = Table(box=None, pad_edge=False, show_header=True, padding=(0, 2, 0, 0))
    table.add_column("version", style="bold")
    table.add_column("model")
    table.add_column("accuracy", justify="right")
    for arm, m in models.items():
        acc = "–" if m.offline_accuracy is None else f"{m.offline_accuracy:.3f}"
        table.add_row(arm, m.title, acc)
    return table


def decisions_summary(views: dict[str, ExperimentView], started: float | None,
                      order: list[str]) -> RenderableType:
    """Each experiment's decision with its reason and evidence, and the traffic path."""
    blocks: list[RenderableType] = []
    for name in [n for n in order if n in views]:
        view = views[name]
        final = view.final()
        title = Text.assemble((f"{name}", "bold"), f"  ({view.mode}) ")
        if final is None:
            title.append("no decision", style="yellow")
            blocks.append(title)
            continue
        action = final.get("action", "")
        title.append(action.upper(), style=ACTION_STYLE.get(action, ""))
        if started is not None and final.get("ts"):
            title.append(f"  after {final['ts'] - started:.1f} s of traffic", style="dim")
        blocks.append(title)
        blocks.append(Padding(Text(final.get("reason") or ""), (0, 0, 0, 2)))
        evidence = final.get("evidence") or view.evidence
        original = view.original_champion
        for arm, track in (evidence.get("candidates") or {}).items():
            delta = track.get("delta") or {}
            n = track.get("n") or {}
            level = 100 * (1 - (track.get("alpha") or evidence.get("alpha") or 0.05))
            guards = ", ".join(f"{g.get('guardrail')} {g.get('status')}"
                               for g in track.get("guardrails") or []) or "none"
            kind = "paired" if delta.get("paired") else "unpaired"
            blocks.append(Padding(Text(
                f"evidence: {arm} vs {original}: Δ {evidence.get('metric', '')} "
                f"{fmt_interval(delta.get('estimate'), delta.get('lower'), delta.get('upper'))}"
                f" ({level:.4g}% confidence sequence, {kind}),"
                f" n {fmt_count(n.get(original))}/{fmt_count(n.get(arm))}; guardrails: {guards}",
                style="dim"), (0, 0, 0, 2)))
        for arm, tally in (evidence.get("interleaving") or {}).items():
            blocks.append(Padding(Text(
                f"interleaving: {arm} won {fmt_count(tally.get('wins'))}, lost "
                f"{fmt_count(tally.get('losses'))} and tied {fmt_count(tally.get('ties'))} "
                f"requests against {original}; "
                f"{fmt_count(tally.get('no_engagement'))} without engagement", style="dim"),
                (0, 0, 0, 2)))
        path = [e for e in view.history if e.get("action") in ("start", "set_traffic", *FINAL)]
        if view.mode in ("canary", "ab", "bandit") and len(path) > 1:
            steps = []
            for event in path:
                traffic = event.get("traffic") or {}
                cands = [a for a in traffic if a != original]
                share = sum(traffic.get(a, 0.0) for a in cands)
                steps.append(f"{100 * share:.3g}%")
            blocks.append(Padding(Text(f"candidate traffic: {' → '.join(steps)}", style="dim"),
                                  (0, 0, 0, 2)))
    return Group(*blocks)


def offline_vs_live(models: dict[str, Any], views: dict[str, ExperimentView]) -> Table:
    """Each version's accuracy as its team measured it offline, and as rollguard measured it
    on live traffic (every experiment's labelled outcomes of that version together)."""
    table = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0))
    table.add_column("version", style="bold")
    table.add_column("held-out accuracy (offline)", justify="right")
    table.add_column("live accuracy (rollguard)", justify="right")
    table.add_column("labelled", justify="right")
    for arm, model in models.items():
        n = right = 0.0
        for view in views.values():
            count, accuracy = view.labelled(arm), view.arm_metric(arm)
            if view.metric == "accuracy" and count and accuracy is not None:
                n += count
                right += accuracy * count
        offline = "–" if model.offline_accuracy is None else f"{model.offline_accuracy:.3f}"
        table.add_row(arm, offline, f"{right / n:.3f}" if n else "–", fmt_count(int(n)))
    return table
