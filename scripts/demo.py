#!/usr/bin/env python3
"""Three-lab demo: synthetic data, three real nodes on 127.0.0.1, a joint job.

Everything goes through the real ``psi-share`` command, as a lab engineer
would run it: ``init``, ``data import``, ``peers add``, ``serve`` (three
background processes), ``job run``. Then each lab's results are checked
against the generator's ground truth and the nodes are stopped with SIGTERM.

Usage: python scripts/demo.py [--out demo-out] [--seed 7] [--customers 30000] [--flagged 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
LABS = ("lab-a", "lab-b", "lab-c")
console = Console()


def psi(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "psi_share.cli.main", "--home", str(home), "--log-level", "WARNING", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): psi-share {' '.join(args)}\n{proc.stderr}")
    return proc


def start_node(home: Path, log: Path) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, "-m", "psi_share.cli.main", "--home", str(home), "serve", "--listen", "127.0.0.1:0"]
    errf = log.open("w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = log.read_text()
        if "listening on port" in text:
            port = int(text.split("listening on port", 1)[1].split()[0])
            return proc, port
        if proc.poll() is not None:
            raise SystemExit(f"node {home.name} exited at start:\n{text}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"node {home.name} did not start within 60s")


def federation_pki(out: Path) -> dict[str, Path]:
    """The federation's CA, and one certificate per lab naming it (mutual TLS)."""
    console.rule("[bold]2. the federation CA issues each lab a certificate")
    ca = out / "federation-ca"
    psi(out, "pki", "init-ca", "--ca-dir", str(ca), "--name", "demo federation CA")
    issued = {}
    for lab in LABS:
        issued[lab] = out / "issued" / lab
        psi(out, "pki", "issue", lab, "--ca-dir", str(ca), "--address", "127.0.0.1", "--out", str(issued[lab]))
    console.print(f"CA in {ca}; certificates for {', '.join(LABS)} (every connection is mutual TLS)")
    return issued


def grant_reveal(home: Path, peers: list[str]) -> None:
    """Policy: a new peer gets counts only; these labs let each other learn which actors match."""
    with (home / "config.toml").open("a", encoding="utf-8") as fh:
        for peer in peers:
            fh.write(f"\n[policy.peers.{peer}]\nreveal = true\n")


