import socket

import pytest

from orthanc_jobs.cluster import ClusterError
from orthanc_jobs.cluster.ports import free_ports, usable_port


def test_a_busy_load_balancer_port_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ClusterError, match="busy"):
            usable_port(busy.getsockname()[1])


def test_the_ports_chosen_together_are_all_different() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert all(0 < port < 65536 for port in ports)
