"""The plaintext evaluation of prompt matching: what PSI would tell each lab, computed in the clear.

Each lab's prompt file is prepared exactly as ``data import --prompts
--benign`` prepares it (the stoplist, the lab's benign sample, near-duplicate
folding, the cap); then, for every ordered pair of labs, the lab's clusters
with at least ``min_bands`` of their band items in the peer's set are the
templates a reveal session would report (what ``results show`` lists). Used
by ``tests/test_prompts_eval.py`` and ``scripts/eval_prompt_seeds.py`` to
score the matcher against a synthetic federation's truth
(:func:`.synthetic.score_matches`).

Who learns what: nothing; this runs on one machine over files it was given.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

from .exclusions import ExclusionIndex, load_stoplist
from .params import PromptParams
from .prepare import PreparedPrompts, prepare_prompts
from .records import read_prompts_jsonl
from .signature import SignatureEngine

__all__ = ["found_lines", "prepare_labs"]

BENIGN_MIN_ACTORS = 5  # the [prompts] benign_min_actors default


def prepare_labs(labs: Sequence[str], files: Mapping[str, Path], params: PromptParams, *,
                 exclusions: bool = True) -> dict[str, PreparedPrompts]:
    """Each lab's ``<lab>/prompts.jsonl`` prepared with ``stoplist.txt`` and ``<lab>/benign-sample.jsonl``."""
    engine = SignatureEngine(params)
    stoplist = load_stoplist(files["stoplist.txt"]) if exclusions else None
    prepared = {}
    for lab in labs:
        index = ExclusionIndex(params.shingle_words)
        if stoplist is not None:
            index.add_stoplist(stoplist)
            index.add_frequent(read_prompts_jsonl(files[f"{lab}/benign-sample.jsonl"]), BENIGN_MIN_ACTORS)
        prepared[lab] = prepare_prompts(read_prompts_jsonl(files[f"{lab}/prompts.jsonl"]), engine, index)
    return prepared


def found_lines(prepared: Mapping[str, PreparedPrompts], min_bands: int) -> dict[tuple[str, str], set[int]]:
    """(lab, peer) -> lines of lab's cluster representatives with at least ``min_bands`` items at peer."""
    out = {}
    for lab, peer in itertools.permutations(prepared, 2):
        theirs = set(prepared[peer].actors_by_item())
        out[(lab, peer)] = {c.line for kept in prepared[lab].clusters.values() for c in kept
                            if len(theirs.intersection(c.items)) >= min_bands}
    return out
