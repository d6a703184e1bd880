#!/usr/bin/env python3
"""Registering a Parquet source vs importing the same rows as CSV into SQLite.

Writes N rows (default 1,000,000: emails, IPv4 addresses and device ids of
N/3 actors, with amounts) once as Parquet (row groups of 128k rows) and once
as CSV, then, in fresh stores, times:

1. ``data import`` of the CSV (parse, canonicalize, write to SQLite);
2. ``data register`` of the Parquet file (stream, canonicalize, find repeats;
   no rows written);
3. one full read of each through the seam (``Store.rows(...).batches``): what
   preparing a set costs before any cryptography;

and prints rows/s, the ratio register/import, and each step's peak RSS
(every step runs in a fresh process, so the figure is its own).

Usage: python scripts/bench_parquet.py [--rows 1000000] [--batch-rows 65536]
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from psi_share.identifiers import CanonicalizationContext
from psi_share.store import ImportMode, Store, import_data_file
from psi_share.store.registry import register_parquet
from psi_share.store.sources import ColumnMapping

KINDS = ["email", "ipv4", "device_id"]


def rows(n: int) -> dict[str, list]:
    actors, kinds, values, amounts = [], [], [], []
    for i in range(n):
        kind = KINDS[i % 3]
        actors.append(f"acct-{i // 3:09d}")
        kinds.append(kind)
        values.append(
            f"User.{i}@Example.org" if kind == "email"
            else f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" if kind == "ipv4"
            else f"dev-{i:012x}"
        )
        amounts.append(i % 1000)
    return {"actor": actors, "kind": kinds, "value": values, "amount": amounts}


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_files(d: Path, n: int) -> str:
    data = rows(n)
    pq.write_table(pa.table(data), d / "src.parquet", row_group_size=131_072)
    with (d / "src.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["actor_id", "kind", "value", "amount"])
        w.writerows(zip(data["actor"], data["kind"], data["value"], data["amount"]))
    return (f"{n:,} rows: Parquet {(d / 'src.parquet').stat().st_size / 2**20:.1f} MiB, "
            f"CSV {(d / 'src.csv').stat().st_size / 2**20:.1f} MiB")


def step(name: str, d: Path, batch_rows: int) -> tuple[float, int, float]:
    """One measured step, run in a process of its own: (seconds, rows, peak RSS MiB)."""
    ctx = CanonicalizationContext()
    t = time.perf_counter()
    if name == "import":
        done = import_data_file(Store(d / "csv.sqlite3"), "d", d / "src.csv", ctx=ctx, mode=ImportMode.REPLACE,
                                now=time.time()).rows
    elif name == "register":
        mapping = ColumnMapping(actor="actor", value="value", kind_column="kind", amount="amount")
        done = register_parquet(Store(d / "pq.sqlite3"), "d", str(d / "src.parquet"), mapping, ctx=ctx,
                                now=time.time(), batch_rows=batch_rows).rows
    else:
        store = Store(d / ("csv.sqlite3" if name == "read-sqlite" else "pq.sqlite3"))
        done = sum(len(b) for b in store.rows("d").batches(KINDS, batch_rows=batch_rows))
    return time.perf_counter() - t, done, peak_mib()


LABELS = {
    "import": "CSV import into SQLite",
    "register": "Parquet registration",
    "read-sqlite": "full read through the seam, SQLite",
    "read-parquet": "full read through the seam, Parquet",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=65_536)
    args = parser.parse_args()
    # Each step in a fresh process: its peak RSS is its own, not the largest so far.
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp, spawn.Pool(1, maxtasksperchild=1) as pool:
        d = Path(tmp)
        print(pool.apply(write_files, (d, args.rows)))
        seconds = {}
        for name, label in LABELS.items():
            seconds[name], n, peak = pool.apply(step, (name, d, args.batch_rows))
            print(f"{label:37s} {seconds[name]:7.1f} s  {n / seconds[name]:9,.0f} rows/s  peak RSS {peak:5.0f} MiB")
        print(f"ratio registration/import: {seconds['register'] / seconds['import']:.2f}; store files: SQLite "
              f"{(d / 'csv.sqlite3').stat().st_size / 2**20:.0f} MiB, Parquet registration "
              f"{(d / 'pq.sqlite3').stat().st_size / 2**20:.2f} MiB")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
