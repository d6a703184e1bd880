"""``audit scan --against prompts.jsonl``: every form of every prompt, as scan sources.

A prompt file is recognised by its first record: a JSON object with a
``text`` field (an identifier file's records carry ``identifiers``). Each
prompt gives the forms :mod:`psi_share.prompts.audit_forms` lists (raw
text, normalised text, every shingle, every band canonical and band item,
the MinHash signature in three byte layouts); the scan then searches each
as text and as its MD5/SHA-1/SHA-256/SHA-512 digests in every encoding, as
for identifiers. Computing band items and signatures needs the federation's
parameters, so a node without a ``[prompts] seed`` cannot scan a prompt file.

A form shared by several prompts (a common shingle) is one needle, named by
the first prompt that has it. Labels name the file, line, actor and form,
never the text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigError
from ..prompts import PromptParams, SignatureEngine, read_prompts_jsonl, record_forms
from ..prompts.records import read_lines

__all__ = ["is_prompt_file", "prompt_form_sources"]


def is_prompt_file(path: Path) -> bool:
    """Whether ``path`` is a JSONL prompt file (its first record has a ``text`` field)."""
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        return False
    for _, line in read_lines(path)[0]:
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                return False
            return isinstance(record, dict) and "text" in record and "identifiers" not in record
    return False


def prompt_form_sources(path: Path, params: PromptParams | None) -> Iterator[tuple[str, str, tuple[bytes, bytes, bytes]]]:
    """``(actor_id, label, bases)`` for every distinct form of every prompt of ``path``.

    ``bases`` follows the scan's (raw, canonical, item) layout: a band gives
    (canonical, canonical, item) so its item is anchored on its distinctive
    end; any other form is (form, form, form), searched once.
    """
    if params is None:
        raise ConfigError(f"{path} is a prompt file: scanning for its band items needs the federation's "
                          "parameters ([prompts] seed in config.toml)")
    engine = SignatureEngine(params)
    seen: set[bytes] = set()
    for record, forms in record_forms(read_prompts_jsonl(path), engine):
        bases = dict(forms.bases())
        for n, (canonical, item) in enumerate(zip(forms.canonicals, forms.items)):
            key = item.encode()
            if key not in seen:
                seen.add(key)
                yield record.actor_id, f"prompt line {record.line}, band {n}", (canonical.encode(), canonical.encode(), key)
        for label, value in bases.items():
            if label.startswith("band ") or value in seen:
                continue
            seen.add(value)
            yield record.actor_id, f"prompt line {record.line}, {label}", (value, value, value)
