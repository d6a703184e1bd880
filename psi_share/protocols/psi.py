"""Private set intersection (ECDH, OpenMined PSI) as two sans-IO state machines.

Who learns what
---------------
* The **requester** (OpenMined's client) learns which of its own items are in
  the responder's set (``reveal``), or only how many (``count``). It also
  learns roughly how large the responder's set is: the filter's size grows
  with it.
* The **responder** (OpenMined's server) learns the requester's set size and
  nothing else: it only ever sees the requester's items blinded by a key it
  does not know.

The exchange (each arrow is one message of the wire contract)::

    requester                                  responder
      PsiOpen(dataset, kinds, n, mode)  ----->  checks policy, picks a prepared setup
                                        <-----  PsiOpened(session, fpr, max n, m)
      Request = [H(x)^a]                ----->
                                        <-----  Response = [H(x)^ab]  (sorted if count)
                                        <-----  ServerSetup = GCS/Bloom/raw{H(y)^b}
      checks the filter against (fpr, max n, m), then
      matches: x with H(x)^b in the filter

The responder's filter is sized so that the expected number of false matches
over a whole requester set of up to ``max_set_size`` items is at most
``false_positive_rate`` (default 1e-9). It is a GCS, a Bloom filter or the raw
sorted points, whichever OpenMined 2.0.6's own arithmetic can build correctly
for the sizes and is smallest (:mod:`psi_share.crypto.filters`); the
requester checks it against the announced sizes before OpenMined reads it
(:mod:`psi_share.crypto.filter_check`). Both state machines move only along
the transitions in ``_REQUESTER_STEPS`` / ``_RESPONDER_STEPS``; anything else
is a :class:`LocalProtocolError` (our bug) or :class:`RemoteProtocolError`
(the peer's).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from private_set_intersection.python import Response, ServerSetup

from ..crypto.buckets import (
    MAX_BUCKETS, SETUP_BUCKETS_VERSION, BucketLookup, FilterLookup, PointLookup, membership, partition,
)
from ..crypto.filter_check import SetupTerms, check_server_setup
from ..crypto.filters import build_setup
from ..crypto.openmined import OPENMINED_PSI_VERSION, POINT_BYTES, OpenMinedEngine, check_key
from ..errors import LocalProtocolError, OutOfOrder, RemoteProtocolError, VersionMismatch
from ..v1 import node_pb2 as pb
from . import PROTOCOL_VERSION, ProtocolSpec, register_protocol
from .psi_buckets import bucketed_setup_bytes, keep_buckets, read_buckets
from .psi_stream import StreamedExchange, message_bytes, process_stream

SPEC = register_protocol(
    ProtocolSpec(
        name="psi",
        asks="which of my flagged actors do you also have? (or: how many?)",
        requester_learns="the matching items of its own set, or only their count; "
        "the approximate size of the responder's set",
        responder_learns="the requester's set size",
    )
)

DEFAULT_FALSE_POSITIVE_RATE = 1e-9
# Bytes of one blinded element inside a serialized Request/Response: a
# 33-byte point plus its field tag and length.
_ELEMENT_WIRE_BYTES = POINT_BYTES + 2
# Elements per batch of a streamed request or response: ~1 MB of points,
# small enough that the first batch is under way almost at once, large
# enough that each is split across the engine's workers.
STREAM_BATCH_ITEMS = 32768


class Mode(str, enum.Enum):
    REVEAL = "reveal"  # requester learns which items match
    COUNT = "count"  # requester learns only how many

    @property
    def reveal(self) -> bool:
        return self is Mode.REVEAL


@dataclass(frozen=True)
class PsiOpen:
    """Requester -> responder: what it wants to match, and its set size."""

    dataset: str
    kinds: Mapping[str, int]  # kind -> canonicalization version
    set_size: int
    mode: Mode
    job_id: str = ""
    protocol_version: int = PROTOCOL_VERSION
    # 1: the requester reads bucketed setups; 0 (foreign OpenMined clients): one setup.
    setup_buckets_version: int = 0
    # The prompt parameter set (psi_share.prompts.params.PromptParams.describe),
    # required when ``kinds`` include "prompt"; None otherwise.
    prompt_params: Mapping[str, object] | None = None

    def __post_init__(self) -> None:
        if self.protocol_version != PROTOCOL_VERSION:
            raise VersionMismatch(
                f"unsupported protocol version {self.protocol_version} "
                f"(this node speaks {PROTOCOL_VERSION})"
            )
        if not self.dataset:
            raise RemoteProtocolError("PsiOpen.dataset is empty")
        if not self.kinds:
            raise RemoteProtocolError("PsiOpen.kinds is empty")
        if self.set_size < 0:
            raise RemoteProtocolError("PsiOpen.set_size is negative")


@dataclass(frozen=True)
class PsiOpened:
    """Responder -> requester: the session and the filter's guarantee."""

    session_id: str
    false_positive_rate: float
    max_set_size: int
    openmined_psi_version: str = OPENMINED_PSI_VERSION
    session_ttl_seconds: int = 0
    protocol_version: int = PROTOCOL_VERSION
    # The responder's minimum result k: a requester following the protocol
    # releases a count below k only as "fewer than k" (see apply_minimum).
    min_result: int = 0
    # The responder's set size m: its filter must hold exactly this many
    # items (the requester learns m from any filter anyway).
    responder_set_size: int = 0
    # 1 and bucket_count >= 2: the setup is a PsiBucketedSetup (crypto.buckets).
    setup_buckets_version: int = 0
    bucket_count: int = 1


