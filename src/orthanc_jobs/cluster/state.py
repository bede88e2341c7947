"""``cluster.json`` in the state folder: the cluster's URLs, its secret, and the processes started, by id,
so that ``down`` stops exactly those."""

import json
from dataclasses import dataclass, field
from pathlib import Path

from orthanc_jobs.cluster import ClusterError, processes
from orthanc_jobs.cluster.processes import OwnedProcess

STATE_FILE = "cluster.json"


@dataclass
class ClusterState:
    directory: str
    lb_url: str
    service_url: str
    orthanc_urls: dict[str, str]
    secret: str
    processes: list[OwnedProcess] = field(default_factory=list)

    @property
    def orthanc_lb_url(self) -> str:
        return self.lb_url + "/orthanc"

    def save(self) -> None:
        data = {
            "directory": self.directory,
            "lb_url": self.lb_url,
            "service_url": self.service_url,
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
