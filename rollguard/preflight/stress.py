"""Check ``latency``: a stress test of the candidate against the champion, in the same run.

Both models are called from ``stress.concurrency`` threads with batches of
``stress.batch_size`` holdout rows, in alternating rounds of ``stress.round_requests`` calls
(candidate, champion, champion, candidate, …) so that both meet the same machine load. A
call's latency is its wall time; throughput is rows per second over each model's rounds.

The verdict is the live latency guardrail's (``latency_p99_ms`` with ``max_ratio``, from the
experiment file or ``stress.guardrail``; default p99 within 1.2 × the champion's):
:class:`rollguard.stats.sequential.quantile.QuantileRatioGuardrail`, the two-sample test of
the quantile ratio the worker runs, and with ``max`` (ms) the quantile confidence sequence
:class:`~rollguard.stats.sequential.quantile.QuantileCS`. Both are anytime-valid, so the
test is read after every pair of rounds and stops as soon as it decides (after at least
``stress.min_requests`` calls per model), each verdict wrong with chance ≤ α. Undecided
after ``stress.max_requests`` calls or ``stress.max_duration`` counts as
``stress.undecided`` (default: fail, as a live promotion waits on an undecided guardrail).
Quantiles shown are the empirical ones of this run (estimates); the champion's live latency
from the stats topic is shown beside them when the live experiment is known.

>>> import time
>>> fast = lambda rows: [0 for _ in rows]
>>> latencies, seconds, errors = run_round(fast, [{"x": 1}], calls=20, batch_size=1,
...                                        concurrency=2)
>>> len(latencies), errors
(20, 0)
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rollguard.preflight.base import FAIL, PASS, SKIPPED, CheckResult, Context, Plot
from rollguard.preflight.statistics import histogram, scale_values

__all__ = ["LatencyCheck", "run_round"]

WARMUP_CALLS = 20


def run_round(function: Callable[[list], Any], rows: Sequence[dict[str, Any]], calls: int,
              batch_size: int, concurrency: int, offset: int = 0
              ) -> tuple[list[float], float, int]:
    """``calls`` calls of ``function`` from ``concurrency`` threads: latencies (ms), wall
    seconds, and how many calls raised."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    counter = iter(range(calls))
    n = len(rows)

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            start = (offset + i) * batch_size
            batch = [dict(rows[(start + j) % n]) for j in range(batch_size)]
            t0 = time.perf_counter()
            try:
                function(batch)
            except Exception:  # noqa: BLE001 - counted; the edge-case check tells why
                with lock:
                    errors[0] += 1
                continue
            ms = (time.perf_counter() - t0) * 1000.0
            with lock:
                latencies.append(ms)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - began, errors[0]


def _quantiles(latencies: Sequence[float]) -> dict[str, float | None]:
    if not latencies:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    a = np.asarray(latencies)
    return {f"p{int(q * 100)}_ms": round(float(np.quantile(a, q, method="lower")), 4)
            for q in (0.5, 0.95, 0.99)}


