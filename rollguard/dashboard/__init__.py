"""``rollguard dashboard``: a live web view of every experiment (docs/dashboard.md).

A thin reader: it follows rollguard's own topics (``control``, ``stats``, ``history``,
``deadletter``) with a consumer of its own from their beginning, keeps what they say in a
:class:`~rollguard.dashboard.board.Board`, and serves two pages — every experiment in one
table, and one page per experiment with Δ and its anytime-valid band over event time, the
decisions and their reasons, the guardrails, per-arm and per-segment figures, traffic, SRM,
labels and dead letters — which update live, without a reload. The page's script,
styles and chart library (uPlot, MIT, vendored with its licence) ship in the package: nothing
is fetched from elsewhere.

Without Kafka, on a board filled by hand (what the tests and the benchmark do):

>>> from rollguard.streams.topics import TopicNames
>>> dashboard = Dashboard("127.0.0.1:9092", TopicNames("doc."), port=0, reader=False)
>>> url = dashboard.start()
>>> import threading, urllib.request
>>> threading.Thread(target=dashboard.serve_forever, daemon=True).start()
>>> urllib.request.urlopen(url + "healthz").read()
b'ok\\n'
>>> b"uPlot" in urllib.request.urlopen(url + "static/vendor/uPlot.iife.min.js").read()
True
>>> dashboard.close()
"""

from __future__ import annotations

import signal
import threading
from typing import Callable

from rollguard.dashboard.server import Dashboard, DashboardError
from rollguard.streams.topics import TopicNames

__all__ = ["Dashboard", "DashboardError", "serve"]


def serve(bootstrap: str, topic_prefix: str | None = None, *, host: str = "127.0.0.1",
          port: int = 8080, allow_control: bool = False, control_token: str | None = None,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Run the dashboard until SIGINT or SIGTERM.

    Raises :class:`DashboardError` (one sentence) when no broker answers at ``bootstrap`` or
    the port cannot be listened on. ``on_ready`` gets the URL once it serves.
    """
    from rollguard.kafka.clients import BrokerUnreachable, require_broker

    try:
        require_broker(bootstrap)
    except BrokerUnreachable as exc:
        raise DashboardError(str(exc)) from None
    dashboard = Dashboard(bootstrap, TopicNames(topic_prefix), host=host, port=port,
                          allow_control=allow_control, control_token=control_token)
    url = dashboard.start()
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    server = threading.Thread(target=dashboard.serve_forever, name="rollguard-dashboard-http",
                              daemon=True)
    server.start()
    try:
        if on_ready is not None:
            on_ready(url)
        while not stop.wait(0.5):
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        dashboard.close()
