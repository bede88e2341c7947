"""The local cluster (``orthanc-jobs cluster ...``): PostgreSQL, N Orthanc servers, the job-service (one or
more replicas) and nginx.

- ``launcher``: up, down, and stopping or starting one process; the names the rest of the project imports.
- ``binaries``: where the programs are (the system's, or another Debian root's Orthanc).
- ``ports``: free and usable ports on loopback.
- ``config``: what the processes are given: Orthanc's, nginx's and PostgreSQL's configurations.
- ``replicas``: the job-service's replicas: their names, their database, what each says on ``/healthz``.
- ``starters``: starting each process and waiting until it is ready.
- ``state``: ``cluster.json``, the record of what was started.
- ``processes``: processes owned by id, started and stopped without leftovers.
- ``display``: what ``cluster up`` and ``cluster status`` print.
- ``demo``: sample studies and jobs.
"""


class ClusterError(Exception):
    """Something the user can fix: a missing package, a busy port, no cluster in that folder."""
