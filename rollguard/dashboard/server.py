"""The dashboard's HTTP server (the standard library's, one thread per connection).

Routes:

- ``/`` and ``/experiments/NAME``: the pages (one HTML shell; ``dashboard.js`` renders them);
- ``/api/overview``: every experiment's row; ``/api/experiments/NAME``: one experiment;
- ``/api/changes?since=V``: ``{"version", "changed", "restarted"}``: the experiments whose
  figures changed since version ``V`` of the board. The pages ask every second and fetch
  again what changed, so they update without a reload. (Polling rather than server-sent
  events: a browser keeps at most six connections per server over HTTP/1.1, and an event
  stream per open tab would stall the seventh tab.)
- ``/static/…``: the page's script and styles and the vendored uPlot, from the package.

- ``POST /api/experiments/NAME/control``: a person's promote, rollback, pause or resume, only
  with ``--allow-control`` and the operator's token (:mod:`rollguard.dashboard.control`).

Otherwise it only reads: it holds no decision logic, and writes to Kafka only a person's
control request, which the worker applies or refuses.

>>> page_route("/experiments/churn-v7"), page_route("/"), page_route("/nope")
('experiment', 'list', None)
>>> experiment_of("/api/experiments/churn%3Av7")
'churn:v7'
"""

from __future__ import annotations

import errno
import json
import logging
import math
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from rollguard.dashboard import control
from rollguard.dashboard.board import Board
from rollguard.dashboard.control import ControlGate
from rollguard.streams.topics import TopicNames

log = logging.getLogger("rollguard.dashboard")

STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".html": "text/html; charset=utf-8", ".txt": "text/plain; charset=utf-8"}


class DashboardError(RuntimeError):
    """The dashboard cannot run; the message is one sentence saying what to do."""


def page_route(path: str) -> str | None:
    if path in ("/", "/index.html"):
        return "list"
    if path.startswith("/experiments/") and len(path) > len("/experiments/"):
        return "experiment"
    return None


def experiment_of(path: str) -> str:
    return unquote(path.split("/", 3)[3])


def _since(raw_path: str) -> int:
    """The ``since`` query parameter (0 when missing or not a number).

    >>> _since("/api/changes?since=42"), _since("/api/changes?since=x"), _since("/api/changes")
    (42, 0, 0)
    """
    values = parse_qs(urlsplit(raw_path).query).get("since") or ["0"]
    return int(values[0]) if values[0].isdigit() else 0


