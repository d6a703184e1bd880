"""OpenMined PSI (ECDH on P-256) driven over chunks on several threads.

OpenMined's client/server objects are not thread-safe: one object used from two
threads aborts the process. The library releases the GIL, though, so separate
objects on separate threads really do run in parallel. Every chunk here gets
its own object, built from the same private key with ``CreateFromKey``; no
object ever outlives the call that made it or crosses a thread.

The concatenation of per-chunk results is exactly what one object would have
produced on the whole set, except that a count-only response must not keep
the request's order (that order would tell the requester which of its items
matched): OpenMined sorts a count-only response, so after joining chunks we
sort the whole response again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import TypeVar

import private_set_intersection.python as openmined
from private_set_intersection.python import Request, Response, ServerSetup

from ..errors import LocalProtocolError, RemoteProtocolError
from . import split_spans
from .filters import build_setup
from .isolation import run_isolated, start_in_background

OPENMINED_PSI_VERSION: str = openmined.__version__

# Order of the NIST P-256 group: OpenMined keys are scalars in [1, order).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

# A blinded element is a compressed P-256 point: 0x02/0x03 prefix + 32 bytes.
POINT_BYTES = 33

# Below this many items a chunk is not worth a thread hand-off.
MIN_CHUNK_ITEMS = 2048

T = TypeVar("T")


def new_private_key(random_bytes: Callable[[int], bytes]) -> bytes:
    """Draw a P-256 scalar in [1, order) by rejection from ``random_bytes``.

    The randomness is passed in (never reached for) so callers decide the
    source; production uses ``secrets.token_bytes``.
    """
    while True:
        candidate = random_bytes(32)
        value = int.from_bytes(candidate, "big")
        if 1 <= value < P256_ORDER:
            return candidate


def _spans(n: int, workers: int) -> list[tuple[int, int]]:
    return split_spans(n, min(workers, n // MIN_CHUNK_ITEMS))


class OpenMinedEngine:
    """Runs OpenMined PSI steps chunk-parallel on an executor.

    ``executor`` is owned by the caller (the node shares one across sessions);
    with ``workers == 1`` or no executor everything runs on the calling thread.
    With ``isolate`` (the default) the one step that reads a peer's filter,
    :meth:`intersect`, runs in worker processes instead.
    """

    def __init__(self, executor: Executor | None = None, workers: int = 1, *, isolate: bool = True) -> None:
        self._executor = executor
        self._workers = max(1, workers)
        self._isolate = isolate

    def _map(self, fn: Callable[[int, int], T], n: int) -> list[T]:
        spans = _spans(n, self._workers)
        if self._executor is None or len(spans) == 1:
            return [fn(a, b) for a, b in spans]
        futures = [self._executor.submit(fn, a, b) for a, b in spans]
        return [f.result() for f in futures]

    # -- requester (OpenMined "client") ---------------------------------

    def blind(self, key: bytes, items: Sequence[str], reveal: bool) -> Request:
        """H(x)^k for every item, in order: the requester's request."""
        if self._isolate:
            start_in_background()  # ready by the time the peer's filter arrives

        def work(a: int, b: int) -> list[bytes]:
            client = openmined.client.CreateFromKey(key, reveal)
            return list(client.CreateRequest(list(items[a:b])).encrypted_elements)

        request = Request(reveal_intersection=reveal)
        for part in self._map(work, len(items)):
            request.encrypted_elements.extend(part)
        return request

    def intersect(
        self, key: bytes, setup: ServerSetup, response: Response, reveal: bool
    ) -> list[int] | int:
        """Indices of matching request items (reveal) or their number.

        ``setup`` must have passed :func:`~psi_share.crypto.filter_check.check_server_setup`:
        OpenMined trusts it. Even so it runs, with the isolated engine, in
        worker processes of their own (see :mod:`psi_share.crypto.isolation`):
        should a peer's filter still crash OpenMined, the session fails with
        RemoteProtocolError and the node lives on. Raises RemoteProtocolError
        when the peer's response cannot be decoded (bad points).
        """
        elements = list(response.encrypted_elements)
        data = setup.SerializeToString()
        spans = _spans(len(elements), self._workers)
        calls = [(key, data, elements[a:b], reveal, a) for a, b in spans]
        if self._isolate:
            parts = run_isolated(intersect_span, calls, what="peer's filter")
        else:
            parts = self._map(lambda a, b: intersect_span(key, data, elements[a:b], reveal, a), len(elements))
        if not reveal:
            return sum(p for p in parts if isinstance(p, int))
        return sorted(i for p in parts if isinstance(p, list) for i in p)

    # -- responder (OpenMined "server") ---------------------------------

    def blinded_points(self, key: bytes, items: Sequence[str]) -> list[bytes]:
        """H(y)^k for every item, as compressed points, sorted (the slow step).

        Sorting hides the order of our items (which is the order of their
        plaintexts in the store) and makes the result independent of chunking.
        """

        def work(a: int, b: int) -> list[bytes]:
            server = openmined.server.CreateFromKey(key, True)
            part = server.CreateSetupMessage(0.5, 1, list(items[a:b]), openmined.DataStructure.RAW)
            return list(part.raw.encrypted_elements)

        return sorted(e for part in self._map(work, len(items)) for e in part)

    def setup(self, key: bytes, items: Sequence[str], fpr: float, max_requester_items: int) -> ServerSetup:
        """The responder's filter over H(y)^k for its items, for requester sets
        of up to ``max_requester_items`` at false-positive rate ``fpr`` (the
        expected number of false matches over the requester's whole set).
        GCS, Bloom filter or raw, whichever OpenMined's arithmetic can build
        correctly and is smallest (see :mod:`psi_share.crypto.filters`)."""
        return build_setup(self.blinded_points(key, items), fpr, max_requester_items)

    def process(self, key: bytes, request: Request, reveal: bool) -> Response:
        """Raise every blinded requester element to the responder's key."""
        if request.reveal_intersection != reveal:
            raise RemoteProtocolError(
                "request's reveal_intersection does not match the session's mode"
            )
        elements = request.encrypted_elements

        def work(a: int, b: int) -> list[bytes]:
            server = openmined.server.CreateFromKey(key, reveal)
            part = Request(reveal_intersection=reveal, encrypted_elements=elements[a:b])
            return list(_remote(lambda: server.ProcessRequest(part), "request").encrypted_elements)

        response = Response()
        parts = self._map(work, len(elements))
        joined = [e for part in parts for e in part]
        if not reveal:
            joined.sort()  # hide which request position each element came from
        response.encrypted_elements.extend(joined)
        return response


def intersect_span(key: bytes, setup: bytes, elements: list[bytes], reveal: bool, offset: int) -> list[int] | int:
    """OpenMined's client on one span of the response: the indices (shifted
    by ``offset``) of the span's matching elements, or their number. A plain
    function of bytes, so that it can run in a worker process."""
    client = openmined.client.CreateFromKey(key, reveal)
    parsed = ServerSetup.FromString(setup)
    part = Response(encrypted_elements=elements)
    if not reveal:
        return _remote(lambda: client.GetIntersectionSize(parsed, part), "response")
    return [offset + i for i in _remote(lambda: client.GetIntersection(parsed, part), "response")]


def _remote(fn: Callable[[], T], what: str) -> T:
    """Run an OpenMined step on peer data; its failures are the peer's fault."""
    try:
        return fn()
    except RuntimeError as exc:
        raise RemoteProtocolError(f"peer's {what} could not be processed: {exc}") from None


def check_key(key: bytes) -> None:
    """Raise LocalProtocolError unless ``key`` is a valid P-256 scalar."""
    value = int.from_bytes(key, "big")
    if len(key) != 32 or not 1 <= value < P256_ORDER:
        raise LocalProtocolError("PSI private key must be a 32-byte scalar in [1, order)")
