"""Paillier aggregates in the store: intersection-sum results, this node's
federation figures and every federation run it took part in. Mixed into
:class:`~psi_share.store.db.Store`."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from ..errors import NotFound
from ..names import check_name


class AggregateRecords:
    """The aggregate half of the store (uses the store's ``transaction``, ``_query``,
    ``dataset`` and ``finish_session``)."""

    # -- Paillier aggregates ------------------------------------------------

    def record_sum_result(self, session_id: str, result: SumResultRecord) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO sum_results(session_id, kind, value_holder, key_bits, intersection_size, "
                "total, own_set_size, peer_set_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (session_id, result.kind, result.value_holder, result.key_bits, result.intersection_size,
                 str(result.total), result.own_set_size, result.peer_set_size),
            )

    def finish_sum_session(self, session_id: str, result: SumResultRecord, *, now: float) -> None:
        """Store a finished intersection-sum session and its result together."""
        with self.transaction():
            self.record_sum_result(session_id, result)
            self.finish_session(session_id, "done", now=now, matched_count=result.intersection_size)

    def sum_result(self, session_id: str) -> SumResultRecord | None:
        rows = self._query("SELECT * FROM sum_results WHERE session_id = ?", (session_id,))
        if not rows:
            return None
        r = rows[0]
        return SumResultRecord(
            kind=r["kind"], value_holder=r["value_holder"], key_bits=r["key_bits"],
            intersection_size=r["intersection_size"], total=int(r["total"]),
            own_set_size=r["own_set_size"], peer_set_size=r["peer_set_size"],
        )

    def has_amounts(self) -> bool:
        """Whether any dataset carries amounts (this node can hold values)."""
        return bool(self._query("SELECT 1 FROM identifiers WHERE amount IS NOT NULL LIMIT 1"))

    def amount_kinds(self, dataset: str) -> list[str]:
        """Kinds of ``dataset`` with at least one amount."""
        self.dataset(dataset)
        rows = self._query(
            "SELECT DISTINCT kind FROM identifiers WHERE dataset = ? AND amount IS NOT NULL ORDER BY kind", (dataset,)
        )
        return [r[0] for r in rows]

    def set_figure(self, metric: str, value: int, *, now: float) -> None:
        """Set a figure; ``updated_at`` moves only when the value changes (federation
        totals compare it with their runs: an unchanged figure is one figure)."""
        check_name("metric", metric)
        with self.transaction() as db:
            db.execute(
                "INSERT INTO federation_figures(metric, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(metric) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at "
                "WHERE federation_figures.value != excluded.value",
                (metric, str(value), now),
            )

    def figure_changed_at(self, metric: str) -> float:
        """When the figure for ``metric`` last took its current value."""
        rows = self._query("SELECT updated_at FROM federation_figures WHERE metric = ?", (metric,))
        if not rows:
            raise NotFound(f"no figure for metric {metric!r} on this node (set one with 'psi-share federation figure')")
        return float(rows[0][0])

    def figure(self, metric: str) -> int:
        rows = self._query("SELECT value FROM federation_figures WHERE metric = ?", (metric,))
        if not rows:
            raise NotFound(f"no figure for metric {metric!r} on this node (set one with 'psi-share federation figure')")
        return int(rows[0][0])

    def figures(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in self._query("SELECT metric, value FROM federation_figures ORDER BY metric")}

    def start_federation_run(self, record: FederationRunRecord) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO federation_runs(id, role, metric, initiator, participants, min_contributors, "
                "job_run_id, status, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.id, record.role, record.metric, record.initiator, json.dumps(list(record.participants)),
                 record.min_contributors, record.job_run_id, record.status, record.started_at),
            )

    def finish_federation_run(
        self, run_id: str, role: str, status: str, *, now: float,
        contributors: int | None = None, total: int | None = None, error: str = "",
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE federation_runs SET status = ?, finished_at = ?, contributors = ?, total = ?, error = ? "
                "WHERE id = ? AND role = ?",
                (status, now, contributors, None if total is None else str(total), error, run_id, role),
            )

    def federation_runs(self, limit: int = 50) -> list[FederationRunRecord]:
        rows = self._query("SELECT * FROM federation_runs ORDER BY started_at DESC LIMIT ?", (limit,))
        return [_federation_run(r) for r in rows]

    def federation_runs_of(self, metric: str) -> list[FederationRunRecord]:
        """Every run of ``metric`` this node took part in, in either role."""
        rows = self._query("SELECT * FROM federation_runs WHERE metric = ? ORDER BY started_at", (metric,))
        return [_federation_run(r) for r in rows]

    def federation_run(self, run_id: str, role: str) -> FederationRunRecord:
        rows = self._query("SELECT * FROM federation_runs WHERE id = ? AND role = ?", (run_id, role))
        if not rows:
            raise NotFound(f"no federation run {run_id!r} as {role}")
        return _federation_run(rows[0])


@dataclass(frozen=True)
class SumResultRecord:
    kind: str
    value_holder: str  # "requester" or "responder"
    key_bits: int
    intersection_size: int
    total: int
    own_set_size: int
    peer_set_size: int


@dataclass(frozen=True)
class FederationRunRecord:
    id: str
    role: str  # "initiator" or "contributor"
    metric: str
    initiator: str
    participants: tuple[str, ...]
    min_contributors: int
    job_run_id: str | None
    status: str
    started_at: float
    finished_at: float | None = None
    contributors: int | None = None
    total: int | None = None
    error: str = ""


def _federation_run(r: sqlite3.Row) -> FederationRunRecord:
    return FederationRunRecord(
        id=r["id"], role=r["role"], metric=r["metric"], initiator=r["initiator"],
        participants=tuple(json.loads(r["participants"])), min_contributors=r["min_contributors"],
        job_run_id=r["job_run_id"], status=r["status"], started_at=r["started_at"], finished_at=r["finished_at"],
        contributors=r["contributors"], total=None if r["total"] is None else int(r["total"]), error=r["error"],
    )
