"""Pending join state: memory per pending request, and a worker holding a million of them.

    .venv/bin/python bench/bench_pending.py [--quick] [--part store|worker|all]
                                            [--requests 1000000] [--ab]

Part "store" (no Kafka): a ``Joiner`` of one experiment (label_ttl 90 d) is fed predictions
that never get a label, with the worker's per-checkpoint housekeeping every 10,000 requests
(release, check_pairs, expire, drain_dirty, and for disk ``committed``, as
``JoinPartition.settle`` and the checkpoint do). Each case runs in a fresh child process and
reports:

- ``MemoryStore``: bytes per pending request by tracemalloc (Python heap, allocation sites)
  and by RSS (a larger run, no tracemalloc); for a shadow request (two predictions), a shadow
  request with its request event (unit, segments), and an ab request (one prediction);
- ``DiskStore`` (RocksDB through rocksdict): RSS growth per pending request, Python heap per
  pending request, and disk bytes per pending request (as left by the store, and after a
  flush + full compaction), plus the feed rate;
- for every case, the feed rate (µs per event through the ``Joiner``) and the store's own
  ``get`` + ``put`` round trip on pending entries, with its share of the next ``drain_dirty``
  (µs; a changed entry written back with and without a new deadline, as
  ``on_label``/``on_prediction`` do).

Part "worker" (real broker): an experiment with ``label_ttl: 90d`` and ``state: disk``;
predictions of N requests (default 1,000,000; shadow, two arms each, so 2N messages; ``--ab``
for one served prediction each) and no labels are produced; the real worker
(``python -m rollguard.cli worker ... --data-dir D``) consumes them while its VmRSS is sampled;
it is stopped (SIGTERM) and restarted on the same data dir (restore from RocksDB), then on an
EMPTY data dir (restore from the Kafka changelog, timed); finally labels for 1,000 sampled
requests are produced and their outcomes are read back from the stats topic.

Results go to stdout and to the "Pending join state" section of bench/RESULTS.md (unless
--quick).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (PYTHON, ROOT, broker, committed_offsets, dir_bytes, end_offsets,  # noqa: E402
                          fresh_prefix, log, machine_line, produce_raw, rss_bytes, table,
                          worker_workarounds, write_section)

EXPERIMENT = """
- name: loans
  task: binary
  mode: {mode}
  champion: m:1
  candidates: [m:2]
  primary: {{metric: accuracy, margin: 0.01}}
  min_samples: 200
  label_ttl: 90d
  allowed_lateness: 5s
  state: {state}
