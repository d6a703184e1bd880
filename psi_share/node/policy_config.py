"""The ``[policy]`` section of config.toml: what each peer may ask of this node.

Shape::

    [policy]                      # every known peer, unless overridden below
    protocols = ["psi", ...]      # default: every protocol this software speaks
    datasets = ["flagged"]
    kinds = []                    # empty: every kind the node exposes
    reveal = false                # count-only: no peer learns which items match
    min_set_size = 1
    max_set_size = 0              # 0: the node's [matching] max_set_size
    items_per_day = 10000000
    sessions_per_day = 1000
    min_result = 0                # below this, only "fewer than k" is released

    [policy.peers.lab-b]          # overrides for one peer; unset keys inherit [policy]
    reveal = true

A peer can never get more than the node exposes at all (``[exposure]``,
``[matching] max_set_size``): the effective rule is the intersection.
Unknown keys, unknown peers' key names and unknown protocols or kinds are
errors naming the file and the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from ..errors import ConfigError
from ..identifiers import KINDS


@dataclass(frozen=True)
class PeerPolicy:
    """What one peer may do. Defaults are the safe ones: count-only on ``flagged``."""

    protocols: tuple[str, ...] = ()  # parse_policy defaults it to every registered protocol; [] = none
    datasets: tuple[str, ...] = ("flagged",)
    kinds: tuple[str, ...] = ()  # empty: every kind the node exposes
    reveal: bool = False
    min_set_size: int = 1
    max_set_size: int = 0  # 0: the node's [matching] max_set_size
    items_per_day: int = 10_000_000
    sessions_per_day: int = 1000
    min_result: int = 0


_KEYS: dict[str, type] = {f.name: (list if f.type.startswith("tuple") else bool if f.type == "bool" else int)
                          for f in fields(PeerPolicy)}


@dataclass(frozen=True)
class PolicyConfig:
    defaults: PeerPolicy = field(default_factory=PeerPolicy)
    peers: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # name -> PeerPolicy

    def for_peer(self, peer: str) -> PeerPolicy:
        return self.peers.get(peer, self.defaults)


def _table(body: dict[str, Any], base: PeerPolicy, where: str, table: str) -> PeerPolicy:
    from ..protocols import PROTOCOLS
    from ..names import NAME_PATTERN

    values: dict[str, Any] = {}
    for key, value in body.items():
        expected = _KEYS.get(key)
        if expected is None:
            raise ConfigError(f"{where}: unknown key {table} {key} (known: {', '.join(_KEYS)})")
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if not ok:
            raise ConfigError(f"{where}: {table} {key} must be of type {expected.__name__}")
        if expected is list:
            if not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: {table} {key} must be a list of strings")
            value = tuple(value)
        elif expected is int and value < 0:
            raise ConfigError(f"{where}: {table} {key} must not be negative")
        values[key] = value
    policy = replace(base, **values)
    for p in policy.protocols:
        if p not in PROTOCOLS:
            raise ConfigError(f"{where}: {table} protocols names unknown protocol {p!r} (known: {', '.join(sorted(PROTOCOLS))})")
    for k in policy.kinds:
        if k not in KINDS:
            raise ConfigError(f"{where}: {table} kinds names unknown kind {k!r} (known: {', '.join(sorted(KINDS))})")
    for d in policy.datasets:
        if not NAME_PATTERN.match(d):
            raise ConfigError(f"{where}: {table} datasets holds an invalid dataset name {d!r}")
    if policy.min_set_size < 1:
        raise ConfigError(f"{where}: {table} min_set_size must be at least 1")
    if policy.max_set_size and policy.max_set_size < policy.min_set_size:
        raise ConfigError(f"{where}: {table} max_set_size is below min_set_size")
    return policy


def parse_policy(data: Any, where: str) -> PolicyConfig:
    from ..protocols import PROTOCOLS
    from ..names import NAME_PATTERN

    if not isinstance(data, dict):
        raise ConfigError(f"{where}: [policy] must be a table")
    body = dict(data)
    peers = body.pop("peers", {})
    if not isinstance(peers, dict):
        raise ConfigError(f"{where}: [policy.peers] must hold one table per peer, e.g. [policy.peers.lab-b]")
    base = PeerPolicy(protocols=tuple(sorted(PROTOCOLS)))
    defaults = _table(body, base, where, "[policy]")
    overrides = {}
    for name, table in peers.items():
        if not NAME_PATTERN.match(name):
            raise ConfigError(f"{where}: [policy.peers.{name}] does not name a valid node")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [policy.peers.{name}] must be a table")
        overrides[name] = _table(table, defaults, where, f"[policy.peers.{name}]")
    return PolicyConfig(defaults, MappingProxyType(overrides))


def render_policy() -> str:
    d = PeerPolicy()
    return f"""
[policy]
# What every known peer may ask of this node; [policy.peers.NAME] tables
# override single keys for one peer. Never more than [exposure] allows.
datasets = ["flagged"]
kinds = []                  # identifier kinds; empty = every exposed kind
reveal = {str(d.reveal).lower()}              # false: peers learn only counts, never which items
min_set_size = {d.min_set_size}            # smallest set a peer may send
max_set_size = {d.max_set_size}            # largest; 0 = [matching] max_set_size
items_per_day = {d.items_per_day}   # items a peer may send per UTC day
sessions_per_day = {d.sessions_per_day}     # sessions a peer may open per UTC day
min_result = {d.min_result}              # results below this are released only as "fewer than k"
# protocols = ["psi"]       # default: every protocol this node speaks
#
# [policy.peers.lab-b]      # a trusted partner may learn which actors match
# reveal = true
"""
