"""``psi-share``: run a federated PSI node from the command line.

Exit codes: 0 success; 1 an error (message on stderr); 2 bad usage;
3 a job run that completed only partially (some peers failed); 4 a job run
that failed (no peer succeeded); 5 a job run refused because another run of
the same job is in progress (see cli/jobs.py); 6 ``serve`` cannot listen on
its address (the port is in use, e.g. by another node, or the host is not
this machine's); 7 ``peers check`` found a failed check at some peer, 8 the
only failures it found are peers that could not be reached.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import click
from rich.logging import RichHandler

from .. import __version__
from ..errors import PsiShareError
from ..identifiers import KINDS
from ..jobs.scheduler import start_scheduler
from ..node.home import init_home
from ..node.node import Node
from ..pki import load_certificate
from ..protocols.psi import Mode
from ..timefmt import utc_text
from ..transport.listen import ListenError
from ..store import ImportMode
from .datasets import register as register_data_commands
from .jobs import register as register_job_commands
from .jobs import run_job_command
from .output import emit, emit_object, err_console, format_option
from .prompts import emit_run, import_prompts, run_rows, show_prompt_session

EXIT_ERROR, EXIT_PARTIAL, EXIT_CANNOT_LISTEN = 1, 3, 6
DEFAULT_HOME = str(Path("~/.psi-share").expanduser())


def _when(ts: float | None) -> str:
    return "" if ts is None else utc_text(ts)


def _kinds(value: str) -> list[str]:
    kinds = [k.strip() for k in value.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise click.BadParameter(f"unknown kind(s) {', '.join(unknown)}; known: {', '.join(sorted(KINDS))}")
    if not kinds:
        raise click.BadParameter("name at least one kind")
    return kinds


class Ctx:
    def __init__(self, home: Path, log_level: str | None, insecure: bool = False) -> None:
        self.home = home
        self.log_level = log_level
        self.insecure = insecure

    def node(self) -> Node:
        node = Node.open(self.home, insecure=True if self.insecure else None)
        _setup_logging(self.log_level or node.config.log_level)
        if node.insecure:
            err_console.print("[bold red]WARNING: --insecure: peer traffic is plaintext and unauthenticated; "
                              "anyone can read it or pretend to be a peer. Test use only.[/]")
        return node


def _setup_logging(level: str) -> None:
    root = logging.getLogger()
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        root.addHandler(RichHandler(console=err_console, show_path=False, rich_tracebacks=False))
    root.setLevel(level)
    logging.getLogger("psi_share").setLevel(level)


pass_ctx = click.make_pass_decorator(Ctx)


class _Group(click.Group):
    """Turns psi-share errors into one clear line and exit code 1."""

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except PsiShareError as exc:
            _exit_with(exc, EXIT_ERROR)


def _exit_with(exc: Exception, code: int) -> None:
    """One clear line on stderr, then exit ``code``."""
    # Plain text, never rich markup: messages hold paths and [sections].
    click.secho("error: ", fg="red", bold=True, err=True, nl=False)
    click.echo(str(exc), err=True)
    sys.exit(code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--home", type=click.Path(path_type=Path), envvar="PSI_SHARE_HOME", default=DEFAULT_HOME, show_default=True,
    help="Node home folder (config.toml, keys/, store.sqlite3). Env: PSI_SHARE_HOME.",
)
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default=None,
              help="Override [node] log_level for this command.")
@click.option("--insecure", is_flag=True,
              help="Talk to peers in PLAINTEXT, without certificates or authentication (tests on one machine only).")
@click.version_option(__version__, prog_name="psi-share")
@click.pass_context
def cli(ctx: click.Context, home: Path, log_level: str | None, insecure: bool) -> None:
    """Find the actors that attack several labs, without revealing customer data.

    Each lab runs a node holding its data locally. Nodes match with private set
    intersection (ECDH, OpenMined PSI): raw identifiers never leave a node.
    Start with 'psi-share init', import data, add peers, then 'serve' and 'match'.
    """
    ctx.obj = Ctx(home, log_level, insecure)


@cli.command()
@click.argument("name")
@click.option("--listen", default="127.0.0.1:7400", show_default=True, help="Address 'serve' binds (HOST:PORT).")
@click.option("--force", is_flag=True, help="Overwrite an existing config.toml (keys and store are kept).")
@click.option("--tls-from", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Install the certificate 'psi-share pki issue NAME' wrote into this directory.")
@pass_ctx
def init(c: Ctx, name: str, listen: str, force: bool, tls_from: Path | None) -> None:
    """Create a node home for the lab called NAME.

    Writes config.toml (every key commented), an Ed25519 node identity key and
    an Ed25519 audit key in keys/ (mode 0600), an empty SQLite store and tls/
    for the node's certificate from the federation CA (given with --tls-from,
    or installed later with 'psi-share pki install DIR').
    """
    home = init_home(c.home, name, listen, force=force, tls_from=tls_from)
    click.echo(f"created node {name!r} in {home.path}")
    click.echo(f"identity key fingerprint: {home.identity_fingerprint()}")
    if tls_from is None:
        click.echo(f"no TLS certificate yet: install the one the federation CA issues for {name!r} with "
                   f"'psi-share pki install DIR' (it goes to {home.tls_path})")
    else:
        click.echo(f"installed TLS certificate from {tls_from}")


# -- node ---------------------------------------------------------------------


@cli.group()
def node() -> None:
    """Inspect this node."""


@node.command("info")
@format_option
@pass_ctx
def node_info(c: Ctx, fmt: str) -> None:
    """Show this node's name, settings, datasets and peers."""
    with c.node() as n:
        cfg = n.config
        emit_object(
            {
                "name": cfg.name,
                "home": str(n.home.path),
                "listen": cfg.listen,
                "identity_fingerprint": n.home.identity_fingerprint(),
                "tls": _tls_summary(n),
                "false_positive_rate": cfg.matching.false_positive_rate,
                "max_set_size": cfg.matching.max_set_size,
                "workers": cfg.matching.workers,
                "exposed_datasets": list(cfg.exposure.datasets),
                "exposed_kinds": list(cfg.exposed_kinds()),
                "reveal_allowed": cfg.exposure.reveal,
                "datasets": [d.name for d in n.store.datasets()],
                "peers": [p.name for p in n.store.peers()],
                "software_version": __version__,
            },
            fmt,
            title=f"node {cfg.name}",
        )