"""

START_TS = 1_700_000_000.0
SPAN_S = 30 * 86400.0          # the predictions are spread over 30 days of event time
CHECKPOINT_EVERY = 10_000      # requests between two housekeeping rounds (store part)


def experiment(mode: str, state: str):
    from rollguard.schemas import parse_experiments

    [exp] = parse_experiments(EXPERIMENT.format(mode=mode, state=state), "bench.yaml")
    return exp


def prediction_bytes(i: int, n: int, arm: int, served: bool, with_context: bool = False) -> bytes:
    """One prediction as a service would publish it (compact JSON)."""
    ts = START_TS + SPAN_S * i / n + arm * 0.004
    score = ((i * 7919 + arm * 104729) % 10000) / 10000
    extra = ',"unit":"u%d","segments":{"tier":"%s"}' % (i % 250_000, "vip" if i % 5 == 0 else "std") \
        if with_context else ""
    return (b'{"request_id":"loan-%09d","experiment":"loans","ts":%.3f,"model":"m","version":"%d",'
            b'"served":%s,"prediction":%d,"score":%.4f,"latency_ms":%.2f%s}'
            % (i, ts, arm + 1, b"true" if served else b"false", int(score > 0.5), score,
               5 + score * 20, extra.encode()))


def request_bytes(i: int, n: int) -> bytes:
    ts = START_TS + SPAN_S * i / n - 0.001
    return (b'{"request_id":"loan-%09d","experiment":"loans","ts":%.3f,"unit":"u%d",'
            b'"segments":{"tier":"%s","country":"DE"}}'
            % (i, ts, i % 250_000, b"vip" if i % 5 == 0 else b"std"))


# -- part "store": one child per case --------------------------------------------------------
def child_store(args) -> dict:
    import tracemalloc

    from rollguard.schemas.events import decode_prediction, decode_request
    from rollguard.streams.join import Joiner
    from rollguard.streams.pending import DiskStore, MemoryStore, encode_entry

    case, n = args.case, args.requests
    disk_dir = None
    mode = "ab" if case == "ab" else "shadow"
    state = "disk" if case.startswith("disk") else "memory"
    exp = experiment(mode, state)
    disk = None
    if state == "disk":
        disk_dir = Path(tempfile.mkdtemp(prefix="rollguard-bench-disk-"))
        disk = DiskStore(disk_dir / "join-0")
    joiner = Joiner({"loans": exp}, memory=MemoryStore(), disk=disk)
    with_request = case == "memory-request"
    total = n + 1000
    offset = 0

    def feed(i: int) -> None:
        if with_request:
            joiner.on_request(decode_request(request_bytes(i, total)))
        if mode == "ab":
            joiner.on_prediction(decode_prediction(prediction_bytes(i, total, 0, True)))
        else:
            joiner.on_prediction(decode_prediction(prediction_bytes(i, total, 0, True)))
            joiner.on_prediction(decode_prediction(prediction_bytes(i, total, 1, False)))

    def housekeeping() -> None:
        nonlocal offset
        joiner.backlogged = frozenset()
        joiner.release()
        joiner.check_pairs()
        joiner.expire()
        for _, entry in joiner.memory.drain_dirty():
            if entry is not None:
                encode_entry(entry)
        if disk is not None:
            changed = disk.drain_dirty()
            for _, entry in changed:
                if entry is not None:
                    encode_entry(entry)
            offset += len(changed)
            disk.committed(offset)

    for i in range(1000):  # warm up: every structure exists before the baseline
        feed(i)
    housekeeping()
    gc.collect()
    if args.tracemalloc:
        tracemalloc.start(1)
    base_rss = rss_bytes()
    base_traced = tracemalloc.get_traced_memory()[0] if args.tracemalloc else 0
    snap0 = tracemalloc.take_snapshot() if args.tracemalloc else None
    samples = []
    began = time.perf_counter()
    events_per_request = (1 if mode == "ab" else 2) + (1 if with_request else 0)
    for i in range(1000, total):
        feed(i)
        if (i + 1) % CHECKPOINT_EVERY == 0:
            housekeeping()
            if (i + 1) % (CHECKPOINT_EVERY * 10) == 0:
                samples.append((i + 1 - 1000, rss_bytes(),
                                tracemalloc.get_traced_memory()[0] if args.tracemalloc else 0))
                if args.progress:
                    log(f"  ({case}) {i + 1 - 1000:,} pending, RSS {rss_bytes() / 2**20:,.0f} MiB")
    housekeeping()
    feed_s = time.perf_counter() - began
    gc.collect()
    res = {"case": case, "requests": n, "pending": joiner.pending(),
           "rss_growth": rss_bytes() - base_rss, "samples": samples,
           "feed_us_per_event": feed_s / (n * events_per_request) * 1e6,
           "events_per_request": events_per_request}
    if not args.tracemalloc:  # measured once the memory figures are taken
        res["roundtrip_us"] = store_roundtrip_us(disk if disk is not None else joiner.memory,
                                                 total)
    if args.tracemalloc:
        res["traced_growth"] = tracemalloc.get_traced_memory()[0] - base_traced
        snap1 = tracemalloc.take_snapshot()
        top = snap1.compare_to(snap0, "lineno")[:10]
        res["sites"] = [(f"{s.traceback[0].filename.split('/work/main/')[-1].split('site-packages/')[-1]}"
                         f":{s.traceback[0].lineno}", s.size_diff, s.count_diff) for s in top]
        tracemalloc.stop()
    if disk is not None:
        disk.close()
        res["disk_as_left"] = dir_bytes(disk_dir)
        from rocksdict import Options, Rdict

        opts = Options(raw_mode=True)
        db = Rdict(str(disk_dir / "join-0"), opts)
        keys = values = 0
        for k, v in db.items(from_key=b"p/"):
            if not k.startswith(b"p/"):
                break
            keys += len(k)
            values += len(v)
        res["logical_entry_bytes"] = (keys + values) / max(1, joiner.pending())
        db.flush()
        db.compact_range(None, None)
        db.close()
        res["disk_compacted"] = dir_bytes(disk_dir)
        shutil.rmtree(disk_dir, ignore_errors=True)
    return res


def store_roundtrip_us(store, total: int, rounds: int = 100_000) -> tuple[float, float]:
    """µs per ``get`` + ``put`` of a pending request (random ones, each once), with its share
    of the ``drain_dirty`` that follows: ``(same deadline, new deadline)``. Both write the
    entry back, the second with a deadline a millisecond later."""
    rng = random.Random(7)
    rids = ["loan-%09d" % i for i in rng.sample(range(1000, total), min(rounds, total - 1000))]
    got = []
    for changed in (False, True):
        began = time.perf_counter()
        for rid in rids:
            entry = store.get(rid)
            if changed:
                entry.deadline += 0.001
            store.put(rid, entry, deadline_changed=changed)
        store.drain_dirty()
        got.append((time.perf_counter() - began) / len(rids) * 1e6)
    return got[0], got[1]


def run_store_child(case: str, n: int, tracemalloc_on: bool, progress: bool = False) -> dict:
    out = Path(tempfile.mktemp(prefix="rollguard-bench-store-", suffix=".json"))
    cmd = [PYTHON, __file__, "--child-store", "--case", case, "--requests", str(n),
           "--out", str(out)] + (["--tracemalloc"] if tracemalloc_on else []) + \
        (["--progress"] if progress else [])
    log(f"store case {case}: {n:,} pending requests"
        + (" (tracemalloc)" if tracemalloc_on else " (RSS)") + " ...")
    proc = subprocess.run(cmd, timeout=1800, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"store child {case} failed: {proc.stderr[-2000:]}")
    res = json.loads(out.read_text())
    out.unlink()
    return res


def part_store(quick: bool) -> str:
    n_traced = 20_000 if quick else 100_000
    n_rss = 50_000 if quick else 500_000
    n_disk = 50_000 if quick else 300_000
    results = {}
    for case in ("memory", "memory-request", "ab"):
        results[case, "traced"] = run_store_child(case, n_traced, True)
        results[case, "rss"] = run_store_child(case, n_rss, False, progress=True)
    results["disk", "traced"] = run_store_child("disk", n_traced, True)
    results["disk", "rss"] = run_store_child("disk", n_disk, False, progress=True)

    rows = []
    labels = {"memory": "MemoryStore, shadow request (2 predictions)",
              "memory-request": "MemoryStore, shadow request + request event (unit, segments)",
              "ab": "MemoryStore, ab request (1 served prediction)",
              "disk": "DiskStore (RocksDB), shadow request (2 predictions)"}
    for case in ("memory", "memory-request", "ab", "disk"):
        t, r = results[case, "traced"], results[case, "rss"]
        per_traced = t["traced_growth"] / t["requests"]
        per_rss = r["rss_growth"] / r["requests"]
        disk = (f"{r['disk_as_left'] / r['requests']:.0f} / {r['disk_compacted'] / r['requests']:.0f}"
                f" (entry: {r['logical_entry_bytes']:.0f})" if "disk_as_left" in r else "—")
        rows.append([labels[case], f"{per_traced:,.0f}", f"{per_rss:,.0f}",
                     f"{r['requests']:,}", disk, f"{r['feed_us_per_event']:.2f}",
                     "{:.2f} / {:.2f}".format(*r["roundtrip_us"])])
    lines = [table(["store, request shape", "Python heap B/pending (tracemalloc)",
                    "RSS growth B/pending", "pending in the RSS run",
                    "disk B/pending: as left / compacted (logical key+value)",
                    "feed µs/event", "store get+put µs: same / new deadline"], rows), ""]
    lines.append(f"tracemalloc runs hold {n_traced:,} pending requests; RSS runs "
                 f"{n_rss:,} (memory) and {n_disk:,} (disk), each in a fresh process, after a "
                 f"1,000-request warm-up; the worker's per-checkpoint housekeeping (release, "
                 f"check_pairs, expire, drain_dirty, and DiskStore.committed) runs every "
                 f"{CHECKPOINT_EVERY:,} requests. RSS growth of the disk store is RocksDB's "
                 "memtables and block cache plus the write-back cache between checkpoints: "
                 "it does not grow with the pending count the way the memory store does "
                 "(samples below).")
    lines.append("")
    t = results["memory", "traced"]
    lines.append("Where a pending shadow request's memory goes (MemoryStore, tracemalloc, "
                 "allocation sites, bytes per pending request):")
    lines.append("")
    lines.append("| allocation site | B/pending | objects/pending |")
    lines.append("|---|---:|---:|")
    for site, size, count in t["sites"][:8]:
        lines.append(f"| `{site}` | {size / t['requests']:.0f} | {count / t['requests']:.2f} |")
    lines.append("")
    for case in ("memory", "disk"):
        r = results[case, "rss"]
        if r["samples"]:
            lines.append(f"RSS growth over the {case} run (pending → MiB): " + ", ".join(
                f"{k:,} → {v / 2**20:,.0f}"
                for k, v, _ in r["samples"]) + " (absolute RSS of the child).")
            lines.append("")
    return "\n".join(lines)


# -- part "worker": a million pending requests on disk ----------------------------------------
class Worker:
    """``python -m rollguard.cli worker`` in a subprocess, its log in a file."""

    def __init__(self, bootstrap, exp_file, prefix, app_id, data_dir, log_file, stopgap: bool):
        base = [PYTHON, __file__, "--stopgap-worker"] if stopgap else [PYTHON, "-m", "rollguard.cli"]
        self.cmd = base + ["worker", str(exp_file), "--bootstrap-servers", bootstrap,
                           "--topic-prefix", prefix, "--app-id", app_id,
                           "--data-dir", str(data_dir), "--instance-id", f"{app_id}-1",
                           "--snapshot-interval", "2"]
        self.log_file = log_file
        self.proc = None
        self.started = None

    def start(self) -> "Worker":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.handle = open(self.log_file, "ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, stdout=self.handle, stderr=subprocess.STDOUT,
                                     cwd=ROOT, env=env, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 120.0) -> tuple[int, float]:
        began = time.monotonic()
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait(10)
        self.handle.close()
        return code, time.monotonic() - began

    def log_text(self) -> str:
        return Path(self.log_file).read_text(errors="replace")

    def restored(self) -> list[tuple[int, int, int, int, float]]:
        """(partition, in memory, on disk, read from the changelog, seconds) per line."""
        return [(int(p), int(m), int(d), int(r), float(s)) for p, m, d, r, s in re.findall(
            r"join partition (\d+) restored: (\d+) pending in memory, (\d+) on disk \((\d+) read "
            r"from the changelog\) in ([\d.]+) s", self.log_text())]

    def status(self, key: str) -> int:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
        return 0


class Sampler:
    """Samples a process's VmRSS every ``every`` seconds in a thread."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        began = time.monotonic()
        while not self._stop.is_set():
            rss = rss_bytes(self.pid)
            if rss:
                self.samples.append((time.monotonic() - began, rss))
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def peak(self) -> int:
        return max((r for _, r in self.samples), default=0)


