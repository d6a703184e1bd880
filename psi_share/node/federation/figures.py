"""What a lab contributes to a federation total: its figure, through the
noise seam, and only to runs that cannot be differenced against earlier ones.

**Differencing.** Two totals of one metric over member sets that differ by
one lab give that lab's figure by subtraction, and each run on its own
satisfies k. So a member (initiator or contributor) refuses a run when its
own figure for the metric is unchanged since an earlier run it contributed
to (or joined and may still contribute to) and the two member sets differ by at least 1 and fewer than k labs. This
holds while one member of both runs is honest and its figure unchanged; it
does not stop combinations of many runs (linear algebra over totals), which
only noise on the figures bounds.

**Noise (the DP seam).** Every member passes its figure through a
:data:`FigureNoise` before masking and encrypting it. The default adds
nothing. ``psi_share/privacy/`` (differential privacy, built separately)
plugs in here: ``node.federation.set_figure_noise(noise)`` (or
``FederationService(figure_noise=...)``), one draw per contribution, charged
to the lab's budget there. Noise goes in before the masks, so each lab
noises its own figure and no one, the initiator included, sees it without.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ...protocols.federation_total import check_figure
from ...store import Store

# (metric, exact figure) -> the figure to contribute: an integer of absolute
# value at most 2^63 - 1 (noise may take it below 0; the masks work mod n).
FigureNoise = Callable[[str, int], int]

# Statuses of a run in which this node's figure went, or may still go, into a
# ciphertext: a run joined but not yet passed counts, or an initiator could
# join two runs at once and pass both.
COUNTED = {"joined", "passed", "released", "running", "done"}


def exact_figure(metric: str, figure: int) -> int:
    """The default :data:`FigureNoise`: no noise. DP wiring replaces this."""
    return figure


def contributed_figure(store: Store, metric: str, noise: FigureNoise) -> int:
    """Our figure for ``metric`` as it goes into a run (NotFound without one)."""
    return check_figure(noise(metric, store.figure(metric)))


@dataclass(frozen=True)
class Difference:
    """An earlier run that a new one could be differenced against."""

    run_id: str
    labs: tuple[str, ...]  # in one run and not the other

    def refusal(self, me: str) -> str:
        """For a peer: describes, never repeats (the metric and names are the route's)."""
        return (f"{me}'s figure for the metric this run names has not changed since an earlier run of it that {me} "
                "took part in, and the two runs' labs differ by at least one and fewer than k: the two totals would "
                "give those labs' figures away by difference. Run over the same labs or at least k others, or after "
                "the figures change")

    def local(self, me: str, metric: str) -> str:
        """For our own operator: which run and which labs."""
        return (f"{me}'s figure for {metric} went into run {self.run_id} and has not changed since; this run's labs "
                f"differ from that run's by {len(self.labs)} ({', '.join(self.labs)}), fewer than k, so the two "
                "totals would give those figures away by difference. Update the figure first, or run over the same "
                "labs or at least k different ones")


def difference(store: Store, *, metric: str, members: Sequence[str], k: int) -> Difference | None:
    """An earlier run over a member set 1 to k - 1 labs away from ``members``,
    while our figure for ``metric`` is unchanged since, or None."""
    since = store.figure_changed_at(metric)
    new = set(members)
    for run in store.federation_runs_of(metric):
        if run.status not in COUNTED or run.started_at < since:
            continue
        differ = new ^ set(run.participants)
        if 0 < len(differ) < k:
            return Difference(run.id, tuple(sorted(differ)))
    return None
