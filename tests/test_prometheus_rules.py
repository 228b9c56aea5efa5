"""The shipped alert rules (deploy/prometheus/): promtool accepts them, their unit tests pass,
each alert is tested firing, and they query only series the worker serves."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.test_metrics import documented

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
RULES = DEPLOY / "rollguard-alerts.yml"
TESTS = DEPLOY / "rollguard-alerts.test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: run scripts/system-packages.sh (it installs "
                    "Debian's prometheus package, which has promtool) and run the tests again.")
    return subprocess.run([binary, *args], capture_output=True, text=True, cwd=DEPLOY,
                          timeout=120)


def test_promtool_checks_the_rules():
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_the_rules_unit_tests_pass():
    result = promtool("test", "rules", TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def alerts() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule]


def test_every_alert_is_tested_firing_and_quiet():
    fired, quiet = set(), set()
    for case in yaml.safe_load(TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", ()):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert fired == names, f"alerts never tested firing: {sorted(names - fired)}"
    assert quiet == names, f"alerts never tested staying quiet: {sorted(names - quiet)}"


def test_the_rules_query_only_series_the_worker_serves():
    served = set(documented())  # tests/test_metrics.py: the documented series are the served
    for rule in alerts():
        used = set(re.findall(r"\brollguard_[a-z_]+", rule["expr"]))
        assert used or "up{" in rule["expr"], rule["alert"]
        assert used <= served, f"{rule['alert']} queries {sorted(used - served)}, which the " \
                               "worker does not serve"
