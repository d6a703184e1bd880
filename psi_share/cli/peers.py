"""``psi-share peers``: the peer labs this node talks to, and ``peers check``,
which proves each works end to end before a job relies on it (the checks
themselves are in :mod:`psi_share.node.checks`).

Exit codes of ``peers check``: 0 every check passed (warnings allowed);
7 a check failed at some peer; 8 the only failures are peers that could not
be reached; 1 an error before any peer was checked (e.g. an unknown name).
"""

from __future__ import annotations

import json
import sys

import click

from ..errors import PsiShareError
from ..node.checks import DEFAULT_SIZES, check_peers, exit_code
from ..protocols.canary import MAX_CANARY_ITEMS
from ..timefmt import utc_text
from .output import emit, format_option


@click.group()
def peers() -> None:
    """Manage the peer labs this node talks to."""


@peers.command("add")
@click.argument("name")
@click.argument("address")
@click.option("--note", default="", help="Free text kept with the peer.")
@click.option("--replace", is_flag=True, help="Change the address of an existing peer.")
@click.pass_obj
def peers_add(c, name: str, address: str, note: str, replace: bool) -> None:  # type: ignore[no-untyped-def]
    """Add peer NAME reachable at ADDRESS (HOST:PORT).

    Only known peers may open sessions with this node, and a node only
    matches against known peers.
    """
    if ":" not in address:
        raise click.BadParameter("ADDRESS must be HOST:PORT", param_hint="ADDRESS")
    with c.node() as n:
        if name == n.config.name:
            raise click.BadParameter("a node cannot be its own peer", param_hint="NAME")
        n.store.add_peer(name, address, now=n.clock(), note=note, replace=replace)
        click.echo(f"peer {name} at {address}")


@peers.command("list")
@format_option
@click.pass_obj
def peers_list(c, fmt: str) -> None:  # type: ignore[no-untyped-def]
    """List known peers."""
    with c.node() as n:
        rows = [{"peer": p.name, "address": p.address, "added": utc_text(p.added_at), "note": p.note} for p in n.store.peers()]
        emit(rows, ("peer", "address", "added", "note"), fmt, "peers")


@peers.command("remove")
@click.argument("name")
@click.pass_obj
def peers_remove(c, name: str) -> None:  # type: ignore[no-untyped-def]
    """Forget peer NAME (its past sessions stay on record)."""
    with c.node() as n:
        n.store.remove_peer(name)
        click.echo(f"removed peer {name}")


@peers.command("check")
@click.argument("names", nargs=-1, metavar="[PEER]...")
@click.option("--sizes", default=",".join(str(s) for s in DEFAULT_SIZES), show_default=True,
              help="Synthetic set sizes of the canary sweep, comma-separated (1 to "
                   f"{MAX_CANARY_ITEMS}), or 'none' for no sweep.")
@click.option("--no-canary", is_flag=True, help="Skip the canary PSI sessions (connection, TLS, identity, "
                                                "versions and grants only).")
@format_option
@click.option("--json", "as_json", is_flag=True, help="Same as --format json (for scripts).")
@click.pass_obj
def peers_check(c, names: tuple[str, ...], sizes: str, no_canary: bool, fmt: str, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    """Prove that each PEER (default: every known peer) works end to end.

    \b
    connect   its address answers TLS
    tls       its certificate is the federation CA's, names it, is valid (a
              warning when it expires within 30 days) and is not revoked
    access    it answers us (we are a known, unrevoked peer there)
    identity  NodeInfo names it
    versions  wire protocol and canonicalization versions per kind agree
              (kinds that differ are named); OpenMined PSI release
    prompts   when either node has a [prompts] seed: the prompt parameter
              sets agree (each differing field named; a peer without
              prompts is a warning)
    grants    the protocols, datasets and kinds it grants us
    canary    real PSI sessions on synthetic items that no identifier can
              equal, at the size of each granted dataset's filter (reveal if
              granted, and count) and at each --sizes: each must give exactly
              the answer both sides know in advance

    The peer charges each canary to our daily budget there and answers at
    most 60 canaries an hour. Exit code 0: every check passed (warnings
    allowed); 7: a check failed at some peer; 8: the only failures are peers
    that could not be reached; 1: an error before any peer was checked.
    """
    sweep = _canary_sizes(sizes)
    with c.node() as n:
        if not names and not n.store.peers():
            raise PsiShareError("no peers known: add one with 'psi-share peers add NAME HOST:PORT'")
        reports = check_peers(n, names or None, sizes=sweep, canary=not no_canary)
    code = exit_code(reports)
    if as_json or fmt == "json":
        click.echo(json.dumps({"ok": code == 0, "exit_code": code, "peers": [r.as_dict() for r in reports]}, indent=2))
    else:
        rows = [{"peer": r.peer, "check": f.check, "status": f.status, "detail": f.detail}
                for r in reports for f in r.findings]
        emit(rows, ("peer", "check", "status", "detail"), fmt, "peers check")
    for r in reports:
        for f in r.failed:  # one line per failed check on stderr: scripts and people see what to fix
            click.echo(f"peer {r.peer}: {f.check} failed: {f.detail}", err=True)
    verdicts = "; ".join(f"{r.peer} " + ("ok" if r.ok else "failed (" + ", ".join(dict.fromkeys(
        f.check for f in r.failed)) + ")") for r in reports)
    click.echo(f"peers check: {verdicts}", err=True)
    sys.exit(code)


def _canary_sizes(value: str) -> tuple[int, ...]:
    if value.strip().lower() == "none":
        return ()
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter("give whole numbers separated by commas, or 'none'", param_hint="--sizes") from None
    if not sizes or any(not 1 <= s <= MAX_CANARY_ITEMS for s in sizes):
        raise click.BadParameter(f"each size must be 1 to {MAX_CANARY_ITEMS}", param_hint="--sizes")
    return tuple(dict.fromkeys(sizes))
