"""CLI for Paillier aggregates: ``psi-share sum`` and ``psi-share federation``."""

from __future__ import annotations

import click

from ..errors import PsiShareError
from ..identifiers import KINDS
from .output import emit, emit_object, format_option


def _ctx():  # type: ignore[no-untyped-def]
    """The root command's Ctx (by object, not class: ``python -m`` loads main twice)."""
    return click.get_current_context().find_root().obj


@click.command("sum")
@click.argument("peer")
@click.option("--kind", required=True, type=click.Choice(sorted(KINDS)), help="The one identifier kind to match on.")
@click.option("--dataset", default="flagged", show_default=True, help="Our dataset.")
@click.option("--peer-dataset", default=None, help="The peer's dataset (default: same name as --dataset).")
@click.option("--values", "value_holder", type=click.Choice(["responder", "requester"]), default="responder",
              show_default=True, help="Whose dataset carries the values: the peer's (responder) or ours (requester).")
@click.option("--key-bits", type=click.Choice(["2048", "3072"]), default=None,
              help="Paillier key size when we hold the values (default: [paillier] key_bits).")
@format_option
def sum_command(peer: str, kind: str, dataset: str, peer_dataset: str | None, value_holder: str,
                key_bits: str | None, fmt: str) -> None:
    """Private intersection-sum with PEER: how many items we share, and the sum
    of the value holder's amounts over them.

    Both sides learn the intersection size and the sum (and each other's set
    size); neither learns which items match or any single amount. The values
    come from the 'amount' column of the value holder's dataset.
    """
    with _ctx().node() as n:
        o = n.intersection_sum(peer, dataset=dataset, peer_dataset=peer_dataset, kind=kind,
                               value_holder=value_holder, key_bits=int(key_bits) if key_bits else None)
        emit_object(
            {"session": o.session_id, "peer": o.peer, "kind": o.kind, "values_held_by": o.value_holder,
             "our_items": o.own_set_size, "their_items": o.peer_set_size,
             "intersection_size": o.intersection_size, "sum": o.sum, "seconds": round(o.seconds, 3)},
            fmt, title=f"intersection-sum with {peer}",
        )


@click.group()
def federation() -> None:
    """Federation totals: a secure sum of one figure per lab across >= 3 labs."""


@federation.command("figure")
@click.argument("metric")
@click.argument("value", type=int)
def federation_figure(metric: str, value: int) -> None:
    """Set this lab's figure VALUE for METRIC (what it contributes to totals).

    VALUE is an integer in [0, 2^63 - 1]. It never leaves the node in the
    clear: peers only ever see it added inside a Paillier ciphertext.
    """
    from ..crypto.paillier import MAX_VALUE

    if not 0 <= value <= MAX_VALUE:
        raise click.BadParameter(f"must be in [0, {MAX_VALUE}]", param_hint="VALUE")
    with _ctx().node() as n:
        n.store.set_figure(metric, value, now=n.clock())
        click.echo(f"figure for {metric} set")


@federation.command("figures")
@format_option
def federation_figures(fmt: str) -> None:
    """List this lab's own figures (local only)."""
    with _ctx().node() as n:
        emit([{"metric": m, "value": v} for m, v in n.store.figures().items()], ("metric", "value"), fmt, "figures")


@federation.command("total")
@click.argument("metric")
@click.option("--participants", required=True,
              help="Comma-separated node names, this node included: the ring, in this order after this node.")
@click.option("--min-contributors", type=int, default=None, help="Refuse to release below this many (never < 3).")
@format_option
def federation_total(metric: str, participants: str, min_contributors: int | None, fmt: str) -> None:
    """Initiate a federation total of METRIC over PARTICIPANTS.

    This node signs the route (the ring, k, a fresh Paillier key) with its
    federation certificate's key; every participant joins it, adds its masked
    figure when the pass comes from its previous hop and calls the next.
    Every participant learns the total and the number of contributors,
    nothing about any other lab's figure. Fails cleanly, naming the hop,
    when a participant drops out, refuses or the minimum is not met; rerun
    when it is back. Needs TLS (not --insecure).
    """
    names = [p.strip() for p in participants.split(",") if p.strip()]
    with _ctx().node() as n:
        o = n.federation_total(metric, names, min_contributors=min_contributors)
        emit_object({"run": o.run_id, "metric": o.metric, "total": o.total, "contributors": o.contributors,
                     "participants": ",".join(o.participants),
                     "release_failed": ",".join(o.release_failures) or "none"}, fmt, title=f"federation total of {metric}")
        if o.release_failures:
            raise PsiShareError(f"total computed but not released to: {', '.join(o.release_failures)}")


@federation.command("runs")
@click.option("--limit", default=50, show_default=True)
@format_option
def federation_runs(limit: int, fmt: str) -> None:
    """Federation runs this node initiated or joined, with their status and released totals."""
    with _ctx().node() as n:
        rows = [{"run": r.id, "role": r.role, "metric": r.metric, "initiator": r.initiator, "status": r.status,
                 "contributors": r.contributors, "total": r.total, "error": r.error}
                for r in n.store.federation_runs(limit)]
        emit(rows, ("run", "role", "metric", "initiator", "status", "contributors", "total", "error"), fmt, "federation runs")


def run_aggregate_job_command(c, spec, fmt: str) -> None:  # type: ignore[no-untyped-def]
    """``job run`` for an intersection-sum or federation-total job file (exit codes as for PSI jobs)."""
    import sys

    from ..jobs.runner import run_job
    from .jobs import RUN_EXIT

    with c.node() as n:
        result = run_job(n, spec)
        emit_aggregate_job(result, fmt)
    sys.exit(RUN_EXIT[result.status])


def emit_aggregate_job(result, fmt: str) -> None:  # type: ignore[no-untyped-def]
    if result.protocol == "federation-total":
        r = result.peers[0]
        emit_object({"run_id": result.run_id, "job": result.job, "protocol": result.protocol, "status": result.status,
                     "federation_run": r.session_id, "contributors": result.contributors,
                     "total": result.federation_total, "error": r.error}, fmt, title=f"job {result.job}")
        if r.error:
            click.secho("error: ", fg="red", bold=True, err=True, nl=False)
            click.echo(r.error, err=True)
        return
    rows = [{"peer": r.peer, "status": r.status, "session": r.session_id, "intersection_size": r.count,
             "sum": r.total, "seconds": round(r.seconds, 2), "error": r.error} for r in result.peers]
    if fmt == "json":
        import json

        click.echo(json.dumps({"run_id": result.run_id, "job": result.job, "protocol": result.protocol,
                               "status": result.status, "peers": rows}, indent=2))
    else:
        emit(rows, ("peer", "status", "session", "intersection_size", "sum", "seconds", "error"), fmt,
             f"job {result.job} run {result.run_id}: {result.status}")
