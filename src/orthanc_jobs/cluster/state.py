"""``cluster.json`` in the state folder: the cluster's URLs, its secret, and the processes started, by id,
so that ``down`` stops exactly those."""

import json
from dataclasses import dataclass, field
from pathlib import Path

from orthanc_jobs.cluster import ClusterError, processes
from orthanc_jobs.cluster.processes import OwnedProcess
from orthanc_jobs.cluster.replicas import SINGLE_SERVICE_NAME

STATE_FILE = "cluster.json"


@dataclass
class ClusterState:
    directory: str
    lb_url: str
    #: The first replica of the job-service (the only one without replicas).
    service_url: str
    orthanc_urls: dict[str, str]
    secret: str
    processes: list[OwnedProcess] = field(default_factory=list)
    #: Every replica of the job-service, by process name, in order; the first is ``service_url``.
    service_urls: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A cluster.json from before replicas: its one job-service.
        if not self.service_urls:
            self.service_urls = {SINGLE_SERVICE_NAME: self.service_url}

    @property
    def orthanc_lb_url(self) -> str:
        return self.lb_url + "/orthanc"

    def save(self) -> None:
        data = {
            "directory": self.directory,
            "lb_url": self.lb_url,
            "service_url": self.service_url,
            "service_urls": self.service_urls,
            "orthanc_urls": self.orthanc_urls,
            "secret": self.secret,
            "processes": [p.to_json() for p in self.processes],
        }
        processes.write_private(Path(self.directory) / STATE_FILE, json.dumps(data, indent=2))

    @classmethod
    def load(cls, directory: Path) -> "ClusterState":
        path = directory / STATE_FILE
        if not path.exists():
            raise ClusterError(f"no cluster in {directory} (no {STATE_FILE})")
        data = json.loads(path.read_text())
        data["processes"] = [OwnedProcess(**p) for p in data["processes"]]
        return cls(**data)

    def find_process(self, name: str) -> OwnedProcess:
        for process in self.processes:
            if process.name == name:
                return process
        names = ", ".join(p.name for p in self.processes)
        raise ClusterError(f"no process named {name!r} in this cluster (there are: {names})")
