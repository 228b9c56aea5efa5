"""Scale-out: more workers of one app id (one consumer group), and the evaluator's memory when
one set of partitions lags the others by an hour of event time.

    .venv/bin/python bench/bench_scaleout.py [--quick] [--events 300000] [--skew-events 300000]
                                             [--part group|skew|all] [--no-wait]
                                             [--worker-ref HEAD]

``--worker-ref REF`` runs the workers from ``git archive REF`` in a temporary directory instead
of the working tree (to measure a commit while the tree is being edited).

Part "group" (events/s and CPU per event with 1, 2 and 3 workers). One stream (the throughput
benchmark's: bench.common.shadow_traffic, three undecided shadow experiments) is produced ONCE
to 6-partition topics under a fresh prefix. Then for N = 1, 2, 3: N real workers
(``python -m rollguard.cli worker``, as a user runs them, each with its own ``--instance-id``
and ``--data-dir``, all with the same fresh ``--app-id``, so each N is one new consumer group
reading from the beginning; ``--snapshot-interval 1``, checkpoint interval 1 s as shipped) are
started at once. "Done" is when the stats topic's latest snapshot of every experiment counts
every joined record of the stream (``statistics.records`` = requests + labels of that
experiment) with nothing left in the reorder buffer (``buffered`` = 0): end to end, including
the evaluators, not only the consumer's offsets. Wall time runs from launching the processes
(start-up, group joins, rebalances included); "after start-up" runs from the group's first
committed offset (polled every second). CPU: utime + stime of each worker process (all its
threads, plus any children) from /proc/<pid>/stat, read at "done" before the workers are
stopped; the broker's (a child of this script) over the same window. On 2 cores the machine
is the ceiling, so CPU seconds per event is the figure that says what running more workers
costs. Correctness: the final snapshots of N workers must count the same records as the
1-worker run (and the decision state must be the same: the evaluator orders records by
event time whatever the interleaving).

Part "skew" (the evaluator's reorder buffer when partitions 3-5 lag 0-2 by over an hour). A
stream spanning 2 h of event time (rollguard.synth.shadow_events with a chosen rate, the same
three experiments) is produced in three steps to a fresh prefix, while ONE worker runs
in a child process of this script (``build_app`` + ``faust.Worker``, as in
bench_throughput.py, so its evaluators can be read directly; if the measured tree has a
``max_skew`` limit, once with ``max_skew = inf`` and once with its default):

1. the first 10 minutes of event time on all partitions; the worker reads them and goes idle;
2. the consumer PAUSES partitions 3-5 of the input topics (Faust's ``pause_partitions``), and
   the rest of partitions 3-5 is produced: they are now backlogged, read up to minute 10 only,
   exactly as if their worker were down or an hour behind (their frontier stays at minute 10);
3. the rest of partitions 0-2 (minutes 10-120) is produced and read: the evaluators must hold
   every record of 0-2 past minute 10 until 3-5's frontier passes it.

Sampled every 0.5 s: records buffered (``len(evaluator.merge)`` over all evaluators), the
worker's RSS, the eval-state messages its checkpoints write (``e/<experiment>``, the whole
reorder buffer, captured as the checkpoint hands them to the ``<prefix><app>.eval-state``
transaction) and the checkpoint time, against the skew (event time read on 0-2 minus 3-5's
frontier). Then partitions 3-5 are resumed, and the same figures are taken after the catch-up.
The largest eval-state message is decoded again in this process under tracemalloc (Python
heap per buffered record). From bytes per buffered record the section extrapolates MiB per
hour of skew at other rates, and the skew × rate at which one experiment's checkpoint message
passes INTERNAL_MESSAGE_MAX (64 MiB; beyond it the checkpoint fails and the worker stops).

Before a full run the script waits (30 s between checks, at most 12 min) for a 1-minute load
average below 0.7, and reports the load before and after. Figures go to stdout and to the
"Scale-out" section of bench/RESULTS.md (unless --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if os.environ.get("ROLLGUARD_BENCH_WORKER_ROOT"):  # the skew child of a --worker-ref run
    sys.path.insert(0, os.environ["ROLLGUARD_BENCH_WORKER_ROOT"])

from bench.common import (EXPERIMENTS, PYTHON, ROOT, broker, committed_offsets,  # noqa: E402
                          end_offsets, fresh_prefix, log, machine_line, produce_raw, rss_bytes,
                          shadow_traffic, table, write_section)

KINDS = ("requests", "predictions", "labels")
PARTITIONS = 6
EXPERIMENT_NAMES = ("churn", "fraud", "upsell")
START_TS = 1_700_000_000.0
SKEW_SPAN_S = 2 * 3600.0       # event time covered by the skew stream
SKEW_T0_S = 600.0              # read on every partition before 3-5 stop
AHEAD = (0, 1, 2)
BEHIND = (3, 4, 5)
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHILD_LIFETIME_S = 900.0       # the skew child stops itself after this, whatever happens
SETTLE_S = 15.0                # group part: no change of the snapshots this long = settled
#: where the workers run from (--worker-ref: an export of a commit, to measure it alone)
WORKER_ROOT = ROOT
WORKER_REF: tuple[str, str] | None = None
#: what a saved run (--render-from) says about its tree, in place of looking at it
RENDERED: dict = {}


# -- /proc ----------------------------------------------------------------------------------
def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, CPU seconds: utime + stime + cutime + cstime) of a process, None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): ppid = field 4, utime..cstime = fields 14..17
    ppid = int(fields[1])
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ppid, ticks / CLK_TCK


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                kids.setdefault(st[0], []).append(int(entry))
    return kids


def descendants(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its living descendants (waited-for ones via cutime)."""
    total = 0.0
    for p in [pid, *descendants(pid)]:
        st = _stat(p)
        if st is not None:
            total += st[1]
    return total


def broker_pid() -> int | None:
    """The local broker this script started (a child process running kafka.Kafka)."""
    for p in descendants(os.getpid()):
        try:
            if b"kafka.Kafka" in Path(f"/proc/{p}/cmdline").read_bytes():
                return p
        except OSError:
            pass
    return None


def vm_hwm(pid: int | str = "self") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def loadavg() -> tuple[float, float, float]:
    a, b, c = Path("/proc/loadavg").read_text().split()[:3]
    return float(a), float(b), float(c)


class LoadWatch:
    """Samples the 1-minute load and looks for other people's Kafka tests and workers (pytest,
    ``rollguard.cli worker`` processes that are not this script's) every 5 s, in a thread."""

    def __init__(self) -> None:
        import threading

        self.max_load = 0.0
        self.samples = self.foreign_samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _foreign(self) -> bool:
        mine = set(descendants(os.getpid())) | {os.getpid()}
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in mine:
                try:
                    cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"pytest" in cmd or b"rollguard.cli\x00worker" in cmd:
                    return True
        return False

    def _run(self) -> None:
        while not self._stop.wait(5.0):
            self.samples += 1
            self.max_load = max(self.max_load, loadavg()[0])
            self.foreign_samples += self._foreign()

    def __enter__(self) -> "LoadWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


def wait_quiet(limit: float = 0.7, every: float = 30.0, at_most: float = 720.0) -> dict:
    began = time.monotonic()
    while True:
        load = loadavg()
        if load[0] < limit:
            return {"load": load, "waited_s": time.monotonic() - began, "quiet": True}
        if time.monotonic() - began + every > at_most:
            return {"load": load, "waited_s": time.monotonic() - began, "quiet": False}
        log(f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}: waiting for < {limit} ...")
        time.sleep(every)


# -- streams --------------------------------------------------------------------------------
def experiment_of(event: dict) -> str:
    return event.get("experiment") or event["request_id"].rsplit("-", 1)[0]


def produce_group_stream(bootstrap: str, names, n_events: int) -> dict:
    """bench_throughput's stream, once; counts per kind and joined records per experiment."""
    import msgspec

    from rollguard.kafka.admin import create_contract_topics

    create_contract_topics(bootstrap, names, partitions=PARTITIONS)
    enc = msgspec.json.encode
    counts = {k: 0 for k in KINDS}
    records = {name: 0 for name in EXPERIMENT_NAMES}

    def messages():
        for event in shadow_traffic(n_events):
            kind = event.pop("topic")
            counts[kind] += 1
            if kind != "predictions":
                records[experiment_of(event)] += 1   # scored (request) or labelled
            yield getattr(names, kind), event["request_id"].encode(), enc(event)

    began = time.monotonic()
    n = produce_raw(bootstrap, messages(), total=n_events, what="events")
    log(f"produced {n:,} events in {time.monotonic() - began:.1f} s: {counts}")
    return {"events": n, **counts, "records": records}


