"""Dirty data files with known bad rows at known lines, and what importing them must give.

``dirty_file`` writes a CSV, TSV or JSONL file in which some rows break one
rule each (every refusal reason the format can produce), and returns the
ground truth, decided while writing, not by the importer: which (line, kind,
reason) must be refused, which identifiers must be imported, in which
canonical form (values are built so that their canonical form is known:
lowercase emails, handles without '@', device tokens with non-hex letters,
whose case is kept), and how many identifier rows the file holds.

Every value in the file carries a marker (``zq7``), so that a test can check
that no value reaches any output.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

MARK = "zq7"  # in every value of every file, good or bad
FORMATS = ("csv", "tsv", "jsonl")


@dataclass
class Truth:
    path: Path
    refused: list[tuple[int, str, str]] = field(default_factory=list)  # line, kind ("" unless known), reason
    valid: set[tuple[str, str, str]] = field(default_factory=set)  # actor, kind, canonical
    rows: int = 0  # identifier rows read (a JSONL line refused whole counts once)
    values: set[str] = field(default_factory=set)  # every value, good or bad, written into the file

    @property
    def bad_lines(self) -> set[int]:
        return {line for line, _, _ in self.refused}


def _good(i: int) -> tuple[str, str, str]:
    """(kind, raw, canonical) of the i-th good identifier."""
    kind = ("email", "device_id", "account_handle", "phone", "payment_fingerprint")[i % 5]
    if kind == "email":
        return kind, f"User{i}.{MARK}@Example.org", f"user{i}.{MARK}@example.org"
    if kind == "device_id":
        return kind, f'Tok+"{i}/{MARK}=', f'Tok+"{i}/{MARK}='  # base64-ish, with a quote: case kept
    if kind == "account_handle":
        return kind, f"@Handle+{i}.{MARK}", f"handle+{i}.{MARK}"
    if kind == "phone":
        return kind, f"+1 415 555 {i % 10000:04d}", f"+1415555{i % 10000:04d}"
    return kind, f"fp_{MARK}_{i:06d}", f"fp_{MARK}_{i:06d}"


# Bad rows of CSV/TSV: reason -> (kind, fields or raw text). {s} is a unique marked secret.
_DELIMITED_BAD = {
    "encoding": ("", None),
    "malformed_row": ("", None),
    "columns": ("", ["a{i}", "email", "{s}@example.org", "extra", "more"]),
    "actor_id": ("", [" {s}", "email", "ok{i}.{s}@example.org"]),
    "unknown_kind": ("", ["a{i}", "{s}", "x{i}@example.org"]),
    "invalid_value/email": ("email", ["a{i}", "email", "{s}.example.org"]),
    "invalid_value/device_id": ("device_id", ["a{i}", "device_id", "{s} with space"]),
    "invalid_value/account_handle": ("account_handle", ["a{i}", "account_handle", "@@{s}"]),
    "invalid_value/phone": ("phone", ["a{i}", "phone", "{s}"]),
    "amount": ("email", ["a{i}", "email", "am{i}.{s}@example.org", "12x"]),
    "amount_conflict": ("email", None),
}


def dirty_file(directory: Path, fmt: str, n: int, bad_share: float, seed: int, *, amounts: bool = False) -> Truth:
    """Write ``n`` rows (JSONL: actors), about ``bad_share`` of them bad."""
    rng = random.Random(seed)
    path = directory / f"dirty-{seed}-{n}.{fmt}"
    truth = Truth(path)
    if fmt == "jsonl":
        text = _jsonl(truth, n, bad_share, rng)
    else:
        text = _delimited(truth, fmt, n, bad_share, rng, amounts)
    path.write_bytes(text)
    return truth


def _delimited(truth: Truth, fmt: str, n: int, bad_share: float, rng: random.Random, amounts: bool) -> bytes:
    delimiter = "," if fmt == "csv" else "\t"
    header = ["actor_id", "kind", "value"] + (["amount"] if amounts else [])
    lines: list[bytes] = [delimiter.join(header).encode()]
    reasons = [r for r in _DELIMITED_BAD if amounts or not r.startswith("amount")]
    if fmt == "tsv":
        reasons.remove("malformed_row")  # fields are literal in TSV: no quoting to break
    for i in range(n):
        if rng.random() < 0.05:
            lines.append(b"")  # blank lines are skipped but still counted as lines
        if rng.random() >= bad_share:
            lines.append(_good_line(truth, i, delimiter, amounts, len(lines) + 1))
            continue
        reason = rng.choice(reasons)
        kind, template = _DELIMITED_BAD[reason]
        secret = f"{MARK}s{i}x"
        truth.values.add(secret)
        line_no = len(lines) + 1
        if reason == "encoding":
            line = delimiter.join([f"a{i}", "email", f"caf{secret}"]).encode().replace(b"caf", b"caf\xe9") + (
                f"{delimiter}1".encode() if amounts else b"")
        elif reason == "malformed_row":
            line = f'a{i},email,"{secret}"x@example.org'.encode() + (b",1" if amounts else b"")
        elif reason == "amount_conflict":
            first = f"c{i}.{secret}@example.org"
            lines.append(delimiter.join([f"a{i}", "email", first, "1"]).encode())
            truth.valid.add((f"a{i}", "email", first))
            truth.rows += 1
            line_no = len(lines) + 1
            line = delimiter.join([f"a{i}", "email", first.upper(), "2"]).encode()
        else:
            fields = [f.format(i=i, s=secret) for f in template]
            if amounts and len(fields) == 3:
                fields.append("1")
            line = delimiter.join(fields).encode()
        lines.append(line)
        truth.rows += 1
        truth.refused.append((line_no, kind, reason.split("/")[0]))
    return b"\n".join(lines) + b"\n"


def _good_line(truth: Truth, i: int, delimiter: str, amounts: bool, line_no: int) -> bytes:
    kind, raw, canonical = _good(i)
    actor = f"a{i % 7}"  # actors spread over several rows
    truth.valid.add((actor, kind, canonical))
    truth.values.add(raw)
    truth.rows += 1
    fields = [actor, kind, raw] + ([str(i)] if amounts else [])
    if delimiter == "\t":
        return "\t".join(fields).encode()
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)  # quotes the '"' of device tokens
    return out.getvalue().encode()


def _jsonl(truth: Truth, n: int, bad_share: float, rng: random.Random) -> bytes:
    lines: list[bytes] = []
    whole_line = ["encoding", "invalid_json", "unknown_field", "actor_id", "duplicate_actor"]
    per_identifier = ["shape", "unknown_kind", "invalid_value", "amount", "amount_conflict"]
    for i in range(n):
        line_no = len(lines) + 1
        actor = f"j{i}"
        idents = []
        for k in range(rng.randint(1, 3)):
            kind, raw, canonical = _good(i * 3 + k)
            idents.append({"kind": kind, "value": raw})
            truth.values.add(raw)
        record: dict = {"actor_id": actor, "identifiers": idents}
        secret = f"{MARK}s{i}x"
        if rng.random() >= bad_share:
            problem = None
        else:
            truth.values.add(secret)
            problem = rng.choice(whole_line + per_identifier)
        if problem in whole_line:
            truth.rows += 1
            reason = {"invalid_json": "malformed_row", "unknown_field": "malformed_row"}.get(problem, problem)
            truth.refused.append((line_no, "", reason))
            if problem == "encoding":
                idents[0]["value"] = f"caf{secret}"
                lines.append(json.dumps(record).encode().replace(b"caf", b"caf\xe9"))
            elif problem == "invalid_json":
                lines.append(json.dumps(record).encode()[:-2])
            elif problem == "unknown_field":
                lines.append(json.dumps(record | {"note": secret}).encode())
            elif problem == "actor_id":
                lines.append(json.dumps(record | {"actor_id": f" {secret}"}).encode())
            else:  # duplicate_actor: an actor of an earlier line, or this line twice
                lines.append(json.dumps(record).encode())
                truth.rows += len(idents)
                truth.valid |= {(actor, _good(i * 3 + k)[0], _good(i * 3 + k)[2]) for k in range(len(idents))}
                truth.refused[-1] = (len(lines) + 1, "", "duplicate_actor")
                lines.append(json.dumps(record | {"identifiers": [{"kind": "email", "value": f"{secret}@x.org"}]}).encode())
            continue
        truth.rows += len(idents)
        truth.valid |= {(actor, _good(i * 3 + k)[0], _good(i * 3 + k)[2]) for k in range(len(idents))}
        if problem is not None:
            extra = {
                "shape": ({"kind": "email", "value": 5, "note": secret}, "", "malformed_row"),
                "unknown_kind": ({"kind": secret, "value": f"x{i}@example.org"}, "", "unknown_kind"),
                "invalid_value": ({"kind": "device_id", "value": f"{secret} x"}, "device_id", "invalid_value"),
                "amount": ({"kind": "email", "value": f"am{i}.{secret}@example.org", "amount": 1.5}, "email", "amount"),
                "amount_conflict": ({"kind": "email", "value": f"c{i}.{secret}@example.org", "amount": 1}, "email",
                                    "amount_conflict"),
            }[problem]
            ident, kind, reason = extra
            if problem == "amount_conflict":
                # The first is fine; the same identifier again with another amount is not.
                truth.valid.add((actor, "email", ident["value"]))
                truth.rows += 1
                idents += [ident, dict(ident, value=ident["value"].upper(), amount=2)]
            else:
                idents.insert(rng.randint(0, len(idents)), ident)
            truth.rows += 1
            truth.refused.append((line_no, kind, reason))
        lines.append(json.dumps(record).encode())
    return b"\n".join(lines) + b"\n"
