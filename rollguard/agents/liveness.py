"""Is the worker still deciding? The age of its last complete checkpoint.

A checkpoint is *complete* when its transactions committed, the input's end offsets were
known (so the join could release what the watermark settled), and every partition with unread
input read some of it lately (:class:`Progress`). A worker that stays up while
its checkpoints stop completing is the worst failure rollguard can have: nothing alerts, and
no decision comes. Three readers watch the same figure:

- the worker itself: :class:`Watchdog` stops the process with one sentence when the last
  complete checkpoint is older than the stall timeout (a supervisor restarts it, and it
  resumes from that checkpoint: nothing is lost or counted twice);
- a healthcheck: :meth:`Liveness.write` keeps ``liveness.json`` in the worker's data
  directory, which ``rollguard health`` reads from another process;
- the metrics: ``rollguard_checkpoint_age_seconds`` (:mod:`rollguard.agents.metrics`).

>>> clock = iter([100.0, 101.0, 103.5, 110.0]).__next__
>>> live = Liveness(clock=clock)            # starts at 100.0
>>> live.checkpointed(0.2, problem=None)    # complete at 101.0
>>> live.age()                              # read at 103.5
2.5
>>> live.checkpointed(0.1, problem="r.requests[0]: No leaders found")   # incomplete at 110.0
>>> live.checkpoints, live.incomplete, live.problem
(1, 1, 'r.requests[0]: No leaders found')
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from rollguard.processes import pid_alive

log = logging.getLogger("rollguard.worker")

#: the exit code of a worker that stopped so that its supervisor restarts it (EX_TEMPFAIL)
EXIT_RESTART = 75

LIVENESS_FILE = "liveness.json"


@dataclass
class Liveness:
    """When the worker last completed a checkpoint, and why later ones were not complete.

    ``clock`` gives wall-clock seconds: the file is read by other processes.
    """

    path: Path | None = None
    clock: Callable[[], float] = time.time
    started: float = field(init=False)
    last_complete: float = field(init=False)
    checkpoints: int = 0      # complete ones
    incomplete: int = 0
    problem: str | None = None  # why the last checkpoint was not complete
    last_duration: float = 0.0
    restoring: int = 0        # restores under way: the stall clock waits for them
    partitions: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.started = self.last_complete = self.clock()

    def checkpointed(self, duration: float, problem: str | None) -> None:
        """A checkpoint committed in ``duration`` seconds; ``problem``: why it was not
        complete (None: it was)."""
        self.last_duration = duration
        self.problem = problem
        if problem is None:
            self.checkpoints += 1
            self.last_complete = self.clock()
        else:
            self.incomplete += 1
        self.write()

    def age(self) -> float:
        """Seconds since the last complete checkpoint (since the start before the first)."""
        return self.clock() - self.last_complete

    @contextmanager
    def restore(self) -> Iterator[None]:
        """A restore under way: it has its own time limits, so the stall clock waits, and
        restarts from the moment the restore ends."""
        self.restoring += 1
        self.write()
        try:
            yield
        finally:
            self.restoring -= 1
            self.last_complete = max(self.last_complete, self.clock())
            self.write()

    def to_dict(self) -> dict:
        return {"pid": os.getpid(), "started": self.started,
                "last_complete_checkpoint": self.last_complete,
                "checkpoints": self.checkpoints, "incomplete": self.incomplete,
                "problem": self.problem, "last_duration_s": round(self.last_duration, 4),
                "restoring": self.restoring > 0, "partitions": dict(self.partitions),
                "written": self.clock()}

    def write(self) -> None:
        """Replace the liveness file at once (a reader never sees half of it)."""
        if self.path is None:
            return
        partial = self.path.with_name(self.path.name + ".partial")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(self.to_dict()))
            os.replace(partial, self.path)
        except OSError as exc:  # a full disk must not stop the worker; the healthcheck says it
            log.warning("The liveness file %s could not be written (%s).", self.path, exc)


class Progress:
    """Whether a partition with unread input reads any of it.

    A worker whose checkpoints commit can still have stopped deciding: a partition with
    unread input that never gets any (its records dropped, its fetches stuck) holds the
    join's watermark, and every decision, back. :meth:`stalled_for` tells how long.

    >>> now = [0.0]
    >>> progress = Progress(clock=lambda: now[0])
    >>> progress.stalled_for(read=10, waiting=True)
    0.0
    >>> now[0] = 30.0
    >>> progress.stalled_for(read=10, waiting=True)     # input waits, none read for 30 s
    30.0
    >>> progress.stalled_for(read=12, waiting=True)     # it read some
    0.0
    >>> now[0] = 90.0
    >>> progress.stalled_for(read=12, waiting=False)    # nothing to read (or paused): fine
    0.0
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._read = -1
        self._since = clock()

    def stalled_for(self, read: int, waiting: bool) -> float:
        """Seconds since ``read`` (messages read so far) last grew while input was waiting."""
        now = self.clock()
        if read != self._read or not waiting:
            self._read, self._since = read, now
        return now - self._since


