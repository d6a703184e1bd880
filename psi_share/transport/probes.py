"""The lab's own probes: gRPC health on a loopback listener of its own.

The federation port answers members only (mutual TLS, then the call gate),
so a load balancer or orchestrator without a federation certificate cannot
ask it whether the node is up. ``[server] health_listen`` opens a second,
plaintext listener on a loopback address that serves ``grpc.health.v1.Health``
and nothing else.
"""

from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from ..errors import ConfigError

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def is_loopback(address: str) -> bool:
    return address.rpartition(":")[0].strip("[]") in LOOPBACK_HOSTS



def create_health_listener(health_servicer: health.HealthServicer, address: str) -> tuple[grpc.Server, int]:
    """A plaintext server answering only ``grpc.health.v1.Health`` on a loopback address.

    For the lab's own probes (load balancer, orchestrator) that hold no
    federation certificate: the federation port answers members only. It
    shares the node's health servicer, so it reports NOT_SERVING during
    shutdown exactly as the federation port does. Its answers (the serving
    status) go to this machine only and are not peer traffic: they are not
    in the audit log.
    """
    if not is_loopback(address):
        raise ConfigError(f"[server] health_listen {address!r} must be a loopback address (127.0.0.1:PORT): "
                          "it answers anyone without authentication")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="psi-health"),
                         maximum_concurrent_rpcs=16)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {address} ([server] health_listen): {exc}") from None
    return server, port