def _raw_call_refused(tls: Path, real_ca: Path, port: int) -> bool:
    """A hand-made gRPC client presenting the outsider's certificate to lab-b."""
    import grpc

    from psi_share.v1 import node_pb2, node_pb2_grpc

    creds = grpc.ssl_channel_credentials(real_ca.read_bytes(), (tls / "node.key").read_bytes(), (tls / "node.crt").read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override", "lab-b")]) as ch:
        try:
            node_pb2_grpc.PsiShareNodeStub(ch).NodeInfo(node_pb2.NodeInfoRequest(protocol_version=1), timeout=10)
        except grpc.RpcError as exc:
            console.print(f"[green]refused[/]: the outsider's certificate presented to lab-b directly\n"
                          f"    {exc.code().name} (the TLS handshake fails: not signed by the federation CA)")
            return True
    console.print("[red]NOT refused[/]: the outsider's certificate presented to lab-b directly")
    return False


def security_checks(out: Path, nodes: Path, ports: dict[str, int]) -> bool:
    """Outsiders and revoked members are refused; a member without a policy grant gets counts only."""
    console.rule("[bold]9. who gets in: certificates and policy")
    ok = True

    def expect(what: str, proc: subprocess.CompletedProcess[str], needle: str) -> None:
        nonlocal ok
        message = " ".join(proc.stderr.split()).removeprefix("error: ")
        refused = proc.returncode != 0 and needle in message
        ok &= refused
        console.print(f"{'[green]refused[/]' if refused else '[red]NOT refused[/]'}: {escape(what)}\n    {escape(message[:220])}")

    # An outsider with a certificate for "lab-a" from a CA of its own: a psi-share
    # node set up with it cannot verify lab-b, and lab-b refuses its certificate.
    rogue_ca, rogue = out / "rogue-ca", nodes / "rogue"
    psi(out, "pki", "init-ca", "--ca-dir", str(rogue_ca), "--name", "not the federation")
    psi(out, "pki", "issue", "lab-a", "--ca-dir", str(rogue_ca), "--address", "127.0.0.1", "--out", str(out / "rogue-tls"))
    psi(rogue, "init", "lab-a", "--listen", "127.0.0.1:0", "--tls-from", str(out / "rogue-tls"))
    psi(rogue, "peers", "add", "lab-b", f"127.0.0.1:{ports['lab-b']}")
    expect("an outsider's node (its own CA) calling lab-b", psi(rogue, "peers", "check", "lab-b", check=False),
           "no federation certificate naming lab-b")
    ok &= _raw_call_refused(out / "rogue-tls", out / "federation-ca" / "ca.crt", ports["lab-b"])

    # A new member, lab-d: a valid certificate and a known peer of lab-b, but no
    # policy grant yet, so lab-b's defaults apply: counts only, on flagged.
    psi(out, "pki", "issue", "lab-d", "--ca-dir", str(out / "federation-ca"), "--address", "127.0.0.1",
        "--out", str(out / "issued" / "lab-d"))
    lab_d = nodes / "lab-d"
    psi(lab_d, "init", "lab-d", "--listen", "127.0.0.1:0", "--tls-from", str(out / "issued" / "lab-d"))
    psi(lab_d, "data", "import", "flagged", str(out / "data" / "lab-a" / "flagged.csv"))
    psi(lab_d, "peers", "add", "lab-b", f"127.0.0.1:{ports['lab-b']}")
    psi(nodes / "lab-b", "peers", "add", "lab-d", "127.0.0.1:1")
    expect("new member lab-d asking lab-b which actors match (no policy grant)",
           psi(lab_d, "match", "lab-b", "--kinds", "email", check=False), "PERMISSION_DENIED")
    counted = psi(lab_d, "match", "lab-b", "--kinds", "email", "--count", "--format", "json", check=False)
    allowed = counted.returncode == 0 and json.loads(counted.stdout)["matching_actors"] is None
    ok &= allowed
    console.print(f"{'[green]allowed[/]' if allowed else '[red]NOT allowed[/]'}: lab-d asking only how many "
                  f"(the default policy): {json.loads(counted.stdout)['matching_items'] if allowed else escape(counted.stderr.strip())}"
                  " matching emails")

    # lab-c's certificate is revoked; lab-b receives the new revocation list (no restart).
    psi(out, "pki", "revoke", "lab-c", "--ca-dir", str(out / "federation-ca"))
    shutil.copy(out / "federation-ca" / "crl.pem", nodes / "lab-b" / "tls" / "crl.pem")
    expect("lab-c after its certificate was revoked", psi(nodes / "lab-c", "peers", "check", "lab-b", check=False),
           "revoked")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "demo-out")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--customers", type=int, default=30000)
    parser.add_argument("--flagged", type=int, default=3000)
    args = parser.parse_args()
    started = time.monotonic()
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    data, nodes, logs = out / "data", out / "nodes", out / "logs"
    logs.mkdir(parents=True)

    console.rule("[bold]1. synthetic data for three labs")
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_demo_data.py"), "--out", str(data), "--seed", str(args.seed),
         "--customers", str(args.customers), "--flagged", str(args.flagged), "--labs", ",".join(LABS)],
        check=True, timeout=300,
    )
    truth = json.loads((data / "truth.json").read_text())

    tls = federation_pki(out)

    console.rule("[bold]3. three node homes, data imported locally")
    for lab in LABS:
        home = nodes / lab
        psi(home, "init", lab, "--listen", "127.0.0.1:0", "--tls-from", str(tls[lab]))
        keep_transcripts(home)
        grant_reveal(home, [p for p in LABS if p != lab])
        for dataset in ("customers", "flagged"):
            psi(home, "data", "import", dataset, str(data / lab / f"{dataset}.csv"))
        prepare_aggregates(home, data / lab)
        listing = json.loads(psi(home, "data", "list", "--format", "json").stdout)
        console.print(f"{lab}: " + ", ".join(f"{d['dataset']} {d['actors']} actors / {d['identifiers']} identifiers" for d in listing))

    console.rule("[bold]4. three nodes serving on 127.0.0.1")
    procs: dict[str, subprocess.Popen[str]] = {}
    ports: dict[str, int] = {}
    aggregates_ok = False
    try:
        for lab in LABS:
            procs[lab], ports[lab] = start_node(nodes / lab, logs / f"{lab}.log")
            console.print(f"{lab} listening on 127.0.0.1:{ports[lab]}")
        for lab in LABS:
            for peer in LABS:
                if peer != lab:
                    psi(nodes / lab, "peers", "add", peer, f"127.0.0.1:{ports[peer]}")

        console.rule("[bold]5. the joint job, run by every lab on its own node")
        jobfile = out / "campaign-job.toml"
        jobfile.write_text(
            "[job]\n"
            'name = "distillation-campaign"\n'
            f"participants = {json.dumps(list(LABS))}\n"
            'dataset = "flagged"\n'
            'peer_dataset = "flagged"\n'
            f"kinds = {json.dumps(truth['kinds'])}\n"
            'mode = "reveal"\n'
        )
        results = {}
        for lab in LABS:
            t = time.monotonic()
            proc = psi(nodes / lab, "job", "run", str(jobfile), "--format", "json")
            results[lab] = json.loads(proc.stdout)
            console.print(f"{lab}: job run {results[lab]['run_id'][:12]} {results[lab]['status']} in {time.monotonic() - t:.1f}s")
        aggregates_ok = aggregates(nodes, out, data, truth, results)
        next_day = run_next_day(args, out, nodes, jobfile)
        refusals_ok = security_checks(out, nodes, ports)
    finally:
        console.rule("[bold]10. shutting the nodes down (SIGTERM)")
        for lab, proc in procs.items():
            proc.send_signal(signal.SIGTERM)
        for lab, proc in procs.items():
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = "killed after 30s"
            console.print(f"{lab} stopped: exit {code}")

    verdict = report(results, truth, time.monotonic() - started)
    changes = report_next_day(*next_day)
    # day 1's customers.csv holds every identifier the lab had on either day
    audited = audit_verdicts(nodes, out / "data-day1")
    return verdict or changes or audited or (0 if refusals_ok else 1) or (0 if aggregates_ok else 1)


