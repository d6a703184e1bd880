"""The ``[server]`` section of config.toml: fair share of the federation port,
the local health listener and the metrics endpoint.

Defaults are those of :class:`~psi_share.transport.limits.CallLimits`; the
README ("Configuration" and "Fair share under attack") says what each does.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import ConfigError
from ..transport.limits import CallLimits
from ..transport.probes import is_loopback


@dataclass(frozen=True)
class ServerConfig:
    limits: CallLimits = field(default_factory=CallLimits)
    health_listen: str = ""  # "" = off; a loopback HOST:PORT for the lab's own probes
    metrics_listen: str = ""  # "" = off; HOST:PORT of the Prometheus endpoint


SCHEMA: dict[str, type] = {
    "threads": int, "calls_per_peer": int, "calls_per_second": float, "call_burst": int,
    "stream_idle_seconds": float, "call_max_seconds": float, "refusal_log_window_seconds": float,
    "health_listen": str, "metrics_listen": str,
}

# (key, smallest, largest) for every number.
_BOUNDS = (
    ("threads", 4, 1024), ("calls_per_peer", 1, 1024), ("calls_per_second", 0.1, 100_000),
    ("call_burst", 1, 1_000_000), ("stream_idle_seconds", 1, 86_400), ("call_max_seconds", 1, 604_800),
    ("refusal_log_window_seconds", 0.1, 3600),
)


def parse_server(s: dict[str, Any], where: str) -> ServerConfig:
    d = CallLimits()
    values = {f.name: s.get(f.name, getattr(d, f.name)) for f in fields(CallLimits)}
    for key in ("calls_per_second", "stream_idle_seconds", "call_max_seconds", "refusal_log_window_seconds"):
        values[key] = float(values[key])
    limits = CallLimits(**values)
    for key, low, high in _BOUNDS:
        if not low <= getattr(limits, key) <= high:
            raise ConfigError(f"{where}: [server] {key} must be between {low:g} and {high:g}")
    if limits.calls_per_peer > limits.threads:
        raise ConfigError(f"{where}: [server] calls_per_peer must not exceed threads (one peer would hold them all)")
    config = ServerConfig(limits, s.get("health_listen", ""), s.get("metrics_listen", ""))
    for key in ("health_listen", "metrics_listen"):
        address = getattr(config, key)
        if address and ":" not in address:
            raise ConfigError(f"{where}: [server] {key} must be HOST:PORT (or \"\" for off)")
    if config.health_listen and not is_loopback(config.health_listen):
        raise ConfigError(f"{where}: [server] health_listen must be a loopback address (127.0.0.1:PORT): "
                          "it answers anyone, without authentication")
    return config


def render_server() -> str:
    d = CallLimits()
    return f"""
[server]
# Fair share of the federation port under attack (README, "Fair share under attack").
threads = {d.threads}                    # worker threads of the federation port
calls_per_peer = {d.calls_per_peer}              # calls one peer may have in progress at once
calls_per_second = {d.calls_per_second:g}           # sustained calls per second per peer ...
call_burst = {d.call_burst}                # ... and at once after a quiet spell
stream_idle_seconds = {d.stream_idle_seconds:g}        # a request stream that brings nothing this long is cut
call_max_seconds = {d.call_max_seconds:g}         # any call is cut after this
refusal_log_window_seconds = {d.refusal_log_window_seconds:g}  # identical refusals within it: one audit entry and a count
health_listen = ""         # e.g. "127.0.0.1:7401": plaintext health for the lab's own probes (loopback only)
metrics_listen = ""        # e.g. "127.0.0.1:9464": Prometheus /metrics (off when empty)
"""