def skew_traffic(n_events: int, span_s: float, seed: int = 11):
    """~n_events of the three shadow experiments spread evenly over ``span_s`` of event time."""
    from rollguard.synth import Arm, shadow_events

    n = max(10, int(n_events / 3 / 3.9))      # a request, two predictions, 90 % labelled
    rate = n / span_s
    gens = [shadow_events(name, Arm("m:1", 0.80, error_rate=0.001),
                          [Arm("m:2", 0.79, error_rate=0.001)], n=n, seed=seed + i,
                          start=START_TS, rate=rate)
            for i, name in enumerate(EXPERIMENT_NAMES)]
    return heapq.merge(*gens, key=lambda e: e["ts"]), rate * 3


# -- part "group" ---------------------------------------------------------------------------
class StatsReader:
    """The stats topic from a given position on; the latest snapshot per experiment."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self.topic = topic
        self.consumer = Consumer({"bootstrap.servers": bootstrap,
                                  "group.id": f"bench-scaleout-stats-{uuid.uuid4().hex[:8]}",
                                  "enable.auto.commit": False,
                                  "isolation.level": "read_committed"})
        meta = self.consumer.list_topics(topic, timeout=10).topics[topic]
        self.tps = [TopicPartition(topic, p) for p in meta.partitions]
        self.latest: dict[str, dict] = {}

    def start_at_end(self) -> None:
        from confluent_kafka import TopicPartition

        starts = []
        for tp in self.tps:
            high = self.consumer.get_watermark_offsets(tp, timeout=10)[1]
            starts.append(TopicPartition(tp.topic, tp.partition, high))
        self.consumer.assign(starts)
        self.latest = {}

    def poll(self, timeout: float) -> int:
        n = 0
        for msg in self.consumer.consume(500, timeout=timeout):
            if msg.error() is None and msg.value() is not None:
                self.latest[msg.key().decode()] = json.loads(msg.value())
                n += 1
        return n

    def close(self) -> None:
        self.consumer.close()


def _wait_or_kill(child, timeout: float, began: float) -> tuple[int | None, float]:
    """Wait for ``child.proc`` (asked to stop) up to ``timeout``, else SIGKILL its group;
    close its log handle; (exit code, seconds since ``began``)."""
    try:
        code = child.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(child.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        code = child.proc.wait(10)
    if child.handle is not None:
        child.handle.close()
        child.handle = None
    return code, time.monotonic() - began


class WorkerProc:
    """``python -m rollguard.cli worker`` in its own session, as a user runs it."""

    def __init__(self, bootstrap: str, exp_file: Path, prefix: str, app_id: str, index: int,
                 out_dir: Path, extra: list[str] = ()) -> None:
        self.data_dir = out_dir / f"{app_id}-w{index}"
        self.log_file = out_dir / f"{app_id}-w{index}.log"
        self.app_id = app_id
        self.cmd = [PYTHON, "-m", "rollguard.cli", "worker", str(exp_file),
                    "--bootstrap-servers", bootstrap, "--topic-prefix", prefix,
                    "--app-id", app_id, "--data-dir", str(self.data_dir),
                    "--instance-id", f"{app_id}-w{index}", "--snapshot-interval", "1",
                    *extra]
        self.proc: subprocess.Popen | None = None
        self.handle = None

    def start(self) -> "WorkerProc":
        self.handle = open(self.log_file, "ab")
        self.proc = subprocess.Popen(self.cmd, stdout=self.handle, stderr=subprocess.STDOUT,
                                     cwd=WORKER_ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1",
                                                               PYTHONPATH=str(WORKER_ROOT)),
                                     start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 60.0) -> tuple[int | None, float]:
        began = time.monotonic()
        if self.proc is None:
            return None, 0.0
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return _wait_or_kill(self, timeout, began)

    def liveness(self) -> dict:
        try:
            return json.loads((self.data_dir / self.app_id / "liveness.json").read_text())
        except (OSError, ValueError):
            return {}

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""


def run_group(bootstrap: str, names, exp_file: Path, n_workers: int, stream: dict,
              out_dir: Path, timeout: float, extra: list[str] = ()) -> dict:
    app_id = f"scale{n_workers}-{uuid.uuid4().hex[:6]}"
    expected = stream["records"]
    total = stream["events"]
    tps = [(t, p) for t in names.inputs() for p in range(PARTITIONS)]
    ends = end_offsets(bootstrap, list(names.inputs()))
    reader = StatsReader(bootstrap, names.stats)
    reader.start_at_end()
    bpid = broker_pid()
    workers = [WorkerProc(bootstrap, exp_file, names.prefix, app_id, i, out_dir, extra)
               for i in range(n_workers)]
    res: dict = {"workers": n_workers, "app_id": app_id, "complete": False}
    log(f"[{n_workers} worker(s)] starting, app id {app_id} ...")
    try:
        broker_cpu0 = tree_cpu_s(bpid) if bpid else None
        t_start = time.monotonic()
        for w in workers:
            w.start()
        deadline = t_start + timeout
        t_first_commit = cpu_at_first_commit = None
        last_commit_poll = last_log = 0.0
        committed_sum = 0
        # at every change of the snapshots: time and CPU (what "done" uses when the counts
        # settle below the expected ones)
        change = {"t": t_start, "cpu": [0.0] * n_workers, "broker": broker_cpu0}
        while time.monotonic() < deadline:
            got_new = reader.poll(0.2)
            now = time.monotonic()
            latest = reader.latest
            if got_new:
                seen_now = {n: (s["statistics"]["records"], s["buffered"])
                            for n, s in latest.items()}
                if seen_now != change.get("seen"):
                    change = {"t": now, "seen": seen_now,
                              "cpu": [tree_cpu_s(w.proc.pid) for w in workers],
                              "broker": tree_cpu_s(bpid) if bpid else None}
            if all(name in latest
                   and latest[name]["statistics"]["records"] >= expected[name]
                   and latest[name]["buffered"] == 0 for name in EXPERIMENT_NAMES):
                res["complete"] = True
                break
            if not all(w.alive() for w in workers):
                res["error"] = "a worker exited: " + ", ".join(
                    f"w{i} rc {w.proc.poll()}" for i, w in enumerate(workers) if not w.alive())
                break
            if now - last_commit_poll >= 1.0:
                last_commit_poll = now
                try:
                    got = committed_offsets(bootstrap, app_id, tps)
                    committed_sum = sum(max(0, got.get(tp, -1)) for tp in tps)
                except Exception as exc:  # noqa: BLE001 - the group may not exist yet
                    res.setdefault("commit_poll_errors", str(exc)[:200])
                if committed_sum > 0 and t_first_commit is None:
                    t_first_commit = now
                    cpu_at_first_commit = sum(tree_cpu_s(w.proc.pid) for w in workers)
            # settled short of the expected counts: everything committed, nothing buffered,
            # no change for SETTLE_S: stop there, timed at the last change
            if committed_sum >= total and latest and all(
                    s["buffered"] == 0 for s in latest.values()) \
                    and now - change["t"] >= SETTLE_S:
                res["settled_short"] = True
                break
            if now - last_log >= 5.0:
                last_log = now
                seen = {n: (s["statistics"]["records"], s["buffered"]) for n, s in latest.items()}
                log(f"[{n_workers} worker(s)] {now - t_start:5.1f} s: committed "
                    f"{committed_sum:,} / {total:,}; stats (records, buffered) {seen}")
        if res["complete"]:
            t_done = time.monotonic()
            cpus = [tree_cpu_s(w.proc.pid) for w in workers]
            broker_cpu1 = tree_cpu_s(bpid) if bpid else None
        else:  # timed at the last change of the snapshots
            t_done, cpus, broker_cpu1 = change["t"], change["cpu"], change["broker"]
        res.update({
            "wall_s": t_done - t_start,
            "startup_s": (t_first_commit - t_start) if t_first_commit else None,
            "cpu_s": cpus, "cpu_total_s": sum(cpus),
            "cpu_at_first_commit_s": cpu_at_first_commit,
            "broker_cpu_s": (broker_cpu1 - broker_cpu0) if bpid and broker_cpu1 else None,
            "rss": [rss_bytes(w.proc.pid) for w in workers],
            "liveness": [w.liveness().get("partitions", {}) for w in workers],
            "snapshots": {n: reader.latest.get(n) for n in EXPERIMENT_NAMES},
            "events": total,
        })
        try:
            got = committed_offsets(bootstrap, app_id, tps)
            res["committed_at_done"] = sum(max(0, got.get(tp, -1)) for tp in tps)
        except Exception:  # noqa: BLE001
            res["committed_at_done"] = None
        res["end_offsets"] = sum(ends.values())
    finally:
        stops = [w.stop() for w in workers]
        reader.close()
    res["exit_codes"] = [c for c, _ in stops]
    res["stop_s"] = [round(s, 1) for _, s in stops]
    logs = [w.log_text() for w in workers]
    res["restore_rounds"] = [t.count("evaluation partitions in") for t in logs]
    res["log_errors"] = [ln.strip()[:300] for t in logs for ln in t.splitlines()
                         if " ERROR " in ln or "Traceback" in ln][:5]
    res["log_warnings"] = [ln.strip()[:300] for t in logs for ln in t.splitlines()
                           if " WARNING " in ln][:8]
    if res.get("wall_s"):
        log(f"[{n_workers} worker(s)] {'done' if res['complete'] else 'NOT complete'} in "
            f"{res['wall_s']:.1f} s = {total / res['wall_s']:,.0f} events/s; CPU "
            f"{res['cpu_total_s']:.1f} s ({res['cpu_s']}); broker CPU {res['broker_cpu_s']}; "
            f"exit codes {res['exit_codes']}; partitions {res['liveness']}")
    return res


def part_group(bootstrap: str, exp_file: Path, out_dir: Path, n_events: int, quick: bool,
               counts=(1, 2, 3), extra: list[str] = ()) -> dict:
    from rollguard.streams.topics import TopicNames

    names = TopicNames(fresh_prefix("bscale"))
    log(f"[group] producing ~{n_events:,} events to {names.prefix}* ({PARTITIONS} partitions)")
    stream = produce_group_stream(bootstrap, names, n_events)
    runs = []
    for n in counts:
        runs.append(run_group(bootstrap, names, exp_file, n, stream, out_dir,
                              timeout=150.0 if quick else 300.0, extra=extra))
        time.sleep(2.0)
    return {"stream": stream, "runs": runs, "extra": list(extra)}


# -- part "skew": the child (one worker, in-process) -------------------------------------------
def child_skew(args) -> None:
    import faust
    from faust.types import TP

    from rollguard.agents import checkpoint as checkpoint_mod
    from rollguard.agents.app import build_app, prepare_topics
    from rollguard.agents.runtime import WorkerConfig
    from rollguard.schemas import load_experiments
    from rollguard.streams.topics import TopicNames

    names = TopicNames(args.prefix)
    config = WorkerConfig(bootstrap=args.bootstrap, experiments=load_experiments(
        Path(args.experiments)), names=names, app_id=args.app_id,
        data_dir=Path(args.data_dir), partitions=PARTITIONS)
    if args.max_skew is not None and hasattr(config, "max_skew"):
        config.max_skew = float(args.max_skew)
    config.partitions = prepare_topics(config)
    app, runtime = build_app(config)
    eval_topic = config.internal.eval_state
    status_path, history_path, command_path = (Path(args.status), Path(args.history),
                                               Path(args.commands))
    es = {"bytes": 0, "messages": 0, "last": {}, "largest": {}}
    largest_value: dict[str, bytes] = {}
    ck = {"n": 0, "total_s": 0.0, "max_s": 0.0, "last_s": 0.0}

    original_begin = checkpoint_mod.Checkpointer.begin

    def begin(self, outputs):
        for out in outputs:
            if out.topic == eval_topic and out.key and out.key.startswith(b"e/") \
                    and out.value is not None:
                size, name = len(out.value), out.key[2:].decode()
                es["bytes"] += size
                es["messages"] += 1
                es["last"][name] = size
                if size > es["largest"].get(name, -1):
                    es["largest"][name] = size
                    largest_value[name] = out.value
        return original_begin(self, outputs)

    checkpoint_mod.Checkpointer.begin = begin
    original_checkpoint = runtime.checkpoint

    def timed_checkpoint(*, final: bool = False) -> None:
        began = time.perf_counter()
        original_checkpoint(final=final)
        took = time.perf_counter() - began
        ck["n"] += 1
        ck["total_s"] += took
        ck["last_s"] = took
        ck["max_s"] = max(ck["max_s"], took)

    runtime.checkpoint = timed_checkpoint
    state = {"acked": 0, "paused": []}

    def status() -> dict:
        evaluators = [(name, ev) for t in list(runtime.eval_tasks.values())
                      for name, ev in t.evaluators.items()]
        frontiers = {name: {str(k): v for k, v in ev.merge.frontiers.items()}
                     for name, ev in evaluators}
        ahead = [max(runtime.join_tasks[p].core.joiner.max_ts.values())
                 for p in AHEAD if p in runtime.join_tasks]
        behind = [f for fr in frontiers.values() for s, f in fr.items() if int(s) in BEHIND]
        ahead_ts = max(ahead) if ahead else -math.inf
        behind_ts = min(behind) if behind else math.inf
        # the event time the buffer spans: its newest record (heap entries are
        # ((ts, request_id, kind), record)) minus the lagging partitions' frontier
        newest = max((entry[0][0] for _, ev in evaluators for entry in ev.merge._heap),
                     default=-math.inf)
        skew = newest - behind_ts if math.isfinite(newest) and math.isfinite(behind_ts) \
            else 0.0
        return {
            "t": time.time(),
            "join": {str(p): dict(t.core.next_offset) for p, t in list(runtime.join_tasks.items())},
            "eval_tasks": sorted(runtime.eval_tasks),
            "buffered": sum(len(ev.merge) for _, ev in evaluators),
            "buffered_by": {name: len(ev.merge) for name, ev in evaluators},
            "merged": sum(ev.totals.records for _, ev in evaluators),
            "policy_records": sum(ev.policy.records for _, ev in evaluators),
            "frontiers": frontiers, "ahead_ts": ahead_ts, "behind_ts": behind_ts,
            "newest_ts": newest,
            "skew_s": skew, "rss": rss_bytes(), "hwm": vm_hwm(),
            "eval_state": {k: (dict(v) if isinstance(v, dict) else v) for k, v in es.items()},
            "checkpoints": dict(ck), **state,
            "worker_paused": sorted(getattr(runtime, "paused", ()) or ()),
        }

    def run_commands() -> bool:
        try:
            commands = json.loads(command_path.read_text())
        except (OSError, ValueError):
            return False
        for cmd in commands:
            if cmd["seq"] <= state["acked"]:
                continue
            op = cmd["op"]
            if op in ("pause", "resume"):
                tps = {TP(topic, p) for topic in names.inputs() for p in cmd["partitions"]}
                if op == "pause":
                    app.consumer.pause_partitions(tps)
                    state["paused"] = sorted(set(state["paused"]) | set(cmd["partitions"]))
                else:
                    app.consumer.resume_partitions(tps)
                    state["paused"] = sorted(set(state["paused"]) - set(cmd["partitions"]))
            elif op == "dump":
                for name, value in largest_value.items():
                    Path(cmd["dir"], f"{name}.msgpack").write_bytes(value)
            elif op == "reset":
                ck["max_s"] = 0.0
                es["largest"] = {}
                largest_value.clear()
            elif op == "stop":
                state["acked"] = cmd["seq"]
                return True
            state["acked"] = cmd["seq"]
        return False

    @app.task
    async def monitor():
        deadline = time.monotonic() + CHILD_LIFETIME_S
        last_history = 0.0
        with open(history_path, "a") as history:
            while time.monotonic() < deadline:
                stop = run_commands()
                s = status()
                tmp = status_path.with_suffix(".tmp")
                tmp.write_text(json.dumps(s))
                os.replace(tmp, status_path)
                if time.monotonic() - last_history >= 0.45:
                    last_history = time.monotonic()
                    history.write(json.dumps({k: s[k] for k in (
                        "t", "buffered", "skew_s", "ahead_ts", "behind_ts", "rss", "merged",
                        "newest_ts",
                        "checkpoints", "eval_state")}) + "\n")
                    history.flush()
                if stop:
                    break
                await asyncio.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    sys.argv = [sys.argv[0], "worker"]
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    except SystemExit:
        pass


# -- part "skew": the parent ----------------------------------------------------------------------
class SkewChild:
    def __init__(self, bootstrap: str, prefix: str, exp_file: Path, out_dir: Path,
                 variant: str, max_skew: float | None) -> None:
        self.dir = out_dir / f"skew-{variant}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.app_id = f"skew-{uuid.uuid4().hex[:6]}"
        self.status_path = self.dir / "status.json"
        self.history_path = self.dir / "history.jsonl"
        self.commands_path = self.dir / "commands.json"
        self.commands: list[dict] = []
        self.log_file = self.dir / "child.log"
        self.cmd = [PYTHON, str(Path(__file__).resolve()), "--child", "skew",
                    "--bootstrap", bootstrap, "--prefix", prefix,
                    "--experiments", str(exp_file), "--app-id", self.app_id,
                    "--data-dir", str(self.dir / "data"), "--status", str(self.status_path),
                    "--history", str(self.history_path), "--commands", str(self.commands_path)]
        if max_skew is not None:
            self.cmd += ["--max-skew", repr(max_skew)]
        self.proc: subprocess.Popen | None = None
        self.handle = None

    def start(self) -> "SkewChild":
        self.handle = open(self.log_file, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if WORKER_ROOT != ROOT:
            env["ROLLGUARD_BENCH_WORKER_ROOT"] = str(WORKER_ROOT)
        self.proc = subprocess.Popen(self.cmd, stdout=self.handle, stderr=subprocess.STDOUT,
                                     cwd=WORKER_ROOT, env=env, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> dict | None:
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return None

    def command(self, op: str, timeout: float = 30.0, **kw) -> dict:
        seq = len(self.commands) + 1
        self.commands.append({"seq": seq, "op": op, **kw})
        tmp = self.commands_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.commands))
        os.replace(tmp, self.commands_path)
        if op == "stop":
            return {}
        return self.wait(lambda s: s["acked"] >= seq, timeout, f"command {op}")

    def wait(self, predicate, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        last_log = time.monotonic()
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"the skew worker exited (rc {self.proc.poll()}) while "
                                   f"waiting for {what}; log {self.log_file}")
            s = self.status()
            if s is not None and predicate(s):
                return s
            if time.monotonic() - last_log > 5 and s is not None:
                last_log = time.monotonic()
                log(f"  [skew] waiting for {what}: buffered {s['buffered']:,}, merged "
                    f"{s['merged']:,}, skew {s['skew_s'] / 60:.0f} min, RSS "
                    f"{s['rss'] / 2**20:.0f} MiB, checkpoint {s['checkpoints']['last_s']:.2f} s")
            time.sleep(0.25)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")

    def stop(self, timeout: float = 90.0) -> tuple[int | None, float]:
        began = time.monotonic()
        if self.proc is None:
            return None, 0.0
        if self.alive():
            self.command("stop")
        return _wait_or_kill(self, timeout, began)

    def history(self) -> list[dict]:
        try:
            return [json.loads(ln) for ln in self.history_path.read_text().splitlines() if ln]
        except OSError:
            return []


def consumed(s: dict, parts, ends: dict, names) -> bool:
    join = s["join"]
    for p in parts:
        got = join.get(str(p))
        if got is None:
            return False
        for k in KINDS:
            if got[k] < ends.get((getattr(names, k), p), 0):
                return False
    return True


def heap_per_record(value: bytes, experiment) -> dict:
    """Decode one eval-state message into an evaluator under tracemalloc."""
    import gc
    import tracemalloc

    import msgspec

    from rollguard.decisions.evaluator import ExperimentEvaluator

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    state = msgspec.msgpack.decode(value)
    ev = ExperimentEvaluator.from_dict(experiment, PARTITIONS, state)
    del state
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    n = len(ev.merge)
    return {"records": n, "heap_bytes": after - before, "message_bytes": len(value),
            "heap_per_record": (after - before) / n if n else None,
            "message_per_record": len(value) / n if n else None}


def part_skew(bootstrap: str, exp_file: Path, out_dir: Path, n_events: int,
              variant: str = "unlimited", max_skew: float | None = None) -> dict:
    import confluent_kafka
    import msgspec

    from rollguard.kafka.admin import create_contract_topics
    from rollguard.schemas import load_experiments
    from rollguard.streams.topics import TopicNames

    names = TopicNames(fresh_prefix("bskew"))
    create_contract_topics(bootstrap, names, partitions=PARTITIONS)
    enc = msgspec.json.encode
    t0 = START_TS + SKEW_T0_S
    events, event_rate = skew_traffic(n_events, SKEW_SPAN_S)
    phases: dict[str, list[tuple[str, bytes, bytes]]] = {"first": [], "behind": [], "ahead": []}
    stats = {ph: {"events": 0, "records": 0} for ph in phases}
    expected = {name: 0 for name in EXPERIMENT_NAMES}
    for event in events:
        kind = event.pop("topic")
        key = event["request_id"].encode()
        p = confluent_kafka.murmur2(key, PARTITIONS)    # = the producer's murmur2_random
        phase = "first" if event["ts"] < t0 else ("ahead" if p in AHEAD else "behind")
        phases[phase].append((getattr(names, kind), key, enc(event)))
        stats[phase]["events"] += 1
        if kind != "predictions":
            stats[phase]["records"] += 1
            expected[experiment_of(event)] += 1
    total = sum(v["events"] for v in stats.values())
    log(f"[skew] stream of {total:,} events over {SKEW_SPAN_S / 3600:.0f} h of event time "
        f"({event_rate * 3.9:.1f} events/s of event time): {stats}")
    res: dict = {"events": total, "phases": stats, "event_rate": total / SKEW_SPAN_S,
                 "expected_records": sum(expected.values())}
    res["variant"], res["max_skew"] = variant, max_skew
    child = SkewChild(bootstrap, names.prefix, exp_file, out_dir, variant, max_skew)
    dump_dir = child.dir / "dump"
    dump_dir.mkdir(exist_ok=True)
    try:
        produce_raw(bootstrap, phases["first"], total=len(phases["first"]), what="events (first 10 min)")
        ends = end_offsets(bootstrap, list(names.inputs()))
        began = time.monotonic()
        child.start()

        def all_idle(s: dict) -> bool:
            return bool(s["frontiers"]) and all(
                len(fr) == PARTITIONS and all(math.isinf(v) and v > 0 for v in fr.values())
                for fr in s["frontiers"].values())

        s = child.wait(lambda s: consumed(s, range(PARTITIONS), ends, names)
                       and s["buffered"] == 0 and all_idle(s), 180, "the first 10 minutes")
        res["first"] = {"s": time.monotonic() - began, "rss": s["rss"], "merged": s["merged"]}
        log(f"[skew] first 10 min read in {res['first']['s']:.1f} s; RSS {s['rss'] / 2**20:.0f} MiB")
        child.command("pause", partitions=list(BEHIND))
        produce_raw(bootstrap, phases["behind"], total=len(phases["behind"]),
                    what="events (partitions 3-5, minutes 10-120; paused)")
        ends = end_offsets(bootstrap, list(names.inputs()))

        def behind_seen(s: dict) -> bool:
            return len(s["frontiers"]) == len(EXPERIMENT_NAMES) and all(
                all(math.isfinite(fr.get(str(p), math.inf)) for p in BEHIND)
                for fr in s["frontiers"].values())

        s = child.wait(behind_seen, 60, "the backlog of 3-5 to reach the evaluators")
        time.sleep(3.0)
        s = child.status()
        res["baseline"] = {"rss": s["rss"], "buffered": s["buffered"], "behind_ts": s["behind_ts"],
                           "join": s["join"], "eval_state_bytes": s["eval_state"]["bytes"],
                           "checkpoints": s["checkpoints"]}
        log(f"[skew] 3-5 held at minute {(s['behind_ts'] - START_TS) / 60:.1f}; baseline RSS "
            f"{s['rss'] / 2**20:.0f} MiB, buffered {s['buffered']}")
        child.command("reset")
        t_ahead = time.monotonic()
        produce_raw(bootstrap, phases["ahead"], total=len(phases["ahead"]),
                    what="events (partitions 0-2, minutes 10-120)")
        ends = end_offsets(bootstrap, list(names.inputs()))
        # read to the end, or (with the worker's own skew limit) paused by the worker
        s = child.wait(lambda s: consumed(s, AHEAD, ends, names)
                       or set(AHEAD) <= set(s.get("worker_paused", ())), 300,
                       "0-2 to be read (or paused by the worker)")
        # then until the evaluators took every batch (no eval-state write for 3 checkpoints)
        stable_since, last_msgs = time.monotonic(), -1
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            s = child.status()
            if s["eval_state"]["messages"] != last_msgs:
                last_msgs, stable_since = s["eval_state"]["messages"], time.monotonic()
            elif time.monotonic() - stable_since > 3.5:
                break
            time.sleep(0.25)
        s = child.status()
        child.command("dump", dir=str(dump_dir))
        res["peak"] = {"s": time.monotonic() - t_ahead, "rss": s["rss"], "hwm": s["hwm"],
                       "worker_paused": s.get("worker_paused", []),
                       "ahead_read": {p: s["join"].get(str(p)) for p in AHEAD},
                       "ahead_end": {p: {k: ends.get((getattr(names, k), p)) for k in KINDS}
                                     for p in AHEAD},
                       "buffered": s["buffered"], "buffered_by": s["buffered_by"],
                       "skew_s": s["skew_s"], "ahead_ts": s["ahead_ts"],
                       "behind_ts": s["behind_ts"],
                       "behind_offsets": {p: s["join"].get(str(p)) for p in BEHIND},
                       "baseline_behind_offsets": {p: res["baseline"]["join"].get(str(p))
                                                   for p in BEHIND},
                       "eval_state_largest": s["eval_state"]["largest"],
                       "eval_state_last": s["eval_state"]["last"],
                       "eval_state_written": s["eval_state"]["bytes"]
                       - res["baseline"]["eval_state_bytes"],
                       "checkpoint_max_s": s["checkpoints"]["max_s"],
                       "checkpoints": s["checkpoints"]["n"] - res["baseline"]["checkpoints"]["n"],
                       "checkpoint_s": s["checkpoints"]["total_s"]
                       - res["baseline"]["checkpoints"]["total_s"]}
        log(f"[skew] peak: {s['buffered']:,} records buffered at {s['skew_s'] / 60:.0f} min of "
            f"skew; RSS {s['rss'] / 2**20:.0f} MiB; eval-state messages {s['eval_state']['largest']}")
        child.command("reset")
        t_resume = time.monotonic()
        child.command("resume", partitions=list(BEHIND))
        settled = {"merged": -1, "since": time.monotonic()}

        def caught_up(s: dict) -> bool:
            if s["merged"] != settled["merged"]:
                settled.update(merged=s["merged"], since=time.monotonic())
            return consumed(s, range(PARTITIONS), ends, names) and s["buffered"] == 0 and (
                s["merged"] >= res["expected_records"]
                or time.monotonic() - settled["since"] > 10)   # settled short

        s = child.wait(caught_up, 300, "the catch-up of 3-5")
        time.sleep(3.0)
        s = child.status()
        res["after"] = {"s": (settled["since"] if s["merged"] < res["expected_records"]
                              else time.monotonic() - 3.0) - t_resume,
                        "rss": s["rss"], "hwm": s["hwm"],
                        "buffered": s["buffered"], "merged": s["merged"],
                        "policy_records": s["policy_records"],
                        "eval_state_last": s["eval_state"]["last"],
                        "eval_state_largest": s["eval_state"]["largest"],
                        "checkpoint_max_s": s["checkpoints"]["max_s"]}
        log(f"[skew] caught up in {res['after']['s']:.1f} s; RSS {s['rss'] / 2**20:.0f} MiB, "
            f"buffered {s['buffered']}, merged {s['merged']:,} / {res['expected_records']:,}")
    except RuntimeError as exc:
        log(f"[skew] failed: {exc}")
        res["error"] = str(exc)
    finally:
        code, took = child.stop()
        res["exit_code"], res["stop_s"] = code, took
    res["history"] = child.history()
    # Python heap per buffered record: the largest eval-state message, decoded again here
    experiments = {e.name: e for e in load_experiments(exp_file)}
    heaps = {}
    for f in sorted(dump_dir.glob("*.msgpack")):
        heaps[f.stem] = heap_per_record(f.read_bytes(), experiments[f.stem])
    res["heap"] = heaps
    return res


def skew_limit() -> float | None:
    """The measured worker's default ``max_skew`` (an event-time limit on how far a join
    partition may run ahead, if its tree has one), else None."""
    import re

    if "skew_limit" in RENDERED:  # re-rendering a saved run
        return RENDERED["skew_limit"]
    try:
        source = (WORKER_ROOT / "rollguard" / "agents" / "runtime.py").read_text()
    except OSError:
        return None
    m = re.search(r"^\s+max_skew: float = ([0-9.e+]+)", source, re.M)
    return float(m.group(1)) if m else None


def tree_state() -> str:
    """HEAD and the uncommitted files under rollguard/ (the tree changes while we measure)."""
    if "tree" in RENDERED:
        return RENDERED["tree"]
    if WORKER_REF:
        return (f"the workers ran `{WORKER_REF[0]}` = {WORKER_REF[1]} (exported with `git "
                "archive`; uncommitted changes of the working tree are NOT in these figures)")
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"],
                              capture_output=True, text=True, timeout=20).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--short", "--", "rollguard"],
                               capture_output=True, text=True, timeout=20).stdout.split("\n")
        dirty = [ln[3:] for ln in dirty if ln.strip()]
    except Exception:  # noqa: BLE001
        return "unknown"
    return f"HEAD {head[:90]}" + (f"; uncommitted in rollguard/: {', '.join(dirty)}"
                                  if dirty else "; no uncommitted change in rollguard/")


# -- report -----------------------------------------------------------------------------------
def fmt(x: float | None, spec: str = ",.0f", none: str = "—") -> str:
    return none if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def rel_diff(a, b) -> float:
    """Largest relative difference between the numbers of two JSON values of the same shape
    (inf when the shapes or non-numbers differ)."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None \
            or isinstance(a, str) or isinstance(b, str):
        return 0.0 if a == b else math.inf
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if a == b:
            return 0.0
        return abs(a - b) / max(abs(a), abs(b))
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return math.inf
        return max((rel_diff(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return math.inf
        return max((rel_diff(x, y) for x, y in zip(a, b)), default=0.0)
    return 0.0 if a == b else math.inf


def render_group(g: dict) -> list[str]:
    stream, runs = g["stream"], g["runs"]
    total = stream["events"]
    lines = [
        f"Stream: {total:,} events produced once ({stream['requests']:,} requests, "
        f"{stream['predictions']:,} predictions, {stream['labels']:,} labels; the throughput "
        f"benchmark's three undecided shadow experiments), {PARTITIONS} partitions per topic. "
        "For N = 1, 2, 3: N `python -m rollguard.cli worker` processes started at once with "
        "the same fresh `--app-id` (one consumer group, reading from the beginning), distinct "
        "`--instance-id` and `--data-dir`, `--snapshot-interval 1`, checkpoints every 1 s. "
        "**Done = the stats topic's latest snapshot of every experiment counts every joined "
        "record of the stream (`statistics.records` = requests + labels) with `buffered` = 0** "
        "(end to end, evaluators included). Wall time from launching the processes (imports, "
        "group join, rebalances, restores included); \"after start-up\" from the group's first "
        "committed offset (polled every 1 s). CPU = utime + stime of the worker processes (all "
        "threads) from /proc, read at done before stopping them; the broker's over the same "
        "window.", ""]
    base = runs[0]
    rows = []
    for r in runs:
        if not r.get("wall_s"):
            rows.append([r["workers"], "failed", "—", "—", "—", "—", "—", "—", "—", "—"])
            continue
        rate = total / r["wall_s"]
        base_rate = total / base["wall_s"] if base.get("wall_s") else None
        after = (total / (r["wall_s"] - r["startup_s"])) if r.get("startup_s") else None
        cpu_k = r["cpu_total_s"] / total * 1000
        base_cpu_k = base["cpu_total_s"] / total * 1000 if base.get("cpu_total_s") else None
        bro = r["broker_cpu_s"] / total * 1000 if r.get("broker_cpu_s") is not None else None
        split = " / ".join(str(lv.get("join", "?")) for lv in r["liveness"])
        rows.append([f"{r['workers']}" + ("" if r["complete"] else " (**short**, below)"
                                          if r.get("settled_short") else " (**incomplete**)"),
                     split, f"{r['wall_s']:.1f}", fmt(r.get("startup_s"), ".1f"),
                     f"{rate:,.0f}", f"{rate / base_rate:.2f}" if base_rate else "—",
                     fmt(after), f"{cpu_k:.2f}",
                     f"{cpu_k / base_cpu_k:.2f}" if base_cpu_k else "—", fmt(bro, ".2f")])
    lines.append(table(["workers", "join partitions per worker", "wall s", "start-up s",
                        "events/s", "vs 1 worker", "events/s after start-up",
                        "worker CPU s per 1k events", "vs 1 worker",
                        "broker CPU s per 1k events"], rows))
    lines.append("")
    # CPU split: start-up vs the rest
    parts = []
    for r in runs:
        if r.get("cpu_at_first_commit_s") is not None:
            rest = r["cpu_total_s"] - r["cpu_at_first_commit_s"]
            parts.append(f"{r['workers']} worker(s): {r['cpu_total_s']:.1f} s in all "
                         f"({', '.join(f'{c:.1f}' for c in r['cpu_s'])}), of which "
                         f"{r['cpu_at_first_commit_s']:.1f} s until the first committed offset; "
                         f"{rest / total * 1000:.2f} s per 1k events after it")
    if parts:
        lines.append("Worker CPU seconds: " + "; ".join(parts) + ".")
        lines.append("")
    done = [r for r in runs if r.get("wall_s") and r.get("cpu_total_s")]
    if len(done) > 1 and base in done:
        ratios = [r["cpu_total_s"] / base["cpu_total_s"] for r in done[1:]]
        speed = [base["wall_s"] / r["wall_s"] for r in done[1:]]
        lines.append(
            f"Reading: the workers and the broker share 2 cores, so events/s can grow only "
            f"until the machine is busy (here {', '.join(f'{x:.2f}×' for x in speed)} with "
            f"{', '.join(str(r['workers']) for r in done[1:])} workers); CPU seconds per event, "
            f"which is what more machines would each pay, stay within "
            f"{max(abs(x - 1) for x in ratios):.0%} of one worker's "
            f"({', '.join(f'{x:.2f}×' for x in ratios)}): a group of workers costs little more "
            "than one (each its own consumer, checkpoint transactions, and a rebalance or two at "
            "the start).")
        lines.append("")
    # correctness
    want = stream["records"]
    ok_counts, ok_base, ok_decision, ok_stats = [], [], [], []
    b = base.get("snapshots") or {}
    for r in runs:
        snaps = r.get("snapshots") or {}
        counts = {n: (snaps.get(n) or {}).get("statistics", {}).get("records") for n in want}
        ok_base.append(counts == {n: (b.get(n) or {}).get("statistics", {}).get("records")
                                  for n in want})
        ok_counts.append(counts == want)
        ok_decision.append(all((snaps.get(n) or {}).get("decision") == (b.get(n) or {}).get(
            "decision") for n in want))
        ok_stats.append(max((rel_diff((snaps.get(n) or {}).get("statistics"),
                                      (b.get(n) or {}).get("statistics")) for n in want),
                            default=math.inf))
    lines.append(
        "Correctness: final `statistics.records` per experiment "
        + ", ".join(f"{n} {c:,}" for n, c in want.items())
        + " expected; " + "; ".join(
            f"{r['workers']} worker(s): "
            + ("**equal** to the stream's" if ok else "**DIFFERENT** from the stream's")
            + ("" if r is base else (", equal to the 1-worker run's" if same else
                                     ", **different from the 1-worker run's**"))
            + f" (decision state {'identical' if dec else '**different**'}, whole `statistics` "
            + ("object identical" if st == 0 else
               f"object: same structure, numbers equal to a relative {st:.0e} (floating-point "
               "sums of the partitions' partials in another order)" if st < 1e-9 else
               f"object **differs** (largest relative difference {st:.2g})") + ")"
            for r, ok, same, dec, st in zip(runs, ok_counts, ok_base, ok_decision, ok_stats))
        + ".")
    lines.append("")
    for r in runs:
        notes = []
        if r.get("error"):
            notes.append(r["error"])
        if not r.get("complete"):
            snaps = r.get("snapshots") or {}
            got = {n: (snaps.get(n) or {}).get("statistics", {}).get("records") for n in want}
            short = {n: want[n] - (got[n] or 0) for n in want}
            notes.append(
                ("counts settled SHORT of the stream's (no change for "
                 f"{SETTLE_S:.0f} s with every offset committed and nothing buffered; timed at "
                 "the last change): " if r.get("settled_short") else "NOT complete: ")
                + ", ".join(f"{n} {got[n]} ({short[n]:,} missing)" for n in want)
                + "; counters " + "; ".join(
                    f"{n}: {(snaps.get(n) or {}).get('counters')}" for n in want))
        if any(c not in (0, None) for c in r.get("exit_codes", [])):
            notes.append(f"exit codes on SIGTERM {r['exit_codes']}")
        if r.get("log_errors"):
            notes.append("log errors: " + " | ".join(r["log_errors"]))
        if notes:
            lines.append(f"- {r['workers']} worker(s): " + "; ".join(notes))
    details = "; ".join(
        f"{r['workers']}: restore rounds per worker {r.get('restore_rounds')}, SIGTERM exit "
        f"codes {r.get('exit_codes')} after {r.get('stop_s')} s, peak-time RSS "
        f"{[round(x / 2**20) for x in r.get('rss', [])]} MiB" for r in runs)
    lines.append(f"Per run: {details}.")
    lines.append("")
    return lines


def skew_rows(history: list[dict], rows: int = 8) -> list[dict]:
    """Samples where the buffer grew, thinned to about ``rows`` spread over the skew."""
    grown, last = [], 0
    for h in history:
        if h["buffered"] > last:
            grown.append(h)
            last = h["buffered"]
    if len(grown) <= rows:
        return grown
    top = grown[-1]["skew_s"]
    picked = []
    for i in range(1, rows + 1):
        target = top * i / rows
        h = next(h for h in grown if h["skew_s"] >= target - 1e-9)
        if h not in picked:
            picked.append(h)
    return picked


def render_skew(k: dict) -> list[str]:
    from rollguard.agents.checkpoint import INTERNAL_MESSAGE_MAX

    lines = []
    if not k.get("peak"):
        return [f"**The skew part did not complete**: {k.get('error', '?')}", ""]
    ph = k["phases"]
    rate = k["event_rate"]
    ahead_rate = ph["ahead"]["events"] / (SKEW_SPAN_S - SKEW_T0_S)
    lines.append(
        f"Stream: {k['events']:,} events over {SKEW_SPAN_S / 3600:.0f} h of event time "
        f"({rate:.1f} events/s of event time, {rate / 3:.1f} per experiment; the same three "
        f"shadow experiments, `allowed_lateness: 2s`). One worker (in a child process: "
        "`build_app` + `faust.Worker`) read the first 10 minutes of every partition "
        f"({ph['first']['events']:,} events); then its consumer paused partitions 3-5 of the "
        f"input topics and their remaining {ph['behind']['events']:,} events were produced "
        "(backlogged: their frontier stays at minute 10, as for partitions whose worker is down "
        f"or an hour behind); then the remaining {ph['ahead']['events']:,} events of partitions "
        f"0-2 (minutes 10-120, {ahead_rate:.1f} events/s of event time) were produced and read; "
        "finally 3-5 were resumed.")
    lines.append("")
    peak, base, after = k.get("peak"), k.get("baseline"), k.get("after")
    if k.get("error"):
        lines.append(f"**The skew part stopped early**: {k['error']}")
        lines.append("")
    rows = []
    for h in skew_rows(k.get("history", [])):
        es = h["eval_state"]
        rows.append([f"{h['skew_s'] / 60:.0f}", f"{h['buffered']:,}",
                     f"{h['rss'] / 2**20:.0f}",
                     f"{max(es['last'].values(), default=0) / 1024:,.0f}",
                     f"{sum(es['last'].values()) / 1024:,.0f}",
                     f"{h['checkpoints']['last_s'] * 1000:.0f}"])
    lines.append(table(["skew: min of event time the buffer spans (newest record − 3-5's "
                        "frontier)",
                        "records buffered (all evaluators)", "worker RSS MiB",
                        "largest eval-state message KiB (one experiment)",
                        "eval-state per checkpoint KiB (all experiments)",
                        "that checkpoint ms"], rows))
    lines.append("")
    buffered = peak["buffered"]
    rss_delta = peak["rss"] - base["rss"]
    msg_total = sum(peak["eval_state_last"].values())
    heaps = k.get("heap") or {}
    heap_recs = sum(h["records"] for h in heaps.values())
    heap_bytes = sum(h["heap_bytes"] for h in heaps.values())
    heap_pr = heap_bytes / heap_recs if heap_recs else None
    msg_pr = msg_total / buffered if buffered else None
    rss_pr = rss_delta / buffered if buffered else None
    skew_h = peak["skew_s"] / 3600
    per_hour = buffered / skew_h if skew_h else None
    held = all(peak["behind_offsets"].get(p) == peak["baseline_behind_offsets"].get(p)
               for p in BEHIND)
    missing = ph["ahead"]["records"] - buffered
    not_held = "" if missing <= 0 else (
        f" ({missing:,} were not held: those the evaluators released before 3-5's backlog "
        "reached them, or still pending in the join)")
    lines.append(
        f"At the peak, {peak['skew_s'] / 60:.0f} min of skew: **{buffered:,} records buffered** "
        f"({', '.join(f'{n} {v:,}' for n, v in sorted(peak['buffered_by'].items()))}) of the "
        f"{ph['ahead']['records']:,} joined records of 0-2 past minute 10{not_held}; worker RSS "
        f"{base['rss'] / 2**20:.0f} → **{peak['rss'] / 2**20:.0f} MiB** (+{rss_delta / 2**20:.0f} "
        f"MiB; VmHWM {peak['hwm'] / 2**20:.0f} MiB); eval-state messages of the last checkpoint "
        f"{', '.join(f'{n} {v / 2**20:.1f} MiB' for n, v in sorted(peak['eval_state_last'].items()))}"
        f" (largest while growing: {max(peak['eval_state_largest'].values(), default=0) / 2**20:.1f}"
        f" MiB). Partitions 3-5 stayed paused at their offsets: {'yes' if held else 'NO'}.")
    lines.append("")
    lines.append(
        "Bytes per buffered record: **"
        + (f"{msg_pr:.0f} B" if msg_pr else "—") + " in the checkpoint message** (msgpack, "
        "before the producer's lz4), **"
        + (f"{heap_pr:.0f} B of Python heap** (the largest message decoded again into an "
           "evaluator under tracemalloc: " + ", ".join(
               f"{n} {h['records']:,} records, {h['heap_per_record']:.0f} B/record"
               for n, h in sorted(heaps.items())) + ")" if heap_pr else "— of heap**")
        + ", " + (f"{rss_pr:.0f} B of worker RSS growth" if rss_pr else "—")
        + " (heap plus allocator slack and the checkpoint's encode buffers).")
    lines.append("")
    lines.append(
        f"Cost of holding it: while 0-2 were read, each checkpoint re-encoded and re-wrote the "
        f"whole buffer of every experiment that received a batch: "
        f"{peak['eval_state_written'] / 2**20:,.0f} MiB written to the eval-state topic in "
        f"{peak['checkpoints']} checkpoints ({peak['s']:.0f} s), the longest checkpoint "
        f"{peak['checkpoint_max_s'] * 1000:.0f} ms (the event loop is blocked meanwhile; "
        f"checkpoints took {peak['checkpoint_s']:.1f} s of those {peak['s']:.0f} s). Once 0-2 "
        "were read to the end and idle, no batch changed the evaluators and nothing more was "
        "written.")
    lines.append("")
    if after:
        lines.append(
            f"After resuming 3-5: caught up in {after['s']:.1f} s; records buffered "
            f"{after['buffered']:,}; merged {after['merged']:,} / {k['expected_records']:,}; "
            f"worker RSS {after['rss'] / 2**20:.0f} MiB (VmHWM {after['hwm'] / 2**20:.0f} MiB: "
            "Python keeps freed memory), last eval-state messages "
            + ", ".join(f"{n} {v / 1024:.1f} KiB" for n, v in sorted(after['eval_state_last'].items()))
            + f"; longest checkpoint during the catch-up {after['checkpoint_max_s'] * 1000:.0f} ms.")
        lines.append("")
    # extrapolation
    if per_hour and msg_pr and heap_pr:
        rec_per_event = ph["ahead"]["records"] / ph["ahead"]["events"]
        lines.append(
            ("**Unbounded without the limit** (`max_skew = inf`, as before the limit existed)"
             if k.get("max_skew") == math.inf else "**Unbounded today**")
            + ": the reorder buffer holds every record of the partitions that "
            f"are ahead until the lagging ones' frontier passes it, so it grows with rate × skew "
            f"and nothing caps it. Here: {per_hour:,.0f} records and "
            f"{per_hour * heap_pr / 2**20:,.1f} MiB of heap "
            f"({per_hour * msg_pr / 2**20:,.1f} MiB of checkpoint) per hour of skew at "
            f"{ahead_rate:.1f} input events/s on the partitions ahead ({rec_per_event:.2f} joined "
            "records per input event: a request and 90 % labelled, two predictions each). Per "
            f"input event/s ahead and hour of skew: {3600 * rec_per_event:,.0f} records, "
            f"{3600 * rec_per_event * heap_pr / 2**20:.2f} MiB heap, "
            f"{3600 * rec_per_event * msg_pr / 2**20:.2f} MiB of checkpoint.")
        lines.append("")
        limit_records = INTERNAL_MESSAGE_MAX / msg_pr
        rows = []
        for r in (10, 100, 1_000, 10_000):
            recs_h = 3600 * r * rec_per_event
            to_limit_h = limit_records / (r * rec_per_event) / 3600
            rows.append([f"{r:,}", f"{recs_h:,.0f}", f"{recs_h * heap_pr / 2**30:,.2f}",
                         f"{recs_h * msg_pr / 2**20:,.0f}",
                         (f"{to_limit_h:,.1f} h" if to_limit_h >= 1 else
                          f"{to_limit_h * 60:,.1f} min")])
        lines.append(table(["input events/s of ONE experiment on the partitions ahead",
                            "records buffered per hour of skew", "GiB of heap per hour",
                            "MiB of that experiment's checkpoint message per hour",
                            "skew at which that message passes 64 MiB"], rows))
        lines.append("")
        lines.append(
            f"The eval-state message is per experiment (`e/<experiment>`), so the 64 MiB "
            f"(INTERNAL_MESSAGE_MAX) limit is reached at ≈ {limit_records:,.0f} buffered records "
            f"of one experiment (at {msg_pr:.0f} B each), i.e. skew (s) × that experiment's "
            f"input events/s ahead ≈ {limit_records / rec_per_event:,.0f}: one hour of skew at "
            f"≈ {limit_records / rec_per_event / 3600:,.0f} events/s of one experiment. Past it "
            "the checkpoint's transaction fails (CheckpointError), the worker stops with exit "
            "75 and, restarted, restores the same state and meets the same limit again at the "
            "next batch. Long before that, re-encoding the whole buffer at every checkpoint "
            "costs the time and eval-state bytes shown above.")
        lines.append("")
    return lines


def render_skew_compare(skew: dict) -> list[str]:
    rows = []
    for name, k in skew.items():
        peak, base, after = k.get("peak"), k.get("baseline"), k.get("after")
        label = "no limit (max_skew = inf)" if k.get("max_skew") == math.inf else \
            f"the tree's default limit (max_skew = {skew_limit():.0f} s)"
        if not peak:
            rows.append([label, k.get("error", "failed")[:80]] + ["—"] * 7)
            continue
        read = sum(sum((v or {}).values()) for v in peak["ahead_read"].values())
        end = sum(sum(v.values()) for v in peak["ahead_end"].values())
        rows.append([
            label, f"{peak['buffered']:,}", f"{peak['skew_s'] / 60:.1f}",
            f"{base['rss'] / 2**20:.0f} → {peak['rss'] / 2**20:.0f}",
            f"{max(peak['eval_state_largest'].values(), default=0) / 2**20:.2f}",
            f"{peak['eval_state_written'] / 2**20:,.0f}",
            f"{peak['checkpoint_max_s'] * 1000:,.0f}",
            f"{read:,} / {end:,}" + (" (paused by the worker)" if peak.get("worker_paused")
                                     else ""),
            f"{after['s']:.1f}" if after else "—"])
    lines = ["With and without the limit, same scenario (fresh prefix and stream each):", "",
             table(["worker", "records buffered at the peak", "event time the buffer spans, min",
                    "worker RSS MiB, before → peak", "largest eval-state message MiB",
                    "eval-state MiB written while 0-2 were read",
                    "longest checkpoint ms", "input events of 0-2 read at the peak / produced",
                    "catch-up after resuming 3-5, s"], rows), ""]
    lim = skew.get("limit") or {}
    free = skew.get("unlimited") or {}
    if lim.get("peak"):
        peak, limit_s = lim["peak"], skew_limit() or 0.0
        heaps = free.get("heap") or {}
        recs = sum(h["records"] for h in heaps.values())
        heap_pr = sum(h["heap_bytes"] for h in heaps.values()) / recs if recs else None
        over = peak["skew_s"] - limit_s
        lines.append(
            f"With the limit the buffer held {peak['buffered']:,} records spanning "
            f"{peak['skew_s'] / 60:.1f} min of event time for max_skew = {limit_s / 60:.0f} min"
            + (f": pauses are decided at checkpoints (every 1 s) and a partition reads on "
               f"until then, here ≈ {over / 60:.1f} min of event time past the limit"
               if over > 0 else "")
            + "; the rest of 0-2 waited in Kafka (paused by the worker). Its memory is the same "
            "per buffered record" + (f" (≈ {heap_pr:,.0f} B of heap)" if heap_pr else "")
            + ", so it is bounded by rate × (max_skew + what one checkpoint interval reads), "
            "whatever the lag.")
        history = lim.get("history") or []
        if history:
            most = max(history, key=lambda h: h["buffered"])
            widest = max(h["skew_s"] for h in history)
            largest = max(max(h["eval_state"]["largest"].values(), default=0) for h in history)
            lines.append(
                f"Over the whole run, catch-up included (3-5 reading their backlog while 0-2 "
                f"are paused and resumed in turn): at most {most['buffered']:,} records buffered, "
                f"a span of at most {widest / 60:.1f} min, eval-state messages of at most "
                f"{largest / 2**20:.2f} MiB.")
        if lim.get("after"):
            a = lim["after"]
            lines.append(
                f"After resuming 3-5: merged {a['merged']:,} / {lim['expected_records']:,} "
                f"records, buffered {a['buffered']:,}"
                + (" — **records missing**" if a["merged"] < lim["expected_records"] else
                   " (nothing lost)") + f"; the catch-up took {a['s']:.1f} s against "
                f"{(free.get('after') or {}).get('s', float('nan')):.1f} s without the limit "
                "(0-2 now had their rest to read too).")
        elif lim.get("error"):
            lines.append(f"After resuming 3-5: **{lim['error']}**.")
        lines.append("")
    return lines


def render(args, group: dict | None, skew: dict | None, load_before: dict | None,
           load_after: tuple | None, elapsed: float, watch: LoadWatch | None = None) -> str:
    cmd = "python bench/bench_scaleout.py" + (" --quick" if args.quick else "") + \
        (f" --events {args.events}" if args.events else "") + \
        (f" --skew-events {args.skew_events}" if args.skew_events else "") + \
        (f" --part {args.part}" if args.part != "all" else "") + \
        (f" --worker-ref {args.worker_ref}" if getattr(args, "worker_ref", None) else "")
    lines = [f"Command: `{cmd}` (from the repository root with `.venv`), {elapsed / 60:.1f} min "
             f"in all. Machine: {machine_line()}; a single local KRaft broker on the same cores. "
             f"Tree measured: {tree_state()}."]
    if load_before is not None:
        lb = load_before["load"]
        lines.append("")
        lines.append(
            f"Load average (1, 5, 15 min) before the run: {lb[0]:.2f} {lb[1]:.2f} {lb[2]:.2f}"
            + (f" (after waiting {load_before['waited_s'] / 60:.1f} min for the 1-minute load "
               "to drop below 0.7)" if load_before["waited_s"] > 1 else "")
            + ("" if load_before["quiet"] else " — **the machine did not get quiet within 12 "
               "min; figures taken anyway**")
            + (f"; after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} (this "
               "run's own load included)" if load_after else "")
            + (f"; highest 1-minute load during the run {watch.max_load:.2f}; other Kafka tests "
               "or workers (pytest, `rollguard.cli worker` not started by this script) running "
               f"in {watch.foreign_samples} of {watch.samples} 5-second samples"
               + (" — **the figures share the machine with them**" if watch.foreign_samples
                  else "") if watch and watch.samples else "") + ".")
    lines.append("")
    if group:
        lines.append("### 1, 2 and 3 workers in one consumer group")
        lines.append("")
        lines += render_group(group)
    if skew:
        lines.append("### The evaluator's reorder buffer when partitions lag by over an hour")
        lines.append("")
        unlimited = skew.get("unlimited")
        if unlimited and unlimited.get("max_skew") == math.inf:
            lines.append(
                f"The measured tree has an event-time limit (`--max-skew`, default "
                f"{skew_limit():.0f} s: join partitions that run further ahead of the slowest "
                "pause, agents/skew.py). First the worker WITHOUT it (`max_skew = inf`: what "
                "the buffer costs when nothing bounds it, as before the limit), then with the "
                "default.")
            lines.append("")
        if unlimited:
            lines += render_skew(unlimited)
        if skew.get("limit"):
            lines += render_skew_compare(skew)
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small streams, no waiting for quiet")
    ap.add_argument("--events", type=int, default=None, help="events of the group part")
    ap.add_argument("--skew-events", type=int, default=None, help="events of the skew part")
    ap.add_argument("--part", choices=("group", "skew", "all"), default="all")
    ap.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    ap.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    # the skew child
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--workers", default="1,2,3", help=argparse.SUPPRESS)
    ap.add_argument("--worker-args", default="", help=argparse.SUPPRESS)
    ap.add_argument("--render-from", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-ref", default=None,
                    help="run the workers from this commit (git archive into a temporary "
                         "directory) instead of the working tree, e.g. HEAD")
    for name in ("--bootstrap", "--prefix", "--experiments", "--app-id", "--data-dir",
                 "--status", "--history", "--commands", "--max-skew"):
        ap.add_argument(name, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "skew":
        child_skew(args)
        return
    if args.render_from:  # the report of a saved run again (after a change of render only)
        from types import SimpleNamespace

        raw = json.loads(Path(args.render_from).read_text())
        RENDERED.update(skew_limit=raw["skew_limit"], tree=raw["tree"])
        report = render(SimpleNamespace(**raw["args"]), raw["group"], raw["skew"],
                        raw["load_before"], raw["load_after"], raw["elapsed"],
                        SimpleNamespace(**raw["watch"]))
        print(report)
        if not raw["args"]["quick"] and not args.no_results:
            write_section("Scale-out", report)
        return

    global WORKER_ROOT, WORKER_REF
    if args.worker_ref:
        WORKER_ROOT = Path(tempfile.mkdtemp(prefix="rollguard-bench-tree-"))
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.worker_ref],
                                 capture_output=True, timeout=60, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(WORKER_ROOT)], input=archive, check=True,
                       timeout=60)
        described = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s",
                                    args.worker_ref], capture_output=True, text=True,
                                   timeout=20).stdout.strip()
        if len(described) > 80:
            described = described[:80].rsplit(" ", 1)[0] + " …"
        WORKER_REF = (args.worker_ref, described)
        log(f"workers run from {WORKER_ROOT}: {described}")
    n_group = args.events or (30_000 if args.quick else 300_000)
    n_skew = args.skew_events or (30_000 if args.quick else 300_000)
    load_before = None
    if not args.quick and not args.no_wait:
        load_before = wait_quiet()
        log(f"load before: {load_before}")
    else:
        load_before = {"load": loadavg(), "waited_s": 0.0, "quiet": True}
    began = time.monotonic()
    out_dir = Path(tempfile.mkdtemp(prefix="rollguard-bench-scaleout-"))
    exp_file = out_dir / "experiments.yaml"
    exp_file.write_text(EXPERIMENTS)
    group = skew = None
    with LoadWatch() as watch, broker() as bootstrap:
        if args.part in ("group", "all"):
            group = part_group(bootstrap, exp_file, out_dir, n_group, args.quick,
                               [int(x) for x in args.workers.split(",")],
                               args.worker_args.split())
        if args.part in ("skew", "all"):
            skew = {"unlimited": part_skew(bootstrap, exp_file, out_dir, n_skew, "unlimited",
                                           math.inf if skew_limit() is not None else None)}
            if skew_limit() is not None:
                skew["limit"] = part_skew(bootstrap, exp_file, out_dir, n_skew, "limit", None)
    load_after = loadavg()
    elapsed = time.monotonic() - began
    raw = {"group": group, "skew": skew, "load_before": load_before, "load_after": load_after,
           "watch": {"max_load": watch.max_load, "samples": watch.samples,
                     "foreign_samples": watch.foreign_samples},
           "elapsed": elapsed, "skew_limit": skew_limit(), "tree": tree_state(),
           "args": {k: getattr(args, k) for k in ("quick", "events", "skew_events", "part",
                                                   "worker_ref")}}
    (out_dir / "raw.json").write_text(json.dumps(raw, default=str))
    report = render(args, group, skew, load_before, load_after, elapsed, watch)
    print(report)
    if not args.quick and not args.no_results:
        write_section("Scale-out", report)
    if WORKER_REF:
        shutil.rmtree(WORKER_ROOT, ignore_errors=True)
    log(f"done in {time.monotonic() - began:.0f} s; raw results and logs in {out_dir}")


if __name__ == "__main__":
    main()
