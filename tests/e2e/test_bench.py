"""The benchmark suite in its quick form: it runs, measures every figure, and every job is listed.

No timing is asserted here (these machines are noisy): `make bench` reports the figures and their targets.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

FIGURES = {
    "expand_listing",
    "expand_listing_growth",
    "get_job",
    "filtered_listing",
    "freshness_terminal_ms",
    "idle",
    "archive_download",
    "event_ingestion",
    "memory_per_job",
    "time_to_ready",
    "listed_after_creation_ms",
}


def test_the_quick_benchmark_measures_every_figure(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    command = [sys.executable, "-m", "bench.run", "--quick", "--output", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    measured = json.loads(output.read_text())
    assert measured["cores"] >= 1 and measured["versions"]["orthanc"]
    figures = measured["figures"]
    assert set(figures) == FIGURES
    for listing in figures["expand_listing"]:
        assert (listing["listed"], listing["missing"]) == (listing["jobs"], 0)
    assert figures["filtered_listing"]["running"] == 2
    # GET /jobs/{id} by the three paths (Orthanc, nginx to it, nginx to the job-service), answered every time.
    assert set(figures["get_job"]) == {"running_1", "running_50", "completed_1", "completed_50"}
    for measured in figures["get_job"].values():
        for path in ("orthanc", "nginx_owner", "nginx_service"):
            assert measured[path]["requests_per_s"] > 0 and measured[path]["failed"] == 0, measured
    assert figures["archive_download"]["same_size"]
    assert figures["time_to_ready"]["jobs"] > figures["event_ingestion"]["events"]
    assert 0 < figures["time_to_ready"]["seconds"] < 60
    assert "GET /jobs?expand" in result.stdout  # the table


def test_the_quick_replicas_benchmark_measures_every_figure(tmp_path: Path) -> None:
    output = tmp_path / "replicas.json"
    command = [sys.executable, "-m", "bench.replicas", "--quick", "--output", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(output.read_text())["figures"]
    labels = ("1_replica", "2_replicas")
    assert set(figures) == {
        *(
            f"{name}_{label}"
            for name in ("get_job_1", "get_job_50", "get_job_200", "expand")
            for label in labels
        ),
        *(f"cpu_per_request_us_{label}" for label in labels),
        "cross_replica_visibility_ms",
        "failover",
        "ingestion_2_replicas",
    }
    assert (
        figures["ingestion_2_replicas"]["per_replica"][0] > 0
        and figures["ingestion_2_replicas"]["per_replica"][1] > 0
    )
    for label in labels:
        for connections in (1, 50):
            measured = figures[f"get_job_{connections}_{label}"]
            for path in ("nginx_owner", "nginx_service"):
                assert measured[path]["requests_per_s"] > 0 and measured[path]["failed"] == 0, measured
        assert figures[f"cpu_per_request_us_{label}"]["job_service"] > 0
        assert figures[f"cpu_per_request_us_{label}"]["nginx"] > 0
    assert figures["failover"]["requests"] > 0
    assert "cross-replica visibility" in result.stdout  # the table


def test_the_quick_scale_benchmark_measures_every_figure(tmp_path: Path) -> None:
    """Simulated servers (bench/scale.py): their plugins' protocol and their Orthanc's answers."""
    output = tmp_path / "scale.json"
    command = [sys.executable, "-m", "bench.scale", "--quick", "--output", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (measured,) = json.loads(output.read_text())["results"]
    assert measured["servers"] == 10 and measured["running_jobs"] == 20
    assert measured["events_per_second"] > 0 and measured["time_to_ready_s"] > 0
    for name, read in [*measured["reads"].items(), *measured["dashboard_requests"].items()]:
        assert read["requests_per_s"] > 0 and read["failed"] == 0, (name, read)
    assert "restart to /readyz" in result.stdout  # the table
