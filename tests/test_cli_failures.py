"""Every expected failure of a command is one sentence on stderr that says what to do, and a
non-zero exit: never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rollguard.kafka.local import free_port
from tests.kafka_helpers import ROOT

EXPERIMENTS = str(ROOT / "examples" / "experiments.yaml")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rollguard.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def no_broker() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


@pytest.mark.parametrize("args", [
    lambda: ["worker", EXPERIMENTS, "-b", no_broker()],
    lambda: ["replay", EXPERIMENTS, "--from-kafka", "-b", no_broker()],
    lambda: ["check", "-b", no_broker()],
], ids=["worker", "replay-from-kafka", "check"])
def test_no_broker_at_the_address_is_one_sentence(args):
    done = run(*args())
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "No Kafka broker answers at 127.0.0.1:" in lines[0]
    assert "rollguard kafka start" in lines[0] and lines[0].endswith(".")


def test_exporting_schemas_onto_a_file_is_one_sentence(tmp_path):
    target = tmp_path / "taken.json"
    target.write_text("{}")
    done = run("schemas", "export", str(target))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: {target} is a file, not a directory: give a directory to write the schemas "
        "into (it is created if missing)."]
    assert target.read_text() == "{}"
