"""Prompt files, stoplists, exclusions, per-actor deduplication and the cap, audit forms."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from psi_share.errors import ImportFileError
from psi_share.prompts import (
    LOCAL_BENIGN,
    MAX_PROMPT_BYTES,
    ExclusionIndex,
    PromptParams,
    PromptRecord,
    SignatureEngine,
    load_stoplist,
    prepare_prompts,
    prompt_forms,
    read_prompts_jsonl,
)

SECRET = "Zanzibar-Quokka-7731"  # stands for customer text: must never reach an error message


@pytest.fixture(scope="module")
def engine() -> SignatureEngine:
    return SignatureEngine(PromptParams(bytes(range(32)), 18, 7, shingle_words=3))  # the exclusion cases count 3-word shingles


def _write(tmp_path: Path, lines: list[str], name: str = "p.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _line(**fields: object) -> str:
    return json.dumps(fields)


def test_reads_records(tmp_path: Path) -> None:
    path = _write(tmp_path, [
        _line(actor_id="a-1", text="Hello there", seen_at="2026-05-01T12:00:00Z"),
        "",
        _line(actor_id="a-1", text="line\nbreaks\u2028and separators", seen_at=None),
        _line(actor_id="b-2", text="x" * MAX_PROMPT_BYTES, seen_at="2026-05-01T14:00:00+02:00"),
    ])
    records = read_prompts_jsonl(path)
    assert [r.line for r in records] == [1, 3, 4]
    assert [r.actor_id for r in records] == ["a-1", "a-1", "b-2"]
    assert records[1].text == "line\nbreaks\u2028and separators" and records[1].seen_at is None
    assert records[0].seen_at == records[2].seen_at == dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
    assert "Hello" not in repr(records[0]) and "a-1" not in repr(records[0])


BAD_LINES = [
    ('{"actor_id": "a", "text": ', "invalid JSON"),
    (json.dumps([SECRET]), "expected a JSON object"),
    (_line(actor_id="a", text=SECRET, extra=1), "unknown field(s): extra"),
    (json.dumps({"actor_id": "a", "text": "t", SECRET + " is here": 1}), "unknown field(s): 1 other(s)"),
    (_line(text=SECRET), '"actor_id" must be a string'),
    (_line(actor_id=7, text=SECRET), '"actor_id" must be a string'),
    (_line(actor_id=" " + SECRET, text="t"), "surrounding whitespace"),
    (_line(actor_id="", text=SECRET), "actor_id is empty"),
    (_line(actor_id=SECRET * 8, text="t"), "longer than 128"),
    (_line(actor_id=SECRET + "\x07", text="t"), "not printable"),
    (_line(actor_id="a"), '"text" must be a string'),
    (_line(actor_id="a", text=[SECRET]), '"text" must be a string'),
    (_line(actor_id="a", text="  \n "), "text is empty"),
    (_line(actor_id="a", text=SECRET + "é" * MAX_PROMPT_BYTES), "the limit is 32768"),
    ('{"actor_id": "a", "text": "' + SECRET + '\\ud800"}', "unpaired surrogate"),
    (_line(actor_id="a", text=SECRET, seen_at="yesterday " + SECRET), "ISO 8601"),
    (_line(actor_id="a", text=SECRET, seen_at="2026-05-01T12:00:00"), "no UTC offset"),
    (_line(actor_id="a", text=SECRET, seen_at=1714564800), "ISO 8601"),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_LINES)
def test_bad_line_is_named_by_file_and_line_without_its_content(tmp_path: Path, bad: str, reason: str) -> None:
    path = _write(tmp_path, [_line(actor_id="ok", text="fine"), "", bad, _line(actor_id="ok", text="fine")])
    with pytest.raises(ImportFileError) as caught:
        read_prompts_jsonl(path)
    assert caught.value.line == 3 and caught.value.path == str(path)
    assert str(caught.value).startswith(f"{path}:3: ")
    assert reason in str(caught.value)
    assert SECRET not in str(caught.value) and "Quokka" not in str(caught.value)


def test_bad_files(tmp_path: Path) -> None:
    cases = {
        "empty.jsonl": (b"\n\n", 1, "holds no prompts"),
        "latin1.jsonl": (_line(actor_id="a", text="ok").encode() + b"\n" + b'{"text": "caf\xe9"}\n', 2, "not valid UTF-8"),
        "bom.jsonl": (b"\xef\xbb\xbf" + _line(actor_id="a", text="ok").encode(), None, ""),
        "p.csv": (b"actor_id,text\n", 0, "use a .jsonl"),
    }
    for name, (content, line, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        if line is None:
            assert read_prompts_jsonl(path)[0].text == "ok"
            continue
        with pytest.raises(ImportFileError, match=reason) as caught:
            read_prompts_jsonl(path)
        assert caught.value.line == line
    with pytest.raises(ImportFileError, match="cannot read"):
        read_prompts_jsonl(tmp_path / "missing.jsonl")


STOPLIST = """# psi-share prompt stoplist v1
# common templates

