"""``audit verify --witnesses`` and ``audit witnesses``: the signed heads peers hold.

``verify --witnesses`` opens the node (asking a peer is a message like any
other: the audit log records it), asks every known peer (or those named with
``--witness``) for the heads of our log it holds, closes the node (a signed
checkpoint), and hands the heads signed by the trusted key to the verifier,
which checks that the log extends each. Whose fault a problem is decides the
exit code (README, "Witnesses"):

* 1 -- the log does not extend a head a peer holds (cut back or rewritten
  after the peer saw it signed), or a peer holds heads signed by another
  audit key this node's certificate bound (this node signed another log);
* 5 -- a peer answered with heads that are not ours: malformed, another
  node's, or not signed by any audit key of ours (the peer's fault);
* 4 -- a peer could not be asked (unreachable, refused, unknown).

The worst applies, in that order, before 3 (an unsigned tail).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import click

from ..audit.verify import VerifyResult
from ..audit.witness import WitnessAnswer, sort_answer
from ..errors import PsiShareError
from ..node.home import NodeHome
from ..store import Store
from ..store.witnesses import held_summary, peer_keys
from ..timefmt import utc_text
from .output import emit, format_option

EXIT_FAILED = 1
EXIT_WITNESS_UNREACHABLE = 4  # a witness could not be asked
EXIT_WITNESS_FORGED = 5  # a witness answered with heads that are not ours


@dataclass
class Asked:
    """One witness asked: its sorted answer, or why it could not be asked."""

    peer: str
    answer: WitnessAnswer | None = None
    not_asked: str = ""


def ask_witnesses(obj, node_name: str, trusted_key: str, only: Sequence[str]) -> list[Asked]:  # type: ignore[no-untyped-def]
    """Ask each peer (all known ones, or ``only``) for the heads of our log it holds.

    ``obj`` is the CLI's context object (``cli.main.Ctx``), which opens the node.
    """
    try:
        node = obj.node()
    except PsiShareError as exc:
        return [Asked(peer or "(every peer)", not_asked=f"this node cannot call its peers: {exc}") for peer in only or [""]]
    asked = []
    with node:
        names = list(only) or [p.name for p in node.store.peers()]
        try:
            ca = node.tls.ca_cert if node.tls is not None else None
        except PsiShareError as exc:  # its TLS material does not load: it can call nobody
            return [Asked(peer, not_asked=f"this node cannot call its peers: {exc}") for peer in names]
        for peer in names:
            try:
                with node.peer_client(peer, timeout=60) as client:
                    reply = client.witnessed_heads()
            except PsiShareError as exc:
                asked.append(Asked(peer, not_asked=str(exc)))
                continue
            asked.append(Asked(peer, sort_answer(peer, reply, node=node_name, trusted_key=trusted_key, ca_cert=ca)))
    return asked  # the node is closed: its last entries (these questions) are signed


def report_witnesses(name: str, asked: list[Asked], result: VerifyResult) -> int:
    """Print what each witness showed; return the exit code it calls for (0 if none)."""
    if not asked:
        click.echo(f"witnesses of {name}: no known peer to ask")
        return 0
    outcomes = iter(result.witnessed)  # in the order the heads were handed to the verifier
    code = 0
    for w in asked:
        if w.answer is None:
            click.echo(f"witness {w.peer}: NOT ASKED: {w.not_asked}", err=True)
            code = code or EXIT_WITNESS_UNREACHABLE
            continue
        a = w.answer
        failed = [(head, why) for head in a.heads if (why := next(outcomes))]
        for head, why in failed:
            click.echo(f"witness {w.peer}: FAILED: head {head.text} (signed by this node's key, witnessed "
                       f"{utc_text(head.witnessed_at_ns / 1e9)}): {why}", err=True)
        for why in a.other_keys:
            click.echo(f"witness {w.peer}: FAILED: {why}", err=True)
        for why in a.forged:
            click.echo(f"witness {w.peer}: FORGED (the peer's fault, not this log's): {why}", err=True)
        if failed or a.other_keys:
            code = EXIT_FAILED
        elif a.forged and code != EXIT_FAILED:
            code = EXIT_WITNESS_FORGED
        if not (failed or a.other_keys or a.forged):
            latest = max(a.heads, key=lambda h: h.count, default=None)
            click.echo(f"witness {w.peer}: OK: " + (
                f"{w.peer} holds {len(a.heads)} heads of this log and the log extends every one (latest {latest.text}, witnessed "
                f"{utc_text(latest.witnessed_at_ns / 1e9)})" if latest else f"{w.peer} holds no head of this log yet"))
    return code


def worst(*codes: int) -> int:
    """The exit code that wins: 1, then 5, then 4, then 3."""
    for code in (EXIT_FAILED, EXIT_WITNESS_FORGED, EXIT_WITNESS_UNREACHABLE, 3):
        if code in codes:
            return code
    return 0


@click.command("witnesses")
@format_option
@click.pass_context
def audit_witnesses(ctx: click.Context, fmt: str) -> None:
    """List the signed heads of peers' audit logs this node holds as their witness.

    Per peer and audit key: the certificate that bound the key, since when,
    how many heads we hold, the latest (COUNT:HASH) and when it came, and
    forks (two different heads signed for one count: that peer kept two
    logs). A peer with two keys changed its audit key; both stay on record.
    """
    home = NodeHome(ctx.find_root().obj.home)
    home.load_config()  # a clear error outside a node home
    with Store(home.store_path) as store:
        keys = {(k.peer, k.key): k for k in peer_keys(store)}
        rows = []
        for s in held_summary(store):
            k = keys.get((s.peer, s.key))
            rows.append({
                "peer": s.peer, "audit_key": s.key, "certificate": k.serial if k else "",
                "key_since": utc_text(k.first_seen) if k else "", "heads": s.heads,
                "latest": f"{s.latest_count}:{s.latest_head}", "received": utc_text(s.latest_received_at),
                "forks": s.forks,
            })
    emit(rows, ("peer", "audit_key", "certificate", "key_since", "heads", "latest", "received", "forks"), fmt,
         "heads held for peers")
    if any(r["forks"] for r in rows):
        click.echo("a peer signed two different heads for one count: its audit log forked", err=True)
        sys.exit(EXIT_FAILED)
