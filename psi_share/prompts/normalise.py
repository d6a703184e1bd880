"""Normalisation and shingling of prompt texts, version 1.

Two labs only find that they see the same prompt chain if they turn two
fillings of one template into *similar sets*: the same template filled with
different variables must come out nearly the same, and layout, case and
Unicode look-alikes must not matter. This module is the single place where
that happens; any change to its output, however small, must bump
:data:`NORMALISATION_VERSION` (it is part of every band item and of the
parameter fingerprint, so nodes on different versions refuse to match
instead of silently half-matching).

Normalisation, version 1, in this order
---------------------------------------
1. **Unicode NFKC**: compatibility forms become their plain letters
   (full-width ``Ｆｒｅｎｃｈ`` is ``French``, ``ﬁ`` is ``fi``, superscript
   digits are digits).
2. **Invisible and control characters removed**: format characters (Unicode
   Cf: zero-width space and joiner, soft hyphen, byte-order mark, bidi
   controls) are deleted, since they are invisible and would let a sender
   split words at will; control characters (Cc) and line/paragraph
   separators become spaces.
3. **Case folding** (``str.casefold``: ``Straße`` is ``strasse``).
4. **Variable parts masked**, each by a placeholder token, in this order
   (earlier masks swallow what later ones would find inside them):

   ==============  ======================================================  ============
   what            recognised as                                           placeholder
   ==============  ======================================================  ============
   code block      a fenced block: ```` ``` ```` or ``~~~`` to the next     ``<code>``
                   same fence (or to the end of the text)
   URL             ``http://``, ``https://``, ``ftp://`` or ``www.``        ``<url>``
                   followed by non-space characters
   e-mail address  ``local@domain.tld`` (dot-atom local part)              ``<email>``
   UUID            8-4-4-4-12 hexadecimal digits                           ``<uuid>``
   number          digits, with ``.`` ``,`` ``:`` ``/`` ``-`` ``_``         ``<num>``
                   between groups of digits (``3.14``, ``1,000``,
                   ``2024-05-01``, ``12:30``)
   long quotation  at least 20 characters (counted after the masks         ``<quote>``
                   above) between ``"…"``, ``“…”``, ``„…“``, ``«…»``,
                   ``「…」``, ``『…』`` or single backticks
   ==============  ======================================================  ============

   Short quotations (under 20 characters) stay: ``translate "hello"`` keeps
   the word, because short quoted words are usually part of the template.
   The masks are applied again until nothing changes: masking one part
   can complete another (a quotation around a masked one, ``4www.x`` once
   the number is masked).
5. **Whitespace collapsed**: every run of whitespace becomes one space;
   leading and trailing whitespace is removed.

The result is a fixed point: ``normalise(normalise(t)) == normalise(t)``.

Shingles
--------
The normalised text is split into *tokens*: the placeholders above, single
characters of the scripts written without spaces between words (Han,
Hiragana, Katakana, Thai, Lao, Khmer, Myanmar), and runs of other word
characters (``\\w``: letters, digits, ``_``); punctuation only separates
tokens. The shingles are the distinct runs of ``k`` consecutive
tokens (``k`` = ``shingle_words`` of the parameter set, 2 by default),
joined by single spaces. A text with fewer than ``k`` tokens has one
shingle, all its tokens; a text with no token at all has none and cannot be
matched (it is reported, not imported).

Who learns what: nothing here leaves the node. Normalised texts and shingles
are derived from customer text by a public function, so, like identifiers,
they are only ever used locally (see :mod:`psi_share.prompts.audit_forms`
for how the audit scan checks that none of them was sent).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "MIN_QUOTED",
    "NORMALISATION_VERSION",
    "PLACEHOLDERS",
    "normalise",
    "shingles",
    "tokens",
]

NORMALISATION_VERSION = 1
MIN_QUOTED = 20
PLACEHOLDERS = ("<code>", "<url>", "<email>", "<uuid>", "<quote>", "<num>")

# Every pattern below is anchored so that the regex engine only *starts* a
# match where one can begin (a fence, a scheme, a word boundary); a 32 KiB
# prompt that is one long word or one long run of quotes is then still
# scanned in linear time instead of being retried from every position.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode Cc, all of it
_CODE_RE = re.compile(r"(```|~~~).*?(?:\1|\Z)", re.DOTALL)
_URL_RE = re.compile(r"(?<![\w.])(?:(?:https?|ftp)://|www\.)[^\s<>\"“”«»「」『』`]+")
_EMAIL_RE = re.compile(
    r"(?<![\w.+-])[\w+-]+(?:\.[\w+-]+)*@[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)+"
)
_UUID_RE = re.compile(r"(?<![0-9a-f])[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?![0-9a-f])")
_NUMBER_RE = re.compile(r"(?<!\d)\d+(?:[.,:/_-]\d+)*")
_QUOTE_PAIRS = (('"', '"'), ("“", "”"), ("„", "“"), ("«", "»"), ("「", "」"), ("『", "』"), ("`", "`"))
_QUOTE_RE = re.compile(
    "|".join(
        f"{re.escape(opening)}[^{re.escape(opening)}{re.escape(closing)}]{{{MIN_QUOTED},}}{re.escape(closing)}"
        for opening, closing in _QUOTE_PAIRS
    )
)
_SPACE_RE = re.compile(r"\s+")
# Scripts without spaces between words: each character is a token, so that
# shingles are runs of characters there (Han, kana, Thai, Lao, Myanmar, Khmer).
_UNSPACED = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN_RE = re.compile(rf"<(?:code|url|email|uuid|quote|num)>|[{_UNSPACED}]|(?:(?![{_UNSPACED}])\w)+")

_MASKS = (
    (_CODE_RE, " <code> "),
    (_URL_RE, " <url> "),
    (_EMAIL_RE, " <email> "),
    (_UUID_RE, " <uuid> "),
    (_NUMBER_RE, "<num>"),
    (_QUOTE_RE, " <quote> "),
)


def normalise(text: str) -> str:
    """The normalised text of a prompt (rules of version 1, see the module docstring)."""
    if not isinstance(text, str):
        raise TypeError(f"prompt text must be a string, not {type(text).__name__}")
    value = _CONTROL_RE.sub(" ", unicodedata.normalize("NFKC", text))
    if not value.isascii():  # format characters are all beyond ASCII
        value = "".join(ch for ch in value if unicodedata.category(ch) != "Cf")
    # casefold can leave text that NFKC changes again (and the other way
    # round); a few rounds reach the fixed point that makes normalise
    # idempotent.
    for _ in range(4):
        folded = unicodedata.normalize("NFKC", value.casefold())
        if folded == value:
            break
        value = folded
    # A mask can open a match for another (a number masked before "www."
    # leaves "<num>www." where "www." now starts a URL; a quotation around a
    # masked one becomes short enough), so the masks run until nothing
    # changes. Every change removes characters a mask needs (digits, "@",
    # "://", quote marks, fences), so this ends, in two rounds in practice.
    while True:
        masked = value
        for pattern, placeholder in _MASKS:
            masked = pattern.sub(placeholder, masked)
        if masked == value:
            break
        value = masked
    return _SPACE_RE.sub(" ", value).strip()


def tokens(normalised: str) -> list[str]:
    """The tokens of a normalised text: placeholders and runs of word characters."""
    return _TOKEN_RE.findall(normalised)


def shingles(normalised: str, k: int) -> frozenset[str]:
    """The distinct runs of ``k`` consecutive tokens, joined by one space."""
    if k < 1:
        raise ValueError("shingle size must be at least 1")
    words = tokens(normalised)
    if len(words) <= k:
        return frozenset({" ".join(words)}) if words else frozenset()
    return frozenset(" ".join(words[i:i + k]) for i in range(len(words) - k + 1))
