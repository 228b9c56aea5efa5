"""An experiment's statistics: partition deltas add up to the whole; references from a file."""

from __future__ import annotations

import json
import random

from rollguard.schemas import Request, parse_experiments
from rollguard.streams.aggregate import ExperimentStats
from rollguard.synth import Arm, records

EXPERIMENT = """
name: e
task: binary
mode: shadow
champion: m:1
candidates: [m:2]
primary: {metric: log_loss, clip: 10}
"""


def test_deltas_of_any_split_add_up_to_the_whole():
    [exp] = parse_experiments(EXPERIMENT, "x.yaml")
    recs = list(records(Arm("m:1", 0.8), [Arm("m:2", 0.85, error_rate=0.02)], 400, seed=3))
    whole = ExperimentStats(exp)
    for rec in recs:
        whole.on_record(rec)
    rng = random.Random(5)
    total = ExperimentStats(exp, reference_left={})
    i = 0
    while i < len(recs):  # deltas of random sizes, as checkpoints cut them
        step = rng.randint(1, 60)
        delta = ExperimentStats(exp)
        for rec in recs[i:i + step]:
            delta.on_record(rec)
        total.merge(ExperimentStats.from_dict(exp, json.loads(json.dumps(delta.to_dict()))))
        i += step
    got, want = total.get(), whole.get()
    assert got["records"] == want["records"] == 800
    for arm in ("m:1", "m:2"):
        assert got["arms"][arm]["outcomes"]["count"] == want["arms"][arm]["outcomes"]["count"]
        assert got["arms"][arm]["outcomes"]["accuracy"] == want["arms"][arm]["outcomes"]["accuracy"]
        assert got["arms"][arm]["serving"]["errors"] == want["arms"][arm]["serving"]["errors"]
        assert got["arms"][arm]["serving"]["latency_p99_ms"] == want["arms"][arm]["serving"]["latency_p99_ms"]
    assert got["segments"].keys() == want["segments"].keys()
    assert abs(got["pairs"]["m:2"]["difference_mean"] - want["pairs"]["m:2"]["difference_mean"]) < 1e-12


def test_a_reference_file_is_the_drift_reference(tmp_path):
    ref = tmp_path / "reference.jsonl"
    rng = random.Random(1)
    with open(ref, "w") as f:
        for i in range(300):
            f.write(json.dumps({"request_id": f"q{i}", "experiment": "e", "ts": i,
                                "features": {"age": rng.gauss(40, 5), "tier": "vip"}}) + "\n")
    [exp] = parse_experiments(EXPERIMENT + f"reference: {{file: {ref}}}\n", "x.yaml")
    stats = ExperimentStats(exp)
    for i in range(300):  # the live population is 20 years older
        stats.on_request(Request(request_id=f"r{i}", experiment="e", ts=i,
                                 features={"age": rng.gauss(60, 5)}))
    age = stats.get()["feature_drift"]["age"]
    assert age["reference"] == 300 and age["current"] == 300, "the file is the reference"
    assert age["psi"] > 1.0 and age["ks"] > 0.9
