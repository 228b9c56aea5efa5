"""Drift references from a file: ``reference: {file: requests.jsonl}`` in an experiment.

The file holds requests, one JSON object per line (docs/events.md ``requests``), and may also hold
predictions when its lines carry ``"topic"`` as a replay file does. Numeric request features
become the feature-drift reference, and each arm's prediction scores its score-drift
reference. The file is the user's own: a bad line stops with one sentence naming the file
and the line, never silently.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "ref.jsonl"
>>> _ = path.write_text('{"request_id": "a", "experiment": "e", "ts": 1, "features": {"age": 41}}\\n'
...     '{"topic": "predictions", "request_id": "a", "experiment": "e", "ts": 1, "model": "m", '
...     '"version": "1", "served": true, "prediction": 1, "score": 0.8}\\n')
>>> ref = load_reference(str(path))
>>> ref.features, ref.scores
({'age': [41.0]}, {'m:1': [0.8]})
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rollguard.schemas.events import Invalid, Prediction, Request, decode_replay_line, decode_request

if TYPE_CHECKING:
    from rollguard.schemas.experiment import Experiment


class ReferenceError(ValueError):
    """The reference file cannot be used; the message names the file and the line."""


@dataclass(frozen=True)
class ReferenceSample:
    features: dict[str, list[float]] = field(default_factory=dict)
    scores: dict[str, list[float]] = field(default_factory=dict)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@functools.lru_cache(maxsize=32)
def load_reference(path: str) -> ReferenceSample:
    """The reference sample of a file (read once per process)."""
    features: dict[str, list[float]] = {}
    scores: dict[str, list[float]] = {}
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise ReferenceError(f"Reference file {path} cannot be read ({exc.strerror}): fix "
                             "reference.file in the experiment.") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parsed = decode_replay_line(line) if b'"topic"' in line else decode_request(line)
            if isinstance(parsed, Invalid):
                raise ReferenceError(f"Reference file {path}, line {number}: {parsed.reason}")
            event = parsed[1] if isinstance(parsed, tuple) else parsed
            if isinstance(event, Request) and event.features:
                for name, value in event.features.items():
                    x = _number(value)
                    if x is not None:
                        features.setdefault(name, []).append(x)
            elif isinstance(event, Prediction) and event.score is not None:
                scores.setdefault(event.arm, []).append(float(event.score))
    if not features and not scores:
        raise ReferenceError(f"Reference file {path} holds no numeric feature and no score: "
                             "give requests with features (or predictions with scores).")
    return ReferenceSample(features, scores)


def reference_of(experiment: Experiment) -> ReferenceSample | None:
    """The experiment's file reference, or None when it uses its first requests."""
    ref = getattr(experiment, "reference", None)
    if ref is None or ref.file is None:
        return None
    return load_reference(ref.file)