def liveness_path(data_dir: Path, app_id: str) -> Path:
    """Where a worker with this data directory and app id keeps its liveness file.

    >>> liveness_path(Path("/var/lib/rollguard"), "rollguard").as_posix()
    '/var/lib/rollguard/rollguard/liveness.json'
    """
    return Path(data_dir) / app_id / LIVENESS_FILE


def check_health(path: Path, max_age: float, *, now: float | None = None) -> tuple[bool, str]:
    """Whether the worker that writes ``path`` is alive and checkpointing, in one sentence.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / LIVENESS_FILE
    >>> live = Liveness(path, clock=lambda: 1000.0)
    >>> live.checkpointed(0.01, problem=None)
    >>> check_health(path, max_age=30, now=1002.0)[0]
    True
    >>> ok, sentence = check_health(path, max_age=30, now=1100.0)
    >>> ok, sentence.split(":")[0]
    (False, 'unhealthy')
    """
    try:
        state = json.loads(Path(path).read_text())
        pid, last = int(state["pid"]), float(state["last_complete_checkpoint"])
    except FileNotFoundError:
        return False, (f"unhealthy: no worker has written {path}: start one, or give the "
                       "--data-dir and --app-id it runs with.")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return False, f"unhealthy: {path} cannot be read ({exc}): is it a rollguard worker's?"
    if not pid_alive(pid):
        return False, (f"unhealthy: the worker (pid {pid}) that wrote {path} is not running: "
                       "restart it.")
    now = time.time() if now is None else now
    age = now - last
    parts = state.get("partitions") or {}
    owns = f"{parts.get('join', 0)} join and {parts.get('evaluate', 0)} evaluation partitions"
    if state.get("restoring"):
        return True, f"healthy: the worker (pid {pid}) is restoring its partitions' state."
    if age > max_age:
        why = f" ({state['problem']})" if state.get("problem") else ""
        return False, (f"unhealthy: the worker (pid {pid}) has completed no checkpoint for "
                       f"{age:.0f} s{why}.")
    return True, (f"healthy: the worker (pid {pid}) completed its last checkpoint {age:.1f} s "
                  f"ago and owns {owns}.")


def stop_for_restart(sentence: str, code: int = EXIT_RESTART) -> None:
    """Log ``sentence`` and end the process at once with ``code``.

    Used when the worker cannot go on (a checkpoint failed, no progress for too long): the
    state on disk and in Kafka is only ever what committed transactions wrote, so nothing
    needs saving on the way out, and a worker that may be a zombie must write nothing more.
    """
    log.critical(sentence)
    for handler in logging.getLogger("rollguard").handlers + logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass
    os._exit(code)


class Watchdog(threading.Thread):
    """Stops the worker when its last complete checkpoint is older than ``stall_timeout``.

    A thread, not a task of the event loop: it must act when the loop itself is stuck.
    """

    def __init__(self, liveness: Liveness, stall_timeout: float, *,
                 on_stall: Callable[[str], None] = stop_for_restart, every: float = 1.0) -> None:
        super().__init__(name="rollguard-watchdog", daemon=True)
        self.liveness = liveness
        self.stall_timeout = stall_timeout
        self.on_stall = on_stall
        self.every = every
        self._stopped = threading.Event()

    def stalled(self) -> str | None:
        """One sentence when the worker has stalled, else None."""
        live = self.liveness
        if live.restoring or live.age() <= self.stall_timeout:
            return None
        why = (f"its checkpoints could not complete ({live.problem})" if live.problem
               else "no checkpoint committed (the broker may be unreachable, or the worker "
                    "is stuck)")
        return (f"The worker made no progress for {live.age():.0f} s: {why}. It stops so that "
                "its supervisor restarts it; restarted, it resumes from its last checkpoint.")

    def run(self) -> None:
        while not self._stopped.wait(self.every):
            sentence = self.stalled()
            if sentence is not None:
                self.on_stall(sentence)
                return

    def stop(self) -> None:
        self._stopped.set()
