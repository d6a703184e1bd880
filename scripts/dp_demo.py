#!/usr/bin/env python3
"""Differential privacy on its own: truth, released value and noise scale side by side.

Releases a few counts and clipped sums to one peer with the default epsilon,
charging each to that peer's daily budget in a throwaway store until the
budget refuses, then a federation total over three labs whose noise is the
sum of one discrete Gaussian share per lab. Real OpenDP noise: every run
differs. (The node does not add noise yet; this shows the building blocks.)

Usage: python scripts/dp_demo.py
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from psi_share.privacy import (
    DEFAULT_DAILY_BUDGET,
    DEFAULT_DELTA,
    DEFAULT_EPSILON_PER_RELEASE,
    BudgetExhausted,
    Release,
    charge,
    clip,
    plan,
    release_count,
    release_sum,
    spending,
)
from psi_share.store.db import Store


def row(what: str, truth: int, r: Release) -> None:
    print(f"  {what:34s} {truth:>10d} {r.value:>10d}   {r.mechanism} scale {r.scale:.4g}, epsilon {float(r.epsilon):g}")


def main() -> None:
    rng = random.Random(1)
    bound = 500  # API requests per actor per day counted in full; more is clipped
    now = time.time()
    print(f"  {'figure':34s} {'truth':>10s} {'released':>10s}   noise")
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "store.sqlite3") as store:
        for session in range(1, 6):
            amounts = [rng.choice([3, 40, 120, 480, 9000]) for _ in range(rng.randint(1, 40))]
            try:  # count and sum: one charge for both, before either leaves
                charge(store, peer="lab-b", protocol="intersection-sum", epsilon=2 * DEFAULT_EPSILON_PER_RELEASE,
                       daily_budget=DEFAULT_DAILY_BUDGET, now=now)
            except BudgetExhausted as exc:
                print(f"  session {session}: refused: {exc}")
                continue
            row(f"session {session}: count", len(amounts), release_count(len(amounts), epsilon=DEFAULT_EPSILON_PER_RELEASE))
            clipped = sum(clip(amounts, bound))
            row(f"session {session}: sum (clipped at {bound})", clipped,
                release_sum(clipped, bound=bound, epsilon=DEFAULT_EPSILON_PER_RELEASE))
        for s in spending(store):
            print(f"  spent by {s.peer} on {s.day} ({s.protocol}): epsilon {float(s.epsilon):g} in {s.releases} releases")
    figures = {"lab-a": 412, "lab-b": 97, "lab-c": 230}
    noise = plan(epsilon=DEFAULT_EPSILON_PER_RELEASE, delta=DEFAULT_DELTA, sensitivity=1, contributors=len(figures))
    total = sum(f + noise.draw() for f in figures.values())  # each lab adds its own share
    row("federation total over 3 labs", sum(figures.values()), noise.release(total))
    print(f"  (each lab's share has sigma {noise.sigma:.3g}; delta {float(noise.delta):g}; "
          f"any one lab faces the other two shares)")


if __name__ == "__main__":
    main()
