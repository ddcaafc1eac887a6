"""Free loopback ports for tests that start servers (the OS picks one that is free now)."""

from __future__ import annotations

import socket


def free_port(kind: str = "udp") -> int:
    """A port on 127.0.0.1 that is free for `kind` ('udp' or 'tcp') at the time of the call."""
    sock_type = {"udp": socket.SOCK_DGRAM, "tcp": socket.SOCK_STREAM}[kind]
    with socket.socket(socket.AF_INET, sock_type) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
