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

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar

import private_set_intersection.python as openmined
from private_set_intersection.python import Request, Response, ServerSetup

from ..errors import LocalProtocolError, RemoteProtocolError
from . import split_spans
from .filters import build_setup
from .isolation import run_in_processes, run_isolated, start_in_background

OPENMINED_PSI_VERSION: str = openmined.__version__

# Order of the NIST P-256 group: OpenMined keys are scalars in [1, order).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

# A blinded element is a compressed P-256 point: 0x02/0x03 prefix + 32 bytes.
POINT_BYTES = 33

# Below this many items a chunk is not worth a thread hand-off.
MIN_CHUNK_ITEMS = 2048

T = TypeVar("T")
#: What :meth:`OpenMinedEngine.stream_buckets` takes: items, or a loader returning them.
Chunk = Sequence[str] | Callable[[], Sequence[str]]


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


class Runner(Protocol):
    """Where an engine's tasks run: ``map(fn, calls)`` is ``[fn(*args) for
    args in calls]``, in order. ``fn`` is a module-level function of bytes,
    strings and ints (so that it can run in another process or on another
    machine); each call builds its own OpenMined objects."""

    workers: int

    def map(self, fn: Callable[..., T], calls: Sequence[tuple[Any, ...]], *, cpu_bound: bool = False) -> list[T]: ...


class LocalRunner:
    """Today's worker pool: OpenMined steps on the node's threads (OpenMined
    releases the GIL), Python-bound work (``cpu_bound``: building filters)
    in forkserver worker processes, or inline with one worker."""

    def __init__(self, executor: Executor | None = None, workers: int = 1) -> None:
        self._executor = executor
        self.workers = max(1, workers)

    def map(self, fn: Callable[..., T], calls: Sequence[tuple[Any, ...]], *, cpu_bound: bool = False) -> list[T]:
        if self.workers == 1 or len(calls) <= 1:
            return [fn(*args) for args in calls]
        if cpu_bound:
            return run_in_processes(fn, calls, workers=self.workers)
        if self._executor is None:
            return [fn(*args) for args in calls]
        futures = [self._executor.submit(fn, *args) for args in calls]
        return [f.result() for f in futures]


class OpenMinedEngine:
    """Runs OpenMined PSI steps chunk-parallel on a :class:`Runner`.

    ``executor`` is owned by the caller (the node shares one across sessions);
    with ``workers == 1`` or no executor everything runs on the calling thread.
    ``runner`` replaces both (the Dask engine, :mod:`psi_share.crypto.cluster`).
    With ``isolate`` (the default) the one step that hands a peer's filter to
    OpenMined, :meth:`intersect`, runs in worker processes instead.
    """

    def __init__(
        self, executor: Executor | None = None, workers: int = 1, *, isolate: bool = True, runner: Runner | None = None
    ) -> None:
        self.runner: Runner = runner or LocalRunner(executor, workers)
        self._isolate = isolate

    def _spans(self, n: int) -> list[tuple[int, int]]:
        return _spans(n, self.runner.workers)

    # -- requester (OpenMined "client") ---------------------------------

    def blind(self, key: bytes, items: Sequence[str], reveal: bool) -> Request:
        """H(x)^k for every item, in order: the requester's request."""
        if self._isolate:
            start_in_background()  # ready by the time the peer's filter arrives
        request = Request(reveal_intersection=reveal)
        request.encrypted_elements.extend(self.blind_points(key, items, reveal))
        return request

    def blind_points(self, key: bytes, items: Sequence[str], reveal: bool = True) -> list[bytes]:
        """H(x)^k for every item, in order (one batch of a streamed request)."""
        calls = [(key, list(items[a:b]), reveal) for a, b in self._spans(len(items))]
        return [e for part in self.runner.map(blind_span, calls) for e in part]

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
        calls = [(key, data, elements[a:b], reveal, a) for a, b in self._spans(len(elements))]
        if self._isolate:
            parts = run_isolated(intersect_span, calls, what="peer's filter")
        else:
            parts = self.runner.map(intersect_span, calls)
        if not reveal:
            return sum(p for p in parts if isinstance(p, int))
        return sorted(i for p in parts if isinstance(p, list) for i in p)

    def process_points(self, key: bytes, elements: Sequence[bytes], reveal: bool = True) -> list[bytes]:
        """Every point raised to ``key``, in order (OpenMined's server step, chunk-parallel)."""
        calls = [(key, list(elements[a:b]), reveal) for a, b in self._spans(len(elements))]
        return [e for part in self.runner.map(process_span, calls) for e in part]

    def unblind(self, key: bytes, elements: Sequence[bytes]) -> list[bytes]:
        """``H(x)^ab`` -> ``H(x)^b`` for the responder's points, in order:
        OpenMined's server step under ``key``'s inverse (what OpenMined's
        client does inside GetIntersection), so that a bucketed setup can be
        looked up in Python. Bad points are the peer's (RemoteProtocolError)."""
        if any(len(e) != POINT_BYTES or e[0] not in (2, 3) for e in elements):
            raise RemoteProtocolError("peer's response holds an element that is not a compressed P-256 point")
        inverse = pow(int.from_bytes(key, "big"), -1, P256_ORDER).to_bytes(32, "big")
        return self.process_points(inverse, elements)

    # -- responder (OpenMined "server") ---------------------------------

    def blinded_points(self, key: bytes, items: Sequence[str]) -> list[bytes]:
        """H(y)^k for every item, as compressed points, sorted (the slow step).

        Sorting hides the order of our items (which is the order of their
        plaintexts in the store) and makes the result independent of chunking.
        """
        calls = [(key, list(items[a:b])) for a, b in self._spans(len(items))]
        return sorted(e for part in self.runner.map(raw_points_span, calls) for e in part)

    def setup(self, key: bytes, items: Sequence[str], fpr: float, max_requester_items: int) -> ServerSetup:
        """The responder's filter over H(y)^k for its items, for requester sets
        of up to ``max_requester_items`` at false-positive rate ``fpr`` (the
        expected number of false matches over the requester's whole set).
        GCS, Bloom filter or raw, whichever OpenMined's arithmetic can build
        correctly and is smallest (see :mod:`psi_share.crypto.filters`)."""
        return build_setup(self.blinded_points(key, items), fpr, max_requester_items)

    def build_buckets(self, parts: Sequence[Sequence[bytes]], fpr: float, queries: int) -> list[bytes]:
        """The serialized setup of every bucket (``parts``: the points of each), in parallel."""
        from .buckets import build_bucket  # buckets builds on filters, as this module does

        calls = [(list(part), fpr, queries, len(parts)) for part in parts]
        return self.runner.map(build_bucket, calls, cpu_bound=True)

    def stream_buckets(
        self, key: bytes, chunks: Iterable[Chunk], fpr: float, queries: int, buckets: int
    ) -> tuple[list[int], list[bytes]]:
        """Blind a set that arrives in chunks and build its bucketed setup:
        ``(bucket sizes, serialized bucket setups)``. A chunk is a sequence
        of items or a loader: a picklable function of no arguments that
        returns them, called where the chunk is blinded (on a Dask worker,
        which then reads the items itself; here, in this process).

        Chunks may repeat items (of each other or of themselves): blinding
        under one key is deterministic, so a repeated item is a repeated
        point in the same bucket, and each bucket keeps its distinct points
        only. The sizes are distinct counts.

        A runner with its own ``stream_buckets`` (Dask) keeps the blinded
        points on its workers and hands back only the setups. Here they
        gather in this process, packed: 33 bytes a point (one ``bytearray``
        per bucket, no Python object per point), until every chunk is in;
        each bucket is then unpacked, deduplicated and built on its own
        (:func:`build_bucket_from_packed`, in worker processes)."""
        own = getattr(self.runner, "stream_buckets", None)
        if own is not None:
            return own(key, chunks, fpr, queries, buckets)  # type: ignore[no-any-return]
        from .buckets import partition

        packed = [bytearray() for _ in range(buckets)]
        for chunk in chunks:
            items = chunk() if callable(chunk) else chunk
            for index, part in enumerate(partition(self.blinded_points(key, items), buckets)):
                packed[index] += b"".join(part)
        calls = [(part, fpr, queries, buckets) for part in packed]
        results = self.runner.map(build_bucket_from_packed, calls, cpu_bound=True)
        return [size for size, _ in results], [setup for _, setup in results]

    def process(self, key: bytes, request: Request, reveal: bool) -> Response:
        """Raise every blinded requester element to the responder's key."""
        if request.reveal_intersection != reveal:
            raise RemoteProtocolError(
                "request's reveal_intersection does not match the session's mode"
            )
        joined = self.process_points(key, request.encrypted_elements, reveal)
        if not reveal:
            joined.sort()  # hide which request position each element came from
        response = Response()
        response.encrypted_elements.extend(joined)
        return response