def keep_transcripts(home: Path) -> None:
    """Turn on [audit] transcripts so the compliance scan can read every byte sent."""
    config = home / "config.toml"
    text = config.read_text()
    assert "\ntranscripts = false" in text
    config.write_text(text.replace("\ntranscripts = false", "\ntranscripts = true", 1))


def audit_verdicts(nodes: Path, data: Path) -> int:
    """Each lab's compliance check, as its officer would run it: verify, scan, report."""
    console.rule("[bold]13. compliance: audit verify and audit scan on every lab")
    scans = {
        lab: subprocess.Popen(
            [sys.executable, "-m", "psi_share.cli.main", "--home", str(nodes / lab), "audit", "scan",
             "--against", str(data / lab / "customers.csv")],  # customers.csv holds every identifier of the lab
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for lab in LABS
    }  # the three scans run side by side, as three officers would
    failed = 0
    for lab in LABS:
        verify = psi(nodes / lab, "audit", "verify", check=False)
        out, err = scans[lab].communicate(timeout=600)
        report = psi(nodes / lab, "audit", "report", check=False)
        failed += verify.returncode != 0 or scans[lab].returncode != 0 or report.returncode != 0
        console.print(f"[bold]{lab}[/]")
        for name, proc, text in (("verify", verify, verify.stdout + verify.stderr), ("scan", scans[lab], out + err),
                                 ("report", report, report.stdout + report.stderr)):
            style = "green" if proc.returncode == 0 else "red"
            for line in text.strip().splitlines():
                console.print(f"  [{style}]{name:6s}[/] {line}", highlight=False, soft_wrap=True)
    if failed:
        console.print("[bold red]the compliance checks failed")
        return 1
    console.print("[bold green]every lab's audit log is intact and no form of any identifier left any lab")
    return 0


# -- Paillier aggregates: intersection-sum and federation totals ----------------


def prepare_aggregates(home: Path, lab_data: Path) -> None:
    """Before serving: import the lab's usage (API requests per payment
    fingerprint), expose it to peers, and keep the randomness pool small."""
    psi(home, "data", "import", "usage", str(lab_data / "usage.csv"))
    config = home / "config.toml"
    text = config.read_text()
    # [exposure] datasets and the [policy] grant to every peer both name it
    text = text.replace('datasets = ["flagged"]', 'datasets = ["flagged", "usage"]')
    text = text.replace("pool_size = 16384", "pool_size = 4096", 1)
    # The demo checks every sum against the generator's exact truth, so it runs
    # these labs with differential privacy off ([privacy] enabled = false);
    # scripts/dp_demo.py shows truth, released value and noise scale side by side.
    config.write_text(text.replace("\n[privacy]\nenabled = true", "\n[privacy]\nenabled = false", 1))


def aggregates(nodes: Path, out: Path, data: Path, truth: dict, results: dict) -> bool:
    """Intersection-sum between every pair of labs (a job file per lab), then
    two federation totals initiated by the first lab, each beside the truth."""
    usage = truth["usage"]
    console.rule("[bold]6. intersection-sum: API requests of the shared actors, at each peer")
    console.print("differential privacy is off in this demo (\\[privacy] enabled = false) so that sums can be "
                  "checked exactly; scripts/dp_demo.py shows noisy releases beside the truth")
    jobfile = out / "traffic-job.toml"
    jobfile.write_text(
        "[job]\n"
        'protocol = "intersection-sum"\n'
        'name = "campaign-traffic"\n'
        f"participants = {json.dumps(list(LABS))}\n"
        'dataset = "flagged"\n'
        'peer_dataset = "usage"\n'
        f'kind = "{usage["kind"]}"\n'
        'value_holder = "responder"\n'
    )
    table = Table()
    for col in ("lab", "peer (values)", "count", "count (truth)", "sum", "sum (truth)"):
        table.add_column(col, justify="left" if col.startswith(("lab", "peer")) else "right")
    ok = True
    for lab in LABS:
        t = time.monotonic()
        run = json.loads(psi(nodes / lab, "job", "run", str(jobfile), "--format", "json").stdout)
        for r in run["peers"]:
            want = usage["intersection_sum"][lab][r["peer"]]
            good = r["status"] == "ok" and (r["intersection_size"], r["sum"]) == (want["count"], want["sum"])
            ok &= good
            table.add_row(lab, r["peer"], str(r["intersection_size"]), str(want["count"]), str(r["sum"]),
                          str(want["sum"]), style=None if good else "red")
        console.print(f"{lab}: intersection-sum job {run['status']} in {time.monotonic() - t:.1f}s")
    console.print(table)

    console.rule("[bold]7. federation totals (Paillier secure sum, k >= 3), initiated by " + LABS[0])
    figures = {
        # each lab's own count of flagged actors some peer matched (from its PSI job run)
        "matched-flagged-actors": {lab: len(results[lab]["attribution"]) for lab in LABS},
        # each lab's own API requests by its flagged accounts (local data only)
        "flagged-api-requests": {lab: local_flagged_requests(data / lab) for lab in LABS},
    }
    plaintext = {
        "matched-flagged-actors": sum(
            len(set().union(*map(set, truth["labs"][lab]["shared_with"].values()))) for lab in LABS
        ),
        "flagged-api-requests": sum(usage["flagged_requests"].values()),
    }
    totals = Table()
    for col in ("metric", "federation total", "plaintext truth", "contributors"):
        totals.add_column(col, justify="left" if col == "metric" else "right")
    for metric, per_lab in figures.items():
        for lab in LABS:
            psi(nodes / lab, "federation", "figure", metric, str(per_lab[lab]))
        jobfile = out / f"{metric}-job.toml"
        jobfile.write_text(
            "[job]\n"
            'protocol = "federation-total"\n'
            f'name = "{metric}"\n'
            f"participants = {json.dumps(list(LABS))}\n"
            f'metric = "{metric}"\n'
            "min_contributors = 3\n"
        )
        run = json.loads(psi(nodes / LABS[0], "job", "run", str(jobfile), "--format", "json").stdout)
        good = run["status"] == "ok" and run["total"] == plaintext[metric]
        ok &= good
        totals.add_row(metric, str(run["total"]), str(plaintext[metric]), str(run["contributors"]),
                       style=None if good else "red")
    console.print(totals)
    console.print("[bold green]aggregates match the plaintext truth" if ok else "[bold red]aggregates differ from the truth")
    return ok


def local_flagged_requests(lab_data: Path) -> int:
    """What a lab computes from its own files: API requests of its flagged actors."""
    import csv

    with (lab_data / "flagged.csv").open(newline="") as fh:
        flagged = {row["actor_id"] for row in csv.DictReader(fh)}
    with (lab_data / "usage.csv").open(newline="") as fh:
        return sum(int(row["amount"]) for row in csv.DictReader(fh) if row["actor_id"] in flagged)


def report(results: dict, truth: dict, seconds: float) -> int:
    console.rule("[bold]11. what each lab learned, against the ground truth")
    table = Table()
    for col in ("lab", "peer", "shared (learned)", "shared (truth)", "precision", "recall"):
        table.add_column(col, justify="right" if col not in ("lab", "peer") else "left")
    perfect = True
    for lab, result in results.items():
        attribution = {a: set(p) for a, p in result["attribution"].items()}
        expected_labs = truth["labs"][lab]
        rows = [(peer, set(ids)) for peer, ids in sorted(expected_labs["shared_with"].items())]
        rows.append(("≥ 2 other labs", set(expected_labs["seen_at_2_or_more"])))
        for peer, expected in rows:
            if peer.startswith("≥"):
                learned = {a for a, p in attribution.items() if len(p) >= 2}
            else:
                learned = {a for a, p in attribution.items() if peer in p}
            tp = len(learned & expected)
            precision = tp / len(learned) if learned else 1.0
            recall = tp / len(expected) if expected else 1.0
            perfect &= precision == 1.0 and recall == 1.0
            table.add_row(lab, peer, str(len(learned)), str(len(expected)), f"{precision:.3f}", f"{recall:.3f}")
    console.print(table)
    verdict = "[bold green]all results match the ground truth" if perfect else "[bold red]results differ from the ground truth"
    console.print(f"{verdict}[/] (demo took {seconds:.0f}s)")
    return 0 if perfect else 1


# -- periodic jobs: the next day, and what changed -----------------------------


def run_next_day(args: argparse.Namespace, out: Path, nodes: Path, jobfile: Path) -> tuple[dict, dict, dict]:
    """Day 1: new campaign accounts are flagged at every lab; each lab re-imports
    its flagged set and runs the same job again. Returns (run results, each
    run's diff against the previous ok run, the day-1 truth)."""
    console.rule("[bold]8. a day later: new campaign accounts, the same job again")
    day1 = out / "data-day1"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_demo_data.py"), "--out", str(day1), "--seed", str(args.seed),
         "--customers", str(args.customers), "--flagged", str(args.flagged), "--labs", ",".join(LABS), "--day", "1"],
        check=True, timeout=300,
    )
    truth = json.loads((day1 / "truth.json").read_text())
    results, diffs = {}, {}
    for lab in LABS:
        psi(nodes / lab, "data", "import", "flagged", str(day1 / lab / "flagged.csv"), "--replace")
    for lab in LABS:
        t = time.monotonic()
        proc = psi(nodes / lab, "job", "run", str(jobfile), "--json")
        results[lab] = json.loads(proc.stdout)
        diffs[lab] = results[lab]["diff"]
        console.print(f"{lab}: {results[lab]['summary']} ({time.monotonic() - t:.1f}s)")
    history = json.loads(psi(nodes / LABS[0], "job", "history", "distillation-campaign", "--json").stdout)
    console.print(f"{LABS[0]} job history: " + ", ".join(f"{h['run'][:8]} {h['status']} {h['actors']} actors" for h in history))
    bundle = out / f"{LABS[0]}-day1.stix.json"
    psi(nodes / LABS[0], "results", "export", results[LABS[0]]["run_id"], "--format", "stix", "-o", str(bundle))
    console.print(f"{LABS[0]} exported its day-1 run as a STIX 2.1 bundle for its own TIP: {bundle.name} (keep inside the lab)")
    return results, diffs, truth


