"""The worker's log: a line a person can follow, or one JSON object per line for a shipper.

``rollguard worker`` writes everything it logs, and what Faust logs, to standard error in
one of two formats (``--log-format text|json``):

- a start line (broker, experiments, partitions), a line per published decision with its
  reason, a summary of dead letters at most every 30 s, and a stop line;
- ``json``: the same lines as objects with ``time``, ``level``, ``logger``, ``message`` and
  the structured fields of the line (``experiment``, ``action``, ``seq`` … for a decision).

No terminal escape codes are written when standard output is not a terminal (Faust's
start-up spinner is turned off then, and its coloured formatter is never used).

>>> import io, json, logging
>>> stream = io.StringIO()
>>> handler = logging.StreamHandler(stream)
>>> handler.setFormatter(JsonFormatter())
>>> demo = logging.getLogger("rollguard.doc")
>>> demo.addHandler(handler); demo.setLevel("INFO"); demo.propagate = False
>>> log_decision({"experiment": "churn-v7", "seq": 2, "action": "promote", "ts": 1700000279.5,
...               "reason": "churn:7 is promoted: its accuracy is at least the champion's."},
...              logger=demo)
>>> line = json.loads(stream.getvalue())
>>> line["message"]
"decision: churn-v7 seq 2 promote: churn:7 is promoted: its accuracy is at least the champion's."
>>> line["level"], line["logger"], line["experiment"], line["action"], line["seq"]
('INFO', 'rollguard.doc', 'churn-v7', 'promote', 2)
>>> summary = DeadLetterSummary(every=30.0, clock=lambda: 100.0)
>>> summary.add({"deadletter:predictions:not_json": 3, "deadletter:labels:missing": 1})
>>> summary.line(now=131.0)
'dead letters in the last 31 s: 3 not_json on predictions, 1 missing on labels'
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
import threading
import time
from collections import Counter
from typing import Any, Callable, Mapping

__all__ = ["FORMATS", "JsonFormatter", "TEXT_FORMAT", "setup_logging", "faust_logging_config",
           "quiet_spinner", "log_decision", "DeadLetterSummary", "WorkerLog", "WORKER_LOG"]

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: the attributes every LogRecord has: anything else was given with ``extra=``
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

log = logging.getLogger("rollguard.worker")
_chosen = {"format": "text"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``, the record's ``extra=`` fields, and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        moment = _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc)
        line: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def _formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """rollguard's loggers to standard error in ``fmt`` (``text`` or ``json``) at ``level``;
    :func:`faust_logging_config` gives Faust's the same format."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    _chosen["format"] = fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter(fmt))
    logger = logging.getLogger("rollguard")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    logging.getLogger("rollguard.agents").setLevel(max(logging.WARNING, logger.level))


def faust_logging_config(level: str = "WARNING") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for Faust's worker (its ``logging_config``): its root
    logger to standard error in the format :func:`setup_logging` chose, instead of a
    coloured handler on standard output."""
    factory = "rollguard.logs.JsonFormatter" if _chosen["format"] == "json" else \
        "logging.Formatter"
    formatter = {"()": factory} if _chosen["format"] == "json" else {"format": TEXT_FORMAT}
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"rollguard": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "rollguard",
                                "stream": "ext://sys.stderr", "level": level.upper()}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }


def quiet_spinner(worker: Any, stream: Any = None) -> None:
    """Turn Faust's start-up spinner off unless ``stream`` (standard output) is a terminal.

    The spinner (faust.utils.terminal.Spinner) writes ``ESC[?25l`` (hide the cursor) when it
    starts and backspaces and ``ESC[?25h`` when it ends, whatever the stream is: a log file
    then begins with escape codes.
    """
    stream = sys.stdout if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        worker.spinner = None


def log_decision(event: Any, logger: logging.Logger | None = None) -> None:
    """One line for a published decision: experiment, seq, action and reason."""
    get = event.get if isinstance(event, Mapping) else lambda key: getattr(event, key)
    experiment, seq, action, reason = get("experiment"), get("seq"), get("action"), get("reason")
    (logger or log).info("decision: %s seq %d %s: %s", experiment, seq, action, reason,
                         extra={"experiment": experiment, "seq": seq, "action": action,
                                "event_ts": get("ts"), "reason": reason})


class DeadLetterSummary:
    """Dead letters counted by input topic and reason, logged as one line at most every
    ``every`` seconds (thread-safe: partitions commit on several threads)."""

    def __init__(self, every: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()  # (input kind, problem) -> n
        self._since = clock()  # the start of the window the next line covers
        self._last_line = -float("inf")

    def add(self, counters: Mapping[str, int]) -> None:
        """Add counters named ``deadletter:<input kind>:<problem>`` (others are ignored)."""
        with self._lock:
            for name, n in counters.items():
                parts = name.split(":")
                if len(parts) == 3 and parts[0] == "deadletter" and n:
                    self._counts[parts[1], parts[2]] += n

    def line(self, now: float | None = None, *, force: bool = False) -> str | None:
        """The summary line if one is due (or ``force``), emptying the counts; else None."""
        taken = self._take(now, force)
        return None if taken is None else taken[0]

    def flush(self, logger: logging.Logger | None = None, *, force: bool = False) -> None:
        """Log the summary line if one is due (or ``force``)."""
        taken = self._take(None, force)
        if taken is not None:
            text, counts, window = taken
            (logger or log).warning(text, extra={"dead_letters": counts,
                                                 "window_s": round(window, 1)})

    def _take(self, now: float | None, force: bool) -> tuple[str, dict[str, int], float] | None:
        now = self.clock() if now is None else now
        with self._lock:
            if not self._counts or (not force and now - self._last_line < self.every):
                return None
            counts, self._counts = self._counts, Counter()
            window, self._since, self._last_line = now - self._since, now, now
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        text = "dead letters in the last %.0f s: %s" % (
            window, ", ".join(f"{n} {problem} on {kind}" for (kind, problem), n in ranked))
        return text, {f"{kind}:{problem}": n for (kind, problem), n in ranked}, window


class WorkerLog:
    """What the worker's own lines count: decisions published, dead letters, uptime."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.decisions = 0
        self.dead_letters = DeadLetterSummary()
        self._lock = threading.Lock()

    def published(self, events: list[Any]) -> None:
        """Log the decisions of a committed transaction."""
        for event in events:
            log_decision(event)
        with self._lock:
            self.decisions += len(events)

    def stopped(self, app_id: str, how: str = "stopped") -> None:
        """The stop line (after the dead letters not summarised yet)."""
        self.dead_letters.flush(force=True)
        uptime = time.monotonic() - self.started
        log.info("rollguard worker %s %s after %.0f s: %d decision%s published by this worker",
                 app_id, how, uptime, self.decisions, "" if self.decisions == 1 else "s",
                 extra={"app_id": app_id, "uptime_s": round(uptime, 1),
                        "decisions": self.decisions})


#: the worker process's: its partition tasks report to it (rollguard.agents.runtime)
WORKER_LOG = WorkerLog()
