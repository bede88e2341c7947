"""The load test of bench/load.py in a short form: 200 clients polling through nginx, zero errors."""

import pytest
from bench.load import run_load

from orthanc_jobs.cluster.launcher import ClusterState

pytestmark = pytest.mark.e2e


def test_200_polling_clients_get_no_error(cluster: ClusterState) -> None:
    result = run_load(cluster.lb_url, clients=200, seconds=5)
    summary = result.summary()
    print(f"\nload: {summary}")
    assert summary["requests"] > 2000
    assert result.jobs_created > 10
    assert result.errors == {}
    assert result.server_errors == 0
    assert set(result.statuses) == {200}
