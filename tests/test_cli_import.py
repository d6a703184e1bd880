"""``psi-share data import`` on dirty files, tables in a pipe, and ``demo.sh --help``:
each command a real process, as in test_cli.py."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dirty_files import MARK
from test_cli import base_env, cli, failed_cleanly, ok, ok_json

ROOT = Path(__file__).resolve().parent.parent
REJECTS_HEADER = "file,line,kind,reason,detail"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "lab"
    ok(cli(tmp_path, "init", "lab-a", "--listen", "127.0.0.1:0", home=home))
    return home


def datasets(tmp_path: Path, home: Path) -> dict[str, dict]:
    return {d["dataset"]: d for d in ok_json(cli(tmp_path, "data", "list", "--format", "json", home=home))}


def no_values(*texts: str) -> None:
    for text in texts:
        assert MARK not in text, text


# -- issue 12: 7 bad rows in 17,386 --------------------------------------------------

ROWS = 17_386
BAD = {  # line -> (kind column of the rejects file, reason, the row as written)
    101: ("device_id", "invalid_value", f"x101,device_id,{MARK} token"),
    2_500: ("", "unknown_kind", f"x2500,{MARK}@example.org,email"),
    4_000: ("email", "invalid_value", f"x4000,email,{MARK}.example.org"),
    9_999: ("", "columns", f"x9999,email,{MARK}@example.org,extra"),
    12_000: ("account_handle", "invalid_value", f"x12000,account_handle,@{MARK} spaced"),
    15_001: ("", "actor_id", f",email,{MARK}b@example.org"),
    17_387: ("phone", "invalid_value", f"x17387,phone,{MARK}"),
}


def issue_12_file(path: Path) -> Path:
    """The testers' export: 17,386 rows, 7 of them really bad. Device tokens
    with '+ / =' and handles with '+' (refused before) are fine now."""
    lines = ["actor_id,kind,value"]
    for line in range(2, ROWS + 2):
        if line in BAD:
            lines.append(BAD[line][2])
        elif line % 3 == 0:
            lines.append(f"a{line},device_id,+1415555{line % 10000:04d}/{MARK}=")
        elif line % 3 == 1:
            lines.append(f"a{line},account_handle,@Name+{line}{MARK}")
        else:
            lines.append(f"a{line},email,u{line}.{MARK}@example.org")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_issue_12_every_bad_row_is_named_then_rejects_imports_the_rest(tmp_path: Path, home: Path) -> None:
    data = issue_12_file(tmp_path / "export.csv")

    # All or nothing: one run names all seven, and nothing is written.
    refused = cli(tmp_path, "data", "import", "flagged", data, home=home)
    message = failed_cleanly(refused)
    no_values(refused.stdout, refused.stderr)
    named = [int(m) for m in re.findall(rf"{re.escape(str(data))}:(\d+): ", refused.stderr)]
    assert named == sorted(BAD)
    assert f"7 of {ROWS} rows refused; nothing was imported" in message
    assert "refused by reason: invalid_value 4 (account_handle 1, device_id 1, email 1, phone 1)" in message
    assert f"--rejects FILE imports the {ROWS - 7} valid rows" in message
    assert datasets(tmp_path, home) == {}

    # --rejects: exit 0, the valid rows in, the seven lines in the file.
    rejects = tmp_path / "rejects.csv"
    result = cli(tmp_path, "data", "import", "flagged", data, "--rejects", rejects, "--format", "json", home=home)
    summary = ok_json(result)
    no_values(result.stdout, result.stderr, rejects.read_text(encoding="utf-8"))
    assert f"7 of {ROWS} rows refused and not imported" in result.stderr and str(rejects) in result.stderr
    assert (summary["rows"], summary["rejected"], summary["identifiers"]) == (ROWS, 7, ROWS - 7)
    assert summary["rejected_by_reason"] == {"invalid_value": 4, "unknown_kind": 1, "columns": 1, "actor_id": 1}
    assert (summary["revision"], summary["changed"], summary["rejects_file"]) == (1, True, str(rejects))
    rows = list(csv.DictReader(io.StringIO(rejects.read_text(encoding="utf-8"))))
    assert rejects.read_text(encoding="utf-8").startswith(REJECTS_HEADER + "\n")
    assert [(int(r["line"]), r["kind"], r["reason"]) for r in rows] == [(line, k, r) for line, (k, r, _) in BAD.items()]
    assert {r["file"] for r in rows} == {str(data)}
    listed = datasets(tmp_path, home)["flagged"]
    assert (listed["identifiers"], listed["revision"]) == (ROWS - 7, 1)

    # The same file again, appended: nothing new, the revision stays, and
    # the rejects file (a rejects file already) is rewritten in place.
    again = ok_json(cli(tmp_path, "data", "import", "flagged", data, "--append", "--rejects", rejects,
                        "--format", "json", home=home))
    assert (again["changed"], again["revision"], again["identifiers_added"], again["rejected"]) == (False, 1, 0, 7)
    assert datasets(tmp_path, home)["flagged"]["revision"] == 1


def test_rejects_never_overwrites_another_file_and_table_output_names_the_counts(tmp_path: Path, home: Path) -> None:
    data = tmp_path / "small.tsv"
    data.write_text(f"actor_id\tkind\tvalue\na1\tdevice_id\tdGVzdA+/=\na2\temail\t{MARK}.example.org\n", encoding="utf-8")
    precious = tmp_path / "customers.csv"
    precious.write_text(f"actor_id,kind,value\nc1,email,{MARK}@example.org\n", encoding="utf-8")
    result = cli(tmp_path, "data", "import", "flagged", data, "--rejects", precious, home=home)
    message = failed_cleanly(result)
    assert "is not a rejects file" in message and "customers.csv" in message
    no_values(result.stdout, result.stderr)
    assert precious.read_text(encoding="utf-8").startswith("actor_id,kind,value")
    assert datasets(tmp_path, home) == {}

    result = ok(cli(tmp_path, "data", "import", "flagged", data, "--rejects", tmp_path / "r.csv", home=home))
    no_values(result.stdout, result.stderr)
    assert re.search(r"│ rejected\s+│ 1\s+│", result.stdout), result.stdout
    assert re.search(r"│ rejected_by_reason\s+│ invalid_value=1\s+│", result.stdout), result.stdout
    assert datasets(tmp_path, home)["flagged"]["kinds"] == {"device_id": 1}


def test_replace_and_append_of_the_same_file_keep_the_revision(tmp_path: Path, home: Path) -> None:
    data = tmp_path / "f.jsonl"
    data.write_text('{"actor_id": "a1", "identifiers": [{"kind": "email", "value": "A@Example.org"}]}\n',
                    encoding="utf-8")
    ok(cli(tmp_path, "data", "import", "flagged", data, home=home))
    for mode in ("--append", "--replace"):
        summary = ok_json(cli(tmp_path, "data", "import", "flagged", data, mode, "--format", "json", home=home))
        assert (summary["changed"], summary["revision"]) == (False, 1), mode
    assert datasets(tmp_path, home)["flagged"]["revision"] == 1
    data.write_text('{"actor_id": "a1", "identifiers": [{"kind": "email", "value": "b@example.org"}]}\n',
                    encoding="utf-8")
    summary = ok_json(cli(tmp_path, "data", "import", "flagged", data, "--replace", "--format", "json", home=home))
    assert (summary["changed"], summary["revision"], summary["identifiers_removed"]) == (True, 2, 1)


# -- tables are never cut when stdout is not a terminal ------------------------------


def test_tables_in_a_pipe_are_as_wide_as_their_content(tmp_path: Path, home: Path) -> None:
    peers = [f"lab-{c * 55}" for c in "xyz"]  # the issue: 'policy show' printed every peer as 'lab-…'
    for i, peer in enumerate(peers):
        ok(cli(tmp_path, "peers", "add", peer, f"127.0.0.1:{7401 + i}", "--note", "n" * 150, home=home))
    for columns in (None, "40"):
        env = base_env(tmp_path) | ({"COLUMNS": columns} if columns else {})
        for command in (("policy", "show"), ("peers", "list")):
            out = ok(cli(tmp_path, *command, home=home, env=env)).stdout
            assert "…" not in out, out
            for peer in peers:
                assert re.search(rf"│ {peer} +│", out), (command, out)
            if command == ("peers", "list"):
                assert "n" * 150 in out
            assert "account_handle,device_id,email" in out or command != ("policy", "show")


# -- scripts/demo.sh --help -------------------------------------------------------------


@pytest.fixture
def scripts_copy(tmp_path: Path) -> Path:
    """demo.sh and _env.sh in a root of their own: any install would show as tmp/.venv."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    for name in ("demo.sh", "_env.sh", "demo.py"):
        shutil.copy2(ROOT / "scripts" / name, root / "scripts" / name)
    return root


def test_demo_help_prints_usage_and_installs_nothing(tmp_path: Path, scripts_copy: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    for flag in ("--help", "-h"):
        result = subprocess.run([str(scripts_copy / "scripts" / "demo.sh"), "--seed", "3", flag],
                                capture_output=True, text=True, timeout=30, env=env, cwd=scripts_copy)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("Usage: ./scripts/demo.sh"), result.stdout
        assert result.stderr == ""
    # Every option demo.py takes is in the usage.
    options = re.findall(r'add_argument\("(--[a-z-]+)"', (ROOT / "scripts" / "demo.py").read_text(encoding="utf-8"))
    assert options and all(o in result.stdout for o in options), (options, result.stdout)
    assert not (scripts_copy / ".venv").exists()


def test_env_sh_refuses_extras_that_are_not_extras(tmp_path: Path, scripts_copy: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    result = subprocess.run(["bash", "-c", 'set -- --help; source scripts/_env.sh "$@"'],
                            capture_output=True, text=True, timeout=30, env=env, cwd=scripts_copy)
    assert result.returncode == 2
    assert "unknown extras '--help'" in result.stderr
    assert not (scripts_copy / ".venv").exists()
