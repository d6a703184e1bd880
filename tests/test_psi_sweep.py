"""PSI is correct at every pair of set sizes and every config (issue 12).

A sweep over requester sizes x responder sizes x false-positive rates x the
number of queries the filter is built for (``max_set_size`` and the size
classes the node derives from it) x reveal/count, at the protocol layer: the
real state machines and real OpenMined crypto, the responder's filter built
and checked as the node builds it, the requester's check and intersection as
the node runs them. Responder sizes cover 0, 1, 2, small sets, the whole
window where the node used to serve an overflowed GCS (computed below from
the old guard and OpenMined's arithmetic, both ends and points across it),
10k and 100k. Every result is compared with the plaintext intersection
computed with Python sets.

Filters may report false matches (at most the configured rate in
expectation over a whole requester set); they may never miss a match. The
sweep counts false matches and checks them against the rates; raw setups
must be exact.

Speed: the elliptic-curve steps that do not depend on the config (blinding
each set, the responder's exponentiation of each request) are done once per
set and reused (``MemoEngine``: the same OpenMined calls, remembered); every
filter is built, checked and intersected for real in every case.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from private_set_intersection.python import Request, Response, ServerSetup

from helpers import DEFAULT_KINDS, deterministic_random_bytes
from psi_share.crypto.filter_check import CheckedSetup, SetupTerms
from psi_share.crypto.openmined import OpenMinedEngine, new_private_key
from psi_share.crypto.openmined_params import golomb_div
from psi_share.protocols import psi
from psi_share.protocols.psi import (
    BlindedSet,
    Mode,
    PreparedSetup,
    PsiOpened,
    PsiRequester,
    PsiResponderSession,
    filter_for,
    size_class,
)

FPRS = (1e-9, 1e-6, 1e-3, 0.25)
POOL = 100_000


class MemoEngine(OpenMinedEngine):
    """OpenMined's blinding and request processing, computed once per input."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._memo: dict[tuple[object, ...], object] = {}

    def blind(self, key: bytes, items: Sequence[str], reveal: bool) -> Request:
        memo = ("blind", key, tuple(items), reveal)
        if memo not in self._memo:
            self._memo[memo] = super().blind(key, items, reveal)
        return self._memo[memo]  # type: ignore[return-value]

    def process(self, key: bytes, request: Request, reveal: bool) -> Response:
        memo = ("process", key, request.SerializeToString(), reveal)
        if memo not in self._memo:
            self._memo[memo] = super().process(key, request, reveal)
        return self._memo[memo]  # type: ignore[return-value]


def overflow_window(queries: int, fpr: float = 1e-9) -> tuple[int, int]:
    """Responder sizes for which main's node served a GCS with hash range -2^63
    for ``queries`` queries: from the smallest set OpenMined's divisor survives
    at a hash range of 2^63 to the largest the old guard let through
    (``items * queries / fpr < 2^62``)."""
    low = next(s for s in range(1, 1 << 20) if golomb_div(2**63 - 1, s) >= 0)
    high = max(s for s in range(low, 1 << 20) if s * queries / fpr < 2.0**62)
    return low, high


def across(low: int, high: int, points: int = 8) -> set[int]:
    """Both ends (and their neighbours) and ``points`` sizes spread across."""
    step = (high - low) / (points + 1)
    return {low - 1, low, low + 1, high - 1, high, high + 1} | {round(low + step * i) for i in range(1, points + 1)}


WINDOWS = {q: overflow_window(q) for q in (1_000_000, 131_072)}
# The 1,000,000-query window is the one issue 12 saw; the 131,072 one (what a
# 70,000-item announcement picked) starts at the same size and runs further.
SMALL_RESPONDERS = sorted({0, 1, 2, 3, 37, 238, 239, 240} | across(*WINDOWS[1_000_000]) | across(*WINDOWS[131_072], 1)
                          | {10_000})
# Filters for 1 and 2 queries ([matching] max_set_size = 1 or 2), the node's
# smallest class (1024), and classes up to max_set_size = 1,000,000.
QUERIES = (1, 2, 1024, 65_536, 131_072, 1_000_000)
MODES = (Mode.REVEAL, Mode.COUNT)


