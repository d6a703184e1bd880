#!/usr/bin/env python3
"""Benchmark: what the compliance audit log costs a PSI match.

In one process run, on the same sets, two real nodes over gRPC on 127.0.0.1
match three times, each time in fresh homes:

1. baseline: ``[audit] enabled = false``;
2. audit on (one fsync-ed append per message sent or received);
3. audit on with transcripts (the exact bytes sent are also written and fsync-ed).

The responder's filter is prepared before the clock starts, as at serve
start. Prints each match time and its ratio to the baseline, the number of
log entries, the time spent inside audit appends during the match (the
audit's own cost, which a loaded machine's noise does not blur), and the
cost of one append measured on its own.

Usage: python scripts/bench_audit.py [--n 100000] [--appends 2000]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from psi_share import Node, init_home
from psi_share.audit.log import AuditLog, load_entries
from psi_share.pki import init_ca, issue_node


def write_csv(path: Path, prefix: str, start: int, n: int) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["actor_id", "kind", "value"])
        w.writerows((f"{prefix}{i}", "device_id", f"dev-{i:09d}") for i in range(start, start + n))
    return path


def configure(home: Path, enabled: bool, transcripts: bool) -> None:
    text = (home / "config.toml").read_text()
    text = text.replace("\nenabled = true", f"\nenabled = {str(enabled).lower()}", 1)
    text = text.replace("\ntranscripts = false", f"\ntranscripts = {str(transcripts).lower()}", 1)
    (home / "config.toml").write_text(text)


def timed(log: AuditLog, spent: list[float]) -> None:
    """Add the time of every append of ``log`` to ``spent[0]``."""
    append = log.append

    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return append(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t

    log.append = wrapper  # type: ignore[method-assign]


def one_match(root: Path, n: int, enabled: bool, transcripts: bool) -> tuple[float, int, int, float]:
    nodes = {}
    ca = init_ca(root / "federation-ca", "bench CA")  # nodes talk mutual TLS, as in production
    for name, start in (("lab-a", 0), ("lab-b", n - n // 10)):
        tls = issue_node(ca, name, root / f"{name}-tls", addresses=["127.0.0.1"]).directory
        home = init_home(root / name, name, "127.0.0.1:0", tls_from=tls).path
        configure(home, enabled, transcripts)
        if name == "lab-b":  # policy: lab-b lets lab-a learn which items match (default: counts only)
            with (home / "config.toml").open("a") as fh:
                fh.write("\n[policy.peers.lab-a]\nreveal = true\n")
        node = Node.open(home)
        node.import_file("flagged", write_csv(root / f"{name}.csv", name, start, n), None)
        nodes[name] = node
    a, b = nodes["lab-a"], nodes["lab-b"]
    spent = [0.0]
    for node in (a, b):
        if node.audit is not None:
            timed(node.audit.log, spent)
    server = b.serve("127.0.0.1:0", prepare=False)
    try:
        b.responder.prepare("flagged").result()
        a.store.add_peer("lab-b", f"127.0.0.1:{server.port}", now=time.time())
        b.store.add_peer("lab-a", "127.0.0.1:1", now=time.time())
        t = time.perf_counter()
        outcome = a.match("lab-b", kinds=["device_id"])
        seconds = time.perf_counter() - t
    finally:
        server.stop(grace=1)
        a.close()
        b.close()
    entries = sum(len(load_entries(root / x / "audit")) for x in ("lab-a", "lab-b")) if enabled else 0
    return seconds, outcome.count, entries, spent[0]


def append_cost(directory: Path, appends: int) -> float:
    log = AuditLog(directory, node="bench", key=Ed25519PrivateKey.generate())  # checkpoints amortized, as on a node
    fields = {"peer": "lab-b", "protocol": "psi", "step": "request-chunk", "session": "ab" * 16, "job": "",
              "items": 0, "bytes": 1 << 20, "sha256": "00" * 32, "params": {"mode": "reveal", "false_positive_rate": 1e-9}}
    t = time.perf_counter()
    for _ in range(appends):
        log.append("sent", fields)
    seconds = time.perf_counter() - t
    log.close()
    return seconds / appends


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="items on each side (10%% overlap)")
    parser.add_argument("--appends", type=int, default=2000)
    args = parser.parse_args()
    results = {}
    for label, enabled, transcripts in (("baseline (audit off)", False, False), ("audit on", True, False),
                                        ("audit on + transcripts", True, True)):
        with tempfile.TemporaryDirectory(prefix="psi-bench-audit-") as tmp:
            results[label] = one_match(Path(tmp), args.n, enabled, transcripts)
        seconds, count, entries, spent = results[label]
        print(f"{label:26s} match {seconds:7.2f} s  ({count} matches, {entries} log entries on both nodes, "
              f"{spent:.3f} s inside audit appends)", flush=True)
    base = results["baseline (audit off)"][0]
    for label in ("audit on", "audit on + transcripts"):
        print(f"ratio {label} / baseline: {results[label][0] / base:.3f}")
    with tempfile.TemporaryDirectory(prefix="psi-bench-append-") as tmp:
        per = append_cost(Path(tmp), args.appends)
    print(f"one append (write + fsync), measured alone over {args.appends}: {per * 1e6:.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
