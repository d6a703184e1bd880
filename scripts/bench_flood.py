#!/usr/bin/env python3
"""Benchmark: another member's match while one member attacks the responder (issue 13).

Three labs, mutual TLS, real processes: lab-b serves (``psi-share serve``,
default limits), lab-c matches against it (``psi-share match``, N x N device
ids, 10% shared), lab-a attacks from this process with a raw gRPC client and
its member certificate (``tests/flood_attacker.py``):

* abandons sessions up to its quota, again and again;
* floods empty and 1-byte chunks in a loop (two threads);
* holds 200 idle PsiProcess streams, reopening those the node cuts.

Prints lab-c's match time on an idle node and under attack, their ratio
(target <= 1.5), lab-b's audit growth during the attack with the bound the
README derives from the limits, and the load average before and after.

Usage: python scripts/bench_flood.py [--size 100000] [--attack-seconds-before 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench_psi import KIND, cli, run, values, write_csv  # noqa: E402
from flood_attacker import Attacker  # noqa: E402

from psi_share.transport.limits import CallLimits  # noqa: E402

GATE_KEYS = 3 * 2  # RPCs the attacker calls x gate refusal texts (rate, concurrency)


def setup(workdir: Path, n: int) -> tuple[Path, Path, Path]:
    ca = workdir / "federation-ca"
    run(cli(workdir, "pki", "init-ca", "--ca-dir", str(ca)))
    homes = {}
    for name in ("lab-a", "lab-b", "lab-c"):
        tls = workdir / f"{name}-tls"
        run(cli(workdir, "pki", "issue", name, "--ca-dir", str(ca), "--address", "127.0.0.1", "--out", str(tls)))
        home = homes[name] = workdir / name
        run(cli(home, "init", name, "--listen", "127.0.0.1:0", "--tls-from", str(tls)))
    with (homes["lab-b"] / "config.toml").open("a") as fh:
        fh.write("\n[policy.peers.lab-c]\nreveal = true\n")
    shared = n // 10
    write_csv(workdir / "b.csv", "b", values(shared, 0) + values(n - shared, 10**8))
    write_csv(workdir / "c.csv", "c", values(n, 0))
    t = time.perf_counter()
    run(cli(homes["lab-b"], "data", "import", "flagged", str(workdir / "b.csv")))
    run(cli(homes["lab-c"], "data", "import", "flagged", str(workdir / "c.csv")))
    print(f"  imported both datasets in {time.perf_counter() - t:.1f}s", flush=True)
    for peer in ("lab-a", "lab-c"):
        run(cli(homes["lab-b"], "peers", "add", peer, "127.0.0.1:1"))
    return homes["lab-a"], homes["lab-b"], homes["lab-c"]


def await_log(path: Path, pattern: str, server: subprocess.Popen) -> re.Match:  # type: ignore[type-arg]
    """The first match of ``pattern`` in the responder's log, once it is there."""
    while not (found := re.search(pattern, path.read_text())):
        if server.poll() is not None:
            raise SystemExit(f"responder exited:\n{path.read_text()}")
        time.sleep(0.1)
    return found


def start_serve(home: Path, log_path: Path) -> tuple[subprocess.Popen, int]:  # type: ignore[type-arg]
    """lab-b's serve process, once its filter is prepared; and its port."""
    with log_path.open("w") as log:
        server = subprocess.Popen(cli(home, "--log-level", "INFO", "serve", "--listen", "127.0.0.1:0"), stderr=log,
                                  stdout=subprocess.DEVNULL)
    port = int(await_log(log_path, r"listening on port (\d+)", server).group(1))
    await_log(log_path, r"prepared PSI filter", server)
    return server, port


def match(home: Path) -> float:
    out = json.loads(run(cli(home, "match", "lab-b", "--kinds", KIND, "--format", "json")))
    return float(out["seconds"])


