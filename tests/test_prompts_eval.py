"""Plaintext evaluation of prompt matching on the synthetic campaign.

What PSI over band items would give each lab is computed here in plain
Python: lab A's band items that lab B also holds (a set intersection, the
same result the PSI requester gets), mapped back to A's prompts and actors.
It is scored against the generator's truth, which comes from construction
(which template each prompt was made from), not from the matcher.

Targets (issue 14): precision and recall of "template shared with peer" and
of "actors linked by templates" at least 0.95 at the configured threshold,
and no benign prompt links two actors.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from psi_share.prompts import DEFAULT_THRESHOLD, PromptParams, normalise, shingles
from psi_share.prompts.evaluation import found_lines, prepare_labs
from psi_share.prompts.synthetic import Score, SyntheticFederation, generate, score_matches, write_files


def run_federation(fed: SyntheticFederation, tmp_path: Path, params: PromptParams, *,
                   exclusions: bool = True) -> dict[tuple[str, str], Score]:
    """Write the federation's files, prepare each lab from them, intersect, score (a template is
    found with at least min_bands of its items at the peer: what results show lists)."""
    prepared = prepare_labs(fed.labs, write_files(fed, tmp_path), params, exclusions=exclusions)
    return {pair: score_matches(fed, *pair, lines) for pair, lines in found_lines(prepared, params.min_bands).items()}


SEED_HEX = "5e" * 32


# (7, "a1") and (9, "d3") are pairs of generator and federation seed where the parameters
# before 25 x 5 with one band deciding failed (a near-miss found, a campaign template missed);
# scripts/eval_prompt_seeds.py sweeps 80 such pairs.
@pytest.mark.parametrize(("seed", "federation_seed"), [(7, SEED_HEX), (7, "a1" * 32), (9, "d3" * 32)])
def test_campaign_is_found_at_the_configured_threshold(tmp_path: Path, seed: int, federation_seed: str) -> None:
    fed = generate(seed=seed)
    params = PromptParams.from_config(federation_seed)
    assert (params.bands, params.rows, params.min_bands, DEFAULT_THRESHOLD) == (48, 4, 4, 0.5)
    scores = run_federation(fed, tmp_path, params)
    for (lab, peer), score in scores.items():
        assert score.templates[0] > 3 and score.actors[0] > 10, (lab, peer, score)  # non-trivial truth
        assert score.template_precision >= 0.95 and score.template_recall >= 0.95, (lab, peer, score)
        assert score.actor_precision >= 0.95 and score.actor_recall >= 0.95, (lab, peer, score)
        assert score.benign_links == 0, (lab, peer, score)


def test_four_labs(tmp_path: Path) -> None:
    fed = generate(seed=11, labs=("lab-w", "lab-x", "lab-y", "lab-z"))
    for (lab, peer), score in run_federation(fed, tmp_path, PromptParams.from_config(SEED_HEX)).items():
        assert min(score.template_precision, score.template_recall) >= 0.95, (lab, peer, score)
        assert min(score.actor_precision, score.actor_recall) >= 0.95, (lab, peer, score)
        assert score.benign_links == 0


def test_benign_prompts_would_link_actors_without_exclusions(tmp_path: Path) -> None:
    """The exclusions are what keeps benign prompts from linking: without them they do."""
    fed = generate(seed=7)
    scores = run_federation(fed, tmp_path, PromptParams.from_config(SEED_HEX), exclusions=False)
    assert all(score.benign_links > 0 for score in scores.values())
    assert all(score.actor_precision < 0.95 for score in scores.values())


def test_generator_properties() -> None:
    """The generator is deterministic, its near-misses sit below the threshold, its campaign above."""
    fed, again = generate(seed=7), generate(seed=7)
    assert [p.text for p in fed.prompts["lab-b"]] == [p.text for p in again.prompts["lab-b"]]
    assert len({p.template for lab in fed.labs for p in fed.prompts[lab] if p.template.startswith("campaign")}) == 20

    k = PromptParams.from_config(SEED_HEX).shingle_words

    def jaccard(a: str, b: str) -> float:
        x, y = shingles(normalise(a), k), shingles(normalise(b), k)
        return len(x & y) / len(x | y)

    by_template: dict[tuple[str, str], list[str]] = {}
    for lab in fed.labs:
        for p in fed.prompts[lab]:
            by_template.setdefault((lab, p.template), []).append(p.text)
    near = [texts[0] for (lab, t), texts in by_template.items() if t.startswith("near-miss")]
    campaign = [texts[0] for (lab, t), texts in by_template.items() if t.startswith("campaign")]
    closest = max(jaccard(n, c) for n in near for c in campaign)
    assert 0.2 < closest < DEFAULT_THRESHOLD