@dataclass(frozen=True)
class PsiOutcome:
    """What the requester learned.

    ``matched`` holds indices into the requester's item list (reveal mode)
    and is ``None`` in count mode; ``count`` is set in both.
    """

    count: int
    matched: tuple[int, ...] | None
    requester_set_size: int
    false_positive_rate: float


@dataclass(frozen=True)
class BlindedSet:
    """A responder's items blinded under its key: the sorted points H(y)^k.

    The slow step, shared by the filters of every size class. ``key`` is the
    responder's OpenMined private key; neither it nor the points leave the
    node (only a filter built from them does).
    """

    key: bytes = field(repr=False)
    points: tuple[bytes, ...] = field(repr=False)

    @property
    def item_count(self) -> int:
        return len(self.points)


@dataclass(frozen=True)
class PreparedSetup:
    """A responder's filter over one dataset's items, built before requests.

    ``key`` is the responder's OpenMined private key for this setup; it never
    leaves the node. ``setup`` is the serialized psi_proto.ServerSetup, of
    ``kind`` "gcs", "bloom_filter" or "raw".
    """

    key: bytes = field(repr=False)
    setup: bytes
    item_count: int
    false_positive_rate: float
    max_set_size: int
    kind: str = ""  # bucketed: "bucketed", with the kind of each bucket in ``bucket_kinds``
    bucket_count: int = 1
    bucket_kinds: tuple[str, ...] = ()


# Filters are built for a size class of requester sets, never for the exact
# size a peer announced: see size_class.
MIN_SIZE_CLASS = 1024


def size_class(set_size: int, max_set_size: int) -> int:
    """The number of queries a filter for a set of ``set_size`` items is built for.

    The announced size rounded up to a power of two (at least
    MIN_SIZE_CLASS), capped by our ``max_set_size``. A filter built for more
    queries than a request has still meets the false-positive guarantee, and
    sessions of one class share one filter: what a peer announces chooses
    among a few fixed filters and never shapes one for others.
    """
    return min(max_set_size, max(MIN_SIZE_CLASS, 1 << max(0, set_size - 1).bit_length()))


def _check_setup_terms(false_positive_rate: float, max_set_size: int) -> None:
    if not 0 < false_positive_rate < 1:
        raise LocalProtocolError("false_positive_rate must be in (0, 1)")
    if max_set_size < 1:
        raise LocalProtocolError("max_set_size must be at least 1")


def blind_set(engine: OpenMinedEngine, key: bytes, items: Sequence[str]) -> BlindedSet:
    """Blind the responder's items (the slow step, done once per dataset revision)."""
    check_key(key)
    return BlindedSet(key=key, points=tuple(engine.blinded_points(key, items)))


