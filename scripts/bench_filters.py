#!/usr/bin/env python3
"""What checking a peer's filter and isolating OpenMined cost the requester.

1. The check (``crypto/filter_check.py``) on honest filters of each kind, at
   the sizes where the node picks that kind: the time per filter and per
   responder element.
2. OpenMined's intersection step on the calling thread vs in isolated worker
   processes (``crypto/isolation.py``: a fork-server pool per call), for
   requester sets of 1 to 100,000 items, with the node's two workers; and the
   fork server's cold start (paid once per process, overlapped with blinding).

Usage: python scripts/bench_filters.py [--largest 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from private_set_intersection.python import Response, ServerSetup

from psi_share.crypto import isolation
from psi_share.crypto.filter_check import SetupTerms, check_server_setup
from psi_share.crypto.filters import build_setup
from psi_share.crypto.openmined import OpenMinedEngine, new_private_key


def best(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_checks(engine: OpenMinedEngine, largest: int, repeat: int) -> None:
    print("filter check (requester side, before OpenMined):")
    key = new_private_key(secrets.token_bytes)
    cases = [(1e-9, 1024, largest), (1e-9, 2 * largest, largest), (1e-9, 1_000_000, largest // 10), (1e-9, 1024, 1000)]
    for fpr, queries, items in cases:
        points = engine.blinded_points(key, [f"bench-{i}" for i in range(items)])
        setup = build_setup(points, fpr, queries)
        terms = SetupTerms(fpr, queries, items)
        seconds = best(lambda: check_server_setup(setup, terms), repeat)
        print(f"  {setup.WhichOneof('data_structure'):>12} {items:>8} items, {queries:>8} queries, "
              f"{setup.ByteSize():>9} bytes: {seconds * 1000:8.1f} ms ({seconds / max(items, 1) * 1e6:.2f} us/item)")


def bench_isolation(largest: int, repeat: int) -> None:
    print("OpenMined intersection, calling thread vs isolated worker processes (2 workers):")
    t = time.perf_counter()
    isolation.warm_up()
    print(f"  fork server cold start (once per process): {time.perf_counter() - t:.2f}s")
    executor = ThreadPoolExecutor(2)
    inline, isolated = OpenMinedEngine(executor, 2, isolate=False), OpenMinedEngine(executor, 2, isolate=True)
    server_key, client_key = new_private_key(secrets.token_bytes), new_private_key(secrets.token_bytes)
    theirs = [f"item-{i}" for i in range(0, 2 * largest, 2)]
    setup = ServerSetup.FromString(build_setup(inline.blinded_points(server_key, theirs), 1e-9, 2 * largest).SerializeToString())
    for n in sorted({1, 1000, 10_000, largest}):
        ours = [f"item-{i}" for i in range(n)]
        response = Response.FromString(
            inline.process(server_key, inline.blind(client_key, ours, True), True).SerializeToString()
        )
        a = best(lambda: inline.intersect(client_key, setup, response, True), repeat)
        b = best(lambda: isolated.intersect(client_key, setup, response, True), repeat)
        print(f"  {n:>7} items ({setup.WhichOneof('data_structure')}): thread {a * 1000:9.1f} ms, "
              f"isolated {b * 1000:9.1f} ms, overhead {(b - a) * 1000:+8.1f} ms ({(b / a - 1) * 100:+.0f}%)")
    executor.shutdown()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--largest", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    engine = OpenMinedEngine(ThreadPoolExecutor(2), 2)
    bench_isolation(args.largest, args.repeat)
    bench_checks(engine, args.largest, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
