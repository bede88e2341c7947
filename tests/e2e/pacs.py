"""A PACS for query/retrieve tests: a lone Orthanc of its own (not behind the load balancer, no plugin),
with its DICOM server on, holding a few studies, and the cluster's servers declared as its modalities."""

import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from orthanc_jobs.cluster.binaries import find_binaries
from orthanc_jobs.cluster.launcher import DEMO_USER, ClusterState, free_port
from tests.e2e.helpers import create_study

PACS_AET = "PACS"


def only_loopback() -> bool:
    """True in a network namespace of the tests' own, whose one interface is the loopback: there, a server
    that listens on every interface (Orthanc's DICOM server) is reachable from this machine only."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def dicom_modalities(cluster: ClusterState) -> dict[str, dict[str, object]]:
    """Each server of the cluster as a DICOM modality: its AET, on the loopback, at its DICOM port."""
    found = {}
    for name in cluster.orthanc_urls:
        configuration = json.loads((Path(cluster.directory) / name / "orthanc.json").read_text())
        found[name] = {
            "AET": configuration["DicomAet"],
            "Host": "127.0.0.1",
            "Port": configuration["DicomPort"],
        }
    return found


class Pacs:
    """The PACS: started with ``studies`` studies; ``client`` speaks to its REST API directly."""

    def __init__(
        self, orthanc_root: Path | None, cluster: ClusterState, studies: int, dicom_port: int | None = None
    ) -> None:
        """``dicom_port``: where its DICOM server listens (a PACS that comes back where it was)."""
        assert only_loopback(), "a DICOM server listens on every interface: only in the tests' own network"
        self._folder = Path(tempfile.mkdtemp(prefix="orthanc-jobs-pacs-"))
        self.http_port, self.dicom_port = free_port(), dicom_port or free_port()
        configuration = {
            "Name": "pacs",
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": PACS_AET,
            "DicomServerEnabled": True,
            "StorageDirectory": str(self._folder / "storage"),
            "IndexDirectory": str(self._folder / "index"),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {DEMO_USER[0]: DEMO_USER[1]},
            "Plugins": [],
            # C-MOVE sends the studies to the cluster's servers, by their AET.
            "DicomModalities": {
                name: [modality["AET"], modality["Host"], modality["Port"]]
                for name, modality in dicom_modalities(cluster).items()
            },
        }
        config_path = self._folder / "orthanc.json"
        config_path.write_text(json.dumps(configuration))
        binaries = find_binaries(orthanc_root)
        self._log = (self._folder / "orthanc.log").open("wb")
        self._process = subprocess.Popen(
            binaries.orthanc_command(config_path),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=binaries.orthanc_env or None,
        )
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.client = httpx.Client(base_url=self.url, auth=DEMO_USER, timeout=30)
        self._wait_ready()
        self.studies = [create_study(self.client, f"PACS{n}") for n in range(studies)]
        #: The StudyInstanceUID of each study the PACS holds.
        self.study_uids = [
            self.client.get(f"/studies/{study}").json()["MainDicomTags"]["StudyInstanceUID"]
            for study, _ in self.studies
        ]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AssertionError(
                    f"the PACS stopped: {(self._folder / 'orthanc.log').read_text()[-2000:]}"
                )
            try:
                if self.client.get("/system").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("the PACS did not answer within 30 s")

    def modality(self) -> dict[str, object]:
        """How the cluster declares the PACS (PUT /modalities/pacs)."""
        return {"AET": PACS_AET, "Host": "127.0.0.1", "Port": self.dicom_port}

    def log(self) -> str:
        return (self._folder / "orthanc.log").read_text(errors="replace")[-3000:]

    def close(self) -> None:
        self.client.close()
        self._process.terminate()
        try:
            self._process.wait(20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()
        shutil.rmtree(self._folder, ignore_errors=True)