def wait_restored(worker: Worker, partitions: int, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {r[0]: r for r in worker.restored()}
        if len(found) >= partitions:
            return sorted(found.values())
        if not worker.alive():
            raise RuntimeError(f"the worker exited during restore:\n{worker.log_text()[-3000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"the worker did not restore {partitions} partitions within {timeout} s")


def latest_stats(bootstrap: str, topic: str) -> dict:
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "rollguard-bench-stats",
                  "enable.auto.commit": False, "isolation.level": "read_committed",
                  "enable.partition.eof": True})
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        c.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        left, latest = set(meta.partitions), {}
        deadline = time.monotonic() + 20
        while left and time.monotonic() < deadline:
            for m in c.consume(1000, timeout=0.5):
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        left.discard(m.partition())
                    continue
                latest[m.key().decode()] = json.loads(m.value())
        return latest
    finally:
        c.close()


def part_worker(n: int, ab: bool, quick: bool) -> str:
    from rollguard.kafka.admin import create_contract_topics
    from rollguard.streams.topics import TopicNames

    tmp = Path(tempfile.mkdtemp(prefix="rollguard-bench-million-"))
    exp_file = tmp / "experiment.yaml"
    exp_file.write_text(EXPERIMENT.format(mode="ab" if ab else "shadow", state="disk"))
    partitions = 6
    report: dict = {"requests": n, "mode": "ab" if ab else "shadow"}
    began_all = time.monotonic()
    with broker(heap="1g") as bootstrap:
        prefix = fresh_prefix("bpend")
        names = TopicNames(prefix)
        create_contract_topics(bootstrap, names, partitions=partitions)
        per_request = 1 if ab else 2
        total = n * per_request

        def predictions():
            topic = names.predictions
            for i in range(n):
                key = b"loan-%09d" % i
                if ab:
                    yield topic, key, prediction_bytes(i, n, i % 2, True)
                else:
                    yield topic, key, prediction_bytes(i, n, 0, True)
                    yield topic, key, prediction_bytes(i, n, 1, False)

        log(f"producing {total:,} predictions of {n:,} requests (no labels) ...")
        t = time.monotonic()
        produce_raw(bootstrap, predictions(), total=total, what="predictions")
        report["produce_s"] = time.monotonic() - t
        ends = end_offsets(bootstrap, [names.predictions])
        assert sum(ends.values()) == total, (sum(ends.values()), total)

        def attempt(stopgap: bool) -> dict:
            app_id = f"bench-pending-{uuid.uuid4().hex[:6]}"
            data_dir = tmp / f"data-{app_id}"
            run: dict = {"stopgap": stopgap, "app_id": app_id}
            # 1. consume everything
            w = Worker(bootstrap, exp_file, prefix, app_id, data_dir, tmp / f"{app_id}-1.log",
                       stopgap).start()
            sampler = Sampler(w.proc.pid)
            tps = list(ends)
            marks = {}
            wanted = {f: int(total * f) for f in (0.25, 0.5, 1.0)}
            deadline = time.monotonic() + (900 if not quick else 300)
            last_log = 0.0
            first_progress = None
            consumed = 0
            while time.monotonic() < deadline:
                if not w.alive():
                    run["error"] = "the worker exited: " + " | ".join(
                        ln for ln in w.log_text().splitlines()
                        if "Error" in ln or "error" in ln)[:800]
                    break
                try:
                    committed = committed_offsets(bootstrap, app_id, tps)
                    consumed = sum(max(0, committed.get(tp, -1)) for tp in tps)
                except Exception:  # noqa: BLE001 - the group may not exist yet
                    consumed = 0
                now = time.monotonic() - w.started
                if consumed and first_progress is None:
                    first_progress = now
                for f, k in wanted.items():
                    if f not in marks and consumed >= k:
                        marks[f] = (now, rss_bytes(w.proc.pid), consumed)
                if now - last_log > 10:
                    last_log = now
                    log(f"  worker: {consumed:,} / {total:,} predictions committed, "
                        f"RSS {rss_bytes(w.proc.pid) / 2**20:,.0f} MiB, "
                        f"data dir {dir_bytes(data_dir) / 2**20:,.0f} MiB")
                if consumed >= total:
                    break
                time.sleep(1.0)
            run["consume_s"] = time.monotonic() - w.started
            run["first_commit_s"] = first_progress
            run["marks"] = {str(f): v for f, v in marks.items()}
            run["peak_rss"] = max(sampler.peak(), w.status("VmHWM"))
            run["rss_end"] = rss_bytes(w.proc.pid)
            run["data_dir_bytes"] = dir_bytes(data_dir)
            run["restored_first"] = w.restored()
            if "error" in run or consumed < total:
                run.setdefault("error", f"only {consumed:,} of {total:,} consumed in time")
                sampler.stop()
                w.stop()
                return run
            time.sleep(2.0)  # one more checkpoint
            sampler.stop()
            run["rss_series"] = sampler.samples[::max(1, len(sampler.samples) // 40)]
            code, took = w.stop()
            run["stop"] = (code, took)
            run["data_dir_bytes_stopped"] = dir_bytes(data_dir)
            changelog = end_offsets(bootstrap, [f"{prefix}{app_id}.join-disk"])
            run["changelog_records"] = sum(changelog.values())
            log(f"  consumed all in {run['consume_s']:.0f} s; peak RSS "
                f"{run['peak_rss'] / 2**20:,.0f} MiB; stopped with code {code} in {took:.1f} s")
            try:
                restarts(run, app_id, data_dir, stopgap)
            except Exception as exc:  # noqa: BLE001 - reported, the bench goes on
                run["error"] = f"{type(exc).__name__}: {str(exc)[-800:]}"
            run["logs"] = [str(tmp / f"{app_id}-{k}.log") for k in (1, 2, 3)]
            text = Path(tmp / f"{app_id}-1.log").read_text(errors="replace")
            found = re.search(r"bench work-arounds: (\[.*\])", text)
            run["workarounds"] = found.group(1) if found else None
            return run

        def restarts(run: dict, app_id: str, data_dir: Path, stopgap: bool) -> None:
            # 2. restart on the same data dir
            w2 = Worker(bootstrap, exp_file, prefix, app_id, data_dir, tmp / f"{app_id}-2.log",
                        stopgap).start()
            restored = wait_restored(w2, partitions, 300)
            run["restart_disk"] = {"wall_s": time.monotonic() - w2.started, "lines": restored,
                                   "pending": sum(r[2] for r in restored),
                                   "rss": rss_bytes(w2.proc.pid)}
            time.sleep(3.0)
            run["restart_disk"]["rss_after_3s"] = rss_bytes(w2.proc.pid)
            run["restart_disk"]["stop"] = w2.stop()
            log(f"  restart on the same data dir: {run['restart_disk']['pending']:,} pending "
                f"on disk restored in {run['restart_disk']['wall_s']:.1f} s (process start to the "
                f"last 'restored' line)")
            # 3. restart on an empty data dir: the state comes back from the changelog
            empty = tmp / f"data-{app_id}-empty"
            w3 = Worker(bootstrap, exp_file, prefix, app_id, empty, tmp / f"{app_id}-3.log",
                        stopgap).start()
            sampler3 = Sampler(w3.proc.pid)
            restored = wait_restored(w3, partitions, 600)
            run["restart_changelog"] = {"wall_s": time.monotonic() - w3.started,
                                        "lines": restored,
                                        "pending": sum(r[2] for r in restored),
                                        "read": sum(r[3] for r in restored),
                                        "sum_s": sum(r[4] for r in restored),
                                        "rss": rss_bytes(w3.proc.pid)}
            log(f"  restart on an EMPTY data dir: {run['restart_changelog']['pending']:,} pending "
                f"restored from {run['restart_changelog']['read']:,} changelog records in "
                f"{run['restart_changelog']['wall_s']:.1f} s")
            # 4. labels for 1000 sampled requests
            rng = random.Random(3)
            sample = sorted(rng.sample(range(n), 1000))
            label_ts = START_TS + SPAN_S + 3600.0
            labels = [(names.labels, b"loan-%09d" % i,
                       b'{"request_id":"loan-%09d","ts":%.3f,"label":%d}'
                       % (i, label_ts + j * 0.01, rng.random() < 0.5))
                      for j, i in enumerate(sample)]
            t_labels = time.monotonic()
            produce_raw(bootstrap, iter(labels), total=len(labels), what="labels")
            outcome = None
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                snap = latest_stats(bootstrap, names.stats).get("loans")
                if snap:
                    arms = snap["statistics"]["arms"]
                    counts = {arm: (a.get("outcomes") or {}).get("count", 0)
                              for arm, a in arms.items()}
                    outcome = {"counts": counts, "counters": snap.get("counters"),
                               "decision": (snap.get("decision") or {}).get("last_reason")}
                    if all(v >= (1000 if not ab else 1) for v in counts.values()) and \
                            sum(counts.values()) >= 1000:
                        break
                time.sleep(1.0)
            run["labels"] = {"seconds": time.monotonic() - t_labels, "outcome": outcome}
            sampler3.stop()
            run["restart_changelog"]["peak_rss"] = max(sampler3.peak(), w3.status("VmHWM"))
            run["restart_changelog"]["stop"] = w3.stop()
            log(f"  labels joined: {outcome}")

        run = attempt(stopgap=False)
        report["as_shipped"] = run
        if "error" in run:
            log(f"  the worker as shipped failed ({run['error'][:300]}); again with the stop-gap")
            report["stopgap"] = attempt(stopgap=True)
    report["elapsed_s"] = time.monotonic() - began_all
    (tmp / "report.json").write_text(json.dumps(report, indent=1, default=str))
    log(f"raw results in {tmp / 'report.json'}")
    return render_worker(report, quick)


def render_worker(report: dict, quick: bool) -> str:
    n = report["requests"]
    shadow = report["mode"] == "shadow"
    total = n * (2 if shadow else 1)
    lines = []
    shipped = report["as_shipped"]
    run = report.get("stopgap") or shipped
    lines.append(f"{n:,} requests' predictions ({report['mode']}: {total:,} prediction events, "
                 f"{'two arms' if shadow else 'one served prediction'} per request), no labels, "
                 f"experiment `label_ttl: 90d`, `state: disk`, event times spread over 30 days; "
                 f"6 partitions; produced in {report['produce_s']:.1f} s. The real worker "
                 "(`python -m rollguard.cli worker … --data-dir D`, checkpoint every 1 s) in a "
                 "subprocess; VmRSS sampled every 0.5 s from /proc; progress from the consumer "
                 f"group's committed offsets. Whole part: {report['elapsed_s'] / 60:.1f} min.")
    lines.append("")
    if "error" in shipped:
        lines.append(f"**The worker as shipped did not get through**: `{shipped['error'][:600]}`. "
                     "The figures below are from the same worker started through "
                     "`bench/bench_pending.py --stopgap-worker`, which applies "
                     "bench.common.worker_workarounds in the worker's process only: "
                     f"{run.get('workarounds')}.")
        lines.append("")
    if "error" in run and "restart_disk" not in run:
        lines.append(f"The run failed: {run['error']}")
        if "marks" not in run:
            return "\n".join(lines)
    marks = run["marks"]
    rows = []
    for f, label in (("0.25", f"{n // 4:,}"), ("0.5", f"{n // 2:,}"), ("1.0", f"{n:,}")):
        if f in marks:
            t, rss, consumed = marks[f]
            rows.append([label, f"{t:.0f}", f"{rss / 2**20:,.0f}"])
    lines.append(table(["pending requests (committed)", "s since start", "worker RSS MiB"], rows))
    lines.append("")
    consume_s = run["consume_s"] - (run.get("first_commit_s") or 0)
    lines.append(
        f"- Consumed {total:,} predictions in {run['consume_s']:.0f} s from process start "
        f"(≈ {total / max(consume_s, 1e-9):,.0f} events/s between the first and the last "
        f"commit); **peak RSS {run['peak_rss'] / 2**20:,.0f} MiB** (VmHWM); RSS at the end "
        f"{run['rss_end'] / 2**20:,.0f} MiB, i.e. {run['rss_end'] / n:,.0f} B per pending "
        f"request if it were all state. Data dir {run['data_dir_bytes'] / 2**20:,.0f} MiB while "
        f"running, {run['data_dir_bytes_stopped'] / 2**20:,.0f} MiB after the stop "
        f"({run['data_dir_bytes_stopped'] / n:,.0f} B per pending request); the join-disk "
        f"changelog holds {run['changelog_records']:,} records. SIGTERM: exit code "
        f"{run['stop'][0]} after {run['stop'][1]:.1f} s.")
    if "error" in run:
        lines.append(f"- The run stopped with an error: `{run['error'][:600]}`.")
    rd = run.get("restart_disk")
    if rd:
        lines.append(
          f"- Restart on the same data dir: **{rd['pending']:,} pending restored from RocksDB** "
          f"(per-partition restore {max(r[4] for r in rd['lines']):.1f} s at most, "
          f"{sum(r[3] for r in rd['lines']):,} changelog records re-read), "
          f"{rd['wall_s']:.1f} s from process start to the last 'restored' line; RSS "
          f"{rd['rss_after_3s'] / 2**20:,.0f} MiB.")
    rc = run.get("restart_changelog")
    if rc and "lines" in rc:
        lines.append(
          f"- Restart on an EMPTY data dir: **{rc['pending']:,} pending rebuilt from "
          f"{rc['read']:,} changelog records in {rc['sum_s']:.1f} s** of restore (sum of the "
          f"partitions' restores, which run one after another), {rc['wall_s']:.1f} s from process "
          f"start to the last 'restored' line; peak RSS {rc['peak_rss'] / 2**20:,.0f} MiB.")
    lab = run.get("labels")
    if lab:
        out = lab.get("outcome") or {}
        lines.append(
          f"- Labels for 1,000 sampled requests, produced after that restart: the stats snapshot "
          f"shows outcome counts {out.get('counts')} after {lab['seconds']:.1f} s"
          + (f"; counters {out.get('counters')}" if out.get("counters") else "") + ".")
    lines.append("")
    if rc and "lines" in rc:
        lines.append("Restore lines of the empty-data-dir restart: " + "; ".join(
          f"p{p}: {d:,} on disk, {r:,} read, {s:.1f} s" for p, _, d, r, s in rc["lines"]) + ".")
    lines.append("")
    series = run.get("rss_series") or []
    if series:
        lines.append("RSS over the first run (s → MiB): " + ", ".join(
            f"{t:.0f} → {r / 2**20:,.0f}" for t, r in series[::max(1, len(series) // 15)]) + ".")
        lines.append("")
    return "\n".join(lines)


# -- the stop-gap wrapper around the CLI ------------------------------------------------------
def stopgap_worker(argv: list[str]) -> None:
    """``rollguard.cli worker`` with bench.common.worker_workarounds applied (this process
    only); used only when the worker as shipped cannot get through."""
    applied = worker_workarounds()
    print(f"bench work-arounds: {applied}", file=sys.stderr, flush=True)
    from rollguard.cli import app

    sys.argv = ["rollguard", *argv]
    app()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--stopgap-worker":
        stopgap_worker(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (100k requests)")
    ap.add_argument("--part", choices=("store", "worker", "all"), default="all")
    ap.add_argument("--requests", type=int, default=None, help="worker part: requests")
    ap.add_argument("--ab", action="store_true", help="worker part: one prediction per request")
    ap.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    ap.add_argument("--child-store", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--progress", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_store:
        args.requests = args.requests or 100_000
        Path(args.out).write_text(json.dumps(child_store(args)))
        return
    began = time.monotonic()
    sections = []
    if args.part in ("store", "all"):
        sections.append(("### Bytes per pending request (no Kafka)", part_store(args.quick)))
    if args.part in ("worker", "all"):
        n = args.requests or (100_000 if args.quick else 1_000_000)
        sections.append((f"### A worker holding {n:,} pending requests on disk",
                         part_worker(n, args.ab, args.quick)))
    cmd = "python bench/bench_pending.py" + (" --quick" if args.quick else "") + \
        (f" --part {args.part}" if args.part != "all" else "") + \
        (f" --requests {args.requests}" if args.requests else "") + (" --ab" if args.ab else "")
    body = [f"Command: `{cmd}` ({(time.monotonic() - began) / 60:.1f} min). Machine: "
            f"{machine_line()}.", ""]
    for title, text in sections:
        body += [title, "", text, ""]
    report = "\n".join(body)
    print(report)
    if not args.quick and not args.no_results:
        if args.part == "all":
            write_section("Pending join state", report)
        else:
            write_section(f"Pending join state ({args.part})", report)
    log(f"done in {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
