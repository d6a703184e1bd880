"""Prompt chains: matching prompts by similarity, without showing them.

A distillation campaign sends the same templates, filled with fresh
variables, from accounts at several labs. Each lab turns every prompt into
a few *band items* locally, and the labs intersect those items with the same
PSI protocols they use for identifiers; two prompts whose word shingles
have Jaccard similarity above the configured threshold share at least
``min_bands`` band items with high probability, and that is what makes them
near-duplicates (:mod:`.params`).

Pipeline (all local; the modules say how)::

    text --normalise--> normalised text --shingles--> set of word 2-grams
         --MinHash (federation seed)--> bands*rows values
         --LSH banding--> bands items psi-share/1/prompt/v1/b<i>/<hex>

* :mod:`.normalise`   versioned normalisation and shingling
* :mod:`.params`      the parameter set both nodes agree on, thresholds, seed
* :mod:`.signature`   MinHash signatures (datasketch) and band items
* :mod:`.records`     the prompt file (JSONL) reader
* :mod:`.exclusions`  stoplist files and a lab's frequent benign templates
* :mod:`.prepare`     exclusion, per-actor LSH deduplication and the item cap
* :mod:`.audit_forms` every form of a prompt the audit scan must search for
* :mod:`.kind`        the ``prompt`` kind for the identifier registry
* :mod:`.wire`        the parameter set as the ``PromptParameters`` message
* :mod:`.synthetic`   synthetic campaigns with ground truth, for demos and tests
* :mod:`.evaluation`  the plaintext evaluation (what PSI would tell each lab), for tests and scripts

Who learns what, in a PSI session over band items (the README's "Prompt
chains" section states it in the threat model's terms):

* the requester learns which of its own band items the responder also
  holds, so which of its prompts (and actors) have a similar prompt there,
  and *how many* bands match, which approximates the similarity; the
  responder learns the requester's number of items;
* neither learns the other's texts; but a member holding the federation
  seed can compute the band items of any text it guesses and so test
  whether a peer holds prompts similar to a guessed template, within its
  set-size and daily budgets, as for guessed identifiers.

This package is ground floor: it imports only :mod:`psi_share.errors`,
:mod:`psi_share.identifiers` and the generated :mod:`psi_share.v1`. The node
wires it in from :mod:`psi_share.node.prompts`.
"""

from __future__ import annotations

from .audit_forms import PromptForms, prompt_forms, record_forms
from .exclusions import DEFAULT_CONTAINMENT, LOCAL_BENIGN, STOPLIST_HEADER, ExclusionIndex, Stoplist, load_stoplist
from .kind import PROMPT_KIND, register_prompt_kind
from .normalise import NORMALISATION_VERSION, normalise, shingles, tokens
from .params import (
    DEFAULT_SHINGLE_WORDS,
    DEFAULT_THRESHOLD,
    MINHASH_SCHEME,
    RECOMMENDED,
    PromptParams,
    check_agreement,
    match_probability,
    new_federation_seed,
)
from .prepare import DEFAULT_MAX_ITEMS_PER_ACTOR, Cluster, PreparationReport, PreparedPrompts, prepare_prompts
from .records import MAX_PROMPT_BYTES, PromptRecord, read_prompts_jsonl
from .signature import KIND, BandedPrompt, SignatureEngine, band_item, parse_band_canonical

__all__ = [
    "DEFAULT_CONTAINMENT",
    "DEFAULT_MAX_ITEMS_PER_ACTOR",
    "DEFAULT_SHINGLE_WORDS",
    "DEFAULT_THRESHOLD",
    "KIND",
    "LOCAL_BENIGN",
    "MAX_PROMPT_BYTES",
    "MINHASH_SCHEME",
    "NORMALISATION_VERSION",
    "PROMPT_KIND",
    "RECOMMENDED",
    "STOPLIST_HEADER",
    "BandedPrompt",
    "Cluster",
    "ExclusionIndex",
    "PreparationReport",
    "PreparedPrompts",
    "PromptForms",
    "PromptParams",
    "PromptRecord",
    "SignatureEngine",
    "Stoplist",
    "band_item",
    "check_agreement",
    "load_stoplist",
    "match_probability",
    "new_federation_seed",
    "normalise",
    "parse_band_canonical",
    "prepare_prompts",
    "prompt_forms",
    "read_prompts_jsonl",
    "record_forms",
    "register_prompt_kind",
    "shingles",
    "tokens",
]
