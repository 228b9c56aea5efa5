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


@pytest.mark.kafka
def test_check_goes_through_kafka_and_removes_its_topics(kafka_bootstrap):
    import re

    from confluent_kafka.admin import AdminClient

    done = run("check", "-b", kafka_bootstrap)
    assert done.returncode == 0, done.stderr
    assert "came back unchanged" in done.stdout
    prefix = re.search(r"topics (check-[0-9a-f]+\.)\*", done.stdout).group(1)
    left = [t for t in AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10)
            .topics if t.startswith(prefix)]
    assert left == [], "check leaves no topic behind"


def test_version_and_short_help():
    from rollguard import __version__

    assert run("--version").stdout.strip() == f"rollguard {__version__}"
    for args in (["-h"], ["kafka", "-h"], ["worker", "-h"]):
        done = run(*args)
        assert done.returncode == 0 and "Usage: " in done.stdout and "[OPTIONS]" in done.stdout, args
