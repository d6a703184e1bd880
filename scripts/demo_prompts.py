"""The demo's prompt chains: a synthetic campaign across the three labs, matched by band items.

Called by scripts/demo.py (not a script of its own). Each lab gets the
campaign generator's prompt file (about 20 extraction templates filled with
fresh variables, reworded per lab, benign popular prompts, near-miss
templates just below the threshold, the lab's own automation), the
federation's stoplist and a sample of its ordinary traffic; every lab runs a
job over the ``prompt`` kind against the others. What each lab learned
(``results show`` of each session: its templates with a near-duplicate at
the peer, ``results run --chain-peers 2``: its accounts whose prompts share
a chain seen at both other labs) is scored against the generator's truth,
which comes from construction, not from the matcher.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from psi_share.prompts.synthetic import SyntheticFederation, generate, score_matches, write_files

# The federation's seed for the demo, the one tests/test_prompts_eval.py uses (a
# real federation draws its own once: python -c 'import secrets; print(secrets.token_hex(32))').
# Any seed should do: scripts/eval_prompt_seeds.py sweeps three sets of 5 generator x 8 federation
# seeds (720 ordered pairs of labs), every pair at >= 0.95 (README, "Prompt chains"); this one is not special.
DEMO_SEED = "5e" * 32
console = Console()


def _psi(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "psi_share.cli.main", "--home", str(home), "--log-level", "WARNING", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): psi-share {' '.join(args)}\n{proc.stderr}")
    return proc


def make_campaign(out: Path, seed: int, labs: tuple[str, ...]) -> tuple[SyntheticFederation, dict[str, Path]]:
    fed = generate(seed=seed, labs=labs)
    return fed, write_files(fed, out)


def configure(home: Path, lab: str, labs: tuple[str, ...], files: dict[str, Path]) -> str:
    """[prompts] with the federation seed and stoplist; the prompts dataset exposed and
    granted by name to every peer; the lab's prompt file imported. Returns a summary line."""
    config = home / "config.toml"
    text = config.read_text()
    text = text.replace('datasets = ["flagged", "usage"]', 'datasets = ["flagged", "usage", "prompts"]')
    kinds = json.dumps(["email", "phone", "ipv4", "ipv6", "ip_prefix", "payment_fingerprint", "device_id",
                        "account_handle", "prompt"])
    for peer in labs:
        if peer != lab:  # prompt matching is granted only by naming the kind
            text = text.replace(f"[policy.peers.{peer}]\nreveal = true\n", f"[policy.peers.{peer}]\nreveal = true\nkinds = {kinds}\n")
    text += f'\n[prompts]\nseed = "{DEMO_SEED}"\nstoplist = ["{files["stoplist.txt"]}"]\n'
    config.write_text(text)
    s = json.loads(_psi(home, "data", "import", "prompts", str(files[f"{lab}/prompts.jsonl"]), "--prompts",
                        "--benign", str(files[f"{lab}/benign-sample.jsonl"]), "--format", "json").stdout)
    return (f"{lab}: {s['prompts']} prompts of {s['actors']} actors: {s['removed_as_benign']} removed as benign "
            f"(stoplist and own benign templates), {s['near_duplicates_folded']} near-duplicates folded, "
            f"{s['clusters']} templates in {s['chains']} chains, {s['distinct_band_items']} band items")


def run_and_score(nodes: Path, out: Path, fed: SyntheticFederation) -> int:
    """Every lab runs the prompt job; precision and recall against the truth. 0 when all >= 0.95."""
    labs = fed.labs
    jobfile = out / "prompt-chains-job.toml"
    jobfile.write_text('[job]\nname = "prompt-chains"\n'
                       f'participants = {json.dumps(list(labs))}\ndataset = "prompts"\nkinds = ["prompt"]\nmode = "reveal"\n')
    table = Table(title="prompt chains: what each lab learned, against the generator's truth")
    for col in ("lab", "peer", "templates (learned/truth)", "precision", "recall", "actors (learned/truth)",
                "precision", "recall", "benign links"):
        table.add_column(col, justify="left" if col in ("lab", "peer") else "right")
    worst, benign = 1.0, 0
    chain_rows = []
    for lab in labs:
        run = json.loads(_psi(nodes / lab, "job", "run", str(jobfile), "--format", "json").stdout)
        for peer in run["peers"]:
            shown = json.loads(_psi(nodes / lab, "results", "show", peer["session"], "--format", "json").stdout)
            score = score_matches(fed, lab, peer["peer"], {row["line"] for row in shown})
            worst = min(worst, score.template_precision, score.template_recall, score.actor_precision, score.actor_recall)
            benign += score.benign_links
            t, a = score.templates, score.actors
            table.add_row(lab, peer["peer"], f"{t[0] + t[1]}/{t[0] + t[2]}", f"{score.template_precision:.3f}",
                          f"{score.template_recall:.3f}", f"{a[0] + a[1]}/{a[0] + a[2]}", f"{score.actor_precision:.3f}",
                          f"{score.actor_recall:.3f}", str(score.benign_links))
        chained = json.loads(_psi(nodes / lab, "results", "run", run["run_id"], "--chain-peers", "2", "--format", "json").stdout)
        others = [p for p in labs if p != lab]
        both = set.intersection(*(fed.shared_templates(lab, p) for p in others))
        truth = {p.actor_id for p in fed.prompts[lab] if p.template in both}
        learned = {r["actor_id"] for r in chained}
        tp = len(learned & truth)
        precision, recall = (tp / len(learned) if learned else 1.0), (tp / len(truth) if truth else 1.0)
        worst = min(worst, precision, recall)
        chain_rows.append((lab, len(learned), len(truth), precision, recall))
    console.print(table)
    console.print("accounts whose prompts share a chain seen at both other labs ('results run RUN --chain-peers 2'):")
    for lab, learned, truth, precision, recall in chain_rows:
        console.print(f"  {lab}: {learned} learned, {truth} in truth: precision {precision:.3f}, recall {recall:.3f}")
    ok = worst >= 0.95 and benign == 0
    console.print(f"{'[bold green]' if ok else '[bold red]'}prompt chains: lowest precision/recall {worst:.3f} "
                  f"(target >= 0.95); {benign} benign prompts linked actors (target 0)[/]")
    return 0 if ok else 1
