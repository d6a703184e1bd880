#!/usr/bin/env python3
"""Benchmark: intersection-sum, a straightforward baseline vs node-to-node over gRPC.

In one run, on the same data (requester: N identifiers; responder: N
identifiers with an amount each; 10% shared):

1. baseline, one thread: ``cryptography`` ECDH for every blinding
   (4N hash/blind operations) and ``phe`` encryption of every value, one
   after the other, homomorphic sum with ``phe``, one decryption;
2. psi-share node-to-node: the responder is a real ``psi-share serve``
   process on 127.0.0.1 holding the values; the requester is a node in this
   process calling it over gRPC. Timed twice:
   * "cold": responder's pool empty ([paillier] pool_size = 0), requester's
     own blinded set not prepared (its blinding is inside the timing);
   * "warm": responder's pool full (filled while idle) and both sides' own
     blinded sets prepared in idle time, as a long-running node has them.
   The responder always prepares its own blinded set at serve start
   (reported, not timed), as it prepares PSI filters.
3. the same node-to-node runs at --big x --big (no baseline).

Prints every time, the ratio baseline / node, and checks each result
against the plaintext count and sum.

Usage: python scripts/bench_sum.py [--n 10000] [--big 100000] [--no-baseline] [--no-big]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from phe import paillier as phe

from psi_share import Node, init_home
from psi_share.crypto import ec
from psi_share.identifiers import domain_separated_item

KIND = "device_id"


def make_data(n: int, seed: int) -> tuple[list[str], list[str], list[int], int, int]:
    rng = random.Random(seed)
    shared = n // 10
    req = [f"dev-{i:09d}" for i in range(n)]
    resp = [f"dev-{i:09d}" for i in range(shared)] + [f"dev-{i:09d}" for i in range(10**8, 10**8 + n - shared)]
    amounts = [rng.randrange(0, 100_000) for _ in resp]
    return req, resp, amounts, shared, sum(amounts[:shared])


def baseline(req: list[str], resp: list[str], amounts: list[int]) -> tuple[float, int, int]:
    req_items = [domain_separated_item(KIND, v).encode() for v in req]
    resp_items = [domain_separated_item(KIND, v).encode() for v in resp]
    pub, priv = phe.generate_paillier_keypair(n_length=2048)  # key generation not timed (a node has its key)
    t = time.perf_counter()
    k1, k2 = ec.new_scalar(secrets.token_bytes), ec.new_scalar(secrets.token_bytes)
    a = ec.hash_and_blind(k1, req_items)  # matcher blinds its set
    ab = ec.blind_x_blob(k2, a)  # value holder blinds it again
    b = ec.hash_and_blind(k2, resp_items)  # value holder blinds its set
    encrypted = [pub.encrypt(v) for v in amounts]  # and encrypts every value
    ba = ec.blind_x_blob(k1, b)  # matcher blinds the value holder's set
    mine = {ab[i : i + 32] for i in range(0, len(ab), 32)}
    total, count = pub.encrypt(0), 0
    for i, c in enumerate(encrypted):
        if ba[32 * i : 32 * i + 32] in mine:
            total, count = total + c, count + 1
    value = priv.decrypt(total)
    return time.perf_counter() - t, count, value


def cli(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "psi_share.cli.main", "--home", str(home), *args]


def run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr}")


def write_csv(path: Path, prefix: str, vals: list[str], amounts: list[int] | None) -> None:
    with path.open("w") as fh:
        fh.write("actor_id,kind,value" + (",amount" if amounts else "") + "\n")
        for i, v in enumerate(vals):
            fh.write(f"{prefix}{i},{KIND},{v}" + (f",{amounts[i]}" if amounts else "") + "\n")


def set_config(home: Path, **values: object) -> None:
    """Set the first ``key = ...`` line of each key; ``datasets`` sets [exposure] and [policy] both."""
    text = (home / "config.toml").read_text()
    for key, value in values.items():
        text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, count=0 if key == "datasets" else 1, flags=re.M)
    (home / "config.toml").write_text(text)


def node_run(req: list[str], resp: list[str], amounts: list[int], workdir: Path, *, warm: bool) -> dict:
    n = max(len(req), len(resp))
    b = workdir / "lab-b"
    ca = workdir / "federation-ca"  # nodes talk mutual TLS, as in production
    if not ca.exists():
        run(cli(workdir, "pki", "init-ca", "--ca-dir", str(ca)))
        for name in ("lab-a", "lab-b"):
            run(cli(workdir, "pki", "issue", name, "--ca-dir", str(ca), "--address", "127.0.0.1",
                    "--out", str(workdir / f"{name}-tls")))
    if not b.exists():
        run(cli(b, "init", "lab-b", "--listen", "127.0.0.1:0", "--tls-from", str(workdir / "lab-b-tls")))
        write_csv(workdir / "b.csv", "b", resp, amounts)
        run(cli(b, "data", "import", "usage", str(workdir / "b.csv")))
        run(cli(b, "peers", "add", "lab-a", "127.0.0.1:1"))  # known, so it may call us
    set_config(b, max_set_size=max(n, 1), pool_size=(n + 1024) if warm else 0, datasets='["usage"]')
    logpath = workdir / f"serve-{'warm' if warm else 'cold'}.log"
    log = logpath.open("w+")
    t = time.perf_counter()
    server = subprocess.Popen(cli(b, "--log-level", "INFO", "serve", "--listen", "127.0.0.1:0"),
                              stderr=log, stdout=subprocess.DEVNULL)
    out: dict = {}
    try:
        port = None
        while True:
            text = re.sub(r"\s+", " ", logpath.read_text())
            if port is None and (m := re.search(r"listening on port (\d+)", text)):
                port = int(m.group(1))
            prepared = "prepared" in text and "blinded" in text
            if prepared and (not warm or "pool full" in text):
                break
            if server.poll() is not None:
                raise SystemExit(f"responder exited:\n{text}")
            time.sleep(0.1)
        out["responder_ready"] = time.perf_counter() - t
        a = workdir / f"lab-a-{'warm' if warm else 'cold'}"
        init_home(a, "lab-a", "127.0.0.1:0", tls_from=workdir / "lab-a-tls")
        set_config(a, max_set_size=max(n, 1))
        write_csv(workdir / "a.csv", "a", req, None)
        with Node.open(a) as node:
            node.import_file("flagged", workdir / "a.csv", None)
            node.store.add_peer("lab-b", f"127.0.0.1:{port}", now=time.time())
            if warm:
                t = time.perf_counter()
                node.prepare_sum("flagged", KIND)
                out["requester_prepare"] = time.perf_counter() - t
            t = time.perf_counter()
            o = node.intersection_sum("lab-b", dataset="flagged", peer_dataset="usage", kind=KIND, value_holder="responder")
            out["seconds"] = time.perf_counter() - t
            out["count"], out["sum"], out["timings"] = o.intersection_size, o.sum, o.timings
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    return out


def report(label: str, r: dict, shared: int, truth: int) -> None:
    assert (r["count"], r["sum"]) == (shared, truth), (r["count"], r["sum"], shared, truth)
    steps = ", ".join(f"{k} {v:.2f}s" for k, v in r["timings"].items())
    print(f"  {label}: {r['seconds']:.2f}s  (count {r['count']}, sum {r['sum']}: correct)  [{steps}]", flush=True)
    extra = f"responder ready (own set blinded{', pool filled' if 'requester_prepare' in r else ''}) after {r['responder_ready']:.1f}s"
    if "requester_prepare" in r:
        extra += f"; requester's own set prepared in {r['requester_prepare']:.1f}s"
    print(f"      {extra} (idle time, not in the figure)", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--big", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--no-big", action="store_true")
    args = p.parse_args()
    print(f"{os.cpu_count()} cores; 2048-bit Paillier; P-256", flush=True)
    req, resp, amounts, shared, truth = make_data(args.n, args.seed)
    print(f"{args.n} x {args.n}, {shared} shared, sum over the intersection {truth}", flush=True)
    base = None
    if not args.no_baseline:
        base, count, value = baseline(req, resp, amounts)
        assert (count, value) == (shared, truth)
        print(f"  baseline (1 thread, cryptography ECDH + phe encrypt per value): {base:.2f}s", flush=True)
    with tempfile.TemporaryDirectory(prefix="sum-bench-") as tmp:
        cold = node_run(req, resp, amounts, Path(tmp), warm=False)
        report("node-to-node, cold (pool empty, nothing prepared on the requester)", cold, shared, truth)
        warm = node_run(req, resp, amounts, Path(tmp), warm=True)
        report("node-to-node, warm (pool full, both own sets prepared)", warm, shared, truth)
    if base is not None:
        print(f"  ratio baseline / node: cold {base / cold['seconds']:.1f}x, warm {base / warm['seconds']:.1f}x "
              f"(target: node <= 5 s and >= 5x faster)", flush=True)
    if not args.no_big:
        req, resp, amounts, shared, truth = make_data(args.big, args.seed)
        print(f"{args.big} x {args.big}, {shared} shared (node only)", flush=True)
        with tempfile.TemporaryDirectory(prefix="sum-bench-") as tmp:
            cold = node_run(req, resp, amounts, Path(tmp), warm=False)
            report("node-to-node, pool empty (target <= 45 s)", cold, shared, truth)
            warm = node_run(req, resp, amounts, Path(tmp), warm=True)
            report("node-to-node, pool full (target <= 15 s)", warm, shared, truth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