def _tls_summary(n: Node) -> str:
    """One line on this node's certificate, for 'node info' (never key material)."""
    if n.insecure:
        return "INSECURE: plaintext, no authentication"
    try:
        cert = load_certificate(n.tls.cert_path)
    except PsiShareError as exc:
        return f"not usable: {exc}"
    return f"{cert.subject.rfc4514_string()}, serial {cert.serial_number:x}, valid until {cert.not_valid_after_utc:%Y-%m-%d}"


# -- data ---------------------------------------------------------------------


@cli.group()
def data() -> None:
    """Import, register (Parquet) and list the lab's datasets (they never leave the node)."""


@data.command("import")
@click.argument("dataset")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Replace the dataset's contents.")
@click.option("--append", is_flag=True, help="Add to the dataset's contents.")
@click.option(
    "--rejects", "rejects", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
    help="Import the valid rows; write each refused row's file, line, kind and reason (never its value) "
         "to FILE (CSV). An existing FILE is overwritten only if it is a rejects file.",
)
@click.option("--prompts", "prompts", is_flag=True, help="FILE is a prompt file (JSONL: actor_id, text, seen_at).")
@click.option("--benign", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="With --prompts: a sample of ordinary traffic; templates common in it are removed.")
@format_option
@pass_ctx
def data_import(c: Ctx, dataset: str, file: Path, replace: bool, append: bool, rejects: Path | None,
                prompts: bool, benign: Path | None, fmt: str) -> None:
    """Import FILE (CSV, TSV or JSON Lines) into DATASET, all or nothing.

    \b
    CSV: header 'actor_id,kind,value', one identifier per row (TSV: the same, tab-separated).
    JSONL: {"actor_id": "a-1", "identifiers": [{"kind": "email", "value": "..."}]} per line.

    Every value is canonicalized on import. A refused row (file, line and
    reason, never the value) stops the import and nothing is written; every
    refused row is listed. With --rejects FILE the valid rows are imported and
    the refused ones listed in FILE (exit 0; the summary counts them by
    reason). When DATASET already holds actors, say --replace or --append.
    Importing what the dataset already holds changes nothing, not even its
    revision.
    """
    if replace and append:
        raise click.UsageError("--replace and --append contradict each other; give one")
    mode = ImportMode.REPLACE if replace else ImportMode.APPEND if append else None
    if prompts or benign:  # README "Prompt chains"
        with c.node() as n:
            return import_prompts(n, dataset, file, mode, rejects, benign, fmt)
    with c.node() as n:
        s = n.import_file(dataset, file, mode, rejects=rejects)
        emit_object(
            {"dataset": s.dataset, "file": s.path, "rows": s.rows, "rejected": s.rejected,
             "rejected_by_reason": s.rejected_by_reason, "rejects_file": s.rejects_file, "actors": s.actors,
             "identifiers": s.identifiers, "duplicates_collapsed": s.duplicates,
             "actors_added": s.actors_added, "identifiers_added": s.identifiers_added,
             "actors_removed": s.actors_removed, "identifiers_removed": s.identifiers_removed,
             "revision": s.revision, "changed": s.changed},
            fmt, title="import",
        )
    if s.rejected:
        # stderr, so that --format json/csv on stdout stays clean.
        click.echo(f"{s.rejected} of {s.rows} rows refused and not imported; file, line and reason of each "
                   f"are in {s.rejects_file}", err=True)


