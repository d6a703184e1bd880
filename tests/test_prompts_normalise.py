"""Normalisation and shingling of prompts, version 1 (psi_share/prompts/normalise.py).

The vectors below are the rules of version 1 written out: if one of them has
to change, NORMALISATION_VERSION must be bumped with it.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psi_share.prompts.normalise import NORMALISATION_VERSION, normalise, shingles, tokens

VECTORS = [
    # NFKC, case folding, whitespace
    ("Ｔｒａｎｓｌａｔｅ   to\tFrench", "translate to french"),
    ("  Straße\n\n\nGROSS  ", "strasse gross"),
    ("ﬁnd the ² root", "find the <num> root"),
    # invisible and control characters
    ("zero\u200bwidth soft\u00adhyphen bom\ufeff", "zerowidth softhyphen bom"),
    ("bell\x07between nul\x00words", "bell between nul words"),
    ("line\u2028separator para\u2029graph", "line separator para graph"),
    # numbers
    ("Problem 12: 3.14, 1,000 and 2024-05-01 at 12:30", "problem <num>: <num>, <num> and <num> at <num>"),
    ("gpt4 and gpt 4", "gpt<num> and gpt <num>"),
    ("١٢٣ arabic-indic digits", "<num> arabic-indic digits"),
    # URLs, e-mail, UUIDs
    ("see https://example.com/a?b=1#c now", "see <url> now"),
    ("or www.example.org/x, then", "or <url> then"),
    ("mail Bob.Smith+tag@Example.co.uk please", "mail <email> please"),
    ("id 123E4567-E89B-12D3-A456-426614174000 ok", "id <uuid> ok"),
    # quotations: long ones masked, short ones kept
    ('translate "hello" to german', 'translate "hello" to german'),
    ('solve "a train leaves the station at noon" now', "solve <quote> now"),
    ("answer “what is the meaning of life and all that”", "answer <quote>"),
    ("«une citation assez longue pour compter»", "<quote>"),
    ("`some inline code span longer than twenty`", "<quote>"),
    ('"1 2 3 4 5"', "<quote>"),  # numbers are masked first, then measured
    ('"xxxxxxxxxx "aaaaaaaaaaaaaaaaaaaaaaa" yyyyyyyyyy"', "<quote>"),  # nested: outer one too
    # code blocks
    ("```python\nprint('hi')\n```\nExplain this", "<code> explain this"),
    ("~~~\nunclosed fence runs to the end", "<code>"),
    ("fix ```a``` and ```b```", "fix <code> and <code>"),
    # nothing to mask
    ("What's the capital of France?", "what's the capital of france?"),
]


@pytest.mark.parametrize(("raw", "expected"), VECTORS)
def test_normalisation_vectors(raw: str, expected: str) -> None:
    assert normalise(raw) == expected


def test_version_is_one() -> None:
    assert NORMALISATION_VERSION == 1


@pytest.mark.parametrize(("raw", "expected"), VECTORS)
def test_vectors_are_fixed_points(raw: str, expected: str) -> None:
    assert normalise(expected) == expected


_PIECES = st.sampled_from(['"', "“", "”", "`", "```", "~~~", "@", ".", ",", "-", ":", " ", "\n", "1", "42",
                           "x", "ß", "ﬁ", "\u200b", "www.", "https://", "a.b", "İ", "ς", "Ω", "<num>", "«", "»"])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_PIECES, st.text(max_size=6)), max_size=40).map("".join))
def test_normalise_is_idempotent(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once


def test_same_template_different_fillings_normalise_alike() -> None:
    one = normalise('Solve problem 17: "How many apples fit in a basket of this size?" See https://a.example/1')
    two = normalise('SOLVE  problem 2,048:\n"Why is the sky blue on a clear summer afternoon?" see http://b.example/zz')
    assert one == two


@pytest.mark.parametrize(
    "text",
    ["a" * 32768, '"' * 32768, "a@" * 16384, "1." * 16384, "`" * 32768, "```" * 10000, '"x"' * 10000,
     "www." * 8000, "“" * 32768, ('"' + "a" * 25) * 1200, "a-" * 16384, ("x" * 21 + '"') * 1400],
)
def test_hostile_texts_of_32_kib_normalise(text: str) -> None:
    # Every pattern only starts where a match can begin; a quadratic one
    # would make this test take minutes instead of milliseconds.
    assert normalise(normalise(text)) == normalise(text)


def test_tokens_keep_placeholders_whole_and_split_unspaced_scripts() -> None:
    assert tokens("gpt<num> vs <url>, ok") == ["gpt", "<num>", "vs", "<url>", "ok"]
    assert tokens("用中文解释 photosynthesis") == ["用", "中", "文", "解", "释", "photosynthesis"]
    assert tokens("!!! ... ???") == []


def test_shingles() -> None:
    assert shingles("think step by step, then answer", 3) == frozenset(
        {"think step by", "step by step", "by step then", "step then answer"}
    )
    assert shingles("hi there", 3) == frozenset({"hi there"})  # shorter than k: one shingle
    assert shingles("?!", 3) == frozenset()
    assert shingles("a a a a a", 2) == frozenset({"a a"})
    with pytest.raises(ValueError):
        shingles("x", 0)


def test_non_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="bytes"):
        normalise(b"bytes")  # type: ignore[arg-type]