def blind_span(key: bytes, items: list[str], reveal: bool) -> list[bytes]:
    """OpenMined's client request over ``items``: H(x)^key, in order."""
    client = openmined.client.CreateFromKey(key, reveal)
    return list(client.CreateRequest(items).encrypted_elements)


def load_and_blind(key: bytes, loader: Callable[[], Sequence[str]]) -> list[bytes]:
    """:func:`raw_points_span` over the items ``loader`` returns (run where the task runs)."""
    return raw_points_span(key, list(loader()))


def raw_points_span(key: bytes, items: list[str]) -> list[bytes]:
    """OpenMined's raw server setup over ``items``: H(y)^key, sorted."""
    server = openmined.server.CreateFromKey(key, True)
    part = server.CreateSetupMessage(0.5, 1, items, openmined.DataStructure.RAW)
    return list(part.raw.encrypted_elements)


def build_bucket_from_parts(parts: list[list[bytes]], fpr: float, queries: int, buckets: int) -> tuple[int, bytes]:
    """One bucket's ``(size, serialized setup)`` from its points of every
    chunk; a point found in several chunks (a repeated item) counts once."""
    from .buckets import build_bucket

    points = sorted({p for part in parts for p in part})
    return len(points), build_bucket(points, fpr, queries, buckets)


def build_bucket_from_packed(packed: bytes | bytearray, fpr: float, queries: int, buckets: int) -> tuple[int, bytes]:
    """One bucket's ``(size, serialized setup)`` from its points packed end
    to end (``POINT_BYTES`` each, repeats allowed, any order)."""
    from .buckets import build_bucket

    view = memoryview(packed)
    points = sorted({bytes(view[i : i + POINT_BYTES]) for i in range(0, len(view), POINT_BYTES)})
    return len(points), build_bucket(points, fpr, queries, buckets)


def process_span(key: bytes, elements: list[bytes], reveal: bool) -> list[bytes]:
    """OpenMined's server step: every point raised to ``key`` (order kept when ``reveal``)."""
    server = openmined.server.CreateFromKey(key, reveal)
    part = Request(reveal_intersection=reveal, encrypted_elements=elements)
    return list(_remote(lambda: server.ProcessRequest(part), "request").encrypted_elements)


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