@data.command("list")
@format_option
@pass_ctx
def data_list(c: Ctx, fmt: str) -> None:
    """List datasets with actor and identifier counts per kind."""
    with c.node() as n:
        exposed = set(n.config.exposure.datasets)
        rows = [
            {"dataset": d.name, "actors": d.actors, "identifiers": d.identifiers, "kinds": d.kinds,
             "revision": d.revision, "exposed_to_peers": d.name in exposed, "updated": _when(d.updated_at)}
            for d in n.store.datasets()
        ]
        emit(rows, ("dataset", "actors", "identifiers", "kinds", "revision", "exposed_to_peers", "updated"), fmt, "datasets")


@data.command("delete")
@click.argument("dataset")
@click.confirmation_option(prompt="Delete this dataset and all its identifiers?")
@pass_ctx
def data_delete(c: Ctx, dataset: str) -> None:
    """Delete DATASET and its identifiers (match history is kept)."""
    with c.node() as n:
        n.store.delete_dataset(dataset)
        click.echo(f"deleted dataset {dataset}")


# -- serve and match ----------------------------------------------------------


@cli.command()
@click.option("--listen", default=None, help="Override [node] listen (HOST:PORT; port 0 picks one).")
@pass_ctx
def serve(c: Ctx, listen: str | None) -> None:
    """Serve peers until SIGINT/SIGTERM, then shut down gracefully.

    Exposed datasets' filters are prepared at start, so the first match does
    not wait for them. Health (grpc.health.v1) and server reflection are on.
    Job files of [jobs] scheduled that carry a [job.schedule] run on their
    schedule in this process (a job missed while down runs once at start).
    The port is never shared: when it is in use (another node listens there)
    serve exits with code 6 and says so.
    """
    with c.node() as n:
        try:
            running = n.serve(listen)
        except ListenError as exc:
            _exit_with(exc, EXIT_CANNOT_LISTEN)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        try:
            scheduler = start_scheduler(n, on_result=_log_scheduled_run(n))
        except PsiShareError:
            running.stop(grace=1)
            raise
        click.echo(f"psi-share node {n.config.name} listening on port {running.port}", err=True)
        sys.stderr.flush()
        stop.wait()
        logging.getLogger("psi_share.node").info("shutting down")
        if scheduler is not None and not scheduler.stop(timeout=30):
            logging.getLogger("psi_share.node").warning("a scheduled run was still in progress at shutdown")
        running.stop(grace=10)


def _log_scheduled_run(n: Node):  # type: ignore[no-untyped-def]
    """One summary line per scheduled run, in serve's log."""
    from ..jobs.history import previous_diff, summary_line

    def log_result(result) -> None:  # type: ignore[no-untyped-def]
        run = n.store.job_run(result.run_id)
        diff = previous_diff(n.store, run) if result.status in ("ok", "partial") else None
        level = logging.INFO if result.status == "ok" else logging.WARNING
        logging.getLogger("psi_share.scheduler").log(level, "%s", summary_line(result, diff))

    return log_result


