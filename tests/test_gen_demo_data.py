"""scripts/gen_demo_data.py, run as a user runs it (a subprocess).

The truth it writes is checked against an independent canonicalizer written
here (phonenumbers, ipaddress, uuid), not against the script's own rules.
"""

from __future__ import annotations

import ast
import csv
import ipaddress
import json
import re
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

phonenumbers = pytest.importorskip("phonenumbers")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gen_demo_data.py"
LABS = ("lab-a", "lab-b", "lab-c")
SMALL = ("--customers", "2000", "--flagged", "300", "--campaign-operators", "40")
KINDS = {"email", "phone", "ipv4", "ip_prefix", "payment_fingerprint", "device_id", "account_handle"}
MATCHED = {"account_handle", "device_id", "email", "ip_prefix", "payment_fingerprint", "phone"}
ACTOR_ID = re.compile(r"a-[a-z0-9]+-[0-9]{6,}")


def run(out: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def rows(path: Path) -> list[tuple[str, str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        assert next(reader) == ["actor_id", "kind", "value"]
        return [tuple(r) for r in reader]


def actors(path: Path) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for actor_id, kind, value in rows(path):
        out[actor_id].append((kind, value))
    return out


def truth(out: Path) -> dict:
    return json.loads((out / "truth.json").read_text())


# -- an independent canonicalizer -------------------------------------------


def canon(kind: str, value: str) -> str:
    value = value.strip()
    if kind == "email":
        local, domain = value.lower().rsplit("@", 1)
        if domain in ("gmail.com", "googlemail.com"):
            return local.split("+")[0].replace(".", "") + "@gmail.com"
        return f"{local}@{domain}"
    if kind == "phone":
        number = phonenumbers.parse(value, "US")
        assert phonenumbers.is_possible_number(number), value
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if kind == "ipv4":
        return str(ipaddress.ip_address(value))
    if kind == "ip_prefix":
        return str(ipaddress.ip_network(value, strict=False))
    if kind == "payment_fingerprint":
        assert re.fullmatch(r"[A-Za-z0-9_]{16,24}", value), value
        return value
    if kind == "device_id":
        try:
            return str(uuid.UUID(value))
        except ValueError:
            return value.lower()
    if kind == "account_handle":
        return value.removeprefix("@").casefold()
    raise AssertionError(kind)


def shared_by_canon(out: Path) -> tuple[dict, dict]:
    """(lab -> other -> ids) and (lab, id, other) -> kinds linking them."""
    flagged = {lab: actors(out / lab / "flagged.csv") for lab in LABS}
    where: dict[tuple[str, str], set[str]] = defaultdict(set)
    for lab, acts in flagged.items():
        for idents in acts.values():
            for kind, value in idents:
                if kind in MATCHED:
                    where[(kind, canon(kind, value))].add(lab)
    shared = {lab: {m: set() for m in LABS if m != lab} for lab in LABS}
    links: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for lab, acts in flagged.items():
        for actor_id, idents in acts.items():
            for kind, value in idents:
                if kind in MATCHED:
                    for other in where[(kind, canon(kind, value))] - {lab}:
                        shared[lab][other].add(actor_id)
                        links[(lab, actor_id, other)].add(kind)
    return shared, links


# -- fixtures: each configuration is generated once ---------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small")
    run(out, *SMALL)
    return out


@pytest.fixture(scope="module")
def small_again(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small_again")
    run(out, *SMALL)
    return out


@pytest.fixture(scope="module")
def small_day1(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small_day1")
    run(out, *SMALL, "--day", "1")
    return out


@pytest.fixture(scope="module")
def small_day2(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small_day2")
    run(out, *SMALL, "--day", "2")
    return out


# -- files --------------------------------------------------------------------


def test_files_exist_with_the_right_header(small):
    for lab in LABS:
        for name in ("customers.csv", "flagged.csv"):
            first = (small / lab / name).read_text(encoding="utf-8").split("\n", 1)[0]
            assert first == "actor_id,kind,value"
    assert (small / "README.txt").read_text().strip()
    doc = truth(small)
    assert doc["seed"] == 7 and doc["day"] == 0
    assert doc["kinds"] == sorted(MATCHED)
    assert list(doc["labs"]) == sorted(LABS)


def test_rows_are_well_formed(small):
    for lab in LABS:
        for name in ("customers.csv", "flagged.csv"):
            data = rows(small / lab / name)
            assert len(data) == len(set(data)), "duplicate rows"
            per_actor: dict[str, int] = defaultdict(int)
            for actor_id, kind, value in data:
                assert ACTOR_ID.fullmatch(actor_id)
                assert actor_id.split("-")[1] == lab[-1]
                assert kind in KINDS
                assert value and value == value.strip()
                canon(kind, value)  # parses
                per_actor[actor_id] += 1
            assert all(2 <= n <= 5 for n in per_actor.values())


def test_counts_match_the_flags(small):
    doc = truth(small)
    for lab in LABS:
        assert len(actors(small / lab / "customers.csv")) == 2000 == doc["labs"][lab]["customers"]
        assert len(actors(small / lab / "flagged.csv")) == 300 == doc["labs"][lab]["flagged"]
    assert doc["campaign"]["operators"] == 40
    assert doc["campaign"]["accounts"] == sum(e["campaign_accounts"] for e in doc["labs"].values())


def test_flagged_actors_are_customers_with_the_same_identifiers(small):
    for lab in LABS:
        customers = actors(small / lab / "customers.csv")
        for actor_id, idents in actors(small / lab / "flagged.csv").items():
            assert sorted(customers[actor_id]) == sorted(idents)


def test_same_seed_same_bytes(small, small_again):
    files = sorted(p.relative_to(small) for p in small.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(small_again) for p in small_again.rglob("*") if p.is_file())
    for rel in files:
        assert (small / rel).read_bytes() == (small_again / rel).read_bytes(), rel


def test_another_seed_other_data(small, tmp_path):
    run(tmp_path, *SMALL, "--seed", "8")
    assert (tmp_path / "lab-a" / "flagged.csv").read_bytes() != (small / "lab-a" / "flagged.csv").read_bytes()


# -- truth ----------------------------------------------------------------------


def test_truth_is_non_trivial(small):
    doc = truth(small)
    for lab in LABS:
        entry = doc["labs"][lab]
        flagged = set(actors(small / lab / "flagged.csv"))
        assert set(entry["shared_with"]) == set(LABS) - {lab}
        for other, ids in entry["shared_with"].items():
            assert ids, (lab, other)
            assert ids == sorted(set(ids))
            assert set(ids) <= flagged
        seen = entry["seen_at_2_or_more"]
        assert seen
        counts: dict[str, int] = defaultdict(int)
        for ids in entry["shared_with"].values():
            for actor_id in ids:
                counts[actor_id] += 1
        assert seen == sorted(a for a, n in counts.items() if n >= 2)


def test_truth_matches_an_independent_canonicalizer(small, small_day2):
    for out in (small, small_day2):
        shared, _ = shared_by_canon(out)
        doc = truth(out)
        for lab in LABS:
            for other in shared[lab]:
                assert sorted(shared[lab][other]) == doc["labs"][lab]["shared_with"][other]


def test_every_kind_is_the_only_link_somewhere(small):
    _, links = shared_by_canon(small)
    alone = {next(iter(kinds)) for kinds in links.values() if len(kinds) == 1}
    assert alone == MATCHED


def test_non_flagged_customers_match_nothing(small):
    owners: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    flagged = set()
    for lab in LABS:
        flagged |= {(lab, a) for a in actors(small / lab / "flagged.csv")}
        for actor_id, kind, value in rows(small / lab / "customers.csv"):
            owners[(kind, canon(kind, value))].add((lab, actor_id))
    for owned in owners.values():
        if len(owned) > 1:
            assert owned <= flagged


def test_renderings_differ_from_canonical_forms(small):
    values = [v for lab in LABS for _, kind, v in rows(small / lab / "flagged.csv") if kind != "ipv4"]
    assert any("googlemail.com" in v.lower() for v in values)
    assert any(re.search(r"\+[^@]+@(gmail|googlemail)\.com$", v, re.I) for v in values)
    assert any(v != v.lower() and "@" in v for v in values)
    assert any(v.startswith("(") or re.fullmatch(r"\d{3}-\d{3}-\d{4}", v) for v in values)
    assert any(re.fullmatch(r"[0-9.]+/24", v) and not v.endswith(".0/24") for v in values)
    assert any(re.fullmatch(r"[0-9A-F]{8}-[0-9A-F-]{27}", v) for v in values)
    assert any(v.startswith("@") for v in values)


def test_decoys_look_close_but_do_not_match(small):
    """Near misses between two labs' flagged actors exist for each kind the
    brief names (whether they match is left to the canonicalizer test)."""
    by_lab = {lab: rows(small / lab / "flagged.csv") for lab in LABS}

    def near_misses(kind, key) -> int:
        groups: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for lab, data in by_lab.items():
            for _, k, value in data:
                if k == kind:
                    groups[key(value)].add((lab, canon(kind, value)))
        return sum(
            1
            for group in groups.values()
            for lab1, c1 in group
            for lab2, c2 in group
            if lab1 < lab2 and c1 != c2
        )

    # same fingerprint but for case
    assert near_misses("payment_fingerprint", str.lower)
    # same local part once dots and +tags are ignored, at a domain that keeps them
    assert near_misses("email", lambda v: re.sub(r"[.]|\+[^@]*", "", canon("email", v)))
    # same /16, another /24
    assert near_misses("ip_prefix", lambda v: ".".join(canon("ip_prefix", v).split(".")[:2]))
    # one of the last four digits differs
    assert near_misses("phone", lambda v: canon("phone", v)[:-4])


def test_phones_are_possible_numbers(small):
    for lab in LABS:
        for _, kind, value in rows(small / lab / "customers.csv"):
            if kind == "phone":
                assert phonenumbers.is_possible_number(phonenumbers.parse(value, "US"))


def test_actor_ids_do_not_reveal_campaign_membership(small):
    doc = truth(small)
    for lab in LABS:
        ids = sorted(actors(small / lab / "customers.csv"))
        shared = set().union(*doc["labs"][lab]["shared_with"].values())
        positions = [i for i, a in enumerate(ids) if a in shared]
        # spread over the whole id range, not a block
        assert positions[0] < len(ids) // 4 and positions[-1] > 3 * len(ids) // 4


# -- days -------------------------------------------------------------------------


def test_day1_keeps_day0_and_adds_new_shared_actors(small, small_day1):
    for lab in LABS:
        for name in ("customers.csv", "flagged.csv"):
            before = set(rows(small / lab / name))
            after = set(rows(small_day1 / lab / name))
            assert before < after, (lab, name)
    doc0, doc1 = truth(small), truth(small_day1)
    assert doc1["day"] == 1 and doc1["previous_day"] == 0
    assert doc1["campaign"]["accounts"] > doc0["campaign"]["accounts"]
    grew = False
    for lab in LABS:
        entry = doc1["labs"][lab]
        new = entry["new_since_previous_day"]
        for other, ids in entry["shared_with"].items():
            old = set(doc0["labs"][lab]["shared_with"][other])
            assert old <= set(ids)
            assert sorted(set(ids) - old) == new["shared_with"][other]
            grew |= bool(set(ids) - old)
        assert set(new["flagged"]) == set(actors(small_day1 / lab / "flagged.csv")) - set(
            actors(small / lab / "flagged.csv")
        )
    assert grew


def test_day2_extends_day1(small_day1, small_day2):
    for lab in LABS:
        assert set(rows(small_day1 / lab / "flagged.csv")) < set(rows(small_day2 / lab / "flagged.csv"))


# -- arguments and sizes ------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("--customers", "100", "--flagged", "200"),
        ("--customers", "2000", "--flagged", "50", "--campaign-operators", "400"),
        ("--labs", "lab-a"),
        ("--labs", "lab-a,lab-a"),
        ("--day", "-1"),
    ],
)
def test_bad_arguments_fail_cleanly(tmp_path, args):
    proc = run(tmp_path, *args, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "truth.json").exists()


def test_other_lab_names_and_counts(tmp_path):
    run(tmp_path, "--labs", "north,south", "--customers", "500", "--flagged", "100",
        "--campaign-operators", "12")
    doc = truth(tmp_path)
    assert set(doc["labs"]) == {"north", "south"}
    assert doc["labs"]["north"]["shared_with"]["south"]
    assert rows(tmp_path / "north" / "flagged.csv")[0][0].startswith("a-n-")
    assert rows(tmp_path / "south" / "flagged.csv")[0][0].startswith("a-s-")


def test_default_sizes(tmp_path):
    started = time.perf_counter()
    proc = run(tmp_path)
    elapsed = time.perf_counter() - started
    assert elapsed < 60  # about 4 s on a developer machine; generous for loaded CI
    doc = truth(tmp_path)
    for lab in LABS:
        entry = doc["labs"][lab]
        assert entry["customers"] == 30000 and entry["flagged"] == 3000
        assert all(len(ids) > 100 for ids in entry["shared_with"].values())
    assert doc["campaign"]["operators"] == 400
    assert "lab-a" in proc.stdout


def test_script_uses_only_the_standard_library():
    """The truth must not come from psi_share's canonicalizer (or anything else)."""
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add((node.module or "").split(".")[0])
    assert modules and modules <= set(sys.stdlib_module_names) | {"__future__"}, modules
