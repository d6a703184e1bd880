"""Cryptographic helpers: OpenMined PSI driven in parallel, P-256 blinding,
fast Paillier for the key owner, key generation."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def split_spans(n: int, parts: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into ``parts`` (at least one) contiguous
    ``(start, end)`` spans whose sizes differ by at most one."""
    parts = max(1, parts)
    step, extra = divmod(n, parts)
    spans, start = [], 0
    for i in range(parts):
        end = start + step + (1 if i < extra else 0)
        spans.append((start, end))
        start = end
    return spans


def prefetch(source: Iterable[T], depth: int) -> Iterator[T]:
    """``source``'s items, produced on a thread of their own up to ``depth``
    ahead of the consumer: so that blinding the next batch, or reading the
    next chunks off the wire, goes on while the current one is used.

    An exception in ``source`` is raised to the consumer at that point. A
    consumer that stops early (closes the generator, or fails) stops the
    producer too: it is never left blocked on a full queue.
    """
    items: queue.Queue[tuple[int, object]] = queue.Queue(max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        items.put((0, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            outcome: tuple[int, object] = (1, None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            outcome = (2, exc)
        while not stop.is_set():
            try:
                items.put(outcome, timeout=0.1)
                return
            except queue.Full:
                continue

    thread = threading.Thread(target=produce, name="psi-share-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = items.get()
            if kind == 0:
                yield value  # type: ignore[misc]
            elif kind == 1:
                return
            else:
                raise value  # type: ignore[misc]
    finally:
        stop.set()
