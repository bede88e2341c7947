"""Ports on loopback: any free one, or the one asked for if nobody holds it."""

import contextlib
import socket

from orthanc_jobs.cluster import ClusterError


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` different free ports: each is held until all are chosen, so that none comes twice."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def usable_port(port: int) -> int:
    if port == 0:
        return free_port()
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise ClusterError(
                f"port {port} is busy; choose another with --lb-port (0: any free port)"
            ) from None
    return port
