"""What a node precomputes for Paillier aggregates, and the key it holds.

Paillier keys and the randomness pool
-------------------------------------
When this node holds the values of an intersection-sum session it encrypts
under its own Paillier key (``[paillier] key_bits``). The key lives in memory
only, is replaced after ``key_lifetime_seconds`` (a restart also replaces
it), and comes with a pool of precomputed randomness ``h^a`` (see
:mod:`psi_share.crypto.paillier`) that a background thread fills while the
node is idle, up to ``pool_size`` values. Each pooled value encrypts one
value and is then deleted; when the pool runs dry, encryption computes fresh
randomness on the worker processes. A new key starts with an empty pool.

Prepared blinded sets
---------------------
Hashing a dataset's items to the curve and blinding them with our scalar is
half of the elliptic-curve work and does not depend on the peer, so it is
done once per (dataset, revision, kinds) and reused, under one scalar, for
every session (as matcher or value holder, as requester or responder) until
``[sessions] setup_lifetime_seconds`` pass; every import changes the
revision and so draws a new scalar. A peer that runs two sessions against
the same prepared set sees the same blinded points both times: it can tell
whether our set changed between them (and, as a matcher against our values,
which of our points carried over), but not what the items are. Ciphertexts
are never reused: every session encrypts the values afresh. Cardinality
uses them too: a requester its own kinds together under one scalar, a
responder its sets per kind, re-blinded under a fresh key for every session
before they leave the node.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from ...crypto import ec
from ...crypto.paillier import (
    SHORT_EXPONENT_BITS,
    PrivateKey,
    RandomnessPool,
    worker_encrypt,
    worker_randomness,
)
from ...errors import LocalProtocolError, Refused
from ...identifiers import domain_separated_item
from ...protocols.intersection_sum import BlindedSet, blind_own_items
from ...store import Store
from ..config import NodeConfig

log = logging.getLogger("psi_share.aggregates")

_EXPONENT_BYTES = SHORT_EXPONENT_BITS // 8
_PARALLEL_MIN = 512  # fewer values than this are encrypted inline
_FILL_BATCH = 512
_IDLE_SECONDS = 1.0  # the pool fills only after this long without session work


class _Busy:
    def __init__(self, ring: PaillierKeyring) -> None:
        self._ring = ring

    def __enter__(self) -> None:
        with self._ring._lock:
            self._ring._busy += 1

    def __exit__(self, *exc: object) -> None:
        with self._ring._lock:
            self._ring._busy -= 1
        self._ring.touch()


def _own_values(key: PrivateKey, blob: bytes) -> list[int]:
    """Integers from our own worker processes (trusted: not peer input, so
    not re-validated; peer ciphertexts always go through decode_ciphertexts)."""
    width = key.public.ciphertext_bytes
    return [int.from_bytes(blob[i : i + width], "big") for i in range(0, len(blob), width)]


@dataclass
class _KeyEntry:
    key: PrivateKey
    created: float
    pool: RandomnessPool


class PaillierKeyring:
    """This node's current Paillier key per size, its pool, and fast encryption."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        clock: Callable[[], float],
        random_bytes: Callable[[int], bytes],
        executor: Callable[[], Executor | None],
    ) -> None:
        self._config = config.paillier
        self._clock = clock
        self._random = random_bytes
        self._executor = executor
        self._lock = threading.Lock()
        self._keys: dict[int, _KeyEntry] = {}
        self._stop = threading.Event()
        self._filler: threading.Thread | None = None
        self._last_activity = 0.0
        self._busy = 0
        self.is_idle: Callable[[], bool] = lambda: True  # the node adds "no session open"

    def touch(self) -> None:
        """A session did work: the filler stays out of its way for a moment."""
        self._last_activity = self._clock()

    def busy(self) -> _Busy:
        """``with keyring.busy():`` around our own protocol runs (the filler pauses)."""
        return _Busy(self)

    def _idle(self) -> bool:
        return not self._busy and self.is_idle() and self._clock() - self._last_activity >= _IDLE_SECONDS

    def _entry(self, bits: int) -> _KeyEntry:
        now = self._clock()
        with self._lock:
            entry = self._keys.get(bits)
            if entry is not None and now - entry.created < self._config.key_lifetime_seconds:
                return entry
            if entry is not None:
                entry.pool.clear()
                log.info("Paillier %d-bit key reached its lifetime; drawing a new one", bits)
            key = PrivateKey.generate(bits, self._random)
            capacity = self._config.pool_size if bits == self._config.key_bits else 0
            entry = _KeyEntry(key, now, RandomnessPool(key, capacity))
            self._keys[bits] = entry
            log.info("new Paillier %d-bit key %s", bits, key.public.fingerprint())
            return entry

    def key(self, bits: int) -> PrivateKey:
        return self._entry(bits).key

    def pool_size(self, bits: int | None = None) -> int:
        with self._lock:
            entry = self._keys.get(bits or self._config.key_bits)
        return len(entry.pool) if entry else 0

    def encrypt(self, key: PrivateKey, values: Sequence[int]) -> list[int]:
        """Encrypt ``values`` under ``key``: pooled randomness first, then workers."""
        with self._lock:
            entry = next((e for e in self._keys.values() if e.key is key), None)
        pooled = entry.pool.take(len(values)) if entry else []
        out = key.encrypt_with(values[: len(pooled)], pooled)
        rest = list(values[len(pooled) :])
        if not rest:
            return out
        executor = self._executor() if len(rest) >= _PARALLEL_MIN else None
        if executor is None:
            return out + key.encrypt_with(rest, key.randomness(self._random(_EXPONENT_BYTES * len(rest))))
        n = key.public.n
        p, q, h = key.secret_ints()
        parts = 8
        step = -(-len(rest) // parts)
        futures = [
            executor.submit(worker_encrypt, n, p, q, h, rest[i : i + step], self._random(_EXPONENT_BYTES * len(rest[i : i + step])))
            for i in range(0, len(rest), step)
        ]
        for f in futures:
            out.extend(_own_values(key, f.result()))
        return out

    # -- the pool filler ----------------------------------------------------

    def start_filling(self) -> None:
        """Fill the default-size key's pool in the background (idempotent)."""
        if self._config.pool_size <= 0 or self._filler is not None:
            return
        self._filler = threading.Thread(target=self._fill_loop, name="paillier-pool", daemon=True)
        self._filler.start()

    def fill_now(self, target: int | None = None) -> int:
        """Fill the pool up to ``target`` (default: capacity) and return its size; for benchmarks and tests."""
        entry = self._entry(self._config.key_bits)
        goal = min(entry.pool.capacity, target if target is not None else entry.pool.capacity)
        while len(entry.pool) < goal and not self._stop.is_set():
            self._fill_batch(entry, min(_FILL_BATCH * 8, goal - len(entry.pool)))
        return len(entry.pool)

    def _fill_batch(self, entry: _KeyEntry, count: int) -> None:
        key = entry.key
        executor = self._executor() if count >= _PARALLEL_MIN else None
        if executor is None:
            entry.pool.add(key.randomness(self._random(_EXPONENT_BYTES * count)))
            return
        n = key.public.n
        p, q, h = key.secret_ints()
        half = -(-count // 2)
        futures = [
            executor.submit(worker_randomness, n, p, q, h, self._random(_EXPONENT_BYTES * c))
            for c in (half, count - half) if c
        ]
        for f in futures:
            entry.pool.add(_own_values(key, f.result()))

    def _fill_loop(self) -> None:
        started, reported = self._clock(), None
        try:
            while not self._stop.is_set():
                entry = self._entry(self._config.key_bits)
                missing = entry.pool.missing()
                if missing and not self._idle():
                    self._stop.wait(0.2)  # idle time only: sessions come first
                    continue
                if not missing:
                    if reported is not entry:
                        log.info("Paillier randomness pool full: %d values in %.2fs", len(entry.pool), self._clock() - started)
                        reported = entry
                    self._stop.wait(1.0)
                    started = self._clock()
                    continue
                self._fill_batch(entry, min(_FILL_BATCH * 4, missing))
        except Exception:  # noqa: BLE001 - a dead filler only costs speed
            if not self._stop.is_set():
                log.exception("Paillier randomness pool filler stopped")

    def close(self) -> None:
        self._stop.set()
        if self._filler is not None:
            self._filler.join(timeout=30)
        with self._lock:
            for entry in self._keys.values():
                entry.pool.clear()
            self._keys.clear()


@dataclass(frozen=True)
class PreparedItems:
    """One (dataset, revision, kind): items blinded under our scalar, and
    each item's value (None when some row of the item has no amount)."""

    blinded: BlindedSet
    values: tuple[int | None, ...]

    def require_values(self, dataset: str, kind: str) -> tuple[int, ...]:
        missing = sum(v is None for v in self.values)
        if missing:
            raise Refused(
                "FAILED_PRECONDITION",
                f"dataset {dataset!r} has {missing} {kind} identifier(s) without an amount; "
                "import them with an amount column to hold the values of an intersection-sum",
            )
        return tuple(v for v in self.values if v is not None)


class PreparedSums:
    """Blinded sets per (dataset, revision, kinds), built once and reused."""

    def __init__(
        self, *, store: Store, engine: ec.EcEngine, executor: Executor, clock: Callable[[], float],
        random_bytes: Callable[[int], bytes], lifetime: float,
    ) -> None:
        self._store = store
        self._engine = engine
        self._executor = executor
        self._clock = clock
        self._random = random_bytes
        self._lifetime = lifetime
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int, str], tuple[float, Future[PreparedItems]]] = {}

    def submit(self, fn: Callable[[], None]) -> Future[None]:
        """Run ``fn`` on the preparation threads (errors resurface where its result is used)."""
        return self._executor.submit(fn)

    def prepare_valued(self, datasets: Sequence[str]) -> list[Future[PreparedItems]]:
        """At serve start: blind every kind that carries amounts in ``datasets``."""
        futures = []
        for dataset in datasets:
            try:
                kinds = self._store.amount_kinds(dataset)
            except LookupError:
                continue
            futures.extend(self.get(dataset, kind) for kind in kinds)
        return futures

    def get(self, dataset: str, kind: str | tuple[str, ...]) -> Future[PreparedItems]:
        """The prepared set of one kind (intersection-sum) or of several
        together under one scalar (cardinality: ``kind`` a tuple)."""
        kinds = (kind,) if isinstance(kind, str) else tuple(sorted(set(kind)))
        revision = self._store.dataset(dataset).revision
        key = (dataset, revision, kinds)
        now = self._clock()
        with self._lock:
            for k in [k for k in self._entries if k[0] == dataset and k[1] != revision]:
                del self._entries[k]
            found = self._entries.get(key)
            if found and now - found[0] < self._lifetime:
                return found[1]
            scalar = ec.new_scalar(self._random)
            future = self._executor.submit(self._build, dataset, kinds, scalar)
            self._entries[key] = (now, future)
            return future

    def _build(self, dataset: str, kinds: tuple[str, ...], scalar: int) -> PreparedItems:
        items, values = item_values(self._store, dataset, kinds)
        started = self._clock()
        blinded = blind_own_items(self._engine, scalar, items)
        log.info("prepared %d blinded %s items of dataset %s in %.2fs", len(items), ",".join(kinds), dataset,
                 self._clock() - started)
        return PreparedItems(blinded, values)


def item_values(store: Store, dataset: str, kinds: tuple[str, ...]) -> tuple[list[str], tuple[int | None, ...]]:
    """Distinct items of ``kinds``, and each item's value: the total of the
    amounts of the rows that share it (None if any of them has none)."""
    totals: dict[str, int | None] = {}
    for row in store.identifiers(dataset, list(kinds)):
        item = domain_separated_item(row.kind, row.canonical, row.version)
        if item in totals:
            prev = totals[item]
            totals[item] = None if prev is None or row.amount is None else prev + row.amount
        else:
            totals[item] = row.amount
    items = sorted(totals)
    if len(items) and max((v or 0) for v in totals.values()) > 2**63 - 1:
        raise LocalProtocolError(f"an item of dataset {dataset} totals more than 2^63 - 1 over its rows")
    return items, tuple(totals[i] for i in items)


def default_random_bytes(n: int) -> bytes:
    return secrets.token_bytes(n)
