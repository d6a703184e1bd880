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

and prints rows/s, the ratio register/import, and the process's peak RSS
after each step (``ru_maxrss``: it only grows, so a step that did not raise
it stayed under the previous peak).

Usage: python scripts/bench_parquet.py [--rows 1000000] [--batch-rows 65536]
"""

from __future__ import annotations

import argparse
import csv
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=65_536)
    args = parser.parse_args()
    ctx = CanonicalizationContext()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        data = rows(args.rows)
        pq.write_table(pa.table(data), d / "src.parquet", row_group_size=131_072)
        with (d / "src.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["actor_id", "kind", "value", "amount"])
            w.writerows(zip(data["actor"], data["kind"], data["value"], data["amount"]))
        del data
        print(f"{args.rows:,} rows: Parquet {(d / 'src.parquet').stat().st_size / 2**20:.1f} MiB, "
              f"CSV {(d / 'src.csv').stat().st_size / 2**20:.1f} MiB; peak RSS so far {peak_mib():.0f} MiB")

        csv_store = Store(d / "csv.sqlite3")
        t = time.perf_counter()
        import_data_file(csv_store, "d", d / "src.csv", ctx=ctx, mode=ImportMode.REPLACE, now=time.time())
        t_import = time.perf_counter() - t
        print(f"CSV import into SQLite:    {t_import:7.1f} s  {args.rows / t_import:9,.0f} rows/s  "
              f"peak RSS {peak_mib():.0f} MiB")

        pq_store = Store(d / "pq.sqlite3")
        mapping = ColumnMapping(actor="actor", value="value", kind_column="kind", amount="amount")
        t = time.perf_counter()
        register_parquet(pq_store, "d", str(d / "src.parquet"), mapping, ctx=ctx, now=time.time(),
                         batch_rows=args.batch_rows)
        t_register = time.perf_counter() - t
        print(f"Parquet registration:      {t_register:7.1f} s  {args.rows / t_register:9,.0f} rows/s  "
              f"peak RSS {peak_mib():.0f} MiB")
        print(f"ratio registration/import: {t_register / t_import:.2f} "
              f"(store file: SQLite {(d / 'csv.sqlite3').stat().st_size / 2**20:.0f} MiB vs "
              f"{(d / 'pq.sqlite3').stat().st_size / 2**20:.2f} MiB)")

        for label, store in (("SQLite", csv_store), ("Parquet", pq_store)):
            t = time.perf_counter()
            n = sum(len(b) for b in store.rows("d").batches(KINDS, batch_rows=args.batch_rows))
            dt = time.perf_counter() - t
            print(f"full read through the seam, {label:7s}: {dt:6.1f} s  {n / dt:9,.0f} rows/s  "
                  f"peak RSS {peak_mib():.0f} MiB")


if __name__ == "__main__":
    main()
