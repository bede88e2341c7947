"""What the launcher writes for each process."""

import json
from pathlib import Path

from orthanc_jobs import SERVICE_PREFIX
from orthanc_jobs.cluster.binaries import Binaries
from orthanc_jobs.cluster.config import nginx_configuration, orthanc_configuration


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


def test_nginx_configuration_balances_the_servers_and_names_each(tmp_path: Path) -> None:
    urls = {"orthanc-1": "http://127.0.0.1:9001", "orthanc-2": "http://127.0.0.1:9002"}

    text = nginx_configuration(tmp_path, 8042, 8050, urls)

    assert "{{" not in text
    assert "server 127.0.0.1:9001;" in text and "server 127.0.0.1:9002;" in text
    assert "location ^~ /orthanc-2/ {\n            proxy_pass http://127.0.0.1:9002/;" in text
    assert "8042" in text and "127.0.0.1:8050" in text and SERVICE_PREFIX in text
