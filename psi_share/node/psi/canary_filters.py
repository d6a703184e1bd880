"""The responder's side of canary sessions: synthetic sets shaped like the real ones.

A canary (:mod:`psi_share.protocols.canary`) must fail exactly when a real
session would, so it is answered by the same code as a real session: the
synthetic set is blinded like a real one, and its filter is built by the
responder's own ``_filter`` for the same size class as a real session with
the same announced set size would get. For ``_canary.<dataset>`` the
synthetic set is as large as the real set of that dataset and kinds; that
item count is the only thing taken from real data (a real session's
``PsiOpened.responder_set_size`` announces it too). No real item, point or
key goes into a canary set, and each has a fresh key of its own.

Budgets and abuse: a canary passes the same policy check as a real session
(the dataset must be granted to the peer, kinds and versions must agree,
reveal and OpenMined's count mode need their grant, set-size limits hold)
and the same open-session quotas, but it is **not** charged to the peer's
daily budget of sessions and items: a ``peers check`` must never use up
what the peer's real jobs need. Instead a peer may open at most
:data:`CANARY_SESSIONS_PER_HOUR` canaries per hour here (counted in
memory), which also bounds how often it can read the real set's size this
way. Canary sets are cached by size (at most :data:`CACHED_SETS`, each for
the setup lifetime), so that repeating a check costs the responder little.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from concurrent.futures import Executor

from ...crypto.openmined import OpenMinedEngine, new_private_key
from ...errors import Refused
from ...protocols.canary import held_items
from ...protocols.psi import BlindedSet, blind_set
from .setups import SetupEntry

CANARY_SESSIONS_PER_HOUR = 60
CACHED_SETS = 16
_HOUR = 3600.0


class CanaryFilters:
    """Canary sets (blinded, with their filters) and the per-peer canary rate, for one responder."""

    def __init__(
        self,
        *,
        node_name: str,
        engine: OpenMinedEngine,
        executor: Executor,
        random_bytes: Callable[[int], bytes],
        clock: Callable[[], float],
        lifetime: float,
        per_hour: int = CANARY_SESSIONS_PER_HOUR,
    ) -> None:
        self._node = node_name
        self._engine = engine
        self._executor = executor
        self._random_bytes = random_bytes
        self._clock = clock
        self._lifetime = lifetime
        self._per_hour = per_hour
        self._lock = threading.Lock()
        self._opened: dict[str, collections.deque[float]] = {}
        self._cache: collections.OrderedDict[int, SetupEntry] = collections.OrderedDict()  # items -> set

    def admit(self, peer: str) -> None:
        """Count one canary of ``peer``, or refuse it past the hourly limit
        (RESOURCE_EXHAUSTED). Called after the policy check, before any work."""
        now = self._clock()
        with self._lock:
            opened = self._opened.setdefault(peer, collections.deque())
            while opened and opened[0] <= now - _HOUR:
                opened.popleft()
            if len(opened) >= self._per_hour:
                raise Refused("RESOURCE_EXHAUSTED", f"{peer} has opened {len(opened)} canary sessions at "
                              f"{self._node} in the last hour, the most it may (canaries are not charged to "
                              "the daily budget; real sessions are unaffected); retry later")
            opened.append(now)

    def entry(self, count: int) -> SetupEntry:
        """The synthetic set of ``count`` held items, blinded under a key of its own (cached)."""
        now = self._clock()
        with self._lock:
            for k in [k for k, e in self._cache.items() if not e.usable(now, self._lifetime)]:
                del self._cache[k]
            cached = self._cache.get(count)
            if cached is not None:
                self._cache.move_to_end(count)
                return cached
            key = new_private_key(self._random_bytes)
            future = self._executor.submit(self._blind, key, count)
            entry = SetupEntry(key=key, future=future, created=now, known_count=count)
            self._cache[count] = entry
            while len(self._cache) > CACHED_SETS:
                self._cache.popitem(last=False)
            return entry

    def _blind(self, key: bytes, count: int) -> BlindedSet:
        return blind_set(self._engine, key, held_items(count))
