"""Small facts about local processes, shared by the local broker and the worker's healthcheck.

>>> import os
>>> pid_alive(os.getpid())
True
"""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs (a zombie, dead but not yet reaped, counts as dead).

    A process whose main thread has exited shows as a zombie while its other threads still
    run (a JVM shutting down does this); it counts as alive until its last thread is gone.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().split(") ", 1)[1][:1] != "Z":
                return True
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return True
