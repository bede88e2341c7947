"""The names the rest of the project (cli.py, tests/e2e, bench/) imports from the launcher."""

from orthanc_jobs.cluster import launcher


def test_the_launcher_keeps_the_names_its_importers_use() -> None:
    used = {"DEMO_USER", "REPORTER_PATH", "STATE_FILE", "ClusterError", "ClusterState", "free_port"}
    used |= {"describe", "down", "start_process", "status_lines", "stop_process", "up"}
    assert used <= set(launcher.__all__)
    assert all(hasattr(launcher, name) for name in launcher.__all__)