class Attack:
    """lab-a's three floods, each in its own thread, until stopped."""

    def __init__(self, channel) -> None:  # type: ignore[no-untyped-def]
        self.attacker = Attacker(channel)
        self.stop = threading.Event()
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._abandon), threading.Thread(target=self._flood, args=(False,)),
                        threading.Thread(target=self._flood, args=(True,)), threading.Thread(target=self._idle)]

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def _abandon(self) -> None:
        while not self.stop.is_set():
            opened, code = self.attacker.abandon_sessions(up_to=100)
            self._count(f"abandon opened {opened}, then {code}")
            self.stop.wait(0.2)

    def _flood(self, tiny: bool) -> None:
        while not self.stop.is_set():
            self._count(f"{'1-byte' if tiny else 'empty'} chunk flood: {self.attacker.empty_chunk_flood(chunks=2000, tiny=tiny)}")

    def _idle(self) -> None:
        calls: list = []  # type: ignore[type-arg]
        while not self.stop.is_set():
            calls = [c for c in calls if not c.done()]
            calls += self.attacker.idle_streams(200 - len(calls), timeout=600)
            self._count("idle streams (re)opened")
            self.stop.wait(2.0)

    def start(self) -> None:
        # Sessions first (the idle streams would take every call slot it has), then all at once.
        opened, code = self.attacker.abandon_sessions(up_to=100)
        self._count(f"abandon opened {opened}, then {code}")
        for t in self.threads:
            t.start()

    def end(self) -> None:
        self.stop.set()
        self.attacker.stop()
        for t in self.threads:
            t.join(timeout=60)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=100_000, help="items of each side's set")
    p.add_argument("--attack-seconds-before", type=float, default=3.0, help="attack this long before the match starts")
    args = p.parse_args()
    load_before = os.getloadavg()
    print(f"sets: {args.size} x {args.size} ({KIND}, 10% shared); {os.cpu_count()} cores; "
          f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}", flush=True)
    import grpc

    with tempfile.TemporaryDirectory(prefix="psi-flood-") as tmp:
        workdir = Path(tmp)
        a, b, c = setup(workdir, args.size)
        server, port = start_serve(b, workdir / "serve.log")
        try:
            run(cli(c, "peers", "add", "lab-b", f"127.0.0.1:{port}"))
            idle = match(c)
            print(f"lab-c's match on an idle node: {idle:.2f}s", flush=True)
            audit = b / "audit" / "log.jsonl"
            lines_before = len(audit.read_bytes().splitlines())
            tls = workdir / "lab-a-tls"
            credentials = grpc.ssl_channel_credentials((tls / "ca.crt").read_bytes(), (tls / "node.key").read_bytes(),
                                                       (tls / "node.crt").read_bytes())
            with grpc.secure_channel(f"127.0.0.1:{port}", credentials,
                                     options=[("grpc.ssl_target_name_override", "lab-b")]) as channel:
                attack = Attack(channel)
                started = time.monotonic()
                attack.start()
                time.sleep(args.attack_seconds_before)
                try:
                    attacked = match(c)
                finally:
                    attack.end()
                seconds = time.monotonic() - started
            time.sleep(1.0)
            entries = [json.loads(line) for line in audit.read_bytes().splitlines()[lines_before:]]
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    load_after = os.getloadavg()
    limits = CallLimits()
    by_attacker = sum(1 for e in entries if e.get("peer") == "lab-a")
    bound = 4 * (limits.call_burst + limits.calls_per_second * seconds) + \
        2 * GATE_KEYS * (seconds / limits.refusal_log_window_seconds + 2)
    print(f"lab-c's match under attack:  {attacked:.2f}s")
    print(f"ratio attacked / idle: {attacked / idle:.2f} (target <= 1.5)")
    print(f"attack lasted {seconds:.1f}s: " + "; ".join(f"{k} x{v}" for k, v in sorted(attack.counts.items())))
    print(f"lab-b's audit log grew by {len(entries)} entries during it, {by_attacker} of them about lab-a "
          f"(bound from the limits: {bound:.0f})")
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