@cli.command()
@click.argument("peer")
@click.option("--dataset", default="flagged", show_default=True, help="Our dataset to match.")
@click.option("--peer-dataset", default=None, help="The peer's dataset (default: same name as --dataset).")
@click.option("--kinds", required=True, help="Comma-separated identifier kinds, e.g. email,phone,ip_prefix.")
@click.option("--mode", "mode_name", type=click.Choice(["reveal", "count"]), default=None,
              help="reveal (default): which of our items match; count: only how many.")
@click.option("--count", "count_only", is_flag=True, help="Same as --mode count.")
@format_option
@pass_ctx
def match(c: Ctx, peer: str, dataset: str, peer_dataset: str | None, kinds: str, mode_name: str | None,
          count_only: bool, fmt: str) -> None:
    """Match our DATASET against PEER's dataset with private set intersection.

    reveal: we learn which of our actors match (OpenMined PSI); the peer
    learns our set size. count: the peer counts (the cardinality protocol)
    and releases only the count, after its min_result and noise; the peer
    learns our set size and the count. Results are stored; see 'results show'.
    """
    if count_only and mode_name == "reveal":
        raise click.UsageError("--count and --mode reveal contradict each other")
    mode = Mode.COUNT if count_only or mode_name == "count" else Mode.REVEAL
    with c.node() as n:
        o = n.match(peer, dataset=dataset, peer_dataset=peer_dataset, kinds=_kinds(kinds), mode=mode)
        emit_object(
            {"session": o.session_id, "peer": o.peer, "our_items": o.requester_set_size,
             "matching_items": o.count, "matching_actors": o.matched_actors,
             **({"withheld": f"fewer than {o.fewer_than} (the peer's min_result)"} if o.fewer_than else {}),
             "false_positive_rate": o.false_positive_rate, "seconds": round(o.seconds, 3)},
            fmt, title=f"match with {peer}",
        )


# -- results ------------------------------------------------------------------


@cli.group()
def results() -> None:
    """Read stored match results."""


@results.command("sessions")
@click.option("--limit", default=50, show_default=True)
@format_option
@pass_ctx
def results_sessions(c: Ctx, limit: int, fmt: str) -> None:
    """List recent sessions, as requester and as responder."""
    with c.node() as n:
        rows = [
            {"session": s.id, "role": s.role, "peer": s.peer, "dataset": s.local_dataset, "mode": s.mode,
             "status": s.status, "set_size": s.requester_set_size, "matched": s.matched_count,
             "started": _when(s.started_at), "error": s.error}
            for s in n.store.sessions(limit=limit)
        ]
        emit(rows, ("session", "role", "peer", "dataset", "mode", "status", "set_size", "matched", "started", "error"), fmt, "sessions")


@results.command("show")
@click.argument("session")
@format_option
@pass_ctx
def results_show(c: Ctx, session: str, fmt: str) -> None:
    """Show which of our actors matched in SESSION (id or unique prefix), by kind."""
    with c.node() as n:
        s = n.store.session(session)
        if s.protocol == "intersection-sum":
            _show_sum_session(n, s, fmt)
            return
        if s.role != "requester":
            learned = (f"the set size ({s.requester_set_size}) and the intersection size ({s.matched_count})"
                       if s.protocol == "cardinality" else f"only the set size ({s.requester_set_size})")
            raise PsiShareError(f"session {s.id} was answered by this node: it learned {learned}")
        if "prompt" in s.kinds and s.mode == "reveal" and s.status == "done":
            show_prompt_session(n, s.id, s.peer, fmt)
            if set(s.kinds) == {"prompt"}:
                return  # its actors are in the table of templates
        by_actor: dict[str, list[str]] = {}
        for m in n.store.matches([s.id]):
            by_actor.setdefault(m.actor_id, []).append(m.kind)
        rows = [{"actor_id": a, "peer": s.peer, "kinds": k} for a, k in sorted(by_actor.items())]
        if s.mode == "count":
            click.echo(f"session {s.id} was count-only: {s.matched_count} matching items", err=True)
        emit(rows, ("actor_id", "peer", "kinds"), fmt, f"session {s.id} with {s.peer}: {s.status}")