@dataclass
class World:
    """The responder's pool (blinded once) and a memo of every filter built."""

    engine: MemoEngine
    responder_key: bytes
    requester_key: bytes
    pool: list[str]
    pool_points: list[bytes]  # blinded in pool order; the tail only when a test needs it
    filters: dict[tuple[int, float, int], PreparedSetup] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=lambda: {"runs": 0, "false": 0, "expected_false": 0.0})

    def blinded(self, m: int) -> BlindedSet:
        if m > len(self.pool_points):  # H(y)^k per item, in pool order (the client's Encrypt is the server's)
            self.pool_points += self.engine.blind(self.responder_key, self.pool[len(self.pool_points) : m], True).encrypted_elements
        return BlindedSet(key=self.responder_key, points=tuple(sorted(self.pool_points[:m])))

    def filter(self, m: int, fpr: float, queries: int) -> PreparedSetup:
        memo = (m, fpr, queries)
        if memo not in self.filters:
            self.filters[memo] = filter_for(self.blinded(m), false_positive_rate=fpr, max_set_size=queries)
        return self.filters[memo]

    def requester_items(self, n: int) -> list[str]:
        """``n`` items: about half from the responder's pool, spread over its whole
        range (so the intersection grows with the responder's size), half not."""
        rng = random.Random(n)
        inside = sorted(rng.sample(range(POOL), (n + 1) // 2)) if n > 2 else [0, 1][: (n + 1) // 2]
        return [self.pool[i] for i in inside] + [f"outsider-{i}" for i in range(n // 2)]


@pytest.fixture(scope="module", autouse=True)
def memo_checks() -> Iterator[None]:
    """The requester's filter check is a pure function of the filter's bytes and
    the announced terms; many cases share a filter, so each distinct pair is
    checked once (for real) and its verdict reused. A refusal is re-raised."""
    real = psi.check_server_setup
    verdicts: dict[tuple[bytes, SetupTerms], CheckedSetup] = {}

    def check(setup: ServerSetup, terms: SetupTerms, **kwargs: bool) -> CheckedSetup:
        memo = (setup.SerializeToString(deterministic=True), terms)
        if memo not in verdicts:
            verdicts[memo] = real(setup, terms, **kwargs)
        return verdicts[memo]

    psi.check_server_setup = check  # type: ignore[assignment]
    try:
        yield
    finally:
        psi.check_server_setup = real  # type: ignore[assignment]


@pytest.fixture(scope="module")
def world() -> World:
    rb = deterministic_random_bytes(2024)
    executor = ThreadPoolExecutor(2)
    engine = MemoEngine(executor, 2, isolate=False)
    responder_key, requester_key = new_private_key(rb), new_private_key(rb)
    pool = [f"psi-share/1/email/v1/member-{i}@example.org" for i in range(POOL)]
    world = World(engine, responder_key, requester_key, pool, [])
    assert world.blinded(500).points == tuple(engine.blinded_points(responder_key, pool[:500]))
    return world


def run_case(world: World, n: int, m: int, fpr: float, queries: int, mode: Mode) -> None:
    """One whole session at these sizes and this config, checked against sets."""
    items = world.requester_items(n)
    theirs = set(world.pool[:m])
    prepared = world.filter(m, fpr, queries)
    truth = {i for i, x in enumerate(items) if x in theirs}
    requester = PsiRequester(items, dataset="flagged", kinds=DEFAULT_KINDS, mode=mode,
                             key=world.requester_key, engine=world.engine)
    responder = PsiResponderSession(requester.open, key=world.responder_key, max_set_size=queries, engine=world.engine)
    requester.on_opened(PsiOpened(session_id="s", false_positive_rate=fpr, max_set_size=queries,
                                  responder_set_size=prepared.item_count))
    requester.on_response(responder.process(requester.request()))
    outcome = requester.on_setup(responder.setup(prepared))
    case = f"n={n} m={m} fpr={fpr:g} queries={queries} {mode.value} filter={prepared.kind}"
    if mode is Mode.REVEAL:
        assert outcome.matched is not None and outcome.count == len(outcome.matched), case
        assert truth <= set(outcome.matched), f"missed a match: {case}"
        false = len(set(outcome.matched) - truth)
    else:
        assert outcome.matched is None and outcome.count >= len(truth), f"missed a match: {case}"
        false = outcome.count - len(truth)
    assert prepared.kind != "raw" or false == 0, f"raw setups are exact: {case}"
    world.stats["runs"] += 1
    world.stats["false"] += false
    world.stats["expected_false"] += fpr * n / queries if prepared.kind != "raw" else 0.0


def check_false_matches(world: World) -> None:
    """False matches stay within what the configured rates allow (a loose
    bound: a rate can be met on average and still give a few)."""
    expected = world.stats["expected_false"]
    assert world.stats["false"] <= 4 * expected + 3 * math.sqrt(expected) + 3, world.stats


@pytest.mark.slow
@pytest.mark.parametrize("n", (0, 1, 2, 37))
def test_small_requesters_against_every_responder_size_and_config(world: World, n: int) -> None:
    for m in SMALL_RESPONDERS:
        for i, fpr in enumerate(FPRS):
            for j, queries in enumerate(QUERIES):
                if queries < n:
                    continue  # a responder never builds a filter for fewer queries than the request has
                # Both modes up to the 1,000,000-query window's end; above it they take turns.
                for mode in MODES if m <= WINDOWS[1_000_000][1] + 1 else MODES[(i + j) % 2 :][:1]:
                    run_case(world, n, m, fpr, queries, mode)
    check_false_matches(world)


@pytest.mark.slow
def test_small_requesters_against_100k_responders(world: World) -> None:
    for n, mode in ((1, Mode.COUNT), (37, Mode.REVEAL)):
        for fpr in (1e-9, 1e-3):
            for queries in (max(1, n), 1024, 131_072, 1_000_000):
                run_case(world, n, POOL, fpr, queries, mode)
    check_false_matches(world)


@pytest.mark.slow
@pytest.mark.parametrize("n", (1000, 10_000))
def test_larger_requesters_against_every_kind_of_responder(world: World, n: int) -> None:
    responders = (0, 1, 2, 37, 520, WINDOWS[1_000_000][1], 10_000, POOL) if n == 1000 else (0, 1, 520, 4611, 10_000, POOL)
    # The class for max_set_size = 1,000,000 (2048 or 16,384 queries: a hash range
    # near 2^58 at 1e-9) and for max_set_size = n; at 10k the configs take turns.
    configs = [(fpr, max_set_size, mode) for fpr in (1e-9, 1e-3) for max_set_size in (n, 1_000_000) for mode in MODES]
    if n > 1000:
        configs = [(1e-9, 1_000_000, Mode.REVEAL), (1e-3, n, Mode.COUNT)]
    for m in responders:
        for fpr, max_set_size, mode in configs:
            run_case(world, n, m, fpr, size_class(n, max_set_size), mode)
    check_false_matches(world)


@pytest.mark.slow
def test_100k_requester(world: World) -> None:
    n = 100_000
    run_case(world, n, POOL, 1e-9, size_class(n, 1_000_000), Mode.REVEAL)
    check_false_matches(world)


def test_size_classes() -> None:
    assert [size_class(n, 1_000_000) for n in (0, 1, 1024, 1025, 70_000, 524_288, 524_289, 1_000_000)] == [
        1024, 1024, 1024, 2048, 131_072, 524_288, 1_000_000, 1_000_000]
    assert [size_class(n, 1000) for n in (0, 1, 1000)] == [1000, 1000, 1000]
    assert size_class(2, 2) == 2


def test_the_windows_are_the_ones_issue_12_saw() -> None:
    """Computed, not measured: 'roughly 520 to 4,600' for 1,000,000 queries."""
    assert WINDOWS[1_000_000] == (513, 4611)
    assert WINDOWS[131_072] == (513, 35_184)


def test_setups_hold_what_was_announced(world: World) -> None:
    for m in (0, 1, 520, 4611):
        for queries in QUERIES:
            prepared = world.filter(m, 1e-9, queries)
            setup = ServerSetup.FromString(prepared.setup)
            assert prepared.item_count == m and setup.WhichOneof("data_structure") == prepared.kind
