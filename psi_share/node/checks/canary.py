"""The ``canary`` check: real PSI sessions with a peer over synthetic items.

For every dataset the peer grants us (on the kinds whose canonicalization
versions agree) this runs, through the same client, policy and filter code
as a real match (:mod:`psi_share.protocols.canary` has the rules):

1. ``_canary.<dataset>`` in reveal mode and in count mode: the responder's
   synthetic set is as large as its real filter over that dataset, and the
   filter is sized as a real session's would be;
2. ``_canary.<dataset>.<n>`` for each size of the sweep (default
   :data:`DEFAULT_SIZES`, across OpenMined's filter kinds and the sizes
   where its GCS hash range used to overflow, 520 to 4,600 items against a
   filter sized for a million queries), in reveal mode when the peer grants
   it, otherwise in count mode (a peer running psi-share grants OpenMined's
   count mode only with reveal, so then both are skipped). Datasets whose
   filters are sized for the same number of queries as one already swept
   are not swept again.

Our side sends as many synthetic items as a real session would: our dataset
of the same name, on those kinds (else :data:`DEFAULT_ITEMS`). Each session
must return exactly the answer both sides know in advance. Nothing is stored
on our side (the audit log records every message, as for any session, marked
``canary``); the peer records each canary as a session of its own, marked
as a canary, and holds it to its own hourly canary limit rather than our
daily budget there (a check never uses up what real jobs need).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from ...crypto.openmined import new_private_key
from ...errors import NotFound, PeerRefused, PsiShareError
from ...identifiers import canonical_versions
from ...protocols.canary import CanaryAsk, check_outcome, filter_kind, requester_plan
from ...protocols.psi import Mode, PsiRequester
from ...transport.client import PeerClient
from ..psi.itemsets import build_item_set
from .report import FAIL, OK, SKIPPED, PeerReport

DEFAULT_SIZES = (16, 600, 2000, 4600, 10000)
DEFAULT_ITEMS = 64


@dataclass(frozen=True)
class CanaryTarget:
    """One peer dataset to run canaries on, with the kinds both sides agree on."""

    dataset: str
    kinds: tuple[str, ...]


def run_canaries(node, client: PeerClient, targets: Sequence[CanaryTarget], sizes: Sequence[int],  # type: ignore[no-untyped-def]
                 report: PeerReport) -> None:
    """Add one ``canary`` finding per session run (or skipped) with ``client``'s peer."""
    swept: dict[int, str] = {}  # filter queries -> the dataset whose sweep covered them
    for target in targets:
        items = _our_items(node, target)
        runner = _Runner(node, client, target, items, report)
        reveal = runner.run(CanaryAsk(target.dataset), Mode.REVEAL)
        counted = runner.run(CanaryAsk(target.dataset), Mode.COUNT)
        queries = reveal.queries or counted.queries
        if not sizes or not queries:
            continue
        if queries in swept:
            report.add("canary", SKIPPED, f"{target.dataset}: its filters are sized for {queries} queries, as "
                       f"{swept[queries]}'s: the size sweep is not repeated", dataset=target.dataset)
            continue
        swept[queries] = target.dataset
        mode = Mode.COUNT if reveal.status == SKIPPED else Mode.REVEAL  # skipped: reveal is not granted
        for size in sizes:
            runner.run(CanaryAsk(target.dataset, size), mode)


def _our_items(node, target: CanaryTarget) -> int:  # type: ignore[no-untyped-def]
    """How many items a real session would send: our same-named dataset on these kinds."""
    try:
        count = len(build_item_set(node.store.identifiers(target.dataset, target.kinds)))
    except NotFound:
        count = 0
    return count or DEFAULT_ITEMS


@dataclass(frozen=True)
class _Ran:
    status: str
    queries: int = 0


class _Runner:
    def __init__(self, node, client: PeerClient, target: CanaryTarget, items: int,  # type: ignore[no-untyped-def]
                 report: PeerReport) -> None:
        self._node, self._client, self._target, self._items, self._report = node, client, target, items, report

    def run(self, ask: CanaryAsk, mode: Mode) -> _Ran:
        """One canary session; its finding goes into the report."""
        plan = requester_plan(self._items, ask)
        size = "as large as its real filter" if ask.items is None else f"{ask.items} synthetic items"
        label = f"{ask.dataset} ({size}, {mode.value}, {self._items} of ours)"
        facts = {"dataset": ask.dataset, "asked": ask.name, "mode": mode.value, "our_items": self._items,
                 "expected": len(plan.expected), "kinds": list(self._target.kinds)}
        requester = PsiRequester(
            plan.items, dataset=ask.name, kinds=canonical_versions(self._target.kinds), mode=mode,
            key=new_private_key(self._node.random_bytes), engine=self._node.engine,
        )
        started = time.perf_counter()
        try:
            opened = self._client.psi_open(requester.open)
        except PeerRefused as exc:
            status = SKIPPED if exc.code == "PERMISSION_DENIED" else FAIL
            hint = ("; the peer may not answer canaries (an older psi-share)" if exc.code == "NOT_FOUND" else "")
            self._report.add("canary", status, f"{label}: refused: {exc.code}: {exc.details}{hint}", **facts)
            return _Ran(status)
        except PsiShareError as exc:
            self._report.add("canary", FAIL, f"{label}: {exc}", **facts)
            return _Ran(FAIL)
        facts.update(queries=opened.max_set_size, min_result=opened.min_result)
        sid = opened.session_id
        try:
            requester.on_opened(opened)
            requester.on_response(self._client.psi_process(sid, requester.request(), self._items))
            setup = self._client.psi_setup(sid)
            facts["filter"] = filter_kind(setup)
            outcome = requester.on_setup(setup)
        except PsiShareError as exc:
            self._close(sid, "failed")
            self._report.add("canary", FAIL, f"{label}: the session failed: {exc}", **facts)
            return _Ran(FAIL, opened.max_set_size)
        problems = check_outcome(plan, outcome)
        self._close(sid, "failed" if problems else "done")
        facts.update(got=outcome.count, seconds=round(time.perf_counter() - started, 3))
        where = f"filter {facts['filter']} sized for {opened.max_set_size} queries"
        if problems:
            self._report.add("canary", FAIL, f"{label}: wrong answer: {'; '.join(problems)} ({where}); "
                             "a real match against this filter would be wrong too", **facts)
            return _Ran(FAIL, opened.max_set_size)
        self._report.add("canary", OK, f"{label}: exactly the {len(plan.expected)} expected matches ({where})", **facts)
        return _Ran(OK, opened.max_set_size)

    def _close(self, sid: str, outcome: str) -> None:
        try:
            self._client.psi_close(sid, outcome)
        except PsiShareError:
            pass  # the session ends by its TTL at the peer; the finding says what went wrong
