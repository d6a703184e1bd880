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

* with ``--nodes``, the node-to-node match: two real nodes (mutual TLS on
  127.0.0.1; the responder a ``psi-share serve`` process that prepares its
  filters before any request), each importing its prompt file with
  ``data import --prompts`` (timed: signatures, deduplication, the store),
  then lab-a matching its band items against lab-b's (``match --dataset
  prompts --kinds prompt``) and, against the same serving node in the same
  run, an exact-identifier match (``device_id``) of as many items on each
  side as the prompt sets have.

``--table`` prints the banding table of the README (for each threshold its
bands x rows and min_bands, and the probability that two prompts of
similarity s are near-duplicates, P(Binomial(b, s^r) >= min_bands), at the
threshold and 0.1, 0.2 either side).

At 100,000 prompts per lab the nodes hold up to ``bands`` (48) band items per
prompt: the nodes' ``max_set_size`` is set to that bound and lab-b's
``items_per_day`` for lab-a to twice it (the prompt and the exact match of
one run), and each import's peak memory (max RSS of the CLI process) is
printed.

Usage: python scripts/bench_prompts.py [--prompts 100000] [--workers 2] [--table] [--nodes]
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
import time
from pathlib import Path
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
from psi_share.protocols.psi import size_class

SEED = bytes.fromhex("5e" * 32)


def table() -> None:
    rows = banding_rows()
    print("| threshold | bands x rows | near-duplicate: bands shared | MinHash values | P(match) at t-0.2 | t-0.1 | t "
          "| P(miss) at t+0.1 | t+0.2 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        b, r, m = int(row["bands"]), int(row["rows"]), int(row["min_bands"])
        print(f"| {row['threshold']} | {b} x {r} | >= {m} | {b * r} | {row['-0.2']:.4f} | {row['-0.1']:.3f} | "
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
    parser.add_argument("--nodes", action="store_true", help="also match between two real nodes (see above)")
    args = parser.parse_args()
    if args.table:
        table()
        return
    n = args.prompts
    params = PromptParams(SEED, *RECOMMENDED[0.5])
    engine = SignatureEngine(params)
    print(f"parameters: threshold 0.5, {params.bands} bands x {params.rows} rows, near-duplicates share >= "
          f"{params.min_bands} bands, {params.num_perm} MinHash values, {params.shingle_words}-word shingles; load average {os.getloadavg()[0]:.1f}")
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
    if args.nodes:
        node_matches(lab_a, lab_b, n, params.bands)


def _cli(home: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "psi_share.cli.main", "--home", str(home), *args],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"failed: psi-share {' '.join(args)}\n{proc.stderr}")
    return proc.stdout


def _timed_cli(home: Path, *args: str) -> tuple[str, float, float]:
    """stdout, seconds and peak memory (GiB, the process's max RSS) of one CLI command."""
    out_path, err_path = Path(f"{home}.out"), Path(f"{home}.err")
    started = time.perf_counter()
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "psi_share.cli.main", "--home", str(home), *args],
                                stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own resource usage
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"failed: psi-share {' '.join(args)}\n{err_path.read_text()}")
    return out_path.read_text(), elapsed, usage.ru_maxrss / 2**20


