"""orthanc-jobs: one jobs API for a cluster of Orthanc servers behind a load balancer."""

__version__ = "0.1.0"

#: Prefix of the job-service's own routes; no Orthanc REST route starts with it.
SERVICE_PREFIX = "/orthanc-jobs"
#: Routes used by the reporter plugin; the load balancer must not expose them.
INTERNAL_PREFIX = SERVICE_PREFIX + "/internal"