def filter_for(
    blinded: BlindedSet,
    *,
    false_positive_rate: float = DEFAULT_FALSE_POSITIVE_RATE,
    max_set_size: int,
    buckets: int = 1,
    engine: OpenMinedEngine | None = None,
) -> PreparedSetup:
    """The filter over ``blinded`` for requester sets of up to ``max_set_size``.

    Checked with the requester's own check before it is returned: a filter
    that cannot be built correctly is never served (``build_setup``). With
    ``buckets`` >= 2, a PsiBucketedSetup of that many buckets
    (:mod:`psi_share.crypto.buckets`), built in parallel on ``engine``.
    """
    _check_setup_terms(false_positive_rate, max_set_size)
    if buckets >= 2:
        return _bucketed_filter(blinded, false_positive_rate, max_set_size, buckets, engine or OpenMinedEngine())
    setup = build_setup(blinded.points, false_positive_rate, max_set_size)
    return PreparedSetup(
        key=blinded.key,
        setup=setup.SerializeToString(),
        item_count=blinded.item_count,
        false_positive_rate=false_positive_rate,
        max_set_size=max_set_size,
        kind=setup.WhichOneof("data_structure") or "",
    )


def _bucketed_filter(
    blinded: BlindedSet, fpr: float, max_set_size: int, buckets: int, engine: OpenMinedEngine
) -> PreparedSetup:
    if buckets > MAX_BUCKETS:
        raise LocalProtocolError(f"{buckets} buckets exceed the {MAX_BUCKETS} a requester accepts")
    parts = partition(blinded.points, buckets)
    sizes, setups = [len(p) for p in parts], engine.build_buckets(parts, fpr, max_set_size)
    return bucketed_setup(blinded.key, sizes, setups, fpr, max_set_size)


def bucketed_setup(key: bytes, sizes: Sequence[int], setups: Sequence[bytes], fpr: float, max_set_size: int) -> PreparedSetup:
    """The PsiBucketedSetup of built buckets (``sizes``: each bucket's
    distinct points; their sum is the set size announced to requesters)."""
    return PreparedSetup(
        key=key, setup=bucketed_setup_bytes(sizes, setups), item_count=sum(sizes),
        false_positive_rate=fpr, max_set_size=max_set_size, kind="bucketed", bucket_count=len(setups),
        bucket_kinds=tuple(ServerSetup.FromString(s).WhichOneof("data_structure") or "" for s in setups),
    )


def prepare_setup(
    engine: OpenMinedEngine,
    key: bytes,
    items: Sequence[str],
    *,
    false_positive_rate: float = DEFAULT_FALSE_POSITIVE_RATE,
    max_set_size: int,
) -> PreparedSetup:
    """Blind the responder's items and build the filter (both steps at once)."""
    check_key(key)
    _check_setup_terms(false_positive_rate, max_set_size)
    blinded = blind_set(engine, key, items)
    return filter_for(blinded, false_positive_rate=false_positive_rate, max_set_size=max_set_size)


class RequesterState(enum.Enum):
    NEW = "new"
    OPENED = "opened"
    REQUEST_SENT = "request-sent"
    RESPONSE_RECEIVED = "response-received"
    SETUP_TAKEN = "setup-taken"  # streamed: the filter first (psi_stream)
    STREAMING = "streaming"
    STREAMING_SETUP_LAST = "streaming-setup-last"  # streamed, a bucketed setup read after the response
    DONE = "done"


class ResponderState(enum.Enum):
    OPEN = "open"
    PROCESSED = "processed"
    CLOSED = "closed"


