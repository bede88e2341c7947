"""Capture real job JSON from Orthanc, for the simulated servers of bench/scale.py.

    .venv/bin/python -m bench.capture_jobs     # writes bench/data/jobs-<Orthanc version>.json
    .venv/bin/python -m bench.capture_jobs --orthanc-root .cache/orthanc-1.12     # the same from 1.12

Starts a local cluster of one server, makes the jobs a hospital's Orthanc makes (an archive, a modification,
an anonymization, a C-STORE that runs, one that fails) and keeps each job's JSON as Orthanc wrote it, running
and finished.
"""

import argparse
import json
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from orthanc_jobs.cluster.demo import create_study
from orthanc_jobs.cluster.launcher import DEMO_USER, down, up

DATA = Path(__file__).parent / "data"


def _wait(client: httpx.Client, job_id: str, states: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if job["State"] in states:
            return job
        time.sleep(0.1)
    raise RuntimeError(f"job {job_id} never reached {states}")


def capture(client: httpx.Client) -> list[dict[str, Any]]:
    study, _ = create_study(client, "CAPTURE")
    captured = []

    def made(path: str, body: dict[str, Any]) -> str:
        return str(client.post(path, json={**body, "Asynchronous": True}).json()["ID"])

    for path, body in (
        (f"/studies/{study}/archive", {}),
        (f"/studies/{study}/modify", {"Replace": {"StudyDescription": "captured"}, "Force": True}),
        (f"/studies/{study}/anonymize", {}),
    ):
        captured.append(_wait(client, made(path, body), {"Success"}))
    # A C-STORE to a port where nothing listens fails fast; to one that never answers, it runs.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    client.put(
        "/modalities/closed", json={"AET": "CLOSED", "Host": "127.0.0.1", "Port": closed.getsockname()[1]}
    )
    closed.close()
    captured.append(_wait(client, made("/modalities/closed/store", {"Resources": [study]}), {"Failure"}))
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True).start()
    client.put(
        "/modalities/silent", json={"AET": "SILENT", "Host": "127.0.0.1", "Port": silent.getsockname()[1]}
    )
    captured.append(_wait(client, made("/modalities/silent/store", {"Resources": [study]}), {"Running"}))
    silent.close()
    for connection in held:
        connection.close()
    return captured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orthanc-root", type=Path, help="run Orthanc from this Debian root")
    arguments = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="orthanc-jobs-capture-"))
    state = up(
        directory,
        instances=1,
        lb_port=0,
        orthanc_overrides={"DicomScuTimeout": 3600},
        orthanc_root=arguments.orthanc_root,
        say=lambda *_: None,
    )
    try:
        with httpx.Client(base_url=f"{state.lb_url}/orthanc-1", auth=DEMO_USER, timeout=60) as client:
            version = client.get("/system").json()["Version"]
            jobs = capture(client)
    finally:
        down(directory, say=lambda *_: None)
        shutil.rmtree(directory, ignore_errors=True)
    DATA.mkdir(exist_ok=True)
    target = DATA / f"jobs-{version}.json"
    target.write_text(json.dumps(jobs, indent=1, sort_keys=True) + "\n")
    print(f"{len(jobs)} jobs of Orthanc {version} in {target}")


if __name__ == "__main__":
    main()
