"""Every form of a prompt that ``audit scan --against prompts.jsonl`` must search for.

A compliance officer checks that no prompt left the node in any shape the
node computes from it. For one prompt those shapes are:

=====================  =====================================================
form                   what it is
=====================  =====================================================
raw                    the text as the prompt file holds it (UTF-8)
normalised             :func:`~psi_share.prompts.normalise.normalise` of it
shingle                each of its shingles (word runs joined by spaces)
band canonical         each ``b<i>/<hex>``
band item              each ``psi-share/1/prompt/v<n>/b<i>/<hex>``
signature              the MinHash values as big-endian and little-endian
                       32-bit integers, and as datasketch holds them
                       (little-endian 64-bit)
=====================  =====================================================

The scan then searches each of these bases as text and as the MD5, SHA-1,
SHA-256 and SHA-512 digests in every encoding it knows (bytes, hex, HEX,
base64), exactly as it does for identifiers. Forms shorter than the scan's
anchor (8 bytes) are only searched through their digests. Labels name the
form and its position, never its content: a hit report must not repeat the
prompt.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .records import PromptRecord
from .signature import SignatureEngine

__all__ = ["PromptForms", "prompt_forms", "record_forms"]


@dataclass(frozen=True)
class PromptForms:
    """The forms of one prompt (see the module docstring)."""

    raw: str
    normalised: str
    shingles: tuple[str, ...]  # sorted
    canonicals: tuple[str, ...]
    items: tuple[str, ...]
    signature: tuple[int, ...]

    def __repr__(self) -> str:
        return f"PromptForms(<{len(self.raw)} characters, {len(self.shingles)} shingles, {len(self.items)} bands>)"

    def bases(self) -> list[tuple[str, bytes]]:
        """``(label, bytes)`` of every base form; labels never contain the prompt."""
        out = [("raw text", self.raw.encode("utf-8")), ("normalised text", self.normalised.encode("utf-8"))]
        count = len(self.shingles)
        out += [(f"shingle {n} of {count}", s.encode("utf-8")) for n, s in enumerate(self.shingles, start=1)]
        out += [(f"band {n} canonical", c.encode("ascii")) for n, c in enumerate(self.canonicals)]
        out += [(f"band {n} item", i.encode("ascii")) for n, i in enumerate(self.items)]
        if self.signature:
            values = np.asarray(self.signature, dtype=np.uint64)
            out += [
                ("signature (32-bit big-endian)", values.astype(">u4").tobytes()),
                ("signature (32-bit little-endian)", values.astype("<u4").tobytes()),
                ("signature (64-bit little-endian)", values.astype("<u8").tobytes()),
            ]
        return out


def prompt_forms(text: str, engine: SignatureEngine) -> PromptForms:
    """The forms of one prompt under ``engine``'s parameters."""
    banded = engine.band(text)
    return PromptForms(text, banded.normalised, tuple(sorted(banded.shingles)),
                       banded.canonicals, banded.items, banded.signature)


def record_forms(records: Iterable[PromptRecord], engine: SignatureEngine) -> Iterator[tuple[PromptRecord, PromptForms]]:
    """Forms of every record of a prompt file (read with :func:`.records.read_prompts_jsonl`)."""
    for record in records:
        yield record, prompt_forms(record.text, engine)
