"""``psi-share pki`` and TLS from the command line, as a CA operator and a lab run them."""

from __future__ import annotations

import stat
from pathlib import Path

from cli_helpers import cli, failed_cleanly, flat, ok, ok_json


def test_pki_commands_end_to_end(tmp_path: Path) -> None:
    ca = tmp_path / "fed-ca"
    out = ok(cli(tmp_path, "pki", "init-ca", "--ca-dir", ca, "--name", "Forum CA")).stdout
    assert "created federation CA 'Forum CA'" in out and "sha256" in out
    assert stat.S_IMODE((ca / "ca.key").stat().st_mode) == 0o600
    assert "already holds a CA" in failed_cleanly(cli(tmp_path, "pki", "init-ca", "--ca-dir", ca))
    issued = ok(cli(tmp_path, "pki", "issue", "lab-a", "--ca-dir", ca, "--address", "127.0.0.1:7400",
                    "--address", "lab-a.example.net", "--out", tmp_path / "a-tls")).stdout
    assert "for node 'lab-a'" in issued
    assert "BEGIN" not in issued  # no key material on screen
    home = tmp_path / "lab-a"
    init = ok(cli(tmp_path, "init", "lab-a", "--listen", "127.0.0.1:0", "--tls-from", tmp_path / "a-tls", home=home))
    assert "installed TLS certificate" in init.stdout
    shown = ok_json(cli(tmp_path, "pki", "show", "--format", "json", home=home))
    assert shown["subject"] == "CN=lab-a" and set(shown["sans"]) == {"lab-a", "lab-a.example.net", "127.0.0.1"}
    listed = ok_json(cli(tmp_path, "pki", "list", "--ca-dir", ca, "--format", "json"))
    assert [(r["subject"], r["revoked"]) for r in listed] == [("CN=lab-a", False)]
    assert "revoked" in ok(cli(tmp_path, "pki", "revoke", "lab-a", "--ca-dir", ca)).stdout
    assert ok_json(cli(tmp_path, "pki", "list", "--ca-dir", ca, "--format", "json"))[0]["revoked"] is True
    # A revoked certificate cannot be installed (the new CRL came with a reissue for lab-b).
    ok(cli(tmp_path, "pki", "issue", "lab-b", "--ca-dir", ca, "--out", tmp_path / "b-tls"))
    (tmp_path / "a-tls" / "crl.pem").write_bytes((ca / "crl.pem").read_bytes())
    err = failed_cleanly(cli(tmp_path, "pki", "install", tmp_path / "a-tls", home=home))
    assert "revoked" in err
    err = failed_cleanly(cli(tmp_path, "pki", "install", tmp_path / "b-tls", home=home))
    assert "names node 'lab-b'" in err


def test_serve_without_certificate_is_one_clear_error_and_insecure_warns(tmp_path: Path) -> None:
    home = tmp_path / "lab"
    out = ok(cli(tmp_path, "init", "lab-a", "--listen", "127.0.0.1:0", home=home)).stdout
    assert "no TLS certificate yet" in out and "pki install" in out
    err = failed_cleanly(cli(tmp_path, "serve", home=home))
    assert "no node certificate" in err and "--insecure" in err
    ok(cli(tmp_path, "peers", "add", "lab-b", "127.0.0.1:1", home=home))
    (tmp_path / "x.csv").write_text("actor_id,kind,value\na,email,x@example.org\n")
    ok(cli(tmp_path, "data", "import", "flagged", tmp_path / "x.csv", home=home))
    res = cli(tmp_path, "--insecure", "match", "lab-b", "--kinds", "email", "--count", home=home, timeout=60)
    assert res.returncode == 1
    assert "WARNING: --insecure" in flat(res.stderr) and "plaintext" in flat(res.stderr)


def test_policy_show_reports_the_effective_rule_and_budget_use(tmp_path: Path) -> None:
    home = tmp_path / "lab"
    ok(cli(tmp_path, "init", "lab-a", "--listen", "127.0.0.1:0", home=home))
    with (home / "config.toml").open("a") as fh:
        fh.write("\n[policy.peers.lab-b]\nreveal = true\nsessions_per_day = 5\n")
    ok(cli(tmp_path, "peers", "add", "lab-b", "127.0.0.1:1", home=home))
    ok(cli(tmp_path, "peers", "add", "lab-c", "127.0.0.1:2", home=home))
    rows = {r["peer"]: r for r in ok_json(cli(tmp_path, "policy", "show", "--format", "json", home=home))}
    assert rows["lab-b"]["reveal"] is True and rows["lab-b"]["sessions_today"] == "0/5" and rows["lab-b"]["override"]
    assert rows["lab-c"]["reveal"] is False and rows["lab-c"]["datasets"] == "flagged"  # the safe default
    (home / "config.toml").write_text((home / "config.toml").read_text() + "[policy.peers.lab-d]\nrevael = true\n")
    assert "unknown key [policy.peers.lab-d] revael" in failed_cleanly(cli(tmp_path, "policy", "show", home=home))


def test_csr_flow_keeps_the_key_on_the_node(tmp_path: Path) -> None:
    ca = tmp_path / "fed-ca"
    ok(cli(tmp_path, "pki", "init-ca", "--ca-dir", ca))
    home = tmp_path / "lab-a"
    ok(cli(tmp_path, "init", "lab-a", "--listen", "127.0.0.1:0", home=home))
    out = ok(cli(tmp_path, "pki", "request", "--address", "127.0.0.1:7400", home=home)).stdout
    assert "node.csr" in out
    assert stat.S_IMODE((home / "tls" / "node.key").stat().st_mode) == 0o600
    signed = tmp_path / "signed"
    assert "public files only" in ok(cli(tmp_path, "pki", "sign", home / "tls" / "node.csr", "--ca-dir", ca,
                                         "--out", signed)).stdout
    assert sorted(p.name for p in signed.iterdir()) == ["ca.crt", "crl.pem", "node.crt"]  # no key travelled
    ok(cli(tmp_path, "pki", "install", signed, home=home))
    shown = ok_json(cli(tmp_path, "pki", "show", "--format", "json", home=home))
    assert shown["subject"] == "CN=lab-a" and set(shown["sans"]) == {"lab-a", "127.0.0.1"}
    # A certificate signed for another node's key cannot be installed here.
    other = tmp_path / "lab-b"
    ok(cli(tmp_path, "init", "lab-a", "--listen", "127.0.0.1:0", home=other))
    ok(cli(tmp_path, "pki", "request", home=other))
    err = failed_cleanly(cli(tmp_path, "pki", "install", signed, home=other))
    assert "does not belong to the certificate" in err
