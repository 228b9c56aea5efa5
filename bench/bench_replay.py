"""Events per second of ``rollguard replay`` (the pure core without Kafka), against a
baseline of just decoding the same lines, in the same process.

    .venv/bin/python bench/bench_replay.py [--quick] [--lines 300000] [--repeat 3]

A synthetic replay file (rollguard.synth.shadow_events for three shadow experiments, merged
in event-time order, written as JSONL) is timed through:

- ``decode_replay_line`` over every line (the baseline: parse and validate only);
- ``Replay.run_lines`` over the lines in memory (decode, join, statistics, evaluator, policy),
  with the experiments kept undecided (the policy works on every record: the costly case) and
  with decisive experiments (a clear winner: the policy stops after its final decision);
- ``Replay.run_lines`` with the join settled every 512 (the default, replay.SETTLE_EVERY),
  5,000 and 20,000 events (any value gives the same decisions);
- ``rollguard replay FILE`` as a user runs it (wall time, including start-up and writing the
  control events to /dev/null).

Figures are the best of ``--repeat`` runs; one run is profiled with pyinstrument. Results go
to stdout and to the "Replay" section of bench/RESULTS.md (unless --quick).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (EXPERIMENTS, PYTHON, ROOT, log, machine_line,  # noqa: E402
                          pyinstrument_inclusive, pyinstrument_self_times, shadow_traffic,
                          table, write_section)



def make_lines(n_lines: int, *, decisive: bool, seed: int = 5) -> list[bytes]:
    """About ``n_lines`` replay lines (the benchmarks' shadow traffic, one event a line)."""
    return [json.dumps(e, separators=(",", ":")).encode() + b"\n"
            for e in shadow_traffic(n_lines, decisive=decisive, seed=seed)]


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - began)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="50k lines, one run")
    ap.add_argument("--lines", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    args = ap.parse_args()
    n_lines = args.lines or (50_000 if args.quick else 300_000)
    repeat = args.repeat or (1 if args.quick else 3)
    began_all = time.monotonic()

    import rollguard.replay as replay_mod
    from rollguard.replay import Replay
    from rollguard.schemas import load_experiments
    from rollguard.schemas.events import decode_replay_line

    tmp = Path(tempfile.mkdtemp(prefix="rollguard-bench-replay-"))
    exp_file = tmp / "experiments.yaml"
    exp_file.write_text(EXPERIMENTS)
    experiments = load_experiments(exp_file)
    log(f"generating {n_lines:,} replay lines ...")
    undecided = make_lines(n_lines, decisive=False)
    decisive = make_lines(n_lines, decisive=True)
    n = len(undecided)
    replay_file = tmp / "events.jsonl"
    replay_file.write_bytes(b"".join(undecided))
    log(f"{n:,} lines ({replay_file.stat().st_size / 2**20:.1f} MiB) in {replay_file}")

    def decode_all(lines):
        def run():
            for line in lines:
                decode_replay_line(line)
        return run

    def replay_all(lines, settle_every: int | None = None):
        def run():
            if settle_every is not None:
                replay_mod.SETTLE_EVERY = settle_every
            try:
                engine = Replay(experiments)
                events = engine.run_lines(lines)
            finally:
                replay_mod.SETTLE_EVERY = default_settle
            return engine, events
        return run

    default_settle = replay_mod.SETTLE_EVERY
    results = {}
    t, _ = best(decode_all(undecided), repeat)
    results["decode"] = t
    log(f"decode_replay_line: {n / t:,.0f} lines/s")
    t, (engine, events) = best(replay_all(undecided), repeat)
    results["undecided"] = t
    undecided_actions = [e.action for e in events]
    records = sum(ev.policy.records for ev in engine.evaluators.values())
    log(f"run_lines, undecided: {n / t:,.0f} events/s ({undecided_actions})")
    t, (engine_d, events_d) = best(replay_all(decisive), repeat)
    results["decisive"] = t
    decisive_actions = [(e.experiment, e.action) for e in events_d]
    log(f"run_lines, decisive: {n / t:,.0f} events/s ({decisive_actions})")
    for every in (5_000, 20_000):
        t, (_, ev) = best(replay_all(undecided, every), repeat)
        results[f"settle_{every}"] = t
        same = [e.action for e in ev] == undecided_actions
        results[f"settle_{every}_same"] = same
        log(f"run_lines, settle every {every:,}: {n / t:,.0f} events/s (same decisions: {same})")
    # the command line, as a user runs it
    cmd = [PYTHON, "-m", "rollguard.cli", "replay", str(exp_file), "--events", str(replay_file)]
    walls = []
    for _ in range(max(1, min(repeat, 2))):
        began = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=600)
        walls.append(time.perf_counter() - began)
        if proc.returncode != 0:
            log(f"rollguard replay failed: {proc.stderr.decode()[-500:]}")
    startup_began = time.perf_counter()
    subprocess.run([PYTHON, "-c", "import rollguard.cli, rollguard.replay"], cwd=ROOT, timeout=120)
    startup = time.perf_counter() - startup_began
    results["cli"] = min(walls)
    log(f"rollguard replay (CLI): {min(walls):.1f} s wall, import time {startup:.1f} s")
    # profile
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    Replay(experiments).run_lines(undecided)
    profiler.stop()
    duration, selfs = pyinstrument_self_times(profiler.last_session)
    inclusive = pyinstrument_inclusive(profiler.last_session, [
        "decode_replay_line", "on_event", "settle", "release", "expire", "on_record",
        "add_batch", "_apply", "from_dict", "to_dict", "merge", "_decide", "on_prediction",
        "on_request", "on_label"])
    (tmp / "replay.pyinstrument.txt").write_text(
        profiler.output_text(unicode=False, color=False, show_all=False))

    # report
    lines = []
    cmdline = "python bench/bench_replay.py" + (" --quick" if args.quick else "") + \
        (f" --lines {args.lines}" if args.lines else "")
    lines.append(f"Command: `{cmdline}` ({(time.monotonic() - began_all) / 60:.1f} min). "
                 f"Machine: {machine_line()}.")
    lines.append("")
    lines.append(f"Input: {n:,} JSONL lines ({replay_file.stat().st_size / 2**20:.1f} MiB) of three "
                 f"shadow experiments (requests, two predictions per request, 90 % labelled), "
                 f"in event-time order; lines held in memory; best of {repeat} runs. Undecided: "
                 "candidate accuracy = champion's − margin (the policy evaluates every record); "
                 "decisive: the candidate is 8 points better (promoted early, the policy idles "
                 f"after). {records:,} joined records reached the policy in the undecided run.")
    lines.append("")
    rows = [["`decode_replay_line` only (baseline)", f"{n / results['decode']:,.0f}",
             f"{results['decode'] / n * 1e6:.2f}", "1.00"]]
    for key, label in (("undecided", "`Replay.run_lines`, undecided (SETTLE_EVERY = 512)"),
                       ("settle_5000", "… settling every 5,000 events"),
                       ("settle_20000", "… settling every 20,000 events"),
                       ("decisive", "`Replay.run_lines`, decisive (promoted early)")):
        t = results[key]
        rows.append([label, f"{n / t:,.0f}", f"{t / n * 1e6:.2f}",
                     f"{results['decode'] / t:.2f}"])
    rows.append(["`rollguard replay` CLI, file → /dev/null (wall, incl. start-up "
                 f"{startup:.1f} s)", f"{n / results['cli']:,.0f}",
                 f"{results['cli'] / n * 1e6:.2f}", f"{results['decode'] / results['cli']:.2f}"])
    lines.append(table(["path", "events/s", "µs/event", "speed vs decode only"], rows))
    lines.append("")
    lines.append(f"Control events, undecided run: {undecided_actions}; decisive run: "
                 f"{decisive_actions}. Settling every 5,000 / 20,000 events gave the same "
                 f"decisions: {results['settle_5000_same']} / {results['settle_20000_same']}.")
    lines.append("")
    lines.append(f"Profile (pyinstrument, one undecided run, {duration:.1f} s sampled), self time "
                 "by function, top 12:")
    lines.append("")
    lines.append("| function (file:line) | self s | share |")
    lines.append("|---|---:|---:|")
    for name, secs in selfs[:12]:
        lines.append(f"| `{name}` | {secs:.2f} | {100 * secs / duration:.1f} % |")
    lines.append("")
    inc = sorted(inclusive.items(), key=lambda kv: -kv[1])
    lines.append("Inclusive: " + ", ".join(f"`{k}` {100 * v / duration:.0f} %"
                                           for k, v in inc if v > 0))
    report = "\n".join(lines)
    print(report)
    if not args.quick and not args.no_results:
        write_section("Replay", report)
    log(f"done; files in {tmp}")


if __name__ == "__main__":
    main()
