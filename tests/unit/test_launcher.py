"""The launcher's pure parts: what it writes and what it says when something is missing."""

import json
from pathlib import Path

import pytest

from orthanc_jobs.cluster import launcher
from orthanc_jobs.cluster.launcher import Binaries, ClusterError, orthanc_configuration


def test_missing_programs_name_the_debian_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher.shutil, "which", lambda name: None)
    monkeypatch.setattr(launcher.glob, "glob", lambda pattern: [])
    with pytest.raises(ClusterError) as error:
        launcher.find_binaries()
    message = str(error.value)
    assert "apt-get install orthanc orthanc-python orthanc-postgresql nginx-light postgresql" in message
    assert "Orthanc's Python plugin" in message


def test_orthanc_configuration_shares_the_index_and_storage(tmp_path: Path) -> None:
    binaries = Binaries("/usr/sbin/Orthanc", "/usr/sbin/nginx", Path("/pg/bin"), "/p/pg.so", "/p/python.so")
    configuration = orthanc_configuration(
        name="orthanc-2",
        http_port=8043,
        dicom_port=4243,
        root=tmp_path,
        pg_port=5433,
        service_url="http://127.0.0.1:8050",
        plugin_secret="s",
        binaries=binaries,
        overrides={"ConcurrentJobs": 1},
    )
    assert configuration["StorageDirectory"] == str(tmp_path / "storage")
    assert configuration["PostgreSQL"]["Lock"] is False
    assert configuration["PostgreSQL"]["Port"] == 5433
    assert configuration["SaveJobs"] is False
    assert configuration["ConcurrentJobs"] == 1
    assert configuration["OrthancJobs"]["ServerUrl"] == "http://127.0.0.1:8043"
    assert configuration["DicomAet"] == "ORTHANC2"
    assert Path(configuration["PythonScript"]).name == "orthanc_jobs_reporter.py"
    assert Path(configuration["PythonScript"]).exists()
    json.dumps(configuration)


def test_a_busy_load_balancer_port_is_a_clear_error() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ClusterError, match="busy"):
            launcher.usable_port(busy.getsockname()[1])
