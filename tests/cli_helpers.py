"""The ``psi-share`` command as tests run it: a real process per call, its
output checked; two labs' data; background ``serve`` processes.

Fixtures built on these (``labs``, ``start_server``) live in ``conftest.py``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

PSI_SHARE_SCRIPT = Path(sys.executable).with_name("psi-share")
TIMEOUT = 60  # seconds, for every CLI call
SERVE_START_TIMEOUT = 30
SERVE_STOP_TIMEOUT = 15

# lab-a's flagged actors. Canonical matching against LAB_B_ROWS (kinds email,phone):
#   a1 gmail dots/+tag/case/googlemail   -> jsmith@gmail.com       matches b1 (and b9)
#   a2 US national phone                 -> +14155550123           matches b2
#   a5 UK number with spaces             -> +442079460018          matches b5
#   a6 dotted US phone (email no match)  -> +14155550199           matches b6
#   a8 mixed-case non-gmail address      -> mixed.case@example.org matches b8
#   a4 non-gmail dots are significant    -> no match with b4
#   a7 ip_prefix                         -> matches b7, but not a kind we ask for
LAB_A_ROWS = [
    ("a1", "email", "J.Smith+promo@GMAIL.com"),
    ("a1", "email", "jsmith@googlemail.com"),  # same mailbox: collapsed on import
    ("a2", "phone", "(415) 555-0123"),
    ("a3", "email", "nobody@example.org"),
    ("a4", "email", "first.last@example.org"),
    ("a5", "phone", "+44 20 7946 0018"),
    ("a6", "email", "a6@example.org"),
    ("a6", "phone", "415.555.0199"),
    ("a7", "ip_prefix", "198.51.100.77/24"),
    ("a8", "email", "Mixed.Case@Example.ORG"),
]
LAB_B_ROWS = [
    ("b1", "email", "jsmith@googlemail.com"),
    ("b2", "phone", "+1 415 555 0123"),
    ("b3", "email", "someone@example.org"),
    ("b4", "email", "firstlast@example.org"),
    ("b5", "phone", "+442079460018"),
    ("b6", "phone", "+1-415-555-0199"),
    ("b7", "ip_prefix", "198.51.100.0/24"),
    ("b8", "email", "mixed.case@example.org"),
    ("b9", "email", "j.smith+other@gmail.com"),
]
EXPECTED_MATCHES = {"a1": ["email"], "a2": ["phone"], "a5": ["phone"], "a6": ["phone"], "a8": ["email"]}
A_ITEMS_EMAIL_PHONE = 8  # distinct canonical email/phone items of lab-a


# -- helpers ------------------------------------------------------------------


def base_env(tmp_path: Path) -> dict[str, str]:
    """The caller's environment without PSI_SHARE_HOME, and a HOME inside tmp_path
    so that a forgotten --home can never touch the real ~/.psi-share."""
    env = {k: v for k, v in os.environ.items() if k != "PSI_SHARE_HOME"}
    user_home = tmp_path / "user-home"
    user_home.mkdir(exist_ok=True)
    env["HOME"] = str(user_home)
    return env


def cli(
    tmp_path: Path,
    *args: str | Path,
    home: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    script: bool = False,
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    command = [str(PSI_SHARE_SCRIPT)] if script else [sys.executable, "-m", "psi_share.cli.main"]
    if home is not None:
        command += ["--home", str(home)]
    command += [str(a) for a in args]
    return subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        env=env if env is not None else base_env(tmp_path), cwd=cwd or tmp_path,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def ok_json(result: subprocess.CompletedProcess[str]):  # type: ignore[no-untyped-def]
    return json.loads(ok(result).stdout)


def flat(text: str) -> str:
    """Collapse whitespace (rich wraps stderr at 80 columns when it is not a terminal)."""
    return " ".join(text.split())


def failed_cleanly(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """Assert a clean failure: exit ``code``, no traceback; return stderr flattened."""
    detail = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == code, detail
    assert "Traceback" not in result.stderr, detail
    assert result.stderr.strip(), detail
    return flat(result.stderr)


def write_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["actor_id", "kind", "value"])
        writer.writerows(rows)
    return path


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def datasets(tmp_path: Path, home: Path) -> dict[str, dict]:
    return {d["dataset"]: d for d in ok_json(cli(tmp_path, "data", "list", "--format", "json", home=home))}


# -- background serve ---------------------------------------------------------


class Server:
    """A ``psi-share serve`` process; stderr goes to a file (never a full pipe)."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log
        self.port = 0

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_listening(self) -> int:
        deadline = time.monotonic() + SERVE_START_TIMEOUT
        while time.monotonic() < deadline:
            found = re.search(r"listening on port (\d+)", self.output())
            if found:
                self.port = int(found.group(1))
                return self.port
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited early with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.05)
        pytest.fail(f"serve did not report its port within {SERVE_START_TIMEOUT}s:\n{self.output()}")

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=SERVE_STOP_TIMEOUT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def issue_cert(tmp_path: Path, name: str) -> Path:
    """The federation CA (created on first use) issues NAME a certificate for 127.0.0.1."""
    ca = tmp_path / "federation-ca"
    if not (ca / "ca.crt").exists():
        ok(cli(tmp_path, "pki", "init-ca", "--ca-dir", ca))
    out = tmp_path / f"{name}-tls"
    ok(cli(tmp_path, "pki", "issue", name, "--ca-dir", ca, "--address", "127.0.0.1", "--out", out))
    return out


@dataclass
class Labs:
    a: Path
    b: Path


def serve_b(labs: Labs, start_server, tmp_path: Path) -> Server:  # type: ignore[no-untyped-def]
    server = start_server(labs.b)
    ok(cli(tmp_path, "peers", "add", "lab-b", f"127.0.0.1:{server.port}", "--replace", home=labs.a))
    return server


def write_job(path: Path, name: str, participants: list[str], extra: str = "") -> Path:
    path.write_text(
        "[job]\n"
        f'name = "{name}"\n'
        f"participants = {json.dumps(participants)}\n"
        'dataset = "flagged"\n'
        'kinds = ["email", "phone"]\n'
        'mode = "reveal"\n' + extra,
        encoding="utf-8",
    )
    return path


def put_crl(src: Path, dst: Path) -> None:
    """Install a revocation list as an operator should: a copy under a temporary name in the
    same folder, then one rename. A node reads crl.pem on every handshake; a copy in place can be
    read half written, and a CRL that does not parse leaves the previous one in force."""
    tmp = dst.with_name(dst.name + ".new")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
