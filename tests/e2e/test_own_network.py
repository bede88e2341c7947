"""Tests whose servers listen on every interface (Orthanc's DICOM servers: C-FIND, C-MOVE, C-GET), run in a
network namespace of their own whose one interface is the loopback, so that nothing outside this machine
can reach them. The inner run is a pytest of its own; its outcome is this test's."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
# Each of them, as a path from the repository's root, with the tests it passes at least (both versions).
INNER = {"tests/e2e/test_query_retrieve.py": 10, "tests/e2e/test_night_of_failures.py": 2}


@pytest.mark.parametrize("module", INNER)
def test_in_a_network_of_its_own(module: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("a network namespace of the tests' own needs root (CI runs as root)")
    command = [
        "unshare",
        "--net",
        "--",
        "sh",
        "-c",
        'ip link set lo up && exec "$@"',
        "sh",
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rs",
        "-s",
        "-p",
        "no:cacheprovider",
        module,
    ]
    environment = {**os.environ, "ORTHANC_JOBS_TEST_OWN_NETWORK": "1"}
    result = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=1500, check=False
    )
    print(result.stdout[-6000:])
    assert result.returncode == 0, (
        f"{module} in its own network:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    )
    # The inner run's last line: e.g. "15 passed, 1 skipped in 102.87s". A run that ran nothing is no pass.
    counts = {
        outcome: int(n) for n, outcome in re.findall(r"(\d+) (\w+)", result.stdout.strip().splitlines()[-1])
    }
    last = result.stdout.strip().splitlines()[-1]
    assert counts.get("passed", 0) >= INNER[module] and not counts.get("failed"), last