def _show_sum_session(n: Node, s, fmt: str) -> None:  # type: ignore[no-untyped-def]
    """An intersection-sum session: the count and sum both sides learned (no actors)."""
    r = n.store.sum_result(s.id)
    emit_object(
        {"session": s.id, "role": s.role, "peer": s.peer, "dataset": s.local_dataset, "kind": ",".join(s.kinds),
         "values_held_by": s.mode.removeprefix("values:"), "status": s.status,
         "intersection_size": r.intersection_size if r else None, "sum": r.total if r else None,
         "our_items": r.own_set_size if r else None, "their_items": r.peer_set_size if r else None,
         "key_bits": r.key_bits if r else None, "error": s.error},
        fmt, title=f"intersection-sum session {s.id} with {s.peer}: {s.status}",
    )


@results.command("run")
@click.argument("run_id")
@click.option("--min-peers", default=1, show_default=True, help="Only actors matched by at least this many peers.")
@click.option("--chain-peers", default=0, show_default=True,
              help="Only actors whose prompts share a chain seen at at least this many peers (prompt runs).")
@format_option
@pass_ctx
def results_run(c: Ctx, run_id: str, min_peers: int, chain_peers: int, fmt: str) -> None:
    """Per actor, the peers that matched it in job run RUN_ID.

    For a run over the prompt kind, also the chains (this lab's groups of
    similar prompt templates) that link each actor, and with --chain-peers N
    only the actors whose prompts share a chain seen at N or more peers.
    """
    with c.node() as n:
        run = n.store.job_run(run_id)
        emit_run(run_rows(n, run.id, min_peers, chain_peers), fmt, f"job {run.job_name} run {run.id}: {run.status}")


# -- jobs ---------------------------------------------------------------------


@cli.group()
def job() -> None:
    """Run joint matching jobs described by a TOML job file."""


@job.command("run")
@click.argument("jobfile", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@format_option
@click.option("--json", "as_json", is_flag=True, help="Same as --format json (for scripts).")
@pass_ctx
def job_run(c: Ctx, jobfile: Path, fmt: str, as_json: bool) -> None:
    """Run this node's side of JOBFILE: match against every other participant.

    Stores one run with a session per peer, retries unreachable peers with
    backoff ([jobs] settings), prints one summary line with the change since
    the previous ok run. Exit code 0 ok, 3 partial (some peers failed), 4
    failed (none succeeded), 5 another run of this job is in progress. For
    cron: '0 3 * * 1 psi-share --home HOME job run JOBFILE --json'.
    """
    from ..jobs.spec import load_job
    from .aggregates import run_aggregate_job_command

    spec = load_job(jobfile)
    if spec.protocol != "psi":  # intersection-sum / federation-total job files (cli/aggregates.py)
        run_aggregate_job_command(c, spec, "json" if as_json else fmt)
        return
    run_job_command(c, jobfile, "json" if as_json else fmt)


@job.command("runs")
@click.option("--job", "job_name", default=None, help="Only runs of this job.")
@format_option
@pass_ctx
def job_runs(c: Ctx, job_name: str | None, fmt: str) -> None:
    """List stored job runs."""
    with c.node() as n:
        rows = [{"run": r.id, "job": r.job_name, "status": r.status, "started": _when(r.started_at),
                 "finished": _when(r.finished_at), "error": r.error} for r in n.store.job_runs(job_name)]
        emit(rows, ("run", "job", "status", "started", "finished", "error"), fmt, "job runs")


from .audit import audit as _audit_group  # noqa: E402

cli.add_command(_audit_group)
from .pki import pki  # noqa: E402

cli.add_command(pki)
from .policy import policy  # noqa: E402

cli.add_command(policy)
from .peers import peers  # noqa: E402

cli.add_command(peers)

register_job_commands(job, results)  # job history/schedule, results diff/export (cli/jobs.py)
register_data_commands(data)  # data register/show: Parquet datasets (cli/datasets.py)

# -- Paillier aggregates (cli/aggregates.py) -----------------------------------

from .aggregates import federation, sum_command  # noqa: E402

cli.add_command(sum_command)
cli.add_command(federation)


def main() -> None:
    cli(prog_name="psi-share")


if __name__ == "__main__":
    main()
