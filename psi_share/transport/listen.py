"""Binding a node's port: never shared, and a refusal that says why.

gRPC turns SO_REUSEPORT on by default: a second node on a busy port then
binds too and the kernel splits incoming connections between the two. The
server options turn it off (``liveness.Liveness.server_options``); this module
turns gRPC's bare "Failed to bind" into a reason an operator can act on.
"""

from __future__ import annotations

import errno
import socket

from ..errors import ConfigError


class ListenError(ConfigError):
    """``serve`` cannot bind its address: the port is taken, or the host is not this machine's."""


def why_not_listening(address: str) -> str:
    """Why a bind failed, found by trying it with a plain socket (gRPC's
    own error says only "Failed to bind"). Never SO_REUSEPORT: a port that
    another process holds is in use, whatever that process set."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, ValueError) as exc:
        return f"the address cannot be resolved ({exc})"
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return "the port is already in use (another psi-share node or another program listens there)"
                if exc.errno == errno.EADDRNOTAVAIL:
                    return "the host is not an address of this machine"
                if exc.errno == errno.EACCES:
                    return "permission denied (ports below 1024 need privileges)"
                return exc.strerror or str(exc)
    return "gRPC could not bind it"
