"""Which Orthanc each server of the cluster runs, as it says itself (``GET /system``)."""

from collections.abc import Mapping

import httpx

from orthanc_jobs.cluster.config import DEMO_USER


def ask_orthanc_versions(
    urls: Mapping[str, str], transport: httpx.BaseTransport | None = None, timeout: float = 1.0
) -> dict[str, str | None]:
    """Each server's Orthanc version, by name; None for one that does not answer within ``timeout``."""
    with httpx.Client(transport=transport, timeout=timeout, auth=DEMO_USER) as client:
        return {name: _version(client, url) for name, url in urls.items()}


def _version(client: httpx.Client, url: str) -> str | None:
    try:
        answer = client.get(f"{url}/system")
        version = answer.json().get("Version") if answer.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return version if isinstance(version, str) else None
