"""Differential privacy: the samplers' distributions against the exact pmf,
the release arithmetic with injected noise, clipping, distributed shares, and
the epsilon ledger (restarts, refusals, two threads and two connections).

The distribution tests draw from OpenDP's CSPRNG (it cannot be seeded), so
they are statistical: a chi-square test at a fixed false-alarm rate of 1e-6,
and each also checks that the same test rejects a slightly wrong scale, so a
test that cannot fail would show.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from fractions import Fraction

import pytest

from psi_share.errors import LocalProtocolError
from psi_share.privacy import (
    DEFAULT_DELTA,
    DISCRETE_LAPLACE,
    DISTRIBUTED_DISCRETE_GAUSSIAN,
    MAX_SCALE,
    BudgetExhausted,
    achieved_epsilon,
    charge,
    clip,
    default_sampler,
    laplace_scale,
    plan,
    release,
    release_count,
    release_sum,
    spending,
    spent_on,
    utc_day,
)
from psi_share.store.db import Store

DAY = 1_780_000_000.0  # 2026-05-28 20:26:40 UTC
NEXT_DAY = DAY + 4 * 3600


# -- distributions ------------------------------------------------------------------


def _chi2_threshold(df: int, upper_tail_z: float = 4.753) -> float:
    """Wilson-Hilferty quantile of chi-square(df) at an upper tail of 1e-6."""
    return df * (1 - 2 / (9 * df) + upper_tail_z * math.sqrt(2 / (9 * df))) ** 3


def _chi2(samples: list[int], weight, cut: int) -> float:  # type: ignore[no-untyped-def]
    """Pearson's statistic over bins -cut..cut plus the two tails, against the
    pmf proportional to ``weight`` (normalized over a range far wider than the bins)."""
    support = range(-50 * cut, 50 * cut + 1)
    total = sum(weight(x) for x in support)
    probs = {x: weight(x) / total for x in range(-cut, cut + 1)}
    tail = (1 - sum(probs.values())) / 2
    counts = {x: 0 for x in range(-cut, cut + 1)}
    low = high = 0
    for s in samples:
        if s < -cut:
            low += 1
        elif s > cut:
            high += 1
        else:
            counts[s] += 1
    n = len(samples)
    stat = sum((counts[x] - n * p) ** 2 / (n * p) for x, p in probs.items())
    return stat + (low - n * tail) ** 2 / (n * tail) + (high - n * tail) ** 2 / (n * tail)


def test_discrete_laplace_releases_follow_the_exact_pmf():
    n, cut = 10_000, 10
    noise = [release_count(0, epsilon="0.5").value for _ in range(n)]  # scale 2 through the whole release path
    threshold = _chi2_threshold(2 * cut + 2)
    assert _chi2(noise, lambda x: math.exp(-abs(x) / 2), cut) < threshold
    assert _chi2(noise, lambda x: math.exp(-abs(x) / 2.4), cut) > threshold  # the test has power
    assert abs(sum(noise)) / n < 0.1  # centred


def test_discrete_gaussian_samples_follow_the_exact_pmf():
    n, cut, sampler = 10_000, 8, default_sampler()
    noise = [sampler.discrete_gaussian(3.0) for _ in range(n)]
    threshold = _chi2_threshold(2 * cut + 2)
    assert _chi2(noise, lambda x: math.exp(-x * x / 18), cut) < threshold
    assert _chi2(noise, lambda x: math.exp(-x * x / (2 * 3.4**2)), cut) > threshold


def test_a_sum_of_shares_is_the_wider_discrete_gaussian():
    noise_plan = plan(epsilon=4, delta=DEFAULT_DELTA, sensitivity=1, contributors=3)
    n, cut = 4_000, 6
    totals = [sum(noise_plan.draw() for _ in range(3)) for _ in range(n)]
    var = 3 * noise_plan.sigma**2
    threshold = _chi2_threshold(2 * cut + 2)
    assert _chi2(totals, lambda x: math.exp(-x * x / (2 * var)), cut) < threshold
    assert _chi2(totals, lambda x: math.exp(-x * x / (2 * var * 1.5)), cut) > threshold


# -- release arithmetic with injected noise -------------------------------------------------------


class Recorded:
    """An injected sampler: hands out fixed noise and records the scales asked for."""

    def __init__(self, *noise: int) -> None:
        self.noise = list(noise)
        self.calls: list[tuple[str, float]] = []

    def discrete_laplace(self, scale: float) -> int:
        self.calls.append(("laplace", scale))
        return self.noise.pop(0)

    def discrete_gaussian(self, sigma: float) -> int:
        self.calls.append(("gaussian", sigma))
        return self.noise.pop(0)


@pytest.mark.parametrize("true, noise, epsilon, sensitivity, scale", [
    (0, 0, "1", 1, 1.0), (17, -3, "0.5", 1, 2.0), (5, -9, 0.1, 1, 10.0), (2**80, 12, Fraction(1, 4), 1000, 4000.0),
    (1, 1, 2, 3, 1.5), (40, 0, "0.25", 2**40, 2.0**42),
])
def test_release_adds_the_noise_at_scale_sensitivity_over_epsilon(true, noise, epsilon, sensitivity, scale):
    sampler = Recorded(noise)
    r = release(true, epsilon=epsilon, sensitivity=sensitivity, sampler=sampler)
    assert sampler.calls == [("laplace", scale)]
    assert (r.value, r.mechanism, r.scale, r.sensitivity) == (true + noise, DISCRETE_LAPLACE, scale, sensitivity)
    assert r.epsilon == Fraction(str(epsilon)) and r.delta == 0
    # the record holds what was released and what it cost, never the true value
    assert [f.name for f in dataclasses.fields(r)] == ["value", "mechanism", "scale", "sensitivity", "epsilon", "delta"]


def test_scales_round_up_and_opendp_agrees_on_the_cost():
    import opendp.prelude as dp

    dp.enable_features("contrib")
    for eps, sens in ((0.3, 1), (0.7, 3), ("0.01", 7), (Fraction(2, 3), 5), (1e-3, 2**20)):
        scale = laplace_scale(eps, sens)
        assert Fraction(scale) >= Fraction(sens) / Fraction(str(eps))  # never a smaller scale than asked
        m = dp.m.make_laplace(dp.atom_domain(T="i64"), dp.absolute_distance(T="i64"), scale=scale)
        # OpenDP's own map of that scale (it rounds up) is the charge, to within one float step
        assert m.map(sens) <= math.nextafter(float(Fraction(str(eps))), math.inf)


def test_sum_releases_scale_with_the_clipping_bound():
    amounts = [-4, 0, 3, 12, 2**70, 7]
    clipped = clip(amounts, 10)
    assert clipped == [0, 0, 3, 10, 10, 7]
    sampler = Recorded(-5)
    r = release_sum(sum(clipped), bound=10, epsilon="0.5", sampler=sampler)
    assert (r.value, r.scale, r.sensitivity) == (25, 20.0, 10) and sampler.calls == [("laplace", 20.0)]
    # one actor moving between 0 and anything changes the clipped sum by at most the bound
    for a in (0, 1, 10, 11, 10**18):
        assert abs(sum(clip(amounts + [a], 10)) - sum(clipped)) <= 10


@pytest.mark.parametrize("kwargs, why", [
    ({"epsilon": 0, "sensitivity": 1}, "positive"), ({"epsilon": -1, "sensitivity": 1}, "positive"),
    ({"epsilon": float("nan"), "sensitivity": 1}, "positive number"), ({"epsilon": "abc", "sensitivity": 1}, "positive number"),
    ({"epsilon": True, "sensitivity": 1}, "a number"), ({"epsilon": 1, "sensitivity": 0}, "sensitivity"),
    ({"epsilon": 1, "sensitivity": 1.5}, "sensitivity"), ({"epsilon": 1, "sensitivity": 2**60}, "noise scale"),
])
def test_bad_parameters_are_refused_by_name(kwargs, why):
    with pytest.raises(LocalProtocolError, match=why):
        release(3, sampler=Recorded(0), **kwargs)
    with pytest.raises(LocalProtocolError, match="integer"):
        release(3.0, epsilon=1, sensitivity=1, sampler=Recorded(0))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        clip([1], 0)


def test_opendp_sampler_refuses_scales_beyond_the_cap():
    with pytest.raises(LocalProtocolError, match="noise scale"):
        default_sampler().discrete_laplace(float(MAX_SCALE) * 2)
    with pytest.raises(LocalProtocolError, match="noise scale"):
        default_sampler().discrete_gaussian(0.0)


# -- distributed shares ----------------------------------------------------------------------------


def test_share_sigma_meets_the_target_against_one_known_share():
    import opendp.prelude as dp

    dp.enable_features("contrib")
    two = plan(epsilon="0.5", delta=DEFAULT_DELTA, sensitivity=1, contributors=2)
    # k = 2: the other party's single share is a plain discrete Gaussian; OpenDP's own
    # zCDP map of it, converted like ours, must give the same epsilon
    rho = dp.m.make_gaussian(dp.atom_domain(T="i64"), dp.absolute_distance(T="i64"), scale=two.sigma).map(1)
    assert rho + 2 * math.sqrt(rho * math.log(1e10)) == pytest.approx(0.5, rel=1e-6)
    for k in (3, 4, 8, 20):
        for sens, eps in ((1, "0.5"), (1000, "1"), (1, "0.05")):
            p = plan(epsilon=eps, delta=DEFAULT_DELTA, sensitivity=sens, contributors=k)
            assert p.achieved_epsilon <= float(Fraction(eps)) < p.achieved_epsilon * (1 + 1e-6)
            # what a party that knows its own share faces: k - 1 shares
            assert achieved_epsilon(p.sigma, honest_shares=k - 1, sensitivity=sens, delta=DEFAULT_DELTA) <= float(Fraction(eps))
            assert achieved_epsilon(p.sigma * 0.99, honest_shares=k - 1, sensitivity=sens, delta=DEFAULT_DELTA) > float(Fraction(eps))
            # the k - 1 shares together are as wide as one share of the two-party plan
            assert p.sigma * math.sqrt(k - 1) == pytest.approx(plan(epsilon=eps, delta=DEFAULT_DELTA, sensitivity=sens,
                                                                    contributors=2).sigma, rel=1e-6)
    colluding = plan(epsilon="0.5", delta=DEFAULT_DELTA, sensitivity=1, contributors=5, known_shares=2)
    assert colluding.sigma > plan(epsilon="0.5", delta=DEFAULT_DELTA, sensitivity=1, contributors=5).sigma


def test_shares_come_from_the_injected_sampler_and_the_release_records_the_plan():
    p = plan(epsilon=1, delta=DEFAULT_DELTA, sensitivity=10, contributors=3)
    sampler = Recorded(4, -7, 1)
    shares = [p.draw(sampler) for _ in range(3)]
    assert shares == [4, -7, 1] and sampler.calls == [("gaussian", p.sigma)] * 3
    r = p.release(100 + sum(shares))
    assert (r.value, r.mechanism, r.scale, r.epsilon, r.delta) == (98, DISTRIBUTED_DISCRETE_GAUSSIAN, p.sigma, 1, DEFAULT_DELTA)
    for bad in ({"contributors": 1}, {"contributors": 3, "known_shares": 3}, {"contributors": 3, "known_shares": 0}):
        with pytest.raises(LocalProtocolError, match="known_shares"):
            plan(epsilon=1, delta=DEFAULT_DELTA, sensitivity=1, **bad)
    with pytest.raises(LocalProtocolError, match="delta"):
        plan(epsilon=1, delta=1, sensitivity=1, contributors=3)


# -- the ledger -------------------------------------------------------------------------------------


def test_budget_is_exact_survives_a_reopen_and_renews_at_utc_midnight(tmp_path):
    path = tmp_path / "store.sqlite3"
    with Store(path) as store:
        c = charge(store, peer="lab-b", protocol="intersection-sum", epsilon=0.1, daily_budget=0.3, now=DAY)
        assert (c.day, c.charged, c.spent_today, c.remaining) == ("2026-05-28", Fraction(1, 10), Fraction(1, 10), Fraction(1, 5))
        # 0.1 + 0.2 == 0.3 exactly here (in floats it is 0.30000000000000004 and would be refused)
        assert charge(store, peer="lab-b", protocol="psi", epsilon=0.2, daily_budget=0.3, now=DAY).remaining == 0
        with pytest.raises(BudgetExhausted, match="peer lab-b has used epsilon 0.3 of .* budget of epsilon 0.3 for 2026-05-28") as exc:
            charge(store, peer="lab-b", protocol="psi", epsilon="0.000001", daily_budget=0.3, now=DAY)
        assert exc.value.code == "RESOURCE_EXHAUSTED"
        charge(store, peer="lab-c", protocol="psi", epsilon=0.3, daily_budget=0.3, now=DAY)  # per peer
    with Store(path) as store:  # a restart keeps what was spent
        assert spent_on(store, "lab-b", "2026-05-28") == Fraction(3, 10)
        with pytest.raises(BudgetExhausted):
            charge(store, peer="lab-b", protocol="federation-total", epsilon=0.1, daily_budget=0.3, now=DAY + 60)
        assert [(s.peer, s.protocol, s.epsilon, s.releases) for s in spending(store, day="2026-05-28")] == [
            ("lab-b", "intersection-sum", Fraction(1, 10), 1), ("lab-b", "psi", Fraction(1, 5), 1),
            ("lab-c", "psi", Fraction(3, 10), 1)]
        assert utc_day(NEXT_DAY) == "2026-05-29"
        assert charge(store, peer="lab-b", protocol="psi", epsilon=0.3, daily_budget=0.3, now=NEXT_DAY).remaining == 0
        assert [s.day for s in spending(store, peer="lab-b")] == ["2026-05-28", "2026-05-28", "2026-05-29"]


def test_charges_round_against_the_peer_and_bad_input_is_refused(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        c = charge(store, peer="lab-b", protocol="psi", epsilon=Fraction(1, 3), daily_budget=Fraction(2, 3), now=DAY)
        assert c.charged == Fraction(333_334, 10**6) and c.budget == Fraction(666_666, 10**6)
        with pytest.raises(BudgetExhausted):  # 0.333334 * 2 > 0.666666
            charge(store, peer="lab-b", protocol="psi", epsilon=Fraction(1, 3), daily_budget=Fraction(2, 3), now=DAY)
        with pytest.raises(LocalProtocolError, match="epsilon"):
            charge(store, peer="lab-b", protocol="psi", epsilon=-1, daily_budget=1, now=DAY)
        with pytest.raises(Exception, match="invalid peer name"):
            charge(store, peer="Lab B; drop", protocol="psi", epsilon=1, daily_budget=1, now=DAY)


@pytest.mark.parametrize("shared_store", [True, False])
def test_two_threads_never_spend_more_than_the_budget(tmp_path, shared_store):
    """Two threads (one Store, or one connection each as serve and a CLI command
    would have) race 50 charges of 0.1 each against a budget of 4: exactly 40 pass."""
    path = tmp_path / "s.sqlite3"
    stores = [Store(path)] * 2 if shared_store else [Store(path), Store(path)]
    start = threading.Barrier(2)
    results: list[list[bool]] = [[], []]

    def spend(i: int) -> None:
        start.wait()
        for _ in range(50):
            try:
                charge(stores[i], peer="lab-b", protocol=f"p{i}", epsilon="0.1", daily_budget=4, now=DAY)
                results[i].append(True)
            except BudgetExhausted:
                results[i].append(False)

    threads = [threading.Thread(target=spend, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(map(sum, results)) == 40
    assert spent_on(stores[0], "lab-b", "2026-05-28") == 4
    assert sum(s.releases for s in spending(stores[1])) == 40
    for s in set(stores):
        s.close()
