"""Preflight: the CI gate a candidate must pass before it enters shadow (docs/preflight.md).

``rollguard preflight PREFLIGHT.yaml`` checks a candidate model against the champion before
any live traffic, fed by what production already told rollguard: the data (drift, missing
values, constraints) against the production window, the quality on a holdout
(non-inferiority with the live experiment's metric, margin and α, a threshold, overfitting),
edge cases, and a stress test judged by the live latency guardrail. Each check is one
object with ``run(context) -> CheckResult`` (:mod:`.base`); the Kafka readers are thin
(:mod:`.live`).

>>> import pathlib, random, tempfile
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> rng = random.Random(1)
>>> def rows(n):
...     out = ["x,y"]
...     for _ in range(n):
...         x = rng.gauss(0, 1)
...         out.append(f"{x:.4f},{int(x + rng.gauss(0, 0.5) > 0)}")
...     return "\\n".join(out) + "\\n"
>>> for name in ("train", "holdout", "recent"):
...     _ = (folder / f"{name}.csv").write_text(rows(400))
>>> _ = (folder / "models.py").write_text('''
... def predict(rows):
...     if any(not isinstance(r.get("x"), (int, float)) or r["x"] != r["x"] for r in rows):
...         raise ValueError("x must be a number")
...     return [(int(r["x"] > 0), 0.9 if r["x"] > 0 else 0.1) for r in rows]
... ''')
>>> _ = (folder / "preflight.yaml").write_text('''
... candidate: models:predict
... champion: models:predict
... task: binary
... target: y
... train: train.csv
... holdout: holdout.csv
... production: {file: recent.csv}
... primary: {metric: accuracy, margin: 0.02}
... stress: {min_requests: 100, round_requests: 50, concurrency: 1}
... ''')
>>> from rollguard.preflight import load_config, run_preflight
>>> report = run_preflight(load_config(folder / "preflight.yaml"))
>>> [(c.name, c.status) for c in report.checks][:4]
[('drift', 'pass'), ('missing', 'pass'), ('constraints', 'pass'), ('non_inferiority', 'pass')]
>>> report.exit_code in (0, 1)
True
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it (imported on first use: `rollguard --help` and
#: the other commands do not pay for numpy and scipy)
_WHERE = {
    "FAIL": "base", "PASS": "base", "SKIPPED": "base", "Check": "base", "CheckResult": "base",
    "Context": "base", "PreflightConfig": "config", "PreflightInputError": "config",
    "load_config": "config", "parse_config": "config", "Report": "report", "CHECKS": "runner",
    "build_context": "runner", "run_checks": "runner", "run_preflight": "runner",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'rollguard.preflight' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rollguard.preflight.{_WHERE[name]}"), name)