Summarise this article in three bullet points: <quote>
what is the capital of France
"""


def test_stoplist_format(tmp_path: Path) -> None:
    path = tmp_path / "stop.txt"
    path.write_text(STOPLIST, encoding="utf-8")
    stoplist = load_stoplist(path)
    assert stoplist.entries == ((4, "Summarise this article in three bullet points: <quote>"),
                                (5, "what is the capital of France"))
    assert len(stoplist.sha256) == 64
    for content, line, reason in (
        ("Summarise this\n", 1, "starts with the line"),
        ("\n\n# psi-share prompt stoplist v2\n", 3, "starts with the line"),
        ("", 1, "starts with the line"),
        ("# psi-share prompt stoplist v1\n" + "x" * (MAX_PROMPT_BYTES + 1) + "\n", 2, "longer than"),
    ):
        path.write_text(content, encoding="utf-8")
        with pytest.raises(ImportFileError, match=reason) as caught:
            load_stoplist(path)
        assert caught.value.line == line
    path.write_text("# psi-share prompt stoplist v1\nfine entry\n???\n", encoding="utf-8")
    with pytest.raises(ImportFileError, match="no word") as caught:
        ExclusionIndex(3).add_stoplist(load_stoplist(path))
    assert caught.value.line == 3


def _records(*rows: tuple[str, str]) -> list[PromptRecord]:
    return [PromptRecord(n, actor, text) for n, (actor, text) in enumerate(rows, start=1)]


CAMPAIGN = ("You are a world-class chemistry expert. Solve the following problem and think step by step, "
            "writing out every intermediate step of your reasoning before you give the final answer. "
            'Problem {n}: "{q}" End your reply with FINAL ANSWER followed by the answer.')


def test_exclusions_remove_benign_and_keep_campaign(tmp_path: Path, engine: SignatureEngine) -> None:
    path = tmp_path / "stop.txt"
    path.write_text(STOPLIST, encoding="utf-8")
    index = ExclusionIndex(3)
    index.add_stoplist(load_stoplist(path))
    benign_users = _records(*[(f"u{i}", f"explain {topic} like I'm five")
                              for i, topic in enumerate(["gravity", "inflation", "gravity", "inflation"] * 3)])
    assert index.add_frequent(benign_users, min_actors=3) >= 4
    records = _records(
        ("a", 'Summarise this article in three bullet points: "The council voted on the new budget last night."'),
        ("a", "what is the capital of Japan"),  # 3 of 4 shingles are the entry's
        ("b", "Explain gravity like i'm five!!"),  # the lab's own benign users send this often
        ("b", "explain photosynthesis like I'm five"),  # 3 of 5 shingles common
        ("c", CAMPAIGN.format(n=1, q="How many moles of water are in a litre of it?")),
        ("c", CAMPAIGN.format(n=2, q="What is the pH of a weak acid solution here?") + " what is the capital of France"),
        ("d", "???"),
    )
    prepared = prepare_prompts(records, engine, index)
    report = prepared.report
    assert report.excluded == {"stoplist stop.txt:4": 1, "stoplist stop.txt:5": 1, LOCAL_BENIGN: 2}
    assert report.excluded_actors == {"stoplist stop.txt:4": 1, "stoplist stop.txt:5": 1, LOCAL_BENIGN: 1}
    assert report.actors_emptied == 2 and report.without_words == 1
    assert list(prepared.clusters) == ["c"]  # one cluster: the two campaign prompts are near-duplicates
    assert report.near_duplicates == 1 and report.clusters == 1 and report.items == 18
    text = "\n".join(report.lines())
    assert "removed as benign: 4" in text and "stoplist stop.txt:5: 1 prompts, 1 actors" in text
    assert "capital" not in text and "gravity" not in text


def test_without_exclusions_benign_prompts_would_link(engine: SignatureEngine) -> None:
    lab_a = prepare_prompts(_records(("a", "what is the capital of France")), engine)
    lab_b = prepare_prompts(_records(("b", "What is the capital of France?")), engine)
    assert set(lab_a.actors_by_item()) == set(lab_b.actors_by_item())


def test_containment_bounds(engine: SignatureEngine) -> None:
    with pytest.raises(ValueError):
        ExclusionIndex(3, containment=0)
    with pytest.raises(ValueError):
        ExclusionIndex(3).add_frequent([], min_actors=1)
    assert ExclusionIndex(3).rule_for(frozenset()) is None


def _word(n: int) -> str:
    """A word without digits (digits would be masked as numbers)."""
    letters = ""
    while True:
        n, rest = divmod(n, 26)
        letters += chr(97 + rest)
        if not n:
            return letters + "qz"


def test_dedup_and_cap_per_actor(engine: SignatureEngine) -> None:
    rows = []
    # actor "noisy": 40 distinct templates, template k sent k % 5 + 1 times with fresh numbers
    for k in range(40):
        template = "template " + " ".join(_word(13 * k + j) for j in range(12)) + " value {n}"
        rows += [("noisy", template.format(n=100 * k + rep)) for rep in range(k % 5 + 1)]
    rows += [("quiet", CAMPAIGN.format(n=n, q="How many moles of water are in a litre of it?")) for n in range(30)]
    records = _records(*rows)
    prepared = prepare_prompts(records, engine, max_items_per_actor=18 * 10)
    report = prepared.report
    assert report.prompts == len(rows) and report.actors == 2
    kept = prepared.clusters["noisy"]
    # the largest clusters survive the cap (8 templates sent 5 times), then the
    # earliest of those sent 4 times (k = 3 and k = 8); kept in file order
    first_line = {k: 1 + sum(j % 5 + 1 for j in range(k)) for k in range(40)}
    assert [c.line for c in kept] == sorted(first_line[k] for k in (3, 8, *range(4, 40, 5)))
    assert sorted(c.prompts for c in kept) == [4, 4] + [5] * 8
    assert report.capped_actors == 1 and report.clusters_dropped_by_cap == 30
    assert report.prompts_dropped_by_cap == sum(k % 5 + 1 for k in range(40)) - 48
    quiet = prepared.clusters["quiet"]
    assert len(quiet) == 1 and quiet[0].prompts == 30 and quiet[0].line == 1 + sum(k % 5 + 1 for k in range(40))
    assert report.near_duplicates == 29 + sum(k % 5 for k in range(40))
    items = prepared.items_by_actor()
    assert len(items["noisy"]) == 180 and len(items["quiet"]) == 18
    assert report.items == 198 == report.distinct_items
    assert quiet[0].canonicals == tuple(item.removeprefix("psi-share/1/prompt/v1/") for item in quiet[0].items)
    with pytest.raises(ValueError, match="at least the number of bands"):
        prepare_prompts(records, engine, max_items_per_actor=17)


def test_same_prompt_at_two_actors_is_one_item_of_both(engine: SignatureEngine) -> None:
    prepared = prepare_prompts(_records(("a", CAMPAIGN.format(n=1, q="x" * 30)), ("b", CAMPAIGN.format(n=9, q="y" * 30))), engine)
    owners = prepared.actors_by_item()
    assert len(owners) == 18 and set(owners.values()) == {frozenset({"a", "b"})}
    assert prepared.report.items == 36 and prepared.report.distinct_items == 18


def test_cluster_keeps_first_and_last_seen(engine: SignatureEngine) -> None:
    times = [dt.datetime(2026, 5, d, tzinfo=dt.UTC) for d in (3, 1, 9)]
    records = [PromptRecord(n, "a", CAMPAIGN.format(n=n, q="z" * 25), t) for n, t in enumerate(times, start=1)]
    (cluster,) = prepare_prompts(records, engine).clusters["a"]
    assert (cluster.line, cluster.prompts, cluster.first_seen, cluster.last_seen) == (1, 3, times[1], times[2])


def test_audit_forms_cover_every_derived_shape(engine: SignatureEngine) -> None:
    text = CAMPAIGN.format(n=7, q=SECRET + " is the question asked here")
    forms = prompt_forms(text, engine)
    banded = engine.band(text)
    bases = forms.bases()
    labels = [label for label, _ in bases]
    values = [value for _, value in bases]
    assert values[0] == text.encode() and values[1] == banded.normalised.encode()
    assert {s.encode() for s in banded.shingles} <= set(values)
    assert {i.encode() for i in banded.items} <= set(values) and {c.encode() for c in banded.canonicals} <= set(values)
    assert b"".join(v.to_bytes(4, "big") for v in banded.signature) in values
    assert len(bases) == 2 + len(banded.shingles) + 2 * 18 + 3
    assert not any("Zanzibar" in label or "chemistry" in label for label in labels)
    assert "Zanzibar" not in repr(forms)
    assert prompt_forms("?!", engine).bases() == [("raw text", b"?!"), ("normalised text", b"?!")]