def report_next_day(results: dict, diffs: dict, truth: dict) -> int:
    """Check each lab's diff against the generator's new_since_previous_day.

    The data only grows, so nothing stops being shared; an actor gained a peer
    when it is in new_since_previous_day.shared_with[peer]; it is *newly*
    shared when it was shared with no peer the day before.
    """
    console.rule("[bold]12. what changed since the previous run, against the ground truth")
    table = Table()
    for col in ("lab", "newly shared", "truth", "peers changed", "truth", "no longer shared", "truth"):
        table.add_column(col, justify="left" if col == "lab" else "right")
    perfect = True
    for lab, diff in diffs.items():
        entry = truth["labs"][lab]
        gained = entry["new_since_previous_day"]["shared_with"]
        before = {a for peer, ids in entry["shared_with"].items() for a in set(ids) - set(gained[peer])}
        grew = {a for ids in gained.values() for a in ids}
        expected_new, expected_changed = grew - before, grew & before
        ok = diff is not None and results[lab]["status"] == "ok"
        new = {c["actor_id"] for c in diff["newly_shared"]} if ok else set()
        changed = {c["actor_id"] for c in diff["peers_changed"]} if ok else set()
        gone = {c["actor_id"] for c in diff["no_longer_shared"]} if ok else {"?"}
        gains_right = ok and all(
            set(c["after"]) - set(c["before"]) == {p for p, ids in gained.items() if c["actor_id"] in ids}
            for c in diff["newly_shared"] + diff["peers_changed"]
        )
        perfect &= ok and new == expected_new and changed == expected_changed and not gone and gains_right
        table.add_row(lab, str(len(new)), str(len(expected_new)), str(len(changed)), str(len(expected_changed)),
                      str(len(gone)), "0")
    console.print(table)
    verdict = "[bold green]every lab's diff matches the ground truth" if perfect else "[bold red]diffs differ from the ground truth"
    console.print(f"{verdict}[/]")
    return 0 if perfect else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
