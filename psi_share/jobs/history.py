"""Job run history: what a run found, and what changed since another run.

Only PSI reveal runs name actors. A count-only run learned numbers, not
actors, so its diff compares matching-item counts per peer instead.

**Which peers a diff compares.** An actor's peer set is compared only over
the peers that completed in *both* runs. Otherwise a peer that was down in
one run would make every actor it matched look "no longer shared" (or
"newly shared"), which is an outage, not news. Peers left out are listed
with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..store import JobRunRecord, Store


@dataclass(frozen=True)
class ActorChange:
    actor_id: str
    before: tuple[str, ...]  # peers that matched it in the base run (compared peers only)
    after: tuple[str, ...]  # ... and in the later run


@dataclass(frozen=True)
class RunDiff:
    base: JobRunRecord
    run: JobRunRecord
    compared_peers: tuple[str, ...]
    excluded_peers: dict[str, str]  # peer -> why it was left out
    count_only: bool
    newly_shared: tuple[ActorChange, ...] = ()
    no_longer_shared: tuple[ActorChange, ...] = ()
    peers_changed: tuple[ActorChange, ...] = ()
    # count-only runs: peer -> (matching items before, after)
    counts: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    parameter_changes: dict[str, tuple[object, object]] = field(default_factory=dict)
    # Prompt runs: this lab's chains whose set of peers changed (actor_id holds the chain label).
    chains: tuple[ActorChange, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.newly_shared or self.no_longer_shared or self.peers_changed or self.chains) and all(
            a == b for a, b in self.counts.values()
        )

    def summary(self) -> str:
        if self.count_only:
            changed = sum(1 for a, b in self.counts.values() if a != b)
            return f"count-only runs (no actors): {changed} of {len(self.counts)} peers' counts changed"
        text = (
            f"{len(self.newly_shared)} newly shared, {len(self.no_longer_shared)} no longer shared, "
            f"{len(self.peers_changed)} with changed peers"
        )
        return text + (f", {len(self.chains)} prompt chains with changed peers" if self.chains else "")


def is_reveal(run: JobRunRecord) -> bool:
    return run.parameters.get("mode", "reveal") == "reveal"


def run_attribution(store: Store, run_id: str) -> dict[str, tuple[str, ...]]:
    """actor_id -> peers that matched it in a run (completed sessions only)."""
    sessions = [s.id for s in store.sessions(job_run_id=run_id) if s.role == "requester" and s.status == "done"]
    by_actor: dict[str, set[str]] = {}
    for m in store.matches(sessions):
        by_actor.setdefault(m.actor_id, set()).add(m.peer)
    return {a: tuple(sorted(p)) for a, p in sorted(by_actor.items())}


def peer_outcomes(store: Store, run: JobRunRecord) -> dict[str, tuple[str, int | None]]:
    """peer -> (status, matching items) for one run.

    Runs recorded before per-peer history existed fall back to their sessions.
    """
    recorded = store.job_run_peers(run.id)
    if recorded:
        return {p.peer: (p.status, p.matched_items) for p in recorded}
    out: dict[str, tuple[str, int | None]] = {}
    for s in store.sessions(job_run_id=run.id):
        if s.role == "requester":
            out[s.peer] = ("ok" if s.status == "done" else "failed", s.matched_count)
    return out


def diff_runs(store: Store, base: JobRunRecord, run: JobRunRecord) -> RunDiff:
    """What changed from ``base`` to ``run`` (normally: the previous ok run to this one)."""
    before, after = peer_outcomes(store, base), peer_outcomes(store, run)
    compared = sorted(p for p in set(before) & set(after) if before[p][0] == after[p][0] == "ok")
    excluded: dict[str, str] = {}
    for peer in sorted(set(before) | set(after)):
        if peer in compared:
            continue
        if peer not in before or peer not in after:
            excluded[peer] = f"not a participant of run {(base if peer not in before else run).id[:12]}"
        else:
            failed = [r.id[:12] for r, o in ((base, before), (run, after)) if o[peer][0] != "ok"]
            excluded[peer] = f"failed in run {' and '.join(failed)}"
    changes = {
        k: (base.parameters.get(k), run.parameters.get(k))
        for k in sorted(set(base.parameters) | set(run.parameters))
        if k != "participants" and base.parameters.get(k) != run.parameters.get(k)
    }
    count_only = not (is_reveal(base) and is_reveal(run))
    if count_only:
        return RunDiff(
            base, run, tuple(compared), excluded, True,
            counts={p: (before[p][1], after[p][1]) for p in compared}, parameter_changes=changes,
        )
    keep = set(compared)
    a = _restrict(run_attribution(store, base.id), keep)
    b = _restrict(run_attribution(store, run.id), keep)
    return RunDiff(
        base, run, tuple(compared), excluded, False,
        newly_shared=tuple(ActorChange(x, (), b[x]) for x in sorted(set(b) - set(a))),
        no_longer_shared=tuple(ActorChange(x, a[x], ()) for x in sorted(set(a) - set(b))),
        peers_changed=tuple(ActorChange(x, a[x], b[x]) for x in sorted(set(a) & set(b)) if a[x] != b[x]),
        parameter_changes=changes, chains=_chain_changes(store, base, run, keep),
    )


def _chain_changes(store: Store, base: JobRunRecord, run: JobRunRecord, peers: set[str]) -> tuple[ActorChange, ...]:
    """Prompt chains whose peers (over the compared ones) differ between the runs."""
    from ..node.prompts.matches import chain_sightings

    def peers_of(r: JobRunRecord) -> dict[str, tuple[str, ...]]:
        done = [s.id for s in store.sessions(job_run_id=r.id) if s.role == "requester" and s.status == "done"]
        return _restrict({c: s.peers for c, s in chain_sightings(store, done).items()}, peers)

    a, b = peers_of(base), peers_of(run)
    return tuple(ActorChange(c, a.get(c, ()), b.get(c, ())) for c in sorted(set(a) | set(b)) if a.get(c) != b.get(c))


def previous_diff(store: Store, run: JobRunRecord) -> RunDiff | None:
    """The diff of ``run`` against the previous fully successful run of its job."""
    base = store.previous_ok_job_run(run)
    return diff_runs(store, base, run) if base is not None else None


def _restrict(attribution: dict[str, tuple[str, ...]], peers: set[str]) -> dict[str, tuple[str, ...]]:
    out = {}
    for actor, matched in attribution.items():
        kept = tuple(p for p in matched if p in peers)
        if kept:
            out[actor] = kept
    return out


def summary_line(result, diff: RunDiff | None) -> str:  # type: ignore[no-untyped-def]
    """One line per run, for people and logs: status, peers, findings, change.

    ``result`` is a :class:`~psi_share.jobs.spec.JobRunResult`.
    """
    ok = [p for p in result.peers if p.status == "ok"]
    text = f"job {result.job} run {result.run_id[:12]}: {result.status}"
    if result.finished_at and result.started_at:
        text += f" in {result.finished_at - result.started_at:.1f}s"
    text += f"; {len(ok)}/{len(result.peers)} peers ok"
    failed = [p for p in result.peers if p.status != "ok"]
    if failed:
        text += " (" + "; ".join(f"{p.peer} failed: {_short(p.error)}" for p in failed) + ")"
    if result.mode != "reveal":
        items = sum(p.count or 0 for p in ok)
        text += f"; mode {result.mode}: {items} matching items in all (no actors)"
    else:
        text += f"; {len(result.attribution)} actors matched, {len(result.seen_at(2))} at >= 2 other labs"
    if diff is None:
        if result.status in ("ok", "partial"):
            text += "; no previous ok run to compare with"
    else:
        text += f"; since run {diff.base.id[:12]}: {diff.summary()}"
        if diff.excluded_peers:
            text += f" (not compared: {', '.join(diff.excluded_peers)})"
    return text


def _short(reason: str, limit: int = 100) -> str:
    """A failure reason cut for the one-line summary (the full one is in the table, JSON and history)."""
    if len(reason) <= limit:
        return reason
    tail = " (after " + reason.rsplit(" (after ", 1)[1] if " (after " in reason else ""
    return reason[: limit - len(tail) - 1].rstrip() + "…" + tail
