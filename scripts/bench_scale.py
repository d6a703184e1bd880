#!/usr/bin/env python3
"""Large responder sets: bucketed setups, local engine vs a Dask cluster, and
the unbalanced match (issue 15 items 3-5, "How we will know").

In one run, each measured step in a fresh process of its own (so that its
peak RSS is its own):

1. the responder's bucketed setup over N items with the local engine
   (``[matching] workers`` threads for blinding, processes for the buckets);
2. the same with a two-worker Dask cluster on this machine (127.0.0.1, one
   thread per worker, spilling off): the node process only streams chunks
   of items out and setups back; peak RSS of the node and of every worker;
3. the Dask node process's peak RSS at 1M items as well, to show it flat;
4. the 3k x N unbalanced match against step 2's setup: bytes each way, time
   on each side, the requester's peak RSS;
5. per-item core-seconds and a projection to 100M and 1B items on 16, 64
   and 256 cores;
6. with ``--million``: ``bench_psi.py --million`` (1M x 1M with the local
   engine beside the raw OpenMined baseline) in the same run.

Items are synthetic strings generated chunk by chunk (the store is not the
subject here). Usage: bench_scale.py [--items 10000000] [--million]
"""

from __future__ import annotations

import argparse
import functools
import queue as queues
import multiprocessing
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHUNK = 200_000
FPR = 1e-9
QUERIES = 3000


