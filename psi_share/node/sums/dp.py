"""Differential privacy for the sums this node releases as value holder.

The value holder is the only party that decrypts, so it adds the noise
(:class:`SumNoise` in the protocol) and, before the figure leaves, charges
the receiving peer's epsilon budget for the UTC day in the store
(:func:`psi_share.privacy.charge`): a spent budget refuses the release with
RESOURCE_EXHAUSTED and the peer learns no sum. The matcher side charges
nothing: it releases no figure (the count it sends, the peer computes with it).
"""

from __future__ import annotations

from collections.abc import Callable

from ...privacy import Charge, NoiseSampler, Release, charge
from ...protocols.intersection_sum import SumNoise, SumResult
from ...store import Store
from ..privacy_config import PrivacyConfig

PROTOCOL = "intersection-sum"


def sum_noise(privacy: PrivacyConfig, sampler: NoiseSampler | None) -> SumNoise | None:
    """The value holder's clipping and noise ([privacy]); None when disabled."""
    if not privacy.enabled:
        return None
    return SumNoise(clip_bound=privacy.sum_clip_bound, epsilon=privacy.epsilon, sampler=sampler)


def charge_sum(store: Store, privacy: PrivacyConfig, peer: str, clock: Callable[[], float]) -> Charge | None:
    """Charge one released sum to ``peer`` (raises BudgetExhausted, a Refused);
    call it before decrypting, so that nothing leaves unpaid."""
    if not privacy.enabled:
        return None
    return charge(store, peer=peer, protocol=PROTOCOL, epsilon=privacy.epsilon,
                  daily_budget=privacy.budget, now=clock())


def disclosure(result: SumResult) -> dict[str, object]:
    """What the audit's disclosure ledger records for a released sum: the
    released value and how it was made (mechanism, scale, epsilon), never
    the true value (the value holder keeps it nowhere). Scale and epsilon are
    text (the audit log holds no floats): repr of the float, an exact fraction."""
    out: dict[str, object] = {"intersection_size": result.intersection_size, "sum": result.sum}
    r: Release | None = result.release
    if r is not None:
        out.update(mechanism=r.mechanism, scale=repr(r.scale), sensitivity=r.sensitivity, epsilon=str(r.epsilon),
                   count_noised=False)
    else:
        out.update(mechanism="none")
    return out
