"""``psi-share policy``: what each peer may ask of this node, as the node decides it."""

from __future__ import annotations

import datetime as dt

import click

from ..privacy import spent_on
from ..store.db import usage
from .output import emit, format_option


@click.group()
def policy() -> None:
    """Show the per-peer policy ([policy] in config.toml) and today's budget use."""


@policy.command("show")
@click.argument("peers", nargs=-1)
@format_option
@click.pass_obj
def policy_show(c, peers: tuple[str, ...], fmt: str) -> None:  # type: ignore[no-untyped-def]
    """The effective rule for each known peer (or PEERS), within [exposure], and today's use.

    Today's use counts sessions, items, and the epsilon the peer's released figures cost
    of [privacy] daily_epsilon_budget (UTC day).
    """
    with c.node() as n:
        names = list(peers) or [p.name for p in n.store.peers()]
        day = dt.datetime.fromtimestamp(n.clock(), dt.timezone.utc).strftime("%Y-%m-%d")
        used = usage(n.store, day)
        dp = n.config.privacy
        rows = []
        for name in names:
            rule = n.responder.policy.for_peer(name)
            sessions, items = used.get(name, (0, 0))
            rows.append({
                "peer": name,
                "override": name in n.config.policy.peers,
                "protocols": ",".join(sorted(rule.protocols)),
                "datasets": ",".join(sorted(rule.datasets)),
                "kinds": ",".join(sorted(rule.kinds)),
                "reveal": rule.reveal,
                "set_size": f"{rule.min_set_size}..{rule.max_set_size}",
                "sessions_today": f"{sessions}/{rule.sessions_per_day}",
                "items_today": f"{items}/{rule.items_per_day}",
                "min_result": rule.min_result,
                # what the peer's released figures cost today, of its [privacy] daily budget
                "epsilon_today": f"{float(spent_on(n.store, name, day)):.6g}/{dp.daily_epsilon_budget:.6g}"
                if dp.enabled else "off",
            })
        emit(rows, ("peer", "override", "protocols", "datasets", "kinds", "reveal", "set_size",
                    "sessions_today", "items_today", "min_result", "epsilon_today"), fmt, f"policy of {n.config.name} ({day} UTC)")
