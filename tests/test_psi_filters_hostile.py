"""A cheating responder's filters (issue 11): refused before OpenMined reads them.

The attacker is written here, as a modified responder would be: it answers
an honest requester's session with a forged ServerSetup. Each forged filter
must end the session with a RemoteProtocolError naming the filter and what is
wrong, and OpenMined must never be called on it (a spy on the engine checks
that). The crash case runs in real subprocesses: the requesting process must
survive, both the check (the issue's exact forged GCS) and the isolation
behind it (a filter that really crashes OpenMined, handed to it directly).
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from private_set_intersection.python import ServerSetup

from helpers import PsiPair, make_psi_pair, run_python
from psi_share.crypto.filters import bloom_setup, gcs_setup, raw_setup
from psi_share.crypto.openmined_params import bloom_shape, gcs_hash_range
from psi_share.errors import RemoteProtocolError
from psi_share.protocols.psi import Mode, RequesterState

REPO = Path(__file__).resolve().parents[1]
REQUESTER = [f"req-{i}" for i in range(40)] + [f"both-{i}" for i in range(10)]
RESPONDER = [f"both-{i}" for i in range(10)] + [f"resp-{i}" for i in range(290)]
FPR, QUERIES = 1e-9, 1024  # the node's default rate and smallest size class
# Where OpenMined's Bloom filter meets its rate (at 1e-9 it never does), so that
# forged Bloom filters are refused for what they forge, not for the rate.
BLOOM_TERMS = (1e-3, 65536)


def session(mode: Mode = Mode.REVEAL, fpr: float = FPR, queries: int = QUERIES) -> PsiPair:
    """An honest session up to the moment the requester waits for the filter."""
    pair = make_psi_pair(REQUESTER, RESPONDER, mode=mode, fpr=fpr, max_set_size=queries)
    pair.requester.on_opened(pair.opened)
    pair.requester.on_response(pair.responder.process(pair.requester.request()))
    return pair


def spy(pair: PsiPair) -> list[object]:
    """Record every call of OpenMined's intersection (there must be none)."""
    calls: list[object] = []
    real = pair.engine.intersect

    def intersect(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        calls.append(args)
        return real(*args, **kwargs)

    pair.engine.intersect = intersect  # type: ignore[method-assign]
    return calls


def honest(pair: PsiPair) -> ServerSetup:
    return ServerSetup.FromString(pair.prepared.setup)


def blinded(pair: PsiPair, extra: int = 0) -> list[bytes]:
    """The responder's real blinded points (and ``extra`` more of its own making)."""
    from psi_share.crypto.openmined import OpenMinedEngine

    return OpenMinedEngine().blinded_points(pair.prepared.key, RESPONDER + [f"extra-{i}" for i in range(extra)])


# -- the forgeries ----------------------------------------------------------------


def issue_11_gcs(pair: PsiPair) -> ServerSetup:
    """Exactly the filter of issue 11: div 40, hash range 2^63-1, 64 KiB of random bits."""
    setup = ServerSetup()
    setup.gcs.div, setup.gcs.hash_range, setup.gcs.bits = 40, 2**63 - 1, random.Random(11).randbytes(64 * 1024)
    return setup


def issue_11_gcs_right_range(pair: PsiPair) -> ServerSetup:
    """The same random bits under the hash range OpenMined would use."""
    setup = issue_11_gcs(pair)
    setup.gcs.hash_range = gcs_hash_range(FPR, QUERIES, len(RESPONDER))
    return setup


def terms(pair: PsiPair) -> tuple[float, int]:
    """The rate and the number of queries the responder announced."""
    return pair.opened.false_positive_rate, pair.opened.max_set_size


def all_ones_bloom(pair: PsiPair) -> ServerSetup:
    """Exactly OpenMined's Bloom shape for the announced sizes, every bit set."""
    hashes, num_bytes = bloom_shape(*terms(pair), len(RESPONDER))
    setup = ServerSetup()
    setup.bloom_filter.num_hash_functions, setup.bloom_filter.bits = hashes, b"\xff" * num_bytes
    return setup


def bloom_with(hashes_delta: int = 0, bytes_delta: int = 0) -> Callable[[PsiPair], ServerSetup]:
    def forge(pair: PsiPair) -> ServerSetup:
        setup = bloom_setup(blinded(pair), *terms(pair))
        assert setup is not None
        setup.bloom_filter.num_hash_functions += hashes_delta
        setup.bloom_filter.bits = setup.bloom_filter.bits + b"\x00" * bytes_delta
        return setup

    return forge


def gcs_over_more_items(pair: PsiPair) -> ServerSetup:
    """A well-formed GCS holding 50 more elements than the announced set size."""
    setup = gcs_setup(blinded(pair, extra=50), FPR, QUERIES)
    assert setup is not None
    return setup


def gcs_over_fewer_items(pair: PsiPair) -> ServerSetup:
    """A well-formed GCS holding half the announced elements."""
    setup = gcs_setup(blinded(pair)[::2], FPR, QUERIES)
    assert setup is not None
    setup.gcs.hash_range = gcs_hash_range(FPR, QUERIES, len(RESPONDER))
    return setup


def gcs_edited(edit: Callable[[ServerSetup], None]) -> Callable[[PsiPair], ServerSetup]:
    def forge(pair: PsiPair) -> ServerSetup:
        setup = honest(pair)
        assert setup.WhichOneof("data_structure") == "gcs"
        edit(setup)
        return setup

    return forge


def raw_edited(edit: Callable[[list[bytes]], list[bytes]]) -> Callable[[PsiPair], ServerSetup]:
    def forge(pair: PsiPair) -> ServerSetup:
        setup = ServerSetup()
        setup.raw.SetInParent()
        setup.raw.encrypted_elements.extend(edit(list(raw_setup(blinded(pair)).raw.encrypted_elements)))
        return setup

    return forge


def _junk_point(points: list[bytes]) -> list[bytes]:
    # x = p - 1 + ... : find an x that is not on the curve, keep the 0x02 prefix.
    from psi_share.crypto.filter_check import is_compressed_point

    junk = next(p for p in (b"\x02" + i.to_bytes(32, "big") for i in range(5, 100)) if not is_compressed_point(p))
    return sorted(points[1:] + [junk])


def openmined_bloom(pair: PsiPair) -> ServerSetup:
    """OpenMined's own Bloom filter over the real points, for the announced terms."""
    setup = bloom_setup(blinded(pair), *terms(pair))
    assert setup is not None
    return setup


DEFAULT_TERMS = (FPR, QUERIES)
FORGERIES: list[tuple[str, Callable[[PsiPair], ServerSetup], str, tuple[float, int]]] = [
    ("bloom-at-1e-9", openmined_bloom, "cannot meet the announced rate", DEFAULT_TERMS),
    ("all-ones-bloom-at-1e-9", all_ones_bloom, "Bloom filter cannot meet the announced rate", DEFAULT_TERMS),
    ("issue-11-gcs", issue_11_gcs, "GCS filter has hash range 9223372036854775807, OpenMined's is", DEFAULT_TERMS),
    ("issue-11-gcs-right-range", issue_11_gcs_right_range, "GCS filter is malformed", DEFAULT_TERMS),
    ("gcs-cut-short", gcs_edited(lambda s: setattr(s.gcs, "bits", s.gcs.bits[:-2])), "GCS filter is malformed", DEFAULT_TERMS),
    ("gcs-trailing-byte", gcs_edited(lambda s: setattr(s.gcs, "bits", s.gcs.bits + b"\x00")), "bytes follow", DEFAULT_TERMS),
    ("gcs-divisor", gcs_edited(lambda s: setattr(s.gcs, "div", s.gcs.div - 1)), "GCS filter", DEFAULT_TERMS),
    ("gcs-divisor-62", gcs_edited(lambda s: setattr(s.gcs, "div", 62)), "GCS filter", DEFAULT_TERMS),
    ("gcs-more-items", gcs_over_more_items, "more than 300 elements", DEFAULT_TERMS),
    ("gcs-fewer-items", gcs_over_fewer_items, "GCS filter", DEFAULT_TERMS),
    ("gcs-negative-range", gcs_edited(lambda s: setattr(s.gcs, "hash_range", -(2**63))), "hash range -9223372036854775808", DEFAULT_TERMS),
    ("all-ones-bloom", all_ones_bloom, "bits set, more than 300 items can set", BLOOM_TERMS),
    ("bloom-hash-functions", bloom_with(hashes_delta=+1), "hash functions, OpenMined uses", BLOOM_TERMS),
    ("bloom-no-hash-functions", bloom_with(hashes_delta=-10_000), "hash functions, OpenMined uses", BLOOM_TERMS),
    ("bloom-length", bloom_with(bytes_delta=8), "bytes, OpenMined's has", BLOOM_TERMS),
    ("raw-junk-point", raw_edited(_junk_point), "is not a compressed P-256 point", DEFAULT_TERMS),
    ("raw-short-element", raw_edited(lambda ps: sorted(ps[1:] + [ps[0][:32]])), "is not a compressed P-256 point", DEFAULT_TERMS),
    ("raw-prefix-04", raw_edited(lambda ps: sorted(ps[1:] + [b"\x04" + ps[0][1:]])), "is not a compressed P-256 point", DEFAULT_TERMS),
    ("raw-unsorted", raw_edited(lambda ps: ps[::-1]), "not sorted", DEFAULT_TERMS),
    ("raw-repeated", raw_edited(lambda ps: sorted(ps[1:] + ps[1:2])), "not sorted or repeats", DEFAULT_TERMS),
    ("raw-one-more", raw_edited(lambda ps: sorted(ps + [ps[0][:1] + bytes(31) + b"\x01"])), "holds 301 elements", DEFAULT_TERMS),
    ("raw-one-less", raw_edited(lambda ps: ps[1:]), "holds 299 elements", DEFAULT_TERMS),
    ("no-filter", lambda pair: ServerSetup(), "holds no filter", DEFAULT_TERMS),
]


@pytest.mark.parametrize("mode", [Mode.REVEAL, Mode.COUNT])
@pytest.mark.parametrize("forge, why, announced", [f[1:] for f in FORGERIES], ids=[f[0] for f in FORGERIES])
def test_requester_refuses_a_forged_filter_before_openmined_reads_it(
    forge: Callable[[PsiPair], ServerSetup], why: str, announced: tuple[float, int], mode: Mode
) -> None:
    pair = session(mode, *announced)
    calls = spy(pair)
    with pytest.raises(RemoteProtocolError, match="peer's") as err:
        pair.requester.on_setup(forge(pair).SerializeToString())
    assert why in str(err.value)
    assert calls == []  # OpenMined never saw it
    assert pair.requester.state is RequesterState.DONE  # the session is over: nothing more is accepted


@pytest.mark.parametrize("announced, forge", [(DEFAULT_TERMS, None), (BLOOM_TERMS, None), (BLOOM_TERMS, openmined_bloom)],
                         ids=["default", "bloom-terms", "honest-bloom"])
def test_the_honest_filter_of_the_same_session_is_accepted(announced: tuple[float, int], forge) -> None:  # type: ignore[no-untyped-def]
    """The forgeries above differ from these only in what they forge."""
    pair = session(Mode.REVEAL, *announced)
    calls = spy(pair)
    setup = forge(pair).SerializeToString() if forge else pair.prepared.setup
    outcome = pair.requester.on_setup(setup)
    assert set(range(40, 50)) <= set(outcome.matched or ()) and len(calls) == 1


def test_a_gcs_announced_with_another_set_size_is_refused() -> None:
    """The filter is honest, the announced responder size is not (one more)."""
    pair = make_psi_pair(REQUESTER, RESPONDER, fpr=FPR, max_set_size=QUERIES)
    pair.requester.on_opened(type(pair.opened)(**{**pair.opened.__dict__, "responder_set_size": len(RESPONDER) + 1}))
    pair.requester.on_response(pair.responder.process(pair.requester.request()))
    with pytest.raises(RemoteProtocolError, match="GCS filter"):
        pair.requester.on_setup(pair.prepared.setup)


# -- the requesting process survives ------------------------------------------------------

_REQUESTER_SCRIPT = textwrap.dedent(
    """
    import random, sys
    sys.path.insert(0, "tests")
    from private_set_intersection.python import ServerSetup
    from helpers import make_psi_pair
    from psi_share.errors import RemoteProtocolError

    seed = int(sys.argv[1])
    pair = make_psi_pair([f"i{i}" for i in range(1520)], [f"i{i}" for i in range(0, 3000, 2)],
                         max_set_size=2048, isolate=True)
    pair.requester.on_opened(pair.opened)
    pair.requester.on_response(pair.responder.process(pair.requester.request()))
    setup = ServerSetup()
    setup.gcs.div, setup.gcs.hash_range, setup.gcs.bits = 40, 2**63 - 1, random.Random(seed).randbytes(65536)
    try:
        outcome = pair.requester.on_setup(setup.SerializeToString())
    except RemoteProtocolError as exc:
        print("REFUSED:", exc)
    else:
        print("ACCEPTED:", outcome.count)
    """
)


@pytest.mark.parametrize("seed", range(5))
def test_issue_11_forged_gcs_is_refused_in_a_real_process_that_survives(seed: int) -> None:
    """Issue 11: this filter killed `match` with SIGSEGV in 4 of 5 runs."""
    proc = run_python(_REQUESTER_SCRIPT, str(seed))
    assert "REFUSED: peer's GCS filter has hash range 9223372036854775807" in proc.stdout


_ISOLATION_SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, "tests")
    from private_set_intersection.python import Response, ServerSetup
    from helpers import make_psi_pair
    from psi_share.errors import RemoteProtocolError

    # A Golomb string whose only code runs past its end: OpenMined's decoder then
    # walks off the heap (SIGSEGV, every time). The check would refuse it; here it
    # is handed to the engine directly, as if a check had missed something.
    setup = ServerSetup()
    setup.gcs.div, setup.gcs.hash_range, setup.gcs.bits = 16, 2**63 - 1, b"\\x80"
    pair = make_psi_pair([f"i{i}" for i in range(50)], ["i1"], isolate=sys.argv[1] == "isolated")
    pair.requester.on_opened(pair.opened)
    response = Response.FromString(pair.responder.process(pair.requester.request()))
    key = pair.requester._key
    try:
        pair.engine.intersect(key, setup, response, True)
    except RemoteProtocolError as exc:
        print("CONTAINED:", exc)
    print("ALIVE", os.getpid())
    # ... and the same engine still answers an honest filter afterwards.
    print("HONEST", pair.engine.intersect(key, ServerSetup.FromString(pair.prepared.setup), response, True))
    """
)


def test_a_crash_in_openmined_fails_the_session_not_the_requesting_process() -> None:
    inline = subprocess.run([sys.executable, "-c", _ISOLATION_SCRIPT, "inline"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert inline.returncode == -11, "the forged filter must really crash OpenMined when it is not isolated"
    proc = run_python(_ISOLATION_SCRIPT, "isolated")
    assert "CONTAINED: peer's filter crashed OpenMined in an isolated worker process" in proc.stdout
    assert "ALIVE" in proc.stdout and "HONEST [1]" in proc.stdout
