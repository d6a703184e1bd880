#!/usr/bin/env python3
"""Large responder sets through the node's own path: a Parquet dataset
registered in a real store, the node's setup preparation with the local
engine and on a Dask cluster, and the unbalanced match (issue 15, "How we
will know").

For every size N given (``--items 1000000 10000000``), in one run, each
measured step in a fresh process of its own (so that its peak RSS is its own):

1. N customers' emails written as a Parquet source (chunk by chunk; every
   tenth item held by a second actor too, so the rows are 1.1 N and the
   distinct items N) and registered as dataset ``customers`` in a real node
   home (``data register``'s code path);
2. the node's setup preparation, ``Responder.prepare`` as ``serve`` calls
   it (for the size class of a 3,000-item requester; ``serve`` starts with
   the largest, a pass over the rows that costs the same), with ``[engine]
   kind = "local"``: the rows streamed from the source, the bucketed filter
   built; the node process's peak RSS;
3. the same with ``kind = "dask"`` on a fresh two-worker cluster on this
   machine (127.0.0.1, one thread per worker, spilling off): the node
   process's peak RSS and every worker's;
4. the 3k x N unbalanced match against step 3's filter: bytes each way,
   time on each side, the requester's peak RSS;
then the node's peak RSS side by side across the sizes, per-item core-seconds
(largest size, Dask: node and workers' CPU) and the projection to 100M and
1B items on 16, 64 and 256 cores; with ``--million`` also ``bench_psi.py
--million``.

Usage: bench_scale.py [--items 1000000 10000000] [--bucket-items N] [--million]
Run it niced on a shared machine (the 10M source is about 110 MB of temporary disk).
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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WRITE_ROWS = 500_000
FPR = 1e-9
QUERIES = 3000
DATASET = "customers"


def _email(i: int) -> str:
    return f"c{i}@example.org"


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


_STATUS = Path("/proc/self/status")


def _vm_mib(field: str, status: str = "") -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak), in MiB, from ``status``
    (a /proc/self/status read elsewhere: a Dask worker's) or this process's."""
    for line in (status or _STATUS.read_text()).splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _peak_mib() -> float:
    """This process's peak RSS: ``VmHWM``, not ``ru_maxrss``. A child started
    by fork and exec (multiprocessing's spawn, ``Popen``: every step here and
    every Dask worker) keeps in its ``ru_maxrss`` the resident set of the
    parent it was forked from (Linux folds the old address space's peak in at
    exec), so ``ru_maxrss`` showed this script's own size for any child
    smaller than it; ``VmHWM`` is the child's own address space's."""
    return _vm_mib("VmHWM")


class RssSampler(threading.Thread):
    """The process's resident set every ``interval`` seconds while a step
    runs: when it grows (while the rows stream, or at the end when the
    buckets come back) says what grows."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MiB)
        self._halt = threading.Event()
        self._t0 = time.perf_counter()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.perf_counter() - self._t0, _vm_mib("VmRSS")))
            self._halt.wait(self.interval)

    def stop(self) -> dict[str, float]:
        """RSS at the start, at each quarter of the run and at its end, and
        the peak sample with when it came (fraction of the run)."""
        self._halt.set()
        self.join()
        self.samples.append((time.perf_counter() - self._t0, _vm_mib("VmRSS")))
        total = self.samples[-1][0] or 1.0
        at = {f"{q}%": next(m for t, m in self.samples if t >= total * q / 100) for q in (25, 50, 75)}
        peak_t, peak = max(self.samples, key=lambda s: s[1])
        return {"start": self.samples[0][1], **at, "end": self.samples[-1][1], "peak": peak,
                "peak_at": peak_t / total}


def write_source(path: Path, n: int) -> int:
    """N distinct emails as Parquet, every tenth held twice; returns the rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("actor", pa.string()), ("value", pa.string())])
    rows = 0
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, n, WRITE_ROWS):
            ids = range(start, min(n, start + WRITE_ROWS))
            actors = [f"a{i}" for i in ids] + [f"b{i}" for i in ids if i % 10 == 0]
            values = [_email(i) for i in ids] + [_email(i) for i in ids if i % 10 == 0]
            writer.write_table(pa.table({"actor": actors, "value": values}, schema=schema))
            rows += len(actors)
    return rows


def register(home: str, source: str, result: "multiprocessing.Queue[dict]") -> None:
    """Child process: ``data register`` of the source into the node's store."""
    from psi_share.identifiers import CanonicalizationContext
    from psi_share.store import Store
    from psi_share.store.registry import register_parquet
    from psi_share.store.sources import ColumnMapping

    store = Store(Path(home) / "store.sqlite3")
    started = time.perf_counter()
    register_parquet(store, DATASET, source, ColumnMapping(actor="actor", value="value", kind="email"),
                     ctx=CanonicalizationContext(), now=time.time())
    result.put({"seconds": time.perf_counter() - started, "rows": store.dataset(DATASET).identifiers,
                "mib": _peak_mib()})
    store.close()


