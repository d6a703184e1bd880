"""CLI for periodic joint jobs: running with progress, history, diffs, exports.

Registered from ``cli/main.py`` on its existing ``job`` and ``results``
groups. Exit codes of a job run: 0 ok, 3 partial (some peers failed),
4 failed (no peer succeeded), 5 another run of the job is in progress
(nothing was done); 1 for any other error, as everywhere.

Commands here use ``click.pass_obj`` (the ``Ctx`` of ``main.py``) rather
than importing it, so that ``python -m psi_share.cli.main`` (where main is
``__main__``) and the console script behave the same.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from ..errors import JobBusy, PsiShareError
from ..jobs import EXPORT_FORMATS
from ..jobs.history import RunDiff, diff_runs, is_reveal, peer_outcomes, previous_diff, run_attribution, summary_line
from ..jobs.retry import JobEvent
from ..jobs.runner import run_job
from ..jobs.spec import JobRunResult, load_job
from ..timefmt import utc_text
from .output import emit, err_console, format_option

EXIT_OK, EXIT_ERROR, EXIT_PARTIAL, EXIT_FAILED, EXIT_BUSY = 0, 1, 3, 4, 5
RUN_EXIT = {"ok": EXIT_OK, "partial": EXIT_PARTIAL, "failed": EXIT_FAILED}

json_option = click.option("--json", "as_json", is_flag=True, help="Same as --format json (for scripts).")


def _when(ts: float | None) -> str:
    return "" if ts is None else utc_text(ts)


# -- job run ------------------------------------------------------------------


@contextmanager
def _progress(total: int) -> Iterator:  # type: ignore[type-arg]
    """A rich progress bar on stderr, only when stderr is a terminal."""
    if not err_console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=True,
    ) as progress:
        yield progress, progress.add_task("starting", total=total)


def run_job_command(c, jobfile: Path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    spec = load_job(jobfile)
    with c.node() as n:
        peers = spec.peers_for(n.config.name)
        attempts = n.config.jobs.peer_attempts
        with _progress(len(peers)) as bar:

            def on_event(e: JobEvent) -> None:
                if bar is None:
                    return
                progress, task = bar
                if e.kind == "attempt":
                    extra = f" (attempt {e.attempt}/{attempts})" if e.attempt > 1 else ""
                    progress.update(task, description=f"matching with {e.peer}{extra}")
                elif e.kind == "retry":
                    progress.console.print(f"{e.peer} unreachable (attempt {e.attempt}/{attempts}); will retry")
                elif e.kind == "waiting":
                    progress.update(task, description=f"waiting {e.delay:g}s before retrying")
                elif e.kind == "done":
                    progress.advance(task)

            try:
                result = run_job(n, spec, on_event=on_event)
            except JobBusy as exc:
                click.secho("busy: ", fg="yellow", bold=True, err=True, nl=False)
                click.echo(str(exc), err=True)
                sys.exit(EXIT_BUSY)
        run = n.store.job_run(result.run_id)
        diff = previous_diff(n.store, run) if result.status in ("ok", "partial") else None
        line = summary_line(result, diff)
        _print_run(result, diff, line, fmt)
    sys.exit(RUN_EXIT[result.status])


def _print_run(result: JobRunResult, diff: RunDiff | None, line: str, fmt: str) -> None:
    rows = [
        {"peer": r.peer, "status": r.status, "attempts": r.attempts, "session": r.session_id,
         "matching_items": r.count, "matching_actors": r.matched_actors, "seconds": round(r.seconds, 2),
         "error": r.error}
        for r in result.peers
    ]
    if fmt == "json":
        click.echo(json.dumps({
            "run_id": result.run_id, "job": result.job, "status": result.status, "mode": result.mode,
            "triggered_by": result.triggered_by, "started": _when(result.started_at),
            "finished": _when(result.finished_at), "seconds": round(result.finished_at - result.started_at, 3),
            "peers": rows,
            "attribution": {a: list(p) for a, p in result.attribution.items()},
            "seen_at_2_or_more": result.seen_at(2),
            "diff": _diff_json(diff) if diff is not None else None,
            "summary": line,
        }, indent=2))
        return
    columns = ("peer", "status", "attempts", "session", "matching_items", "matching_actors", "seconds", "error")
    emit(rows, columns, fmt, f"job {result.job} run {result.run_id}: {result.status}")
    if fmt == "table":
        click.echo(line)
    else:
        click.echo(line, err=True)


# -- history and diff ---------------------------------------------------------


def _diff_json(d: RunDiff) -> dict:
    def changes(items) -> list[dict]:  # type: ignore[no-untyped-def]
        return [{"actor_id": c.actor_id, "before": list(c.before), "after": list(c.after)} for c in items]

    out = {
        "base_run": d.base.id, "run": d.run.id, "count_only": d.count_only,
        "compared_peers": list(d.compared_peers), "excluded_peers": d.excluded_peers,
        "parameter_changes": {k: list(v) for k, v in d.parameter_changes.items()},
        "summary": d.summary(),
    }
    if d.count_only:
        out["counts"] = {p: {"before": a, "after": b} for p, (a, b) in d.counts.items()}
    else:
        out |= {"newly_shared": changes(d.newly_shared), "no_longer_shared": changes(d.no_longer_shared),
                "peers_changed": changes(d.peers_changed),
                "prompt_chains": [{"chain": c.actor_id, "before": list(c.before), "after": list(c.after)}
                                  for c in d.chains]}
    return out


def register(job: click.Group, results: click.Group) -> None:
    """Add this module's commands to main.py's ``job`` and ``results`` groups."""
    job.add_command(job_history)
    job.add_command(job_schedule)
    results.add_command(results_diff)
    results.add_command(results_export)


@click.command("history")
@click.argument("job_name", metavar="JOB")
@click.option("--limit", default=20, show_default=True, help="Most recent runs to show.")
@format_option
@json_option
@click.pass_obj
def job_history(c, job_name: str, limit: int, fmt: str, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    """List the runs of JOB (newest last): status, timings, trigger, per-peer outcome."""
    fmt = "json" if as_json else fmt
    with c.node() as n:
        runs = n.store.job_runs(job_name)[-limit:] if limit > 0 else n.store.job_runs(job_name)
        if not runs:
            raise PsiShareError(f"no runs of job {job_name!r} on this node (see 'psi-share job runs')")
        rows = []
        for r in runs:
            peers = peer_outcomes(n.store, r)
            rows.append({
                "run": r.id, "status": r.status, "triggered_by": r.triggered_by,
                "scheduled_for": _when(r.scheduled_for), "started": _when(r.started_at),
                "seconds": None if r.finished_at is None else round(r.finished_at - r.started_at, 2),
                "mode": r.parameters.get("mode"),
                "peers": {p: s for p, (s, _) in sorted(peers.items())},
                "actors": len(_attribution(n, r)) if is_reveal(r) and r.status in ("ok", "partial") else None,
                "parameters": r.parameters, "error": r.error,
            })
        if fmt == "json":
            click.echo(json.dumps(rows, indent=2))
            return
        emit(rows, ("run", "status", "triggered_by", "started", "seconds", "mode", "peers", "actors", "error"), fmt,
             f"job {job_name}: {len(rows)} run(s)")


def _attribution(n, run) -> dict:  # type: ignore[no-untyped-def]
    return run_attribution(n.store, run.id)


@click.command("schedule")
@format_option
@json_option
@click.pass_obj
def job_schedule(c, fmt: str, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    """Show the scheduled jobs 'serve' runs ([jobs] scheduled), their last and next runs."""
    from ..jobs.scheduler import JobScheduler, find_scheduled_jobs

    fmt = "json" if as_json else fmt
    with c.node() as n:
        jobs = find_scheduled_jobs(n.home.path, n.config.jobs.scheduled)
        scheduler = JobScheduler(n, jobs)
        rows = []
        for job in jobs:
            planned = scheduler.plan(job)
            last = n.store.last_completed_job_run(job.name)
            rows.append({
                "job": job.name, "file": job.source, "schedule": job.schedule.describe(),  # type: ignore[union-attr]
                "last_run": _when(last.started_at) if last else "", "last_status": last.status if last else "",
                "next_run": "now (missed while down)" if planned.due.is_due else _when(planned.due.at),
            })
        emit(rows, ("job", "schedule", "last_run", "last_status", "next_run", "file"), fmt, "scheduled jobs")


@click.command("diff")
@click.argument("run_a")
@click.argument("run_b", required=False)
@format_option
@json_option
@click.pass_obj
def results_diff(c, run_a: str, run_b: str | None, fmt: str, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    """What changed from job run RUN_A to RUN_B (ids or unique prefixes).

    With RUN_A alone: from the previous ok run of the same job to RUN_A.
    Shows actors newly shared, no longer shared, and whose set of matching
    peers changed, over the peers that completed in both runs (a peer that
    was down in one of them is listed as not compared, never as a change).
    Count-only runs have no actors: their per-peer counts are compared.
    """
    fmt = "json" if as_json else fmt
    with c.node() as n:
        if run_b is None:
            run = n.store.find_job_run(run_a)
            base = n.store.previous_ok_job_run(run)
            if base is None:
                raise PsiShareError(f"run {run.id} has no earlier ok run of job {run.job_name!r} to compare with")
        else:
            base, run = n.store.find_job_run(run_a), n.store.find_job_run(run_b)
        for r in (base, run):
            if r.status not in ("ok", "partial"):
                raise PsiShareError(f"run {r.id} is {r.status}: it has no results to compare")
        d = diff_runs(n.store, base, run)
        if fmt == "json":
            click.echo(json.dumps(_diff_json(d), indent=2))
            return
        if base.job_name != run.job_name:
            click.echo(f"note: comparing runs of two jobs ({base.job_name}, {run.job_name})", err=True)
        for key, (a, b) in d.parameter_changes.items():
            click.echo(f"note: {key} differs between the runs: {a} -> {b}", err=True)
        for peer, why in d.excluded_peers.items():
            click.echo(f"note: {peer} not compared: {why}", err=True)
        title = f"{base.id[:12]} ({_when(base.started_at)}) -> {run.id[:12]} ({_when(run.started_at)})"
        if d.count_only:
            click.echo("count-only runs learned counts, not actors: comparing matching items per peer", err=True)
            rows = [{"peer": p, "before": a, "after": b, "change": None if a is None or b is None else b - a}
                    for p, (a, b) in d.counts.items()]
            emit(rows, ("peer", "before", "after", "change"), fmt, title)
        else:
            rows = (
                [{"change": "newly shared", "actor_id": x.actor_id, "before": x.before, "after": x.after} for x in d.newly_shared]
                + [{"change": "no longer shared", "actor_id": x.actor_id, "before": x.before, "after": x.after} for x in d.no_longer_shared]
                + [{"change": "peers changed", "actor_id": x.actor_id, "before": x.before, "after": x.after} for x in d.peers_changed]
            )
            emit(rows, ("change", "actor_id", "before", "after"), fmt, title)
            if d.chains:  # prompt runs: this lab's chains, by the peers they were seen at
                emit([{"chain": c.actor_id, "before": c.before, "after": c.after} for c in d.chains],
                     ("chain", "before", "after"), fmt, "prompt chains whose peers changed")
        (click.echo if fmt == "table" else lambda s: click.echo(s, err=True))(d.summary())


@click.command("export")
@click.argument("run_id")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="json", show_default=True,
              help="csv, json, or a STIX 2.1 bundle (stix).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to FILE (atomically, mode 0600) instead of stdout.")
@click.pass_obj
def results_export(c, run_id: str, fmt: str, output: Path | None) -> None:  # type: ignore[no-untyped-def]
    """Export job run RUN_ID for this lab's own tools (CSV, JSON or STIX 2.1).

    Per matched actor: the peers that matched it, matched kinds, first seen
    (earliest run of the job that matched it), change since the previous ok
    run, and the actor's own identifiers IN CLEAR. Keep exports inside the
    lab: never send a STIX bundle to another lab (STIX observable ids are
    hashes of their values, so they reveal the identifiers).
    """
    with c.node() as n:
        from ..jobs.exports import collect, render  # the STIX library loads only for an export

        text = render(collect(n.store, n.config.name, n.store.find_job_run(run_id)), fmt)
    if output is None:
        click.echo(text, nl=False)
        return
    import os

    tmp = output.with_name(output.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        tmp.replace(output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    click.echo(f"wrote {output} ({fmt})", err=True)