# Allowed transitions: (state, event) -> next state. Everything that moves a
# state machine is in these two tables.
_REQUESTER_STEPS = {
    (RequesterState.NEW, "opened"): RequesterState.OPENED,
    (RequesterState.OPENED, "request"): RequesterState.REQUEST_SENT,
    (RequesterState.REQUEST_SENT, "response"): RequesterState.RESPONSE_RECEIVED,
    (RequesterState.RESPONSE_RECEIVED, "setup"): RequesterState.DONE,
    (RequesterState.OPENED, "setup-first"): RequesterState.SETUP_TAKEN,
    (RequesterState.SETUP_TAKEN, "stream"): RequesterState.STREAMING,
    (RequesterState.STREAMING, "streamed"): RequesterState.DONE,
    (RequesterState.OPENED, "stream-setup-last"): RequesterState.STREAMING_SETUP_LAST,
    (RequesterState.STREAMING_SETUP_LAST, "streamed-setup-last"): RequesterState.DONE,
}
_RESPONDER_STEPS = {
    (ResponderState.OPEN, "setup"): ResponderState.OPEN,
    (ResponderState.OPEN, "process"): ResponderState.PROCESSED,
    (ResponderState.PROCESSED, "setup"): ResponderState.PROCESSED,
    (ResponderState.OPEN, "close"): ResponderState.CLOSED,
    (ResponderState.PROCESSED, "close"): ResponderState.CLOSED,
}


