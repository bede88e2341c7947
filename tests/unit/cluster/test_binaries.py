"""What the launcher says when a program is missing."""

import pytest

from orthanc_jobs.cluster import ClusterError, binaries


def test_missing_programs_name_the_debian_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(binaries.shutil, "which", lambda name: None)
    monkeypatch.setattr(binaries.glob, "glob", lambda pattern: [])
    with pytest.raises(ClusterError) as error:
        binaries.find_binaries()
    message = str(error.value)
    assert "apt-get install orthanc orthanc-python orthanc-postgresql nginx-light postgresql" in message
    assert "Orthanc's Python plugin" in message
