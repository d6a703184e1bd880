"""The ``prompt`` identifier kind, for the registry in :mod:`psi_share.identifiers`.

Prompts are not canonicalized one value to one item like the other kinds: a
prompt becomes ``bands`` band items (:mod:`.signature`) and is imported from
a prompt file (:mod:`.records`), never from an identifier row. The kind is
registered so that its version travels with the others (both sides agree
on ``prompt: <normalisation version>`` before matching) and so that band
items parse as items of a known kind. Its canonicalizer refuses every
value, so a CSV row ``a-1,prompt,...`` gets a clear error instead of a
half-made item.
"""

from __future__ import annotations

from ..errors import InvalidIdentifier
from ..identifiers import KINDS, CanonicalizationContext, KindSpec, register_kind
from .normalise import NORMALISATION_VERSION
from .signature import KIND

__all__ = ["PROMPT_KIND", "register_prompt_kind"]


def _refuse_row(raw: str, ctx: CanonicalizationContext) -> str:
    raise InvalidIdentifier(KIND, "prompts are imported from a prompt file (JSONL with actor_id and text), "
                                  "not as identifier rows")


PROMPT_KIND = KindSpec(
    KIND, NORMALISATION_VERSION, _refuse_row,
    "prompt text, matched by similarity: normalised, shingled, MinHash-signed and cut into LSH band items",
)


def register_prompt_kind() -> None:
    """Register the ``prompt`` kind once; calling it again is harmless."""
    if KINDS.get(KIND) is PROMPT_KIND:
        return
    register_kind(PROMPT_KIND)  # raises if another spec took the name: a real conflict