def node_matches(lab_a: list[str], lab_b: list[str], n: int, bands: int) -> None:
    """Prompt match and exact match of the same size between two real nodes (see the module docstring)."""
    work = Path(tempfile.mkdtemp(prefix="bench-prompts-"))
    ca, homes = work / "ca", {"lab-a": work / "lab-a", "lab-b": work / "lab-b"}
    _cli(work, "pki", "init-ca", "--ca-dir", str(ca))
    for name, home in homes.items():
        _cli(work, "pki", "issue", name, "--ca-dir", str(ca), "--address", "127.0.0.1", "--out", str(work / f"{name}-tls"))
        _cli(home, "init", name, "--listen", "127.0.0.1:0", "--tls-from", str(work / f"{name}-tls"))
        text = (home / "config.toml").read_text().replace('datasets = ["flagged"]', 'datasets = ["prompts", "exact"]')
        # Every prompt may bring all its bands (each actor's 5 prompts are 5 clusters, under the cap).
        bound = max(1_000_000, n * bands)
        text = re.sub(r"max_set_size = \d+", f"max_set_size = {bound}", text)
        # PSI only: serve start then prepares no count-only session-set and no valued set (minutes of CPU).
        text = text.replace('# protocols = ["psi"]', 'protocols = ["psi"]')
        text += f'\n[prompts]\nseed = "{SEED.hex()}"\n'
        if name == "lab-b":
            text += ('\n[policy.peers.lab-a]\nreveal = true\nkinds = ["prompt", "device_id"]\n'
                     f'items_per_day = {2 * bound + 1000}\n')
        (home / "config.toml").write_text(text)
    sizes = {}
    for (name, home), texts in zip(homes.items(), (lab_a, lab_b)):
        path = work / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"actor_id": f"actor-{i % (n // 5 or 1)}", "text": t}) + "\n"
                                for i, t in enumerate(texts)))
        out, seconds, peak = _timed_cli(home, "data", "import", "prompts", str(path), "--prompts", "--format", "json")
        summary = json.loads(out)
        sizes[name] = summary["distinct_band_items"]
        print(f"{name}: 'data import --prompts' of {n} prompts in {seconds:.1f} s (peak memory {peak:.2f} GiB): "
              f"{summary['clusters']} clusters, {sizes[name]} distinct band items", flush=True)
    # The exact match: as many device ids per side as that side's prompt set, a tenth of lab-a's at lab-b too.
    m_a, m_b = sizes["lab-a"], sizes["lab-b"]
    for name, home, count, start in (("lab-a", homes["lab-a"], m_a, 0), ("lab-b", homes["lab-b"], m_b, m_a - m_a // 10)):
        path = work / f"{name}-exact.csv"
        path.write_text("actor_id,kind,value\n" + "".join(f"x{i},device_id,dev-{start + i:012d}\n" for i in range(count)))
        _cli(home, "data", "import", "exact", str(path))
    # The responder's largest size class (built at serve start) is the requester's own class, so that
    # no second filter pass for a smaller class runs beside the measured matches.
    config = homes["lab-b"] / "config.toml"
    config.write_text(re.sub(r"max_set_size = \d+", f"max_set_size = {size_class(m_a, 1 << 62)}", config.read_text()))
    log_path = work / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen([sys.executable, "-m", "psi_share.cli.main", "--home", str(homes["lab-b"]),
                                   "--log-level", "INFO", "serve", "--listen", "127.0.0.1:0"],
                                  stderr=log, stdout=subprocess.DEVNULL)
    try:
        started, port = time.perf_counter(), None
        while True:
            text = " ".join(log_path.read_text().split())
            if port is None and (m := re.search(r"listening on port (\d+)", text)):
                port = int(m.group(1))
            # A small set's filter is "prepared", a large one's (bucketed, read batch by batch) "streamed".
            if len(re.findall(r"prepared PSI filter|streamed \d+ rows", text)) >= 2:
                break
            if server.poll() is not None:
                raise SystemExit(f"responder exited:\n{text}")
            time.sleep(0.2)
        print(f"responder prepared both filters in {time.perf_counter() - started:.1f} s (before any request)", flush=True)
        _cli(homes["lab-a"], "peers", "add", "lab-b", f"127.0.0.1:{port}")
        _cli(homes["lab-b"], "peers", "add", "lab-a", "127.0.0.1:1")
        for label, dataset, kind in (("prompt match", "prompts", "prompt"), ("exact match", "exact", "device_id")):
            text, seconds, peak = _timed_cli(homes["lab-a"], "match", "lab-b", "--dataset", dataset, "--kinds", kind,
                                             "--format", "json")
            out = json.loads(text)
            print(f"{label}: {out['our_items']} x {m_b} items in {out['seconds']:.1f} s "
                  f"(command {seconds:.1f} s, requester peak memory {peak:.2f} GiB): {out['matching_items']} matching "
                  f"items, {out['matching_actors']} actors", flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    print(f"(work files in {work}; load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