def configure(home: Path, bucket_items: int, address: str) -> None:
    """The bench node's config: its bucket size, the engine, no Paillier pool."""
    path = home / "config.toml"
    text = path.read_text()
    for old, new in ((r"bucket_items = ", f"bucket_items = {bucket_items}  # "),
                     ('kind = "local"', f'kind = "{"dask" if address else "local"}"'),
                     ('scheduler = ""', f'scheduler = "{address}"'),
                     ("pool_size = ", "pool_size = 0  # ")):
        assert old in text, old
        text = text.replace(old, new, 1)
    path.write_text(text)


def node_setup(home: str, address: str, out: str, result: "multiprocessing.Queue[dict]") -> None:
    """Child process: the node's own setup preparation, as ``serve`` starts
    it; reports time, CPU, the filter and peak RSS (the node's, workers')."""
    from psi_share.node.node import Node

    node = Node.open(home)
    sampler = RssSampler()
    sampler.start()
    runner = node.engine.runner if address else None
    usage = functools.partial(resource.getrusage, resource.RUSAGE_SELF)
    before = runner._client.run(usage) if runner else {}  # type: ignore[attr-defined]
    cpu_before = _cpu(usage())
    started = time.perf_counter()
    # The pass a 3k-item requester's size class gets (any class's pass costs the same).
    prepared = node.responder.prepare(DATASET, queries=QUERIES).result()
    seconds = time.perf_counter() - started
    # Core-seconds: this process's CPU (local: blinding threads) plus, with Dask,
    # the workers'. (Local bucket builders are forkserver children: not counted.)
    cpu = _cpu(usage()) - cpu_before
    workers_mib: list[float] = []
    if runner is not None:
        after = runner._client.run(usage)  # type: ignore[attr-defined]
        # A bound method of the stdlib reaches a worker by reference (a function of this script would not).
        statuses = runner._client.run(_STATUS.read_text)  # type: ignore[attr-defined]
        workers_mib = sorted(_vm_mib("VmHWM", status) for status in statuses.values())
        cpu += sum(_cpu(after[w]) - _cpu(before[w]) for w in after)
    if out:
        Path(out).write_bytes(prepared.setup)
        Path(out + ".key").write_bytes(prepared.key)
    result.put({"seconds": seconds, "cpu": cpu, "buckets": prepared.bucket_count, "items": prepared.item_count,
                "queries": prepared.max_set_size, "setup_bytes": len(prepared.setup), "node_mib": _peak_mib(),
                "workers_mib": workers_mib, "kinds": sorted(set(prepared.bucket_kinds)), "steps": sampler.stop()})
    node.close()


