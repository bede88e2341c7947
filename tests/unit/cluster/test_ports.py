import socket

import pytest

from orthanc_jobs.cluster import ClusterError
from orthanc_jobs.cluster.ports import usable_port


def test_a_busy_load_balancer_port_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ClusterError, match="busy"):
            usable_port(busy.getsockname()[1])