class PsiRequester:
    """Our side when we ask a peer which of our items it also holds.

    ``items`` must be distinct (the caller deduplicates); ``key`` is a fresh
    private key drawn by the caller for this session only.
    """

    def __init__(
        self,
        items: Sequence[str],
        *,
        dataset: str,
        kinds: Mapping[str, int],
        mode: Mode,
        key: bytes,
        engine: OpenMinedEngine,
        job_id: str = "",
        prompt_params: Mapping[str, object] | None = None,
    ) -> None:
        check_key(key)
        if len(set(items)) != len(items):
            raise LocalProtocolError("requester items must be distinct")
        self._items = items
        self._key = key
        self._engine = engine
        self._response: Response | None = None
        self._lookup: PointLookup | None = None
        self.state = RequesterState.NEW
        self.opened: PsiOpened | None = None
        self.open = PsiOpen(
            dataset=dataset, kinds=dict(kinds), set_size=len(items), mode=mode, job_id=job_id,
            setup_buckets_version=SETUP_BUCKETS_VERSION,
            prompt_params=prompt_params,
        )

    def _next(self, event: str) -> RequesterState:
        nxt = _REQUESTER_STEPS.get((self.state, event))
        if nxt is None:
            raise LocalProtocolError(f"requester cannot handle {event!r} in state {self.state.value}")
        return nxt

    def _step(self, event: str) -> None:
        self.state = self._next(event)

    def on_opened(self, opened: PsiOpened) -> None:
        """Accept the responder's answer to our PsiOpen, or refuse it.

        A refused answer leaves the requester in its initial state: it sends
        nothing after that.
        """
        nxt = self._next("opened")
        if opened.protocol_version != PROTOCOL_VERSION:
            raise VersionMismatch(f"peer answered with protocol version {opened.protocol_version}")
        if not opened.session_id:
            raise RemoteProtocolError("peer opened a session without an id")
        if opened.max_set_size < max(1, self.open.set_size):
            raise RemoteProtocolError(
                f"peer's filter covers {opened.max_set_size} items, we send {self.open.set_size}"
            )
        if opened.responder_set_size < 0:
            raise RemoteProtocolError(f"peer announced a set of {opened.responder_set_size} items")
        if not 0 < opened.false_positive_rate < 1 or math.isnan(opened.false_positive_rate):
            raise RemoteProtocolError(f"peer's false-positive rate {opened.false_positive_rate} is invalid")
        if opened.setup_buckets_version not in (0, SETUP_BUCKETS_VERSION):
            raise RemoteProtocolError(f"peer announced setup buckets version {opened.setup_buckets_version}")
        bucketed = opened.setup_buckets_version == SETUP_BUCKETS_VERSION
        if bucketed and not 2 <= opened.bucket_count <= MAX_BUCKETS:
            raise RemoteProtocolError(f"peer announced {opened.bucket_count} buckets (2 to {MAX_BUCKETS})")
        if not bucketed and opened.bucket_count > 1:
            raise RemoteProtocolError(f"peer announced {opened.bucket_count} buckets without a buckets version")
        self.opened = opened
        self.state = nxt

    def request(self) -> bytes:
        """The serialized psi_proto.Request: our items, blinded."""
        self._step("request")
        return self._engine.blind(self._key, self._items, self.open.mode.reveal).SerializeToString()

    def on_response(self, data: bytes) -> None:
        self._step("response")
        response = _parse(Response, data, "Response")
        if len(response.encrypted_elements) != self.open.set_size:
            raise RemoteProtocolError(
                f"peer's response has {len(response.encrypted_elements)} elements, "
                f"we sent {self.open.set_size}"
            )
        self._response = response

    @property
    def setup_last(self) -> bool:
        """Whether the setup is bucketed, and so read after the response
        (:meth:`stream` first, then :meth:`on_streamed` reads it bucket by
        bucket, keeping only our points); a single one is taken first."""
        assert self.opened is not None
        return self.opened.setup_buckets_version == SETUP_BUCKETS_VERSION

    # -- streamed (reveal mode): request and response overlap --

    def take_setup(self, data: bytes) -> None:
        """The responder's filter, before anything of ours is sent: checked
        exactly as :meth:`on_setup` checks it, kept as a membership test that
        :meth:`stream` looks our unblinded points up in, in Python (bucketed:
        8 bytes per item of a GCS bucket; :attr:`setup_last` keeps nothing)."""
        if not self.open.mode.reveal:
            raise LocalProtocolError("only reveal sessions are streamed")
        self._step("setup-first")
        if self.setup_last:
            self._lookup = FilterLookup(keep_buckets([data], self._terms(), self._buckets()).matching)
        else:
            setup = _parse(ServerSetup, data, "ServerSetup")
            self._lookup = FilterLookup(membership(setup, check_server_setup(setup, self._terms())))

    def stream(self, batch_items: int) -> StreamedExchange:
        """The exchange to drive: its request pieces out, the response's in
        (:class:`~psi_share.protocols.psi_stream.StreamedExchange`), after
        :meth:`take_setup`, or first thing for a bucketed setup."""
        if self.state is RequesterState.OPENED and self.setup_last and self.open.mode.reveal:
            self._step("stream-setup-last")
            self._lookup = BucketLookup(self._buckets())
        else:
            self._step("stream")
        assert self._lookup is not None
        return StreamedExchange(self._engine, self._key, self._items, self._lookup, batch_items)

    def on_streamed(self, exchange: StreamedExchange, setup: Iterable[bytes] | None = None) -> PsiOutcome:
        """What we learn once the whole response went through ``exchange``
        (and a setup read last arrived in ``setup``'s pieces)."""
        self._step("streamed" if setup is None else "streamed-setup-last")
        assert self.opened is not None and self._lookup is not None
        exchange.finish()
        if setup is not None:
            assert isinstance(self._lookup, BucketLookup)
            read_buckets(setup, self._terms(), self._buckets(), self._lookup.bucket_checked)
        found = self._lookup.found()
        self._lookup = None
        return PsiOutcome(len(found), found, self.open.set_size, self.opened.false_positive_rate)

    def _terms(self) -> SetupTerms:
        assert self.opened is not None
        return SetupTerms(
            false_positive_rate=self.opened.false_positive_rate,
            queries=self.opened.max_set_size,
            items=self.opened.responder_set_size,
        )

    def _buckets(self) -> int:
        return self.opened.bucket_count if self.opened else 1

    def on_setup(self, data: bytes) -> PsiOutcome:
        """Take the responder's filter, check it, and compute what we learn.

        The filter must be exactly what OpenMined builds for the announced
        sizes (``check_server_setup``); anything else is refused with a
        RemoteProtocolError before OpenMined reads it, and nothing is learned.
        """
        return self.on_setup_pieces([data])

    def on_setup_pieces(self, pieces: Iterable[bytes]) -> PsiOutcome:
        """:meth:`on_setup` on a filter that arrives in pieces: a bucketed
        one is read and checked bucket by bucket as they come, holding one
        bucket at a time; a single setup is joined first."""
        self._step("setup")
        assert self._response is not None and self.opened is not None
        if self.setup_last:
            return self._on_buckets(pieces)
        setup = _parse(ServerSetup, b"".join(pieces), "ServerSetup")
        checked = check_server_setup(setup, self._terms())
        reveal = self.open.mode.reveal
        if self.open.set_size == 0 or checked.elements == 0:
            found: list[int] | int = [] if reveal else 0  # nothing can match: no native call
        else:
            found = self._engine.intersect(self._key, setup, self._response, reveal)
        self._response = None
        if isinstance(found, int):
            return PsiOutcome(found, None, self.open.set_size, self.opened.false_positive_rate)
        return PsiOutcome(len(found), tuple(found), self.open.set_size, self.opened.false_positive_rate)

    def _on_buckets(self, pieces: Iterable[bytes]) -> PsiOutcome:
        """A bucketed setup: our items unblinded (to H(x)^b, by us), then
        every bucket checked as it arrives and our points in it looked up."""
        assert self._response is not None and self.opened is not None
        lookup = BucketLookup(self._buckets())
        if self.open.set_size:
            lookup.add(0, self._engine.unblind(self._key, list(self._response.encrypted_elements)))
        self._response = None
        read_buckets(pieces, self._terms(), self._buckets(), lookup.bucket_checked)
        found = lookup.found()
        fpr = self.opened.false_positive_rate
        if not self.open.mode.reveal:
            return PsiOutcome(len(found), None, self.open.set_size, fpr)
        return PsiOutcome(len(found), found, self.open.set_size, fpr)


