#!/usr/bin/env python3
"""The requester's memory in the unbalanced match: 3,000 items against a
bucketed setup of N responder items (issue 15).

For every size N given (``--items 1000000 3000000``), in one run:

1. a bucketed setup over N responder items is built in a child process with
   the real code (``partition``, ``OpenMinedEngine.build_buckets``,
   ``bucketed_setup``; B buckets as the node counts them from 1.1 N rows, at
   ``--bucket-items`` per bucket, for the size class of 3,000 queries). The
   1,000 items the requester shares with it are blinded for real under the
   responder's key; the others are random 33-byte strings (a GCS holds
   hashes of whatever it is given: the setup's size and shape, and so what
   the requester must read, are a real one's; ``--blind-all`` blinds all N,
   at ~60 µs per item and core);
2. the requester's whole side (blind 3,000 items, the responder's one online
   step, then the setup) in a fresh child process per way of reading it, so
   that each peak RSS is that way's own:

   * ``whole``: ``on_setup(setup)`` with the whole message in memory (what
     ``bench_scale.py`` runs; with ``--before DIR`` also run on the code in
     DIR, e.g. main's ``psi_share`` before this change, for the "before");
   * ``streamed``: the node's reveal path: request first, then the setup
     read from disk 1 MiB at a time (a chunk's payload) through
     ``on_streamed``: every bucket checked as it arrives, our points in it
     looked up, nothing of it kept;
   * ``setup-first``: ``take_setup`` (the setup checked before the request,
     every bucket kept as its compact membership test) then the stream.

   Each child prints its peak RSS (``ru_maxrss``), its RSS just before the
   setup step, and, in a second run under ``tracemalloc`` (which slows
   Python and adds its own memory, hence a run of its own), the peak of
   Python allocations during the setup step and what is still held after it
   (``kept``: per responder item, what grows with the responder's set).

Memory figures hold under load; times do not (they are printed with the
load average). Usage:

    nice .venv/bin/python scripts/bench_unbalanced.py --items 1000000 3000000 [--before /tmp/psi-main]

(``git archive main psi_share | tar -x -C /tmp/psi-main`` makes such a DIR.)
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import secrets
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench_scale import run_child  # a child process per measurement, its result through a queue

ROOT = Path(__file__).resolve().parent.parent
FPR = 1e-9
QUERIES = 3000
SHARED = 1000
CHUNK = 1 << 20  # a chunk's payload, as the node receives the setup


def _items(prefix: str, n: int) -> list[str]:
    from psi_share.identifiers import domain_separated_item

    return [domain_separated_item("email", f"{prefix}{i}@example.org") for i in range(n)]


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def build(n: int, bucket_items: int, blind_all: bool, out: str, result: "multiprocessing.Queue[dict]") -> None:
    """Child: the responder's bucketed setup over ``n`` items, written to ``out`` (and its key)."""
    sys.path.insert(0, str(ROOT))
    from psi_share.crypto import buckets as bk
    from psi_share.crypto.openmined import OpenMinedEngine, new_private_key
    from psi_share.protocols.psi import bucketed_setup, size_class

    engine = OpenMinedEngine(None, 2)
    key = new_private_key(secrets.token_bytes)
    queries = size_class(QUERIES, 1 << 20)
    buckets = max(2, bk.bucket_count(FPR, queries, int(1.1 * n), bucket_items))
    started = time.perf_counter()
    if blind_all:
        points = engine.blinded_points(key, _items("c", n))
    else:
        points = engine.blinded_points(key, _items("c", SHARED))
        noise = os.urandom(32 * (n - SHARED))
        points += [b"\x02" + noise[at : at + 32] for at in range(0, len(noise), 32)]
        del noise
        points.sort()
    parts = bk.partition(points, buckets)
    del points
    sizes = [len(p) for p in parts]
    prepared = bucketed_setup(key, sizes, engine.build_buckets(parts, FPR, queries), FPR, queries)
    Path(out).write_bytes(prepared.setup)
    Path(out + ".key").write_bytes(key)
    result.put({"buckets": buckets, "queries": queries, "bytes": len(prepared.setup), "items": prepared.item_count,
                "kinds": sorted(set(prepared.bucket_kinds)), "seconds": time.perf_counter() - started})


