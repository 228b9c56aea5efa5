"""One interface for every check: ``Check.run(context) -> CheckResult``.

A :class:`Context` holds what the checks read (the configuration, the tables, the feature
schema, the two models, the production window and the champion's live figures); each check
is a small object with a ``name`` and a ``run`` method, and needs no Kafka: the runner reads
Kafka before the checks start and puts what it read in the context. A result says
``pass``, ``fail`` or ``skipped``, with the figures behind it and sentences for people.

>>> class AlwaysPass:
...     name = "example"
...     def run(self, context):
...         return CheckResult(self.name, PASS, "Example", ["Nothing to see."], {"n": 1})
>>> result = AlwaysPass().run(None)
>>> result.status, result.to_dict()["figures"]
('pass', {'n': 1})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

PASS, FAIL, SKIPPED = "pass", "fail", "skipped"

__all__ = ["PASS", "FAIL", "SKIPPED", "Check", "CheckResult", "Context", "Plot"]


@dataclass
class Plot:
    """Data for one chart of the HTML report (rendered server-side as inline SVG).

    ``kind``: ``"histogram"`` (``series``: name → counts over ``edges``), ``"bars"``
    (``categories`` and ``series``: name → shares), ``"lines"`` (``series``: name → list of
    (x, y)), ``markers``: name → x of a vertical line.
    """

    kind: str
    title: str
    series: dict[str, Any]
    x_label: str = ""
    y_label: str = ""
    edges: list[float] | None = None
    categories: list[str] | None = None
    x_scale: str = "linear"  # linear, log10 or signed-log (edges and markers on it)
    markers: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "title": self.title, "series": self.series,
               "x_label": self.x_label, "y_label": self.y_label, "x_scale": self.x_scale}
        for key in ("edges", "categories", "note"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.markers:
            out["markers"] = self.markers
        return out


@dataclass
class CheckResult:
    """What a check found: its status, the figures behind it, and sentences for people."""

    name: str
    status: str                      # pass, fail or skipped
    title: str
    sentences: list[str]
    figures: dict[str, Any] = field(default_factory=dict)
    plots: list[Plot] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "title": self.title,
                "sentences": list(self.sentences), "figures": self.figures,
                "plots": [p.to_dict() for p in self.plots], "seconds": round(self.seconds, 3)}


class Check(Protocol):
    """A preflight check: ``run`` reads the context and returns a :class:`CheckResult`."""

    name: str
    title: str

    def run(self, context: Context) -> CheckResult: ...


@dataclass
class Context:
    """Everything the checks read. Built by :func:`rollguard.preflight.runner.build_context`
    from a preflight file, or directly in tests (no Kafka is touched here)."""

    config: Any                         # PreflightConfig
    train: Any                          # Table
    holdout: Any                        # Table
    production: Any                     # Table
    schema: dict[str, Any]              # feature name -> Feature
    candidate: Any                      # Model
    champion: Any                       # Model
    constraints: Any = None             # Constraints, or None: infer from train
    constraints_source: str | None = None
    live: dict[str, Any] | None = None  # the champion's live figures (stats topic)
    live_error: str | None = None       # why there are none, when asked for
    deadletters: list[dict[str, Any]] = field(default_factory=list)
    deadletters_error: str | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    def labels(self, table: Any) -> list[Any]:
        return table.column(self.config.target)

    def features(self, table: Any) -> list[dict[str, Any]]:
        """Each row's features (the schema's columns, as the model gets them)."""
        names = list(self.schema)
        key = f"features:{table.name}"
        if key not in self.cache:
            self.cache[key] = [{n: row.get(n) for n in names if n in row} for row in table.rows]
        return self.cache[key]
