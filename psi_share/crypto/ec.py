"""Commutative blinding on P-256 for the intersection-sum protocol.

Hash to curve
-------------
``hash_to_x`` is the try-and-increment construction the references use
(OpenMined PSI and google/private-join-and-compute): for ``c = 0, 1, ...``
take ``x = SHA-256(DOMAIN || c || item)`` as an integer and accept the first
``x < p`` for which ``x^3 - 3x + b`` is a square mod p (about half of all
``x``). The point is ``(x, y)`` for either root ``y``; only ``x`` is ever
used (see below).

*Timing caveat*: the number of attempts depends on the item, so the time
spent hashing an item leaks a few bits about it to anyone who can time that
step precisely. Hashing happens only on the node that owns the items, before
anything is sent, and items are hashed in bulk; a peer only sees the total
time of a whole set. A constant-time map (RFC 9380 simplified SWU) removes
the leak and is the upgrade path; it would change every blinded value, so it
needs a new protocol version on both sides.

x-only blinding
---------------
A blinded value is the x-coordinate of ``k * P``. ``cryptography`` computes
it with ECDH (``exchange`` returns exactly that x). Because ``k * (-P) =
-(k * P)`` has the same x, the x of ``k2 * (k1 * P)`` does not depend on
which of the two points with a given x was lifted, so x-only blinding is
still commutative: ``x(k2 * x(k1 * H(v))) == x(k1 * x(k2 * H(v)))``.
Points travel as their 32-byte big-endian x; the receiver lifts each with
prefix 0x02, which :mod:`cryptography` accepts only when x is on the curve.
The identity has no affine x and cannot be encoded at all.

Performance
-----------
``cryptography`` holds the GIL during ``exchange`` (measured: two threads are
no faster than one), so large batches run in worker *processes*
(:class:`EcEngine`). Only plain ints (the scalar) and bytes (x values) cross
the process boundary; scalars are never logged.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor

import gmpy2
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import LocalProtocolError, RemoteProtocolError
from . import split_spans
from .lifeline import watch_parent

P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
P256_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
X_BYTES = 32
HASH_DOMAIN = b"psi-share/intersection-sum/v1/P-256/SHA-256/try-and-increment\x00"
_MAX_ATTEMPTS = 256  # each attempt fails with probability ~1/2: 2^-256 never happens
_CURVE = ec.SECP256R1()
# Below this many values a batch is not worth a process hand-off.
MIN_PARALLEL = 2048


def new_scalar(random_bytes: Callable[[int], bytes]) -> int:
    """A secret scalar in [1, order), by rejection from ``random_bytes``."""
    while True:
        k = int.from_bytes(random_bytes(32), "big")
        if 1 <= k < P256_ORDER:
            return k


def _is_x_on_curve(x: int) -> bool:
    rhs = (x * x * x - 3 * x + P256_B) % P256_P
    return rhs == 0 or gmpy2.legendre(rhs, P256_P) == 1


def hash_to_x(item: bytes) -> int:
    """The x of H(item) on P-256 (try-and-increment; see the module docstring)."""
    for counter in range(_MAX_ATTEMPTS):
        digest = hashlib.sha256(HASH_DOMAIN + counter.to_bytes(4, "big") + item).digest()
        x = int.from_bytes(digest, "big")
        if x < P256_P and _is_x_on_curve(x):
            return x
    raise LocalProtocolError("hash to curve found no point (cannot happen with SHA-256)")  # pragma: no cover


def check_x(value: bytes) -> None:
    """Raise RemoteProtocolError unless ``value`` is the 32-byte x of a P-256 point."""
    if len(value) != X_BYTES:
        raise RemoteProtocolError(f"a point must be {X_BYTES} bytes, got {len(value)}")
    x = int.from_bytes(value, "big")
    if x >= P256_P or not _is_x_on_curve(x):
        raise RemoteProtocolError("a received point is not on P-256")


def split_points(blob: bytes, count: int | None = None, *, check: bool = True) -> list[bytes]:
    """Cut concatenated 32-byte x values apart, checking every one is on the curve.

    ``check=False`` is only for points that go straight into :func:`blind_x_blob`
    (or :meth:`EcEngine.blind`): lifting each x there refuses a point that is
    not on the curve with the same RemoteProtocolError, in the worker processes,
    so the single-threaded check here would only be done twice.
    """
    if len(blob) % X_BYTES:
        raise RemoteProtocolError(f"point list of {len(blob)} bytes is not a multiple of {X_BYTES}")
    points = [blob[i : i + X_BYTES] for i in range(0, len(blob), X_BYTES)]
    if count is not None and len(points) != count:
        raise RemoteProtocolError(f"expected {count} points, got {len(points)}")
    if check:
        for p in points:
            check_x(p)
    return points


def _exchange(key: ec.EllipticCurvePrivateKey, x: bytes) -> bytes:
    try:
        point = ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, b"\x02" + x)
    except ValueError:
        raise RemoteProtocolError("a received point is not on P-256") from None
    return key.exchange(ec.ECDH(), point)


def blind_x_blob(scalar: int, blob: bytes) -> bytes:
    """x(k * P) for every 32-byte x in ``blob``; concatenated, same order."""
    if not 1 <= scalar < P256_ORDER:
        raise LocalProtocolError("blinding scalar out of range")
    if len(blob) % X_BYTES:
        raise RemoteProtocolError(f"point list of {len(blob)} bytes is not a multiple of {X_BYTES}")
    key = ec.derive_private_key(scalar, _CURVE)
    return b"".join(_exchange(key, blob[i : i + X_BYTES]) for i in range(0, len(blob), X_BYTES))


def hash_and_blind(scalar: int, items: Sequence[bytes]) -> bytes:
    """x(k * H(item)) for every item; concatenated 32-byte values, same order."""
    if not 1 <= scalar < P256_ORDER:
        raise LocalProtocolError("blinding scalar out of range")
    key = ec.derive_private_key(scalar, _CURVE)
    return b"".join(_exchange(key, hash_to_x(i).to_bytes(X_BYTES, "big")) for i in items)


def _ready() -> bool:
    """Runs in a fresh worker: importing this module loaded cryptography and gmpy2."""
    return True


class EcEngine:
    """Runs blinding batches on worker processes (``cryptography`` holds the GIL).

    ``workers`` processes are started on first use with the ``spawn`` method
    (never ``fork``: the node runs gRPC threads). Small batches run inline.
    """

    def __init__(self, workers: int = 2) -> None:
        self._workers = max(1, workers)
        self._pool: Executor | None = None

    def _executor(self) -> Executor:
        if self._pool is None:
            # Workers end themselves when the node dies, even by SIGKILL (lifeline).
            self._pool = ProcessPoolExecutor(self._workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=watch_parent, initargs=(os.getpid(),))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def warm_up(self) -> None:
        """Start the worker processes now (serve start) rather than on the first batch."""
        if self._workers > 1:
            pool = self._executor()
            for f in [pool.submit(_ready) for _ in range(self._workers)]:
                f.result()

    def executor(self) -> Executor | None:
        """The process pool (started on demand), or None with one worker."""
        return self._executor() if self._workers > 1 else None

    def _parts(self, n: int) -> list[tuple[int, int]]:
        return split_spans(n, min(self._workers * 4, n // MIN_PARALLEL))

    def hash_and_blind(self, scalar: int, items: Sequence[bytes]) -> list[bytes]:
        spans = self._parts(len(items))
        if len(spans) == 1 or self._workers == 1:
            blob = hash_and_blind(scalar, items)
        else:
            pool = self._executor()
            futures = [pool.submit(hash_and_blind, scalar, list(items[a:b])) for a, b in spans]
            blob = b"".join(f.result() for f in futures)
        return [blob[i : i + X_BYTES] for i in range(0, len(blob), X_BYTES)]

    def blind(self, scalar: int, points: Sequence[bytes]) -> list[bytes]:
        spans = self._parts(len(points))
        if len(spans) == 1 or self._workers == 1:
            blob = blind_x_blob(scalar, b"".join(points))
        else:
            pool = self._executor()
            futures = [pool.submit(blind_x_blob, scalar, b"".join(points[a:b])) for a, b in spans]
            blob = b"".join(f.result() for f in futures)
        return [blob[i : i + X_BYTES] for i in range(0, len(blob), X_BYTES)]