def requester(code: str, way: str, traced: bool, setup_file: str, n: int, queries: int, buckets: int,
              result: "multiprocessing.Queue[dict]") -> None:
    """Child: the requester's side of the 3k x n match, the setup read ``way``."""
    sys.path.insert(0, code)
    import psi_share

    if not Path(psi_share.__file__).resolve().is_relative_to(Path(code).resolve()):
        raise SystemExit(f"psi_share was imported from {psi_share.__file__}, not from {code}")
    from psi_share.crypto.openmined import OpenMinedEngine
    from psi_share.protocols.psi import Mode, PsiOpened, PsiRequester, PsiResponderSession

    engine = OpenMinedEngine(None, 2)
    ours = _items("c", SHARED) + _items("q", QUERIES - SHARED)
    key = Path(setup_file + ".key").read_bytes()
    req = PsiRequester(ours, dataset="customers", kinds={"email": 1}, mode=Mode.REVEAL,
                       key=(1 + secrets.randbelow(2**255)).to_bytes(32, "big"), engine=engine)
    req.on_opened(PsiOpened(session_id="s", false_positive_rate=FPR, max_set_size=queries, responder_set_size=n,
                            setup_buckets_version=1, bucket_count=buckets))
    responder = PsiResponderSession(req.open, key=key, max_set_size=queries, engine=engine)

    def pieces():  # type: ignore[no-untyped-def]
        with open(setup_file, "rb") as source:
            while piece := source.read(CHUNK):
                yield piece

    def respond(exchange) -> None:  # type: ignore[no-untyped-def]
        for piece in responder.process_stream(exchange.request_pieces()):
            exchange.feed(piece)

    rss_before = _rss_mib()
    if traced:
        tracemalloc.start()
    started = time.perf_counter()
    if way == "whole":
        req.on_response(responder.process(req.request()))
        outcome = req.on_setup(Path(setup_file).read_bytes())
        kept = 0
    elif way == "streamed":
        exchange = req.stream(32768)
        respond(exchange)
        outcome = req.on_streamed(exchange, pieces())
        kept = 0
    else:  # setup-first
        base = tracemalloc.get_traced_memory()[0] if traced else 0
        req.take_setup(Path(setup_file).read_bytes())
        kept = (tracemalloc.get_traced_memory()[0] - base) if traced else 0
        exchange = req.stream(32768)
        respond(exchange)
        outcome = req.on_streamed(exchange)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] if traced else 0
    if traced:
        tracemalloc.stop()
    result.put({"matched": outcome.count, "exact": outcome.matched == tuple(range(SHARED)), "seconds": seconds,
                "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mib": rss_before,
                "traced_peak": peak, "kept": kept})


def one_size(n: int, tmp: Path, args: argparse.Namespace) -> None:
    setup_file = str(tmp / f"setup-{n}.bin")
    built = run_child(build, n, args.bucket_items, args.blind_all, setup_file)
    print(f"[{n:,}] setup: {built['buckets']} buckets ({'/'.join(built['kinds'])}, {built['queries']} queries), "
          f"{built['bytes']:,} bytes ({built['bytes'] / n:.2f} per item), built in {built['seconds']:.1f} s", flush=True)
    runs = [("after", str(ROOT), way) for way in ("whole", "streamed", "setup-first")]
    if args.before:
        runs.insert(0, ("before", args.before, "whole"))
    for label, code, way in runs:
        plain = run_child(requester, code, way, False, setup_file, n, built["queries"], built["buckets"])
        traced = run_child(requester, code, way, True, setup_file, n, built["queries"], built["buckets"])
        assert plain["exact"] and traced["exact"], (label, way, plain["matched"])
        kept = f", kept after the check {traced['kept'] / 2**20:.1f} MiB ({traced['kept'] / n:.2f} bytes per responder item)" \
            if way == "setup-first" else ""
        print(f"[{n:,}] {label:6} {way:11}: {plain['matched']} matched (exactly the shared items); "
              f"peak RSS {plain['peak_mib']:.0f} MiB (RSS before the setup step {plain['rss_before_mib']:.0f} MiB); "
              f"Python allocations' peak in the setup step {traced['traced_peak'] / 2**20:.1f} MiB "
              f"({traced['traced_peak'] / n:.2f} bytes per responder item){kept}; "
              f"{plain['seconds']:.2f} s (load {os.getloadavg()[0]:.1f})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[1_000_000, 3_000_000])
    parser.add_argument("--bucket-items", type=int, default=1 << 20)
    parser.add_argument("--blind-all", action="store_true", help="blind all N items (slow) instead of 1,000")
    parser.add_argument("--before", help="a directory holding another psi_share (e.g. main's) for the 'before' run")
    args = parser.parse_args()
    if args.before and not (Path(args.before) / "psi_share").is_dir():
        parser.error(f"--before: {args.before} holds no psi_share package")
    print(f"3,000 requester items ({SHARED:,} shared) against bucketed setups; load {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-unbalanced-") as tmp:
        for n in args.items:
            one_size(n, Path(tmp), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