def requester(setup_file: str, n: int, queries: int, result: "multiprocessing.Queue[dict]") -> None:
    """Child process: the requester's whole side of the 3k x N match (the
    responder's one online step, raising 3k points, is done here too with
    its key, and timed apart)."""
    from concurrent.futures import ThreadPoolExecutor

    from psi_share.crypto.openmined import OpenMinedEngine
    from psi_share.protocols.psi import Mode, PsiOpened, PsiRequester, PsiResponderSession

    engine = OpenMinedEngine(ThreadPoolExecutor(2), 2)
    from psi_share.identifiers import domain_separated_item

    ours = [domain_separated_item("email", _email(i)) for i in range(0, 1000 * (n // 1000), n // 1000)]
    ours += [domain_separated_item("email", f"q{i}@example.org") for i in range(QUERIES - 1000)]
    setup = Path(setup_file).read_bytes()
    key = Path(setup_file + ".key").read_bytes()
    from psi_share.v1 import node_pb2 as pb

    buckets = len(pb.PsiBucketedSetup.FromString(setup).bucket_sizes)
    laps: dict[str, float] = {}
    t = time.perf_counter()
    req = PsiRequester(ours, dataset="customers", kinds={"email": 1}, mode=Mode.REVEAL,
                       key=(1 + secrets.randbelow(2**255)).to_bytes(32, "big"), engine=engine)
    req.on_opened(PsiOpened(session_id="s", false_positive_rate=FPR, max_set_size=queries, responder_set_size=n,
                            setup_buckets_version=1, bucket_count=buckets))
    request = req.request()
    laps["requester blind"] = time.perf_counter() - t
    t = time.perf_counter()
    response = PsiResponderSession(req.open, key=key, max_set_size=queries, engine=engine).process(request)
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


def _steps(steps: dict[str, float]) -> str:
    return (", ".join(f"{k} {steps[k]:.0f}" for k in ("start", "25%", "50%", "75%", "end"))
            + f" MiB of the setup's run; largest sample {steps['peak']:.0f} MiB at {steps['peak_at']:.0%} of it")


def one_size(n: int, tmp: Path, bucket_items: int) -> dict:
    """Steps 1-4 for one size; prints as it goes."""
    from psi_share.crypto.cluster.loopback import LoopbackCluster
    from psi_share.node.home import init_home

    source = tmp / f"customers-{n}.parquet"
    started = time.perf_counter()
    rows = write_source(source, n)
    print(f"[{n:,}] Parquet source: {rows:,} rows ({n:,} distinct emails), {source.stat().st_size / 2**20:.0f} MiB, "
          f"written in {time.perf_counter() - started:.1f} s", flush=True)
    home = init_home(tmp / f"home-{n}", "lab-b", "127.0.0.1:0").path
    reg = run_child(register, str(home), str(source))
    print(f"[{n:,}] registered: {reg['rows']:,} identifiers in {reg['seconds']:.1f} s, peak RSS {reg['mib']:.0f} MiB",
          flush=True)
    configure(home, bucket_items, "")
    local = run_child(node_setup, str(home), "", "")
    assert local["items"] == n, local
    print(f"[{n:,}] node setup, local engine: {local['seconds']:.1f} s, {local['buckets']} buckets "
          f"({'/'.join(local['kinds'])}, built for {local['queries']:,} queries), {local['setup_bytes']:,} bytes; "
          f"node peak RSS {local['node_mib']:.0f} MiB", flush=True)
    print(f"[{n:,}]   node RSS, local: {_steps(local['steps'])}", flush=True)
    setup_file = str(tmp / f"setup-{n}.bin")
    with LoopbackCluster(tmp / f"dask-{n}", workers=2) as cluster:  # fresh: its workers' peaks are this size's
        configure(home, bucket_items, cluster.address)
        remote = run_child(node_setup, str(home), cluster.address, setup_file)
    assert remote["items"] == n, remote
    print(f"[{n:,}] node setup, Dask 2 workers: {remote['seconds']:.1f} s (ratio {remote['seconds'] / local['seconds']:.2f}); "
          f"node peak RSS {remote['node_mib']:.0f} MiB; workers {', '.join(f'{m:.0f}' for m in remote['workers_mib'])} MiB",
          flush=True)
    print(f"[{n:,}]   node RSS, Dask: {_steps(remote['steps'])}", flush=True)
    match = run_child(requester, setup_file, n, remote["queries"])
    print(f"[{n:,}] 3k x {n:,} match: {match['matched']} matched (1000 expected); "
          + ", ".join(f"{k} {v:.2f} s" for k, v in match["laps"].items()))
    print(f"[{n:,}]   bytes: request {match['request_bytes']:,}, response {match['response_bytes']:,}, "
          f"setup {match['setup_bytes']:,} ({match['setup_bytes'] / n:.2f} per item); "
          f"requester peak RSS {match['requester_mib']:.0f} MiB", flush=True)
    source.unlink()
    return {"local": local, "remote": remote, "match": match}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[1_000_000, 10_000_000], help="sizes, in order")
    parser.add_argument("--bucket-items", type=int, default=1 << 20, help="[matching] bucket_items")
    parser.add_argument("--million", action="store_true", help="also run bench_psi.py --million")
    args = parser.parse_args()
    print(f"load at start: {os.getloadavg()}; cores: {os.cpu_count()}", flush=True)
    runs: dict[int, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.items:
            runs[n] = one_size(n, Path(tmp), args.bucket_items)
    print("node peak RSS by size: " + "; ".join(
        f"{n:,}: local {r['local']['node_mib']:.0f} MiB, Dask {r['remote']['node_mib']:.0f} MiB "
        f"(workers {', '.join(f'{m:.0f}' for m in r['remote']['workers_mib'])} MiB)" for n, r in runs.items()))
    sizes = sorted(runs)
    if len(sizes) > 1:  # what grows per item, and where that leads
        low, high = sizes[0], sizes[-1]
        for engine in ("local", "remote"):
            slope = (runs[high][engine]["node_mib"] - runs[low][engine]["node_mib"]) * 2**20 / (high - low)
            workers = [(b - a) * 2**20 / (high - low) for a, b in zip(runs[low][engine]["workers_mib"],
                                                                      runs[high][engine]["workers_mib"])]
            print(f"{'Dask' if engine == 'remote' else 'local'}: node peak grows {slope:.1f} bytes per item from "
                  f"{low:,} to {high:,} (at 10M: {runs[low][engine]['node_mib'] + slope * (10_000_000 - low) / 2**20:.0f} MiB)"
                  + (f"; workers {', '.join(f'{w:.1f}' for w in workers)} bytes per item" if workers else ""))
    n = max(runs)
    local, remote = runs[n]["local"], runs[n]["remote"]
    per_item = remote["cpu"] / n
    print(f"per-item core-seconds at {n:,} (Dask setup: node and workers' CPU time): {per_item * 1e6:.1f} us "
          f"(local: {local['cpu'] / n * 1e6:.1f} us without its bucket builders; wall x 2 cores: "
          f"{local['seconds'] * 2 / n * 1e6:.1f} us)")
    for total in (100_000_000, 1_000_000_000):
        print(f"  projection {total:,}: " + ", ".join(
            f"{cores} cores {total * per_item / cores / 60:.1f} min" for cores in (16, 64, 256)))
    if args.million:
        subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_psi.py"), "--million", "--no-count"], check=False)
    print(f"load at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