def _static_files() -> dict[str, bytes]:
    """Every file the pages load, read once from the package (name relative to static/)."""
    root = resources.files("rollguard.dashboard") / "static"
    files: dict[str, bytes] = {}

    def walk(node: Any, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif child.is_file():
                files[prefix + child.name] = child.read_bytes()
    walk(root, "")
    return files


def _clean(value: Any) -> Any:
    """NaN and infinities as null (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def to_json(value: Any) -> bytes:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()
    except ValueError:
        return json.dumps(_clean(value), separators=(",", ":")).encode()


class Dashboard:
    """The board, the reader that fills it, and the HTTP server that shows it."""

    def __init__(self, bootstrap: str, names: TopicNames, *, host: str = "127.0.0.1",
                 port: int = 8080, allow_control: bool = False, reader: bool = True,
                 control_token: str | None = None) -> None:
        self.bootstrap, self.names = bootstrap, names
        self.gate = ControlGate(allowed=allow_control, token=control_token)
        self.host, self.port = host, port
        self.lock = threading.Condition()
        self.board = Board(allow_control=allow_control)
        self.static = _static_files()
        self.stopping = False
        self.reader = None
        if reader:
            from rollguard.dashboard.reader import TopicReader

            self.reader = TopicReader(bootstrap, names, self.board, self.lock)
        self.httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}/"

    def start(self) -> str:
        """Listen (or :class:`DashboardError` in one sentence) and start reading; the URL."""
        dashboard = self

        class Handler(_Handler):
            owner = dashboard

        server_class = _Server6 if ":" in self.host else _Server
        try:
            self.httpd = server_class((self.host, self.port), Handler)
        except socket.gaierror as exc:
            raise DashboardError(f"The dashboard cannot listen on {self.host}:{self.port} "
                                 f"({exc.strerror}): give an address of this machine with "
                                 "--host, such as 127.0.0.1.") from None
        except OSError as exc:
            taken = exc.errno == errno.EADDRINUSE
            what = f"Port {self.port} on {self.host} is taken" if taken else \
                f"The dashboard cannot listen on {self.host}:{self.port}"
            raise DashboardError(f"{what} ({exc.strerror}): choose another with --port"
                                 f"{'' if taken else ' (or --host)'}.") from None
        self.port = self.httpd.server_address[1]
        if self.reader is not None:
            self.reader.start()
        return self.url

    def serve_forever(self) -> None:
        assert self.httpd is not None
        self.httpd.serve_forever(poll_interval=0.25)

    def close(self) -> None:
        with self.lock:
            self.stopping = True
            self.lock.notify_all()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
        if self.reader is not None:
            self.reader.stop()

    # -- what the routes answer ---------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        reader = self.reader.status() if self.reader is not None else \
            {"caught_up": True, "problem": None, "problem_since": None, "topics": []}
        return {"bootstrap": self.bootstrap, "prefix": self.names.prefix, **reader}

    def overview(self) -> bytes:
        with self.lock:
            body = self.board.overview()
            body["status"] = self.status()
            return to_json(body)

    def changes(self, since: int) -> bytes:
        with self.lock:
            version = self.board.version
            restarted = since > version  # the page saw a dashboard that ran before this one
            return to_json({"version": version, "restarted": restarted,
                            "changed": [] if restarted else self.board.changed_since(since)})

    def experiment(self, name: str) -> bytes | None:
        with self.lock:
            body = self.board.detail(name)
            if body is None:
                return None
            body["status"] = self.status()
            body["version"] = self.board.version
            return to_json(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    owner: Dashboard
    server_version = "rollguard-dashboard"
    protocol_version = "HTTP/1.1"  # keep-alive: every response says its length"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str,
              cache: str = "no-cache") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _not_found(self, what: str) -> None:
        self._send(HTTPStatus.NOT_FOUND, to_json({"error": what}),
                   "application/json; charset=utf-8")

    def do_POST(self) -> None:  # noqa: N802 - the base's name
        path = urlsplit(self.path).path
        if not (path.startswith("/api/experiments/") and path.endswith("/control")):
            self._not_found(f"no action at {path}")
            return
        name = unquote(path[len("/api/experiments/"):-len("/control")])
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(length, 64 * 1024)) if length > 0 else b""
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        owner = self.owner
        status, answer = control.apply(owner.gate, owner.bootstrap, owner.names, name,
                                       self.headers.get(control.TOKEN_HEADER), body,
                                       self.address_string())
        try:
            self._send(status, to_json(answer), "application/json")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_HEAD(self) -> None:  # noqa: N802 - the base's name
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 - the base's name
        path = urlsplit(self.path).path
        try:
            if page_route(path) is not None:
                self._send(HTTPStatus.OK, self.owner.static["index.html"],
                           STATIC_TYPES[".html"])
            elif path == "/api/overview":
                self._send(HTTPStatus.OK, self.owner.overview(), "application/json")
            elif path.startswith("/api/experiments/"):
                name = experiment_of(path)
                body = self.owner.experiment(name)
                if body is None:
                    self._not_found(f"nothing was published about experiment '{name}' under "
                                    f"the prefix '{self.owner.names.prefix}' (yet)")
                else:
                    self._send(HTTPStatus.OK, body, "application/json")
            elif path == "/api/changes":
                self._send(HTTPStatus.OK, self.owner.changes(_since(self.path)),
                           "application/json")
            elif path.startswith("/static/") and path[len("/static/"):] in self.owner.static:
                name = path[len("/static/"):]
                kind = STATIC_TYPES.get(name[name.rfind("."):], "application/octet-stream")
                self._send(HTTPStatus.OK, self.owner.static[name], kind, cache="max-age=60")
            elif path == "/healthz":
                self._send(HTTPStatus.OK, b"ok\n", STATIC_TYPES[".txt"])
            else:
                self._not_found(f"no page {path}")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away
