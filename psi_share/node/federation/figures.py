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

from ...crypto.paillier import check_value
from ...store import Store

# (metric, exact figure) -> the figure to contribute, in [0, 2^63 - 1].
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
    return check_value(noise(metric, store.figure(metric)))


def difference_problem(store: Store, *, metric: str, members: Sequence[str], k: int, me: str) -> str | None:
    """Why a run over ``members`` would give a figure away by difference, or None."""
    since = store.figure_changed_at(metric)
    new = set(members)
    for run in store.federation_runs_of(metric):
        if run.status not in COUNTED or run.started_at < since:
            continue
        differ = new ^ set(run.participants)
        if 0 < len(differ) < k:
            return (
                f"{me}'s figure for {metric} went into run {run.id} over {len(run.participants)} labs and has not "
                f"changed since; this run differs from it by {len(differ)} lab(s) ({', '.join(sorted(differ))}), "
                f"fewer than k = {k}, so the two totals would give their figures away by difference. Update the "
                "figure first, or run over the same labs or at least k different ones"
            )
    return None
