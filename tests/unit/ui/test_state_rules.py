"""The dashboard's rules (``ui/state.js``): their Node tests pass, and they agree with ``core/model.py``.

The browser cannot import Python, so the dashboard writes the job states, the actions, the job id and
Orthanc's time format again; these tests read them through Node and compare them with the model's.
"""

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orthanc_jobs.core.model import (
    ACTION_STATES,
    TERMINAL_STATES,
    JobAction,
    JobState,
    is_job_id,
    orthanc_timestamp,
    parse_orthanc_time,
)

UI = Path(__file__).parents[3] / "src" / "orthanc_jobs" / "ui"
NODE_TESTS = sorted(Path(__file__).parent.glob("*.test.mjs"))
NODE_TIMEOUT = 120

JOB_IDS = [
    "0dc42374-3171-42f0-88f3-0bb3170f77ad",
    "0DC42374-3171-42F0-88F3-0BB3170F77AD",
    "0dc42374317142f088f30bb3170f77ad",
    "0dc42374-3171-42f0-88f3-0bb3170f77a",
    "0dc42374-3171-42f0-88f3-0bb3170f77adf",
    "gdc42374-3171-42f0-88f3-0bb3170f77ad",
    " 0dc42374-3171-42f0-88f3-0bb3170f77ad",
    "0dc42374-3171-42f0-88f3-0bb3170f77ad\n",
    "",
    "archive",
]
EPOCHS = [0.0, 1_706_715_900.123456, 1_735_689_599.999999, 951_782_400.5, 4_102_444_800.000001]
NOT_TIMES = ["", "2024-01-31T15:45:00Z", "20240131T154500Z", "20240131 154500", "20240131T154500.", "now"]

# Reads the rules through the module's own exports, as the page does; argv: the module, the samples.
_PROBE = """
const rules = await import(process.argv[1]);
const { jobIds, times } = JSON.parse(process.argv[2]);
const parsed = (value) => rules.parseOrthancTime(value);
console.log(JSON.stringify({
  states: rules.STATES,
  terminal: rules.TERMINAL_STATES,
  unfinished: rules.STATES.filter(rules.isUnfinished),
  actions: rules.ACTIONS,
  actionStates: rules.ACTION_STATES,
  jobIds: Object.fromEntries(jobIds.map((value) => [value, rules.isJobId(value)])),
  times: Object.fromEntries(times.map((value) => [value, parsed(value) && parsed(value).getTime()])),
}));
"""


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.skip("Node.js is not installed (Debian package nodejs): the dashboard's rules went unchecked")
    return found


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    samples = {"jobIds": JOB_IDS, "times": [*map(orthanc_timestamp, EPOCHS), "20240131T154500", *NOT_TIMES]}
    probe = subprocess.run(
        [node(), "--input-type=module", "-e", _PROBE, (UI / "state.js").as_uri(), json.dumps(samples)],
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    answer: dict[str, Any] = json.loads(probe.stdout)
    return answer


def test_the_rules_pass_their_node_tests() -> None:
    assert NODE_TESTS, "no *.test.mjs next to this file"
    run = subprocess.run(
        [node(), "--test", *map(str, NODE_TESTS)],
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )
    assert run.returncode == 0, f"node --test failed:\n{run.stdout}\n{run.stderr}"


def test_the_dashboard_knows_the_job_states_of_the_model(rules: dict[str, Any]) -> None:
    assert sorted(rules["states"]) == sorted(JobState)
    assert len(rules["states"]) == len(JobState)
    assert sorted(rules["terminal"]) == sorted(TERMINAL_STATES)
    assert sorted(rules["unfinished"]) == sorted(set(JobState) - TERMINAL_STATES)


def test_the_dashboard_offers_the_actions_of_the_model(rules: dict[str, Any]) -> None:
    assert sorted(rules["actions"]) == sorted(JobAction)
    assert sorted(rules["actionStates"]) == sorted(JobAction)
    # The same states as the service's (the actions on many jobs judge them there).
    assert {action: sorted(states) for action, states in rules["actionStates"].items()} == {
        str(action): sorted(states) for action, states in ACTION_STATES.items()
    }
    for action, states in rules["actionStates"].items():
        assert states, action
        assert set(states) <= set(JobState), action
        # A job that has ended changes no more, but by a resubmit; and only an ended job is resubmitted.
        if action == JobAction.RESUBMIT:
            assert set(states) <= TERMINAL_STATES
        else:
            assert not set(states) & TERMINAL_STATES, action


def test_the_dashboard_reads_job_ids_as_the_model_does(rules: dict[str, Any]) -> None:
    assert rules["jobIds"] == {value: is_job_id(value) for value in JOB_IDS}


def test_the_dashboard_reads_times_as_the_model_writes_them(rules: dict[str, Any]) -> None:
    for epoch in EPOCHS:
        written = orthanc_timestamp(epoch)
        parsed = parse_orthanc_time(written)
        assert parsed is not None
        # The browser keeps milliseconds: at most half of one apart.
        assert abs(rules["times"][written] - parsed.timestamp() * 1000) <= 0.5, written
    # A time without a fraction of a second is read too.
    short = parse_orthanc_time("20240131T154500")
    assert short == datetime(2024, 1, 31, 15, 45, tzinfo=UTC)
    assert rules["times"]["20240131T154500"] == short.timestamp() * 1000
    for value in NOT_TIMES:
        assert rules["times"][value] is None, value
        assert parse_orthanc_time(value) is None, value
