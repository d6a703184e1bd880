"""In-memory PSI runs for tests: a requester and a responder joined without sockets.

The steps are exactly the ones the node takes (``node/psi/requester.py`` on one
side, ``node/psi/responder.py`` on the other), in the same order:

    responder: prepare_setup(key_b, items)          (before any request)
    requester: PsiRequester(items, key_a).open  -> responder: PsiResponderSession(open)
    responder: PsiOpened(...)                   -> requester: on_opened
    requester: request()                        -> responder: process()
    responder: (response bytes)                 -> requester: on_response
    responder: setup(prepared)                  -> requester: on_setup -> PsiOutcome

Keys come from :func:`psi_share.crypto.openmined.new_private_key` fed with
deterministic randomness, so runs are reproducible.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path


from psi_share.crypto.openmined import OpenMinedEngine, new_private_key
from psi_share.protocols.psi import (
    DEFAULT_FALSE_POSITIVE_RATE,
    Mode,
    PreparedSetup,
    PsiOpened,
    PsiOutcome,
    PsiRequester,
    PsiResponderSession,
    prepare_setup,
)

DEFAULT_KINDS = {"email": 1}


def deterministic_random_bytes(seed: int) -> Callable[[int], bytes]:
    """A ``random_bytes(n)`` callable that is reproducible for one seed."""
    return random.Random(seed).randbytes


@dataclass
class PsiPair:
    """A requester and a responder session wired to each other, not yet run."""

    requester: PsiRequester
    responder: PsiResponderSession
    prepared: PreparedSetup
    opened: PsiOpened
    engine: OpenMinedEngine


@dataclass(frozen=True)
class PsiTranscript:
    """Every protocol message that crossed between the two sides."""

    request: bytes
    response: bytes
    setup: bytes


def make_psi_pair(
    requester_items: Sequence[str],
    responder_items: Sequence[str],
    *,
    mode: Mode = Mode.REVEAL,
    workers: int = 1,
    executor: Executor | None = None,
    fpr: float = DEFAULT_FALSE_POSITIVE_RATE,
    max_set_size: int | None = None,
    seed: int = 0,
    session_id: str = "session-1",
    isolate: bool = False,
) -> PsiPair:
    """Prepare the responder's filter and open a session, up to ``PsiOpened``.

    The PsiOpened is built but *not* yet given to the requester
    (``pair.requester.on_opened(pair.opened)`` is the next step). OpenMined
    reads the filter on the calling thread unless ``isolate`` (the node's
    way, in worker processes: tests/test_psi_filters_hostile.py covers it).
    """
    random_bytes = deterministic_random_bytes(seed)
    engine = OpenMinedEngine(executor, workers, isolate=isolate)
    responder_key = new_private_key(random_bytes)
    requester_key = new_private_key(random_bytes)
    limit = max_set_size if max_set_size is not None else max(1, len(requester_items))
    prepared = prepare_setup(
        engine, responder_key, list(responder_items), false_positive_rate=fpr, max_set_size=limit
    )
    requester = PsiRequester(
        list(requester_items),
        dataset="flagged",
        kinds=DEFAULT_KINDS,
        mode=mode,
        key=requester_key,
        engine=engine,
    )
    responder = PsiResponderSession(requester.open, key=responder_key, max_set_size=limit, engine=engine)
    opened = PsiOpened(
        session_id=session_id,
        false_positive_rate=prepared.false_positive_rate,
        max_set_size=prepared.max_set_size,
        session_ttl_seconds=900,
        responder_set_size=prepared.item_count,
    )
    return PsiPair(requester, responder, prepared, opened, engine)


def run_psi_transcript(
    requester_items: Sequence[str],
    responder_items: Sequence[str],
    *,
    mode: Mode = Mode.REVEAL,
    workers: int = 1,
    executor: Executor | None = None,
    fpr: float = DEFAULT_FALSE_POSITIVE_RATE,
    max_set_size: int | None = None,
    seed: int = 0,
) -> tuple[PsiOutcome, PsiTranscript]:
    """Run a whole PSI session in memory; return the outcome and the messages."""
    pair = make_psi_pair(
        requester_items, responder_items, mode=mode, workers=workers, executor=executor,
        fpr=fpr, max_set_size=max_set_size, seed=seed,
    )
    pair.requester.on_opened(pair.opened)
    request = pair.requester.request()
    response = pair.responder.process(request)
    pair.requester.on_response(response)
    setup = pair.responder.setup(pair.prepared)
    outcome = pair.requester.on_setup(setup)
    pair.responder.close()
    return outcome, PsiTranscript(request, response, setup)


def run_psi_pair(
    requester_items: Sequence[str],
    responder_items: Sequence[str],
    *,
    mode: Mode = Mode.REVEAL,
    workers: int = 1,
    executor: Executor | None = None,
    fpr: float = DEFAULT_FALSE_POSITIVE_RATE,
    max_set_size: int | None = None,
    seed: int = 0,
) -> PsiOutcome:
    """Run a whole PSI session in memory and return what the requester learned."""
    outcome, _ = run_psi_transcript(
        requester_items, responder_items, mode=mode, workers=workers, executor=executor,
        fpr=fpr, max_set_size=max_set_size, seed=seed,
    )
    return outcome


def run_python(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter from the repository root (the
    tests folder importable), asserting that the process survived."""
    proc = subprocess.run([sys.executable, "-c", script, *args], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"the process died with {proc.returncode}: {proc.stderr[-800:]}"
    return proc