def below_minimum(outcome: PsiOutcome, min_result: int) -> bool:
    """Whether the responder's minimum result withholds ``outcome``.

    In OpenMined PSI only the requester computes the result, so the
    responder cannot enforce this: a requester that follows the protocol
    (the honest-but-curious model) releases nothing but "fewer than k".
    """
    return min_result > 0 and outcome.count < min_result


class PsiResponderSession:
    """The responder's side of one session.

    ``key`` is the private key of the prepared filter this session answers
    from; the filter itself may still be building when the session opens
    (it is handed to :meth:`setup` when the requester asks for it).
    """

    def __init__(self, open_: PsiOpen, *, key: bytes, max_set_size: int, engine: OpenMinedEngine) -> None:
        check_key(key)
        if open_.set_size > max_set_size:
            raise RemoteProtocolError(
                f"set of {open_.set_size} items exceeds this node's limit of {max_set_size}"
            )
        self.open = open_
        self._key = key
        self._engine = engine
        self.state = ResponderState.OPEN

    def _step(self, event: str) -> None:
        nxt = _RESPONDER_STEPS.get((self.state, event))
        if nxt is None:
            raise OutOfOrder(f"{event!r} is out of order: session is {self.state.value}")
        self.state = nxt

    def max_request_bytes(self) -> int:
        """Upper bound on a well-formed serialized Request for this session."""
        return self.open.set_size * _ELEMENT_WIRE_BYTES + 16

    def setup(self, prepared: PreparedSetup) -> bytes:
        """The serialized ServerSetup the requester needs to finish."""
        if prepared.key != self._key:
            raise LocalProtocolError("prepared filter was built under another key than this session's")
        self._step("setup")
        return prepared.setup

    def response_bytes(self) -> int:
        """The length of the serialized Response to a well-formed request."""
        return message_bytes(self.open.set_size, request=False, reveal=False)

    def process(self, data: bytes) -> bytes:
        """Blind the requester's blinded items with our key (serialized Response)."""
        if len(data) > self.max_request_bytes():
            raise RemoteProtocolError("request is larger than the announced set size allows")
        return b"".join(self.process_stream([data]))

    def process_stream(self, pieces: Iterable[bytes], batch_items: int = STREAM_BATCH_ITEMS) -> Iterator[bytes]:
        """The serialized Response, a batch at a time, to a Request that
        arrives in ``pieces`` (:func:`~psi_share.protocols.psi_stream.process_stream`
        checks it as it reads). The step is taken when called: a second
        request in the session is out of order even before it is read."""
        self._step("process")
        return process_stream(self._engine, self._key, pieces, expected=self.open.set_size,
                              reveal=self.open.mode.reveal, batch_items=batch_items)

    def close(self) -> None:
        if self.state is not ResponderState.CLOSED:
            self._step("close")


def _parse(cls: type, data: bytes, name: str):  # type: ignore[no-untyped-def]
    message = cls()
    try:
        message.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise RemoteProtocolError(f"peer's {name} is not a valid psi_proto.{name}: {exc}") from None
    return message
