"""Benign prompts are not evidence: the federation stoplist and a lab's own exclusions.

Ordinary requests ("summarise this article", "translate to French") are sent
by every lab's users; two actors sharing one proves nothing. Before any
matching, a prompt is **removed** when most of it is an excluded template:
when at least ``containment`` (default 0.5) of its shingles are shingles of
one stoplist entry, or shingles that many of the lab's own benign users
send. The whole prompt goes, with all its bands.

Why exact shingle overlap and not the matching LSH: exclusion has to be
*more* eager than matching. LSH is probabilistic, so a benign prompt just
above the matching threshold would escape an LSH exclusion now and then,
and one that escapes at two labs links two ordinary users. Overlap is
computed exactly (an index from shingle to entries), so a prompt mostly
made of an excluded template is always removed, and a long campaign prompt
that merely *contains* a common phrase ("think step by step") is not.

Two sources of exclusions, both applied by :class:`ExclusionIndex`:

* **A stoplist file** (the federation's public list of common templates, or
  a lab's own list in the same format)::

      # psi-share prompt stoplist v1
      # One template per line, written as one typical prompt; the variable
      # parts may be example values or the placeholders normalisation
      # produces (<num>, <url>, <email>, <uuid>, <quote>, <code>).
      Summarise this article in three bullet points.
      Translate the following text to French: <quote>

  The first line that is not blank must be the header above; lines starting
  with ``#`` and blank lines are ignored; every other line (stripped) is one
  entry of at most 32 KiB. An entry without any word is an error naming
  ``FILE:LINE``. The file's SHA-256 is reported so that members can check
  they apply the same list.
* **Templates the lab's own benign users send often**: from a sample of
  benign traffic (a prompt file of ordinary accounts), every shingle sent by
  at least ``min_actors`` distinct actors is *common*; a prompt whose
  shingles are at least ``containment`` common is removed. A popular
  template's fixed words are common however its users fill it; a template
  only a few accounts send is not.

A campaign can try to hide behind exclusions by wrapping every prompt in
benign text until most of its shingles are benign; that makes its prompts
long and odd, which is a signal of its own, and raising ``containment``
trades that evasion against benign links (the README says so).

Who learns what: exclusions are local. A removed prompt contributes no
item to any session, so peers learn nothing of it, nor that it was
removed; the report says what was removed, by rule and in counts, for the
lab's own operators.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ImportFileError
from .normalise import normalise, shingles
from .records import MAX_PROMPT_BYTES, PromptRecord, read_lines

__all__ = ["DEFAULT_CONTAINMENT", "LOCAL_BENIGN", "STOPLIST_HEADER", "ExclusionIndex", "Stoplist", "load_stoplist"]

STOPLIST_HEADER = "# psi-share prompt stoplist v1"
LOCAL_BENIGN = "local benign templates"
DEFAULT_CONTAINMENT = 0.5


@dataclass(frozen=True)
class Stoplist:
    """A parsed stoplist file: its entries by line, and the file's SHA-256."""

    path: str
    sha256: str
    entries: tuple[tuple[int, str], ...]  # (line, text)

    def __repr__(self) -> str:
        return f"Stoplist(path={self.path!r}, entries={len(self.entries)}, sha256={self.sha256[:16]}...)"


def load_stoplist(path: Path | str) -> Stoplist:
    """Parse a stoplist file; :class:`ImportFileError` ``FILE:LINE`` on the first bad line."""
    name = str(path)
    lines, digest = read_lines(path)
    entries: list[tuple[int, str]] = []
    header_seen = False
    for number, line in lines:
        text = line.strip()
        if not text:
            continue
        if not header_seen:
            if text != STOPLIST_HEADER:
                raise ImportFileError(name, number, f"a stoplist starts with the line '{STOPLIST_HEADER}'")
            header_seen = True
            continue
        if text.startswith("#"):
            continue
        if len(text.encode("utf-8", "surrogatepass")) > MAX_PROMPT_BYTES:
            raise ImportFileError(name, number, f"entry is longer than {MAX_PROMPT_BYTES} bytes")
        entries.append((number, text))
    if not header_seen:
        raise ImportFileError(name, 1, f"a stoplist starts with the line '{STOPLIST_HEADER}'")
    return Stoplist(name, digest, tuple(entries))


class ExclusionIndex:
    """Excluded templates, each named by the rule that excluded it.

    ``shingle_words`` must be the parameter set's, so that shingles compare.
    """

    def __init__(self, shingle_words: int, containment: float = DEFAULT_CONTAINMENT) -> None:
        if not 0.0 < containment <= 1.0:
            raise ValueError("containment must be in (0, 1]")
        self.shingle_words = shingle_words
        self.containment = containment
        self._entries: list[tuple[str, int]] = []  # (rule, number of shingles)
        self._postings: dict[str, list[int]] = {}  # shingle -> entries holding it
        self._common: frozenset[str] = frozenset()
        self.stoplists: list[Stoplist] = []
        self.common_shingles = 0

    def add_stoplist(self, stoplist: Stoplist) -> None:
        """Exclude prompts that are mostly one entry of ``stoplist`` (rule ``stoplist <file>:<line>``)."""
        name = Path(stoplist.path).name
        for line, text in stoplist.entries:
            entry = shingles(normalise(text), self.shingle_words)
            if not entry:
                raise ImportFileError(stoplist.path, line, "stoplist entry has no word after normalisation")
            number = len(self._entries)
            self._entries.append((f"stoplist {name}:{line}", len(entry)))
            for shingle in entry:
                self._postings.setdefault(shingle, []).append(number)
        self.stoplists.append(stoplist)

    def add_frequent(self, benign: Iterable[PromptRecord], min_actors: int) -> int:
        """Treat every shingle that at least ``min_actors`` distinct actors of ``benign`` sent as common.

        Returns the number of common shingles (they stay in memory, on this node only).
        """
        if min_actors < 2:
            raise ValueError("min_actors must be at least 2: one actor's prompts are not 'common'")
        per_actor: dict[str, set[str]] = {}
        for record in benign:
            per_actor.setdefault(record.actor_id, set()).update(shingles(normalise(record.text), self.shingle_words))
        senders = Counter(s for own in per_actor.values() for s in own)
        self._common = self._common | {s for s, n in senders.items() if n >= min_actors}
        self.common_shingles = len(self._common)
        return self.common_shingles

    def rule_for(self, prompt_shingles: frozenset[str]) -> str | None:
        """The rule that removes a prompt with these shingles, or ``None`` to keep it."""
        if not prompt_shingles:
            return None
        needed = self.containment * len(prompt_shingles)
        if self._entries:
            shared = Counter(n for s in prompt_shingles for n in self._postings.get(s, ()))
            for number, count in sorted(shared.items()):
                if count >= needed:
                    return self._entries[number][0]
        if self._common and len(prompt_shingles & self._common) >= needed:
            return LOCAL_BENIGN
        return None
