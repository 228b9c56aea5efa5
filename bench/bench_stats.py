"""Speed of rollguard.stats: µs per update of each composite, and per get(), against River.

Prints figures; asserts nothing. Each figure is the best of ``--repeat`` runs over the same
pre-generated events (fixed seed), including the Python loop that calls ``update`` (an empty
loop over the same events is shown as ``loop overhead``). River's nearest equivalents run in
the same process as the baseline; the ratio is rollguard / River (below 1: faster).

    .venv/bin/python bench/bench_stats.py [--events 50000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from river import metrics as river_metrics
from river import stats as river_stats

from rollguard.stats import (
    ClassificationStats,
    DelayStats,
    Drift,
    FeatureDrift,
    Hourly,
    PairStats,
    QuantileSketch,
    RegressionStats,
    ServingStats,
    from_dict,
)


def best_us_per_event(run: Callable[[], None], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def best_us_per_call(call: Callable[[], object], repeat: int, calls: int = 20) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n, repeat = args.events, args.repeat
    rng = random.Random(20240501)

    binary = []
    for _ in range(n):
        y = rng.random() < 0.3
        score = min(1.0, max(0.0, rng.gauss(0.65 if y else 0.35, 0.2)))
        binary.append((y, score >= 0.5, score))
    classes = [f"c{i}" for i in range(5)]
    multiclass = [(rng.choice(classes), rng.choice(classes)) for _ in range(n)]
    regression = [(y := rng.gauss(10, 3), y + rng.gauss(0, 1)) for _ in range(n)]
    latencies = [rng.lognormvariate(3.0, 0.5) for _ in range(n)]
    errors = [rng.random() < 0.01 for _ in range(n)]
    pairs = [
        (s >= 0.5, (s2 := min(1.0, max(0.0, s + rng.gauss(0, 0.1)))) >= 0.5, s, s2)
        for _, _, s in binary
    ]
    delays = [rng.expovariate(1 / 3600.0) for _ in range(n)]
    timestamps = sorted(rng.uniform(0, 7 * 86400) for _ in range(n))
    features = [
        {"age": rng.gauss(40, 10), "income": rng.lognormvariate(10, 1), "tier": "vip"}
        for _ in range(n)
    ]

    rows: list[tuple[str, float, float | None]] = []

    def bench(name: str, ours: Callable[[], None], river: Callable[[], None] | None = None) -> None:
        mine = best_us_per_event(ours, n, repeat)
        base = best_us_per_event(river, n, repeat) if river else None
        rows.append((name, mine, base))

    def loop() -> None:
        for _ in binary:
            pass

    bench("loop overhead (empty for-loop)", loop)

    # -- binary classification --------------------------------------------------------------
    def ours_binary() -> None:
        s = ClassificationStats("binary")
        for y, p, score in binary:
            s.update(y, p, score)

    def river_binary() -> None:
        ms = [
            river_metrics.Accuracy(),
            river_metrics.Precision(),
            river_metrics.Recall(),
            river_metrics.F1(),
        ]
        ll, auc = river_metrics.LogLoss(), river_metrics.ROCAUC()
        for y, p, score in binary:
            for m in ms:
                m.update(y, p)
            ll.update(y, score)
            auc.update(y, score)

    def river_binary_no_auc() -> None:
        ms = [
            river_metrics.Accuracy(),
            river_metrics.Precision(),
            river_metrics.Recall(),
            river_metrics.F1(),
        ]
        ll = river_metrics.LogLoss()
        for y, p, score in binary:
            for m in ms:
                m.update(y, p)
            ll.update(y, score)

    bench(
        "ClassificationStats(binary) vs River Acc+P+R+F1+LogLoss+ROCAUC", ours_binary, river_binary
    )
    bench("  ... vs River without ROCAUC (Acc+P+R+F1+LogLoss)", ours_binary, river_binary_no_auc)

    def ours_binary_unscored() -> None:
        s = ClassificationStats("binary")
        for y, p, _ in binary:
            s.update(y, p)

    bench("ClassificationStats(binary), no score", ours_binary_unscored)

    def ours_multi() -> None:
        s = ClassificationStats("multiclass")
        for y, p in multiclass:
            s.update(y, p)

    def river_multi() -> None:
        ms = [river_metrics.Accuracy(), river_metrics.MacroPrecision(), river_metrics.MacroRecall()]
        for y, p in multiclass:
            for m in ms:
                m.update(y, p)

    bench("ClassificationStats(multiclass) vs River Acc+MacroP+MacroR", ours_multi, river_multi)

    def ours_reg() -> None:
        s = RegressionStats()
        for y, p in regression:
            s.update(y, p)

    def river_reg() -> None:
        mae, mse = river_metrics.MAE(), river_metrics.MSE()
        for y, p in regression:
            mae.update(y, p)
            mse.update(y, p)

    bench("RegressionStats vs River MAE+MSE", ours_reg, river_reg)

    def ours_serving() -> None:
        s = ServingStats()
        for ms, err in zip(latencies, errors):
            s.update(latency_ms=ms, error=err, served=True)

    def river_serving() -> None:
        qs = [river_stats.Quantile(q) for q in (0.5, 0.95, 0.99)]
        err_rate = river_stats.Mean()
        for ms, err in zip(latencies, errors):
            for q in qs:
                q.update(ms)
            err_rate.update(err)

    bench("ServingStats vs River 3x Quantile (P², not mergeable)+Mean", ours_serving, river_serving)

    def ours_sketch() -> None:
        s = QuantileSketch()
        for ms in latencies:
            s.update(ms)

    def river_quantile() -> None:
        q = river_stats.Quantile(0.99)
        for ms in latencies:
            q.update(ms)

    bench("QuantileSketch vs River 1x Quantile", ours_sketch, river_quantile)

    def ours_pairs() -> None:
        s = PairStats()
        for a, b, sa, sb in pairs:
            s.update(a, b, sa, sb)

    def river_pairs() -> None:
        agree, cov, vx, vy = (
            river_stats.Mean(),
            river_stats.Cov(),
            river_stats.Var(),
            river_stats.Var(),
        )
        for a, b, sa, sb in pairs:
            agree.update(a == b)
            cov.update(sa, sb)
            vx.update(sa)
            vy.update(sb)

    bench("PairStats.update vs River Mean+Cov+2 Var", ours_pairs, river_pairs)

    def ours_pair_outcomes() -> None:
        s = PairStats()
        for y, _, sa in binary:
            s.update_outcome(0.0 if y == (sa >= 0.5) else 1.0, 0.5)

    def river_pair_outcomes() -> None:
        v = river_stats.Var()
        for y, _, sa in binary:
            v.update(0.5 - (0.0 if y == (sa >= 0.5) else 1.0))

    bench("PairStats.update_outcome vs River Var", ours_pair_outcomes, river_pair_outcomes)

    def ours_delay() -> None:
        s = DelayStats()
        for d in delays:
            s.update(d)

    def river_delay() -> None:
        qs = [river_stats.Quantile(q) for q in (0.5, 0.9, 0.99)]
        for d in delays:
            for q in qs:
                q.update(d)

    bench("DelayStats vs River 3x Quantile", ours_delay, river_delay)

    def ours_drift() -> None:
        s = Drift()
        for _, _, score in binary:
            s.update(score)

    bench("Drift (score)", ours_drift)

    def ours_feature_drift() -> None:
        s = FeatureDrift()
        for f in features:
            s.update(f)

    bench("FeatureDrift (2 numeric + 1 string feature)", ours_feature_drift)

    def ours_hourly() -> None:
        s = Hourly(lambda: ClassificationStats("binary"))
        for ts, (y, p, score) in zip(timestamps, binary):
            s.update(ts, y, p, score)

    bench("Hourly(ClassificationStats(binary))", ours_hourly)

    print(f"µs per update, best of {repeat} runs over {n} events (includes the calling loop)")
    print(f"{'statistic':66s} {'rollguard':>10s} {'River':>8s} {'ratio':>6s}")
    for name, mine, base in rows:
        if base is None:
            print(f"{name:66s} {mine:10.3f} {'':>8s} {'':>6s}")
        else:
            print(f"{name:66s} {mine:10.3f} {base:8.3f} {mine / base:6.2f}")

    # -- get() ----------------------------------------------------------------------------------
    full_binary = ClassificationStats("binary")
    river_auc = river_metrics.ROCAUC()
    for y, p, score in binary:
        full_binary.update(y, p, score)
        river_auc.update(y, score)
    serving = ServingStats()
    for ms in latencies:
        serving.update(latency_ms=ms)
    pair = PairStats()
    for a, b, sa, sb in pairs:
        pair.update(a, b, sa, sb)
    drift = Drift()
    for _, _, score in binary:
        drift.update(score)
    hourly = Hourly(lambda: ClassificationStats("binary"))
    for ts, (y, p, score) in zip(timestamps, binary):
        hourly.update(ts, y, p, score)
    reg = RegressionStats()
    for y, p in regression:
        reg.update(y, p)

    print()
    print("µs per get() on the full stream (and merge, to_dict+from_dict round trip)")
    gets = [
        ("ClassificationStats(binary).get()", full_binary.get, river_auc.get, "River ROCAUC.get()"),
        ("  .roc_auc.get() alone", full_binary.roc_auc.get, river_auc.get, "River ROCAUC.get()"),
        ("RegressionStats.get()", reg.get, None, ""),
        ("ServingStats.get() (3 quantiles)", serving.get, None, ""),
        ("PairStats.get()", pair.get, None, ""),
        ("Drift.get() (PSI + KS)", drift.get, None, ""),
        (
            f"Hourly(ClassificationStats).get() ({len(hourly.buckets)} buckets)",
            hourly.get,
            None,
            "",
        ),
        (
            "ClassificationStats(binary) merge into an empty partial (+=)",
            lambda: ClassificationStats().merge(full_binary),
            None,
            "",
        ),
        (
            "ClassificationStats(binary) merged copy (a + b, deep-copies a)",
            lambda: full_binary + full_binary,
            None,
            "",
        ),
        (
            "ServingStats merge into an empty partial (+=)",
            lambda: ServingStats().merge(serving),
            None,
            "",
        ),
        (
            "ClassificationStats(binary) from_dict(to_dict())",
            lambda: from_dict(full_binary.to_dict()),
            None,
            "",
        ),
        ("ServingStats from_dict(to_dict())", lambda: from_dict(serving.to_dict()), None, ""),
    ]
    for name, call, river_call, river_name in gets:
        mine = best_us_per_call(call, repeat)
        if river_call is None:
            print(f"{name:66s} {mine:10.1f}")
        else:
            base = best_us_per_call(river_call, repeat)
            print(f"{name:66s} {mine:10.1f}   {river_name}: {base:.1f} (ratio {mine / base:.2f})")


if __name__ == "__main__":
    main()
