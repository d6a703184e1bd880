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
:data:`FigureNoise` before masking and encrypting it. With ``[privacy]
enabled`` (the default) the node installs :func:`distributed_noise`: each of
the route's k members adds its own share of discrete Gaussian noise, sized
(:func:`psi_share.privacy.plan`) so that the total is (epsilon, delta)-DP
for one lab's figure changing by ``[privacy] figure_sensitivity`` even
against a party that knows its own share, the initiator included; before
drawing, it charges epsilon to every other member of the route (each learns
the total) and refuses the run (RESOURCE_EXHAUSTED) when one is past its
day's budget. Noise goes in before the masks, so each lab noises its own
figure and no one sees it without. Off, :func:`exact_figure` adds nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ...privacy import DEFAULT_DELTA, NoiseSampler, plan
from ...protocols.federation_route import Route
from ...protocols.federation_total import check_figure
from ...store import Store
from ..privacy_config import PrivacyConfig

PROTOCOL = "federation-total"

# (the run's signed route, exact figure) -> the figure to contribute: an
# integer of absolute value at most 2^63 - 1 (noise may take it below 0; the
# masks work mod n).
FigureNoise = Callable[[Route, int], int]

# Statuses of a run in which this node's figure went, or may still go, into a
# ciphertext: a run joined but not yet passed counts, or an initiator could
# join two runs at once and pass both.
COUNTED = {"joined", "passed", "released", "running", "done"}


def exact_figure(route: Route, figure: int) -> int:
    """The :data:`FigureNoise` with ``[privacy] enabled = false``: no noise."""
    return figure


def distributed_noise(
    privacy: PrivacyConfig, store: Store, me: str, sampler: Callable[[], NoiseSampler | None], clock: Callable[[], float]
) -> FigureNoise:
    """This node's share of the total's noise (see the module docstring). A
    figure is the lab's own aggregate, contributed whole: ``figure_sensitivity``
    is what one actor can change it by (1 for a count of actors), which the
    operator states in config; the other members are charged before the draw."""

    def noisy(route: Route, figure: int) -> int:
        for member in route.members:
            if member != me:
                privacy.charge(store, member, PROTOCOL, clock())
        share = plan(epsilon=privacy.epsilon, delta=DEFAULT_DELTA, sensitivity=privacy.figure_sensitivity,
                     contributors=len(route.members)).draw(sampler())
        return figure + share

    return noisy


def contributed_figure(store: Store, route: Route, noise: FigureNoise) -> int:
    """Our figure for the route's metric as it goes into the run (NotFound without one)."""
    return check_figure(noise(route, store.figure(route.metric)))


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