def items(n: int) -> Iterator[list[str]]:
    """The responder's items, chunk by chunk (the requester's shared ones are
    c0..c999): at most CHUNK, and at least 8 chunks so both workers blind."""
    chunk = max(2048, min(CHUNK, -(-n // 8)))
    for start in range(0, n, chunk):
        yield [f"psi-share/1/email/v1/c{i}@example.org" for i in range(start, min(n, start + chunk))]


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def _peak_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def build(engine_kind: str, n: int, address: str, out: str, target: int, result: "multiprocessing.Queue[dict]") -> None:
    """Child process: one responder setup; reports time and peak RSS."""
    from psi_share.crypto.buckets import bucket_count
    from psi_share.crypto.openmined import OpenMinedEngine
    from psi_share.protocols.psi import size_class
    from concurrent.futures import ThreadPoolExecutor

    runner = None
    if engine_kind == "dask":
        from psi_share.crypto.cluster import DaskRunner

        runner = DaskRunner(address)
    engine = OpenMinedEngine(ThreadPoolExecutor(2), 2, runner=runner)
    key = (1 + secrets.randbelow(2**255)).to_bytes(32, "big")
    queries = size_class(QUERIES, 1_000_000)
    buckets = bucket_count(FPR, queries, n, target)
    usage = functools.partial(resource.getrusage, resource.RUSAGE_SELF)
    before = runner._client.run(usage) if runner else {}
    cpu_before = _cpu(usage())
    started = time.perf_counter()
    sizes, setups = engine.stream_buckets(key, items(n), FPR, queries, buckets)
    seconds = time.perf_counter() - started
    # Core-seconds: this process's CPU (local: blinding threads) plus, with Dask,
    # the workers'. (Local bucket builders are forkserver children: not counted.)
    cpu = _cpu(usage()) - cpu_before
    workers_mib: list[float] = []
    if runner is not None:
        after = runner._client.run(usage)
        workers_mib = sorted(u.ru_maxrss / 1024 for u in after.values())
        cpu += sum(_cpu(after[w]) - _cpu(before[w]) for w in after)
        runner.close()
    if out:
        from psi_share.v1 import node_pb2 as pb

        message = pb.PsiBucketedSetup(protocol_version=1, setup_buckets_version=1, bucket_sizes=sizes, setups=setups)
        Path(out).write_bytes(message.SerializeToString())
        Path(out + ".key").write_bytes(key)
    result.put({"seconds": seconds, "cpu": cpu, "buckets": buckets, "setup_bytes": sum(len(s) for s in setups),
                "node_mib": _peak_mib(),
                "workers_mib": workers_mib, "queries": queries})


def requester(setup_file: str, n: int, result: "multiprocessing.Queue[dict]") -> None:
    """Child process: the requester's whole side of the 3k x N match (the
    responder's one online step, raising 3k points, is done here too with
    its key, and timed apart)."""
    from concurrent.futures import ThreadPoolExecutor

    from psi_share.crypto.openmined import OpenMinedEngine
    from psi_share.protocols.psi import Mode, PsiOpened, PsiRequester, PsiResponderSession

    engine = OpenMinedEngine(ThreadPoolExecutor(2), 2)
    ours = [f"psi-share/1/email/v1/c{i}@example.org" for i in range(1000)]
    ours += [f"psi-share/1/email/v1/q{i}@example.org" for i in range(QUERIES - 1000)]
    setup = Path(setup_file).read_bytes()
    key = Path(setup_file + ".key").read_bytes()
    from psi_share.v1 import node_pb2 as pb

    buckets = len(pb.PsiBucketedSetup.FromString(setup).bucket_sizes)
    laps: dict[str, float] = {}
    t = time.perf_counter()
    req = PsiRequester(ours, dataset="customers", kinds={"email": 1}, mode=Mode.REVEAL,
                       key=(1 + secrets.randbelow(2**255)).to_bytes(32, "big"), engine=engine)
    req.on_opened(PsiOpened(session_id="s", false_positive_rate=FPR, max_set_size=4096, responder_set_size=n,
                            setup_buckets_version=1, bucket_count=buckets))
    request = req.request()
    laps["requester blind"] = time.perf_counter() - t
    t = time.perf_counter()
    response = PsiResponderSession(req.open, key=key, max_set_size=4096, engine=engine).process(request)
    laps["responder process"] = time.perf_counter() - t
    t = time.perf_counter()
    req.on_response(response)
    outcome = req.on_setup(setup)
    laps["requester check + intersect"] = time.perf_counter() - t
    result.put({"laps": laps, "matched": outcome.count, "request_bytes": len(request),
                "response_bytes": len(response), "setup_bytes": len(setup), "requester_mib": _peak_mib()})


def run_child(target, *args) -> dict:  # type: ignore[no-untyped-def]
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    proc = context.Process(target=target, args=(*args, queue))
    proc.start()
    while True:
        try:
            out = queue.get(timeout=5)
            break
        except queues.Empty:
            if not proc.is_alive():
                raise SystemExit(f"{target.__name__} failed (exit code {proc.exitcode}); see above")
    proc.join()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10_000_000)
    parser.add_argument("--flat-at", type=int, default=1_000_000, help="the smaller size for the RSS comparison")
    parser.add_argument("--bucket-items", type=int, default=1 << 20, help="[matching] bucket_items")
    parser.add_argument("--million", action="store_true", help="also run bench_psi.py --million")
    args = parser.parse_args()
    from psi_share.crypto.cluster.loopback import LoopbackCluster

    print(f"load at start: {os.getloadavg()}; cores: {os.cpu_count()}")
    n = args.items
    with tempfile.TemporaryDirectory() as tmp, LoopbackCluster(Path(tmp) / "dask", workers=2) as cluster:
        local = run_child(build, "local", n, "", "", args.bucket_items)
        print(f"setup {n:,} items, local engine: {local['seconds']:.1f} s, {local['buckets']} buckets, "
              f"{local['setup_bytes']:,} bytes; node peak RSS {local['node_mib']:.0f} MiB")
        setup_file = str(Path(tmp) / "setup.bin")
        remote = run_child(build, "dask", n, cluster.address, setup_file, args.bucket_items)
        print(f"setup {n:,} items, Dask 2 workers: {remote['seconds']:.1f} s (ratio {remote['seconds'] / local['seconds']:.2f}); "
              f"node peak RSS {remote['node_mib']:.0f} MiB; workers {', '.join(f'{m:.0f}' for m in remote['workers_mib'])} MiB")
        if args.flat_at < n:
            small = run_child(build, "dask", args.flat_at, cluster.address, "", args.bucket_items)
            print(f"node peak RSS with Dask: {small['node_mib']:.0f} MiB at {args.flat_at:,}, {remote['node_mib']:.0f} MiB at {n:,}")
        match = run_child(requester, setup_file, n)
        print(f"3k x {n:,} match: {match['matched']} matched (1000 expected); "
              + ", ".join(f"{k} {v:.2f} s" for k, v in match["laps"].items()))
        print(f"  bytes: request {match['request_bytes']:,}, response {match['response_bytes']:,}, "
              f"setup {match['setup_bytes']:,} ({match['setup_bytes'] / n:.2f} per item); "
              f"requester peak RSS {match['requester_mib']:.0f} MiB")
    per_item = remote["cpu"] / n
    print(f"per-item core-seconds (Dask setup: node and workers' CPU time): {per_item * 1e6:.1f} us "
          f"(local: {local['cpu'] / n * 1e6:.1f} us without its bucket builders; wall x 2 cores: "
          f"{local['seconds'] * 2 / n * 1e6:.1f} us)")
    for total in (100_000_000, 1_000_000_000):
        print(f"  projection {total:,}: " + ", ".join(
            f"{cores} cores {total * per_item / cores / 60:.1f} min" for cores in (16, 64, 256)))
    if args.million:
        subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_psi.py"), "--million"], check=False)
    print(f"load at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
