"""The Prometheus files in deploy/prometheus: promtool checks the rules and the configuration, and runs the
rules' unit tests (orthanc-jobs-rules.test.yml: each alert made to fire, and not to fire).

promtool comes with Debian's prometheus package (scripts/install-system-deps.sh); without it these tests
are skipped. It resolves no host name: the scrape targets are only parsed.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "orthanc-jobs-rules.yml"
RULES_TESTS = PROMETHEUS / "orthanc-jobs-rules.test.yml"
CONFIG = PROMETHEUS / "prometheus.yml"


def _promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian's prometheus package: make system-deps)")
    return subprocess.run(
        [promtool, *arguments], capture_output=True, text=True, timeout=60, check=False, cwd=PROMETHEUS
    )


def _succeeds(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{' '.join(result.args)}:\n{result.stdout}\n{result.stderr}"


def test_rules_are_valid() -> None:
    _succeeds(_promtool("check", "rules", str(RULES)))


def test_rules_unit_tests_pass() -> None:
    _succeeds(_promtool("test", "rules", str(RULES_TESTS)))


def test_config_is_valid_and_loads_the_rules() -> None:
    result = _promtool("check", "config", str(CONFIG))
    _succeeds(result)
    assert "1 rule files found" in result.stdout
