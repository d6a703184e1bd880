#!/usr/bin/env python3
"""Benchmark of prompt matching: signatures per second, preparation, and the banding table.

Measures, in one process run, on synthetic prompts (campaign and benign
templates with fresh fillings, ``psi_share.prompts.synthetic.bulk_texts``):

* normalise + shingle + MinHash + band for N prompts (default 100,000) on
  one process, and with ``--workers K`` on K processes as well;
* preparation (per-actor LSH deduplication; 5 prompts per actor) of those prompts, and how many
  distinct band items two such labs would put into a PSI session;
* the plaintext intersection of two labs' band item sets (a lower bound
  that any private matching adds its cryptography to).

The node-to-node prompt match (two nodes over gRPC, beside an exact
identifier match of the same number of items) needs the node hooks that
are not wired yet; this script says so instead of printing a number.

``--table`` prints the banding table of the README (match probability at
the threshold and 0.1, 0.2 either side, from 1 - (1 - s^r)^b).

Usage: python scripts/bench_prompts.py [--prompts 100000] [--workers 2] [--table]
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor

from psi_share.prompts import (
    RECOMMENDED,
    PromptParams,
    PromptRecord,
    SignatureEngine,
    prepare_prompts,
)
from psi_share.prompts.params import banding_rows
from psi_share.prompts.synthetic import bulk_texts

SEED = bytes.fromhex("5e" * 32)


def table() -> None:
    rows = banding_rows()
    print("| threshold | bands x rows | MinHash values | P(match) at t-0.2 | t-0.1 | t | P(miss) at t+0.1 | t+0.2 |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        b, r = int(row["bands"]), int(row["rows"])
        print(f"| {row['threshold']} | {b} x {r} | {b * r} | {row['-0.2']:.3f} | {row['-0.1']:.3f} | "
              f"{row['+0.0']:.3f} | {1 - row['+0.1']:.3f} | {1 - row['+0.2']:.4f} |")


_ENGINE: SignatureEngine | None = None


def _band_chunk(texts: list[str]) -> int:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = SignatureEngine(PromptParams(SEED, *RECOMMENDED[0.5]))
    return sum(len(_ENGINE.items(t)) for t in texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=0, help="also time banding on this many processes")
    parser.add_argument("--table", action="store_true", help="only print the README's banding table")
    args = parser.parse_args()
    if args.table:
        table()
        return
    n = args.prompts
    params = PromptParams(SEED, *RECOMMENDED[0.5])
    engine = SignatureEngine(params)
    print(f"parameters: threshold 0.5, {params.bands} bands x {params.rows} rows, "
          f"{params.num_perm} MinHash values, {params.shingle_words}-word shingles; load average {os.getloadavg()[0]:.1f}")
    started = time.perf_counter()
    lab_a, lab_b = bulk_texts(n, seed=1), bulk_texts(n, seed=2)
    mean_chars = sum(map(len, lab_a)) / n
    print(f"generated 2 x {n} prompts (mean {mean_chars:.0f} characters) in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    banded = [engine.band(t) for t in lab_a]
    elapsed = time.perf_counter() - started
    print(f"1 process: {n} prompts normalised, signed and banded in {elapsed:.1f} s = {n / elapsed:,.0f} signatures/s")
    if args.workers > 1:
        chunks = [lab_a[i:i + 2000] for i in range(0, n, 2000)]
        started = time.perf_counter()
        with ProcessPoolExecutor(args.workers) as pool:
            items = sum(pool.map(_band_chunk, chunks))
        elapsed = time.perf_counter() - started
        print(f"{args.workers} processes: {n} prompts ({items} items) in {elapsed:.1f} s = "
              f"{n / elapsed:,.0f} signatures/s (process start-up included)")
    del banded

    prepared = {}
    for name, texts in (("lab-a", lab_a), ("lab-b", lab_b)):
        records = [PromptRecord(i + 1, f"actor-{i % (n // 5 or 1)}", t) for i, t in enumerate(texts)]
        started = time.perf_counter()
        prepared[name] = prepare_prompts(records, engine)
        elapsed = time.perf_counter() - started
        report = prepared[name].report
        print(f"{name}: prepared {n} prompts of {report.actors} actors in {elapsed:.1f} s: "
              f"{report.clusters} clusters kept, {report.distinct_items} distinct band items")
    a_items, b_items = set(prepared["lab-a"].actors_by_item()), set(prepared["lab-b"].actors_by_item())
    started = time.perf_counter()
    common = a_items & b_items
    print(f"plaintext intersection of {len(a_items)} x {len(b_items)} band items: {len(common)} in common, "
          f"{time.perf_counter() - started:.2f} s (no cryptography: a lower bound)")
    print("node-to-node prompt match and the exact-identifier match beside it: not measured here; "
          "they need the node hooks (prompt kind, prompt import) that are not wired yet")


if __name__ == "__main__":
    main()
