"""Events per second decoded by rollguard.schemas, against plain JSON parsing in the same process.

    .venv/bin/python bench/bench_parse.py [--events 20000] [--repeat 5]

For each kind of event: the decoder on valid events, on a mix with 5% invalid events (the
error path parses twice to explain), and on invalid events only; baselines are
``json.loads``, ``orjson.loads`` and untyped ``msgspec.json.decode`` of the same bytes,
which check nothing. Figures are the best of ``--repeat`` runs; ratios are against
``orjson.loads`` (the fastest general-purpose parser here). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from typing import Callable

import msgspec
import orjson

from rollguard.schemas import (decode_control, decode_label, decode_prediction,
                               decode_replay_line, decode_request, encode_replay_line)


def make_events(n: int, seed: int = 7) -> dict[str, list[bytes]]:
    rng = random.Random(seed)
    requests, predictions, labels, controls = [], [], [], []
    for i in range(n):
        request_id = f"req-{i:09d}"
        ts = 1_700_000_000 + i * 0.01
        segments = {"tier": rng.choice(["free", "pro", "vip"]),
                    "country": rng.choice(["DE", "FR", "US", "JP"])}
        requests.append(json.dumps({
            "request_id": request_id, "experiment": "churn-v7", "ts": ts, "unit": f"u{i % 997}",
            "segments": segments,
            "features": {f"f{j}": rng.random() for j in range(8)}}).encode())
        predictions.append(json.dumps({
            "request_id": request_id, "experiment": "churn-v7", "ts": ts + 0.003,
            "model": "churn", "version": rng.choice(["6", "7"]), "served": rng.random() < 0.9,
            "prediction": rng.random() < 0.3, "score": rng.random(),
            "latency_ms": rng.expovariate(1 / 12), "unit": f"u{i % 997}",
            "segments": segments}).encode())
        labels.append(json.dumps({"request_id": request_id, "ts": ts + 86400,
                                  "label": rng.random() < 0.3}).encode())
        share = rng.random()
        controls.append(json.dumps({
            "experiment": "churn-v7", "seq": i + 1, "ts": ts, "action": "set_traffic",
            "mode": "bandit", "champion": "churn:6",
            "traffic": {"churn:6": share, "churn:7": 1 - share}, "shadow": [],
            "reason": "Thompson sampling update.",
            "evidence": {"n": {"churn:6": i, "churn:7": i}, "alpha": 0.05,
                         "bounds": [-0.01, 0.02]}}).encode())
    return {"request": requests, "prediction": predictions, "label": labels,
            "control": controls}


def corrupt(data: bytes, rng: random.Random) -> bytes:
    """One of the everyday mistakes: a NaN, a wrong type, a missing field, a cut message."""
    event = json.loads(data)
    choice = rng.randrange(4)
    if choice == 0:
        key = next(k for k, v in event.items() if isinstance(v, float))
        event[key] = float("nan")
    elif choice == 1:
        key = next(k for k, v in event.items() if isinstance(v, str))
        event[key] = 7
    elif choice == 2:
        event.pop(next(iter(event)))
    else:
        return data[: len(data) // 2]
    return json.dumps(event).encode()


def mixed(values: list[bytes], share_invalid: float, seed: int = 11) -> list[bytes]:
    rng = random.Random(seed)
    return [corrupt(v, rng) if rng.random() < share_invalid else v for v in values]


def best_rate(function: Callable[[bytes], object], values: list[bytes], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for value in values:
            function(value)
        best = min(best, time.perf_counter() - start)
    return len(values) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    events = make_events(args.events)
    decoders = {"request": decode_request, "prediction": decode_prediction,
                "label": decode_label, "control": decode_control}
    untyped = msgspec.json.Decoder()
    print(f"rollguard.schemas decode throughput, {args.events} events per run, best of "
          f"{args.repeat}; Python {platform.python_version()}, msgspec {msgspec.__version__}")
    header = (f"{'kind':<11}{'bytes':>6}{'json.loads':>12}{'orjson':>11}{'msgspec':>11}"
              f"{'valid':>11}{'5% bad':>11}{'all bad':>10}{'valid/orjson':>14}")
    print(header)
    print("-" * len(header))
    for kind, values in events.items():
        decode = decoders[kind]
        bad = [corrupt(v, random.Random(i)) for i, v in enumerate(values[: len(values) // 10])]
        rates = {
            "json": best_rate(json.loads, values, args.repeat),
            "orjson": best_rate(orjson.loads, values, args.repeat),
            "msgspec": best_rate(untyped.decode, values, args.repeat),
            "valid": best_rate(decode, values, args.repeat),
            "mixed": best_rate(decode, mixed(values, 0.05), args.repeat),
            "bad": best_rate(decode, bad, args.repeat),
        }
        size = sum(map(len, values)) // len(values)
        print(f"{kind:<11}{size:>6}{rates['json']:>12,.0f}{rates['orjson']:>11,.0f}"
              f"{rates['msgspec']:>11,.0f}{rates['valid']:>11,.0f}{rates['mixed']:>11,.0f}"
              f"{rates['bad']:>10,.0f}{rates['valid'] / rates['orjson']:>14.2f}")

    lines = []
    for kind in ("request", "prediction", "label"):
        for value in events[kind][: args.events // 3]:
            lines.append(encode_replay_line(decoders[kind](value)))
    rate = best_rate(decode_replay_line, lines, args.repeat)
    baseline = best_rate(orjson.loads, lines, args.repeat)
    print(f"\nreplay lines (mixed kinds): {rate:,.0f} lines/s; orjson.loads alone "
          f"{baseline:,.0f}/s; ratio {rate / baseline:.2f}")
    print("events/s; 'valid', '5% bad', 'all bad': rollguard's decoders (typed, validated, "
          "a sentence per bad event); baselines parse to dicts and check nothing.")


if __name__ == "__main__":
    main()
