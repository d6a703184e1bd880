"""CLI pieces for prompt chains: importing prompt files, and what sessions and runs found.

The commands stay where users look for them (``data import --prompts``,
``results show``, ``results run --chain-peers``); their prompt-specific
bodies live here. No output ever contains a prompt: only actor ids, chain
and cluster labels of this node, line numbers of the lab's own file, and
counts.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..jobs.history import run_attribution
from ..node.node import Node
from ..node.prompts.matches import chain_actors, chain_sightings, implied_similarity
from ..store import ImportMode
from ..node.prompts.matches import prompt_matches
from .output import emit, emit_object


def import_prompts(n: Node, dataset: str, file: Path, mode: ImportMode | None, rejects: Path | None,
                   benign: Path | None, fmt: str) -> None:
    """``data import --prompts``: import, then print what was read, removed and kept."""
    s = n.import_prompts(dataset, file, mode, rejects=rejects, benign=benign)
    emit_object(s.as_dict(), fmt, title="prompt import")
    if fmt == "table":
        for line in s.report.lines():
            click.echo(line, err=True)
    if s.rejected:
        click.echo(f"{s.rejected} of {s.lines} prompt lines refused and not imported; file, line and reason of "
                   f"each are in {s.rejects_file}", err=True)


def show_prompt_session(n: Node, session_id: str, peer: str, fmt: str) -> None:
    """``results show`` for a session with prompt items: per template, the bands that matched."""
    rows_per_band = n.config.prompts.rows if n.config.prompts.enabled else 0
    rows = [
        {"actor_id": m.actor_id, "chain": m.chain, "template": m.cluster, "line": m.line,
         "bands_matched": f"{m.bands_matched}/{m.bands}",
         "similarity": round(implied_similarity(m.bands_matched, m.bands, rows_per_band), 2)}
        for m in prompt_matches(n.store, [session_id])
    ]
    emit(rows, ("actor_id", "chain", "template", "line", "bands_matched", "similarity"), fmt,
         f"prompt templates with a near-duplicate at {peer} (similarity implied by the bands matched)")


def run_rows(n: Node, run_id: str, min_peers: int, chain_peers: int) -> list[dict[str, object]]:
    """``results run`` rows: per actor its peers, and the chains (seen at >= ``chain_peers`` peers) linking it."""
    sessions = [s.id for s in n.store.sessions(job_run_id=run_id) if s.role == "requester" and s.status == "done"]
    linked = chain_actors(chain_sightings(n.store, sessions), max(1, chain_peers))
    out = []
    for actor, peers in run_attribution(n.store, run_id).items():
        chains = linked.get(actor, ())
        if len(peers) < min_peers or (chain_peers and not chains):
            continue
        out.append({"actor_id": actor, "peer_count": len(peers), "peers": list(peers),
                    "chains": [f"{c.chain} ({len(c.peers)}: {','.join(c.peers)})" for c in chains]})
    return out


def emit_run(rows: list[dict[str, object]], fmt: str, title: str) -> None:
    columns = ("actor_id", "peer_count", "peers") + (("chains",) if any(r["chains"] for r in rows) else ())
    emit(rows, columns, fmt, title)
