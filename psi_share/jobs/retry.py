"""Matching every peer of a job run, retrying the ones that cannot be reached.

Runs go in rounds: round 1 tries every peer once; each later round first
waits (exponential backoff, capped) and then retries only the peers that
were *unreachable* (:class:`~psi_share.errors.PeerUnavailable`). A peer that
refuses or sends garbage is not retried: asking again would get the same
answer. After ``attempts`` tries an unreachable peer is recorded as failed
with its last reason and the number of attempts. A failed attempt stores no
result (the requester marks its session failed and keeps no match), so
nothing from a peer that failed ever counts in the run's attribution.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import PeerUnavailable, PsiShareError
from ..node.psi.requester import MatchOutcome
from .spec import PeerResult


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    initial_seconds: float = 5.0
    max_seconds: float = 60.0

    @classmethod
    def from_config(cls, jobs) -> RetryPolicy:  # type: ignore[no-untyped-def]
        return cls(jobs.peer_attempts, jobs.backoff_initial_seconds, jobs.backoff_max_seconds)

    def delay(self, retry: int) -> float:
        """Wait before retry number ``retry`` (1-based): initial, 2x, 4x... capped."""
        return min(self.max_seconds, self.initial_seconds * (2 ** (retry - 1)))


@dataclass(frozen=True)
class JobEvent:
    """Progress of a run, for progress bars and logs.

    kind: "attempt" (starting a match), "done" (a peer finished, ok or
    failed: ``result`` is set), "retry" (a peer was unreachable and will be
    retried after ``delay`` seconds), "waiting" (backing off).
    """

    kind: str
    peer: str = ""
    attempt: int = 0
    delay: float = 0.0
    reason: str = ""
    result: PeerResult | None = None


def run_with_retries(
    peers: Sequence[str],
    match: Callable[[str], MatchOutcome],
    *,
    policy: RetryPolicy,
    on_event: Callable[[JobEvent], None] | None = None,
    cancel: threading.Event | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, PeerResult]:
    emit = on_event or (lambda _e: None)
    results: dict[str, PeerResult] = {}
    attempts = {p: 0 for p in peers}
    seconds = {p: 0.0 for p in peers}
    pending = list(peers)
    round_ = 0
    while pending:
        round_ += 1
        if round_ > 1:
            delay = policy.delay(round_ - 1)
            emit(JobEvent("waiting", delay=delay))
            stopped = cancel.wait(delay) if cancel is not None else (sleep(delay), False)[1]
            if stopped:
                for peer in pending:
                    results[peer] = _failed(peer, attempts[peer], seconds[peer], "run cancelled: the node is shutting down")
                    emit(JobEvent("done", peer, attempts[peer], result=results[peer]))
                break
        retry: list[str] = []
        for peer in pending:
            attempts[peer] += 1
            emit(JobEvent("attempt", peer, attempts[peer]))
            started = time.perf_counter()
            try:
                outcome = match(peer)
            except PeerUnavailable as exc:
                seconds[peer] += time.perf_counter() - started
                if attempts[peer] < policy.attempts and not (cancel is not None and cancel.is_set()):
                    retry.append(peer)
                    emit(JobEvent("retry", peer, attempts[peer], policy.delay(round_), str(exc)))
                    continue
                tries = f" (after {attempts[peer]} attempts)" if attempts[peer] > 1 else ""
                results[peer] = _failed(peer, attempts[peer], seconds[peer], f"{exc}{tries}")
            except PsiShareError as exc:
                seconds[peer] += time.perf_counter() - started
                results[peer] = _failed(peer, attempts[peer], seconds[peer], str(exc))
            else:
                seconds[peer] += time.perf_counter() - started
                results[peer] = PeerResult(
                    peer, "ok", outcome.session_id, outcome.count, outcome.matched_actors, seconds[peer],
                    attempts=attempts[peer],
                )
            emit(JobEvent("done", peer, attempts[peer], result=results[peer]))
        pending = retry
    return results


def _failed(peer: str, attempts: int, seconds: float, reason: str) -> PeerResult:
    return PeerResult(peer, "failed", None, None, None, seconds, reason, attempts=attempts)