class LatencyCheck:
    name = "latency"
    title = "Stress test: latency and throughput against the champion"

    def run(self, context: Context) -> CheckResult:
        from rollguard.stats.sequential.quantile import QuantileCS, QuantileRatioGuardrail

        started = time.perf_counter()
        config = context.config
        s, rule, alpha = config.stress, config.latency, config.alpha
        rows = context.features(context.holdout)
        if not rows:
            return CheckResult(self.name, SKIPPED, self.title, ["The holdout set is empty."], {})
        ratio_test = QuantileRatioGuardrail(alpha=alpha, q=rule.q, max_ratio=rule.max_ratio) \
            if rule.max_ratio is not None else None
        max_test = QuantileCS(alpha=alpha, q=rule.q) if rule.max is not None else None
        models = {"candidate": context.candidate, "champion": context.champion}
        latencies: dict[str, list[float]] = {"candidate": [], "champion": []}
        wall = {"candidate": 0.0, "champion": 0.0}
        errors = {"candidate": 0, "champion": 0}
        for role, model in models.items():  # warm-up: imports, caches, lazy loading
            run_round(model.function, rows, WARMUP_CALLS, s.batch_size, s.concurrency)
        deadline = time.monotonic() + config.stress_max_duration
        rounds = 0
        statuses: dict[str, str] = {}
        stopped = "decided"
        while True:
            order = ("candidate", "champion") if rounds % 2 == 0 else ("champion", "candidate")
            for role in order:
                got, seconds, failed = run_round(models[role].function, rows, s.round_requests,
                                                 s.batch_size, s.concurrency,
                                                 offset=rounds * s.round_requests)
                latencies[role].extend(got)
                wall[role] += seconds
                errors[role] += failed
                for ms in got:
                    if ratio_test is not None:
                        ratio_test.update(role, ms)
                    if max_test is not None and role == "candidate":
                        max_test.update(ms)
            rounds += 1
            statuses = {}
            if ratio_test is not None:
                statuses["max_ratio"] = ratio_test.status()
            if max_test is not None:
                lo, hi = max_test.interval()
                statuses["max"] = "fail" if lo > rule.max else "pass" if hi <= rule.max \
                    else "undecided"
            done = min(len(latencies["candidate"]), len(latencies["champion"]))
            calls = rounds * s.round_requests
            if "fail" in statuses.values() and done >= min(s.min_requests, 2 * s.round_requests):
                break
            if all(v != "undecided" for v in statuses.values()) and done >= s.min_requests:
                break
            if calls >= s.max_requests:
                stopped = f"the budget of {s.max_requests} calls per model"
                break
            if time.monotonic() > deadline:
                stopped = f"the time budget of {config.stress_max_duration:g} s"
                break
            if not latencies["candidate"] or not latencies["champion"]:
                stopped = "calls that all raised"
                break
        return self._result(context, latencies, wall, errors, statuses, stopped, ratio_test,
                            max_test, started)

    def _result(self, context: Context, latencies: dict, wall: dict, errors: dict,
                statuses: dict, stopped: str, ratio_test: Any, max_test: Any, started: float
                ) -> CheckResult:
        config = context.config
        s, rule, alpha = config.stress, config.latency, config.alpha
        quantile = rule.metric.replace("latency_", "").replace("_ms", "")
        arms = {}
        for role in ("candidate", "champion"):
            rows_done = len(latencies[role]) * s.batch_size
            arms[role] = {"calls": len(latencies[role]), "errors": errors[role],
                          **_quantiles(latencies[role]),
                          "throughput_rows_per_s": round(rows_done / wall[role], 2)
                          if wall[role] else None}
        figures: dict[str, Any] = {
            "guardrail": {"metric": rule.metric, "max_ratio": rule.max_ratio, "max": rule.max,
                          "source": rule.source},
            "concurrency": s.concurrency, "batch_size": s.batch_size, "arms": arms,
            "alpha": alpha, "statuses": statuses, "stopped_by": stopped}
        if ratio_test is not None:
            figures["ratio_test"] = ratio_test.evidence()
        if max_test is not None:
            lo, hi = max_test.interval()
            figures["max_test"] = {"lower": lo, "upper": None if math.isinf(hi) else hi,
                                   "method": "quantile confidence sequence (Howard & Ramdas "
                                             "2022)"}
        live = (context.live or {}).get("latency")
        if live:
            figures["champion_live"] = live
        cand, champ = arms["candidate"], arms["champion"]
        key = f"{quantile}_ms"
        sentences = [
            f"At concurrency {s.concurrency} and batch size {s.batch_size}: the candidate's "
            f"p50 {_ms(cand['p50_ms'])}, p99 {_ms(cand['p99_ms'])}, "
            f"{_rate(cand['throughput_rows_per_s'])}; the champion's p50 {_ms(champ['p50_ms'])}"
            f", p99 {_ms(champ['p99_ms'])}, {_rate(champ['throughput_rows_per_s'])} "
            f"({cand['calls']} and {champ['calls']} calls; quantiles of this run, estimates)."]
        if live:
            sentences.append(f"Live, the champion {live.get('arm')} answers in p50 "
                             f"{_ms(live.get('latency_p50_ms'))}, p99 "
                             f"{_ms(live.get('latency_p99_ms'))} over "
                             f"{live.get('latency_count')} predictions (the stats topic; "
                             "service overhead included).")
        elif context.live_error and config.live_experiment:
            sentences.append(f"The champion's live latency is not shown: {context.live_error}")
        conf = f"{100 * (1 - alpha):g}% confidence"
        if rule.max_ratio is not None:
            ratio = figures["ratio_test"].get("ratio_estimate")
            shown = f"estimate {ratio:.3g}×" if ratio else "no estimate"
            verdict = statuses.get("max_ratio")
            text = {"fail": f"is above {rule.max_ratio:g} × the champion's with {conf}",
                    "pass": f"is within {rule.max_ratio:g} × the champion's with {conf}",
                    "undecided": f"is not shown within or above {rule.max_ratio:g} × the "
                                 f"champion's after {stopped}"}[verdict]
            sentences.append(f"The candidate's {quantile} latency {text} ({shown}; the live "
                             f"guardrail's two-sample quantile test, α = {alpha:g}).")
        if rule.max is not None:
            verdict = statuses.get("max")
            text = {"fail": f"is above {rule.max:g} ms with {conf}",
                    "pass": f"is at most {rule.max:g} ms with {conf}",
                    "undecided": f"is not shown below or above {rule.max:g} ms after {stopped}"
                    }[verdict]
            sentences.append(f"The candidate's {quantile} latency {text} (estimate "
                             f"{_ms(cand.get(key))}).")
        if errors["candidate"]:
            sentences.append(f"{errors['candidate']} of the candidate's calls on holdout rows "
                             "raised an error under load.")
        values = set(statuses.values())
        if "fail" in values or errors["candidate"]:
            status = FAIL
        elif "undecided" in values:
            status = FAIL if s.undecided == "fail" else PASS
            sentences.append(f"Undecided counts as {s.undecided} (stress.undecided); raise "
                             "stress.max_requests or stress.max_duration to decide.")
        else:
            status = PASS
        plots = []
        if latencies["candidate"] and latencies["champion"]:
            edges, shares, scale = histogram({"candidate": latencies["candidate"],
                                              "champion": latencies["champion"]}, bins=40,
                                             scale="log10")
            markers = {f"{role} {q}": float(scale_values([arms[role][f"{q}_ms"]], scale)[0])
                       for role in ("candidate", "champion") for q in ("p50", "p99")
                       if arms[role][f"{q}_ms"] is not None}
            plots.append(Plot("histogram", "Latency per call", shares, x_label="ms (log scale)",
                              y_label="share of calls", edges=edges, x_scale=scale,
                              markers=markers))
        return CheckResult(self.name, status, self.title, sentences, figures, plots,
                           time.perf_counter() - started)


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g} ms"


def _rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f} rows/s"
