"""A responder's blinded items and the filters built from them.

One :class:`SetupEntry` holds a set blinded under one OpenMined key (the
slow step, one EC exponentiation per item) and the filters built from it,
one per size class of requester sets. The responder keeps one per dataset
revision and kinds; canary sessions (``peers check``) keep their own over
synthetic items. Neither the key nor the points leave the node: only a
filter does, and only once it has passed its own check
(:func:`psi_share.protocols.psi.filter_for`).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

from ...protocols.psi import BlindedSet, PreparedSetup, RemoteBlindedSet


@dataclass
class SetupEntry:
    """Items blinded under ``key``, and the filters built from them, one per size class."""

    key: bytes
    future: Future[BlindedSet | RemoteBlindedSet]  # remote: the points stay on a cluster engine
    created: float
    item_count: int  # announced to requesters; their filter must hold exactly this many
    filters: dict[tuple[int, int], PreparedSetup] = field(default_factory=dict)  # (queries, buckets)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def usable(self, now: float, lifetime: float) -> bool:
        failed = self.future.done() and (self.future.cancelled() or self.future.exception() is not None)
        return not failed and now - self.created < lifetime
