"""The ``psi-share`` CLI as a user runs it: real processes, real homes, real gRPC.

Every command runs as its own ``python -m psi_share.cli.main`` process (the
``psi-share`` console script for one check), with the node home given by
``--home`` or ``PSI_SHARE_HOME`` inside ``tmp_path``. ``serve`` runs in the
background as a real process on ``127.0.0.1:0``; its port is read from its
``listening on port N`` line and it is stopped with SIGTERM.

Error messages are checked with whitespace collapsed: stderr is not a
terminal here (see test_long_error_lines_are_not_wrapped).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cli_helpers import (
    A_ITEMS_EMAIL_PHONE,
    EXPECTED_MATCHES,
    PSI_SHARE_SCRIPT,
    Labs,
    base_env,
    cli,
    csv_rows,
    datasets,
    failed_cleanly,
    flat,
    ok,
    ok_json,
    serve_b,
    write_csv,
    write_job,
)

# -- 1. help ------------------------------------------------------------------

HELP = {
    (): "Find the actors that attack several labs, without revealing customer data.",
    ("init",): "Create a node home for the lab called NAME.",
    ("node",): "Inspect this node.",
    ("node", "info"): "Show this node's name, settings, datasets and peers.",
    ("data",): "Import, register (Parquet) and list the lab's datasets (they never leave the node).",
    ("data", "import"): "Import FILE (CSV, TSV or JSON Lines) into DATASET, all or nothing.",
    ("data", "list"): "List datasets with actor and identifier counts per kind.",
    ("data", "register"): "Register a Parquet SOURCE as DATASET: read in place, never copied.",
    ("data", "show"): "Show DATASET: counts by kind, revision and, for a Parquet dataset, where it is read from,",
    ("data", "delete"): "Delete DATASET and its identifiers (match history is kept).",
    ("peers",): "Manage the peer labs this node talks to.",
    ("peers", "add"): "Add peer NAME reachable at ADDRESS (HOST:PORT).",
    ("peers", "list"): "List known peers.",
    ("peers", "remove"): "Forget peer NAME (its past sessions stay on record).",
    ("peers", "check"): "Prove that each PEER (default: every known peer) works end to end.",
    ("serve",): "Serve peers until SIGINT/SIGTERM, then shut down gracefully.",
    ("match",): "Match our DATASET against PEER's dataset with private set intersection.",
    ("results",): "Read stored match results.",
    ("results", "sessions"): "List recent sessions, as requester and as responder.",
    ("results", "show"): "Show which of our actors matched in SESSION (id or unique prefix), by kind.",
    ("results", "run"): "Per actor, the peers that matched it in job run RUN_ID.",
    ("job",): "Run joint matching jobs described by a TOML job file.",
    ("job", "run"): "Run this node's side of JOBFILE: match against every other participant.",
    ("job", "runs"): "List stored job runs.",
    ("pki",): "The federation's certificate authority: node certificates and revocation.",
    ("pki", "init-ca"): "Create the federation CA in --ca-dir: ca.key (0600), ca.crt, crl.pem.",
    ("pki", "issue"): "Issue a certificate naming node NAME, with a fresh key.",
    ("pki", "request"): "Make this node's key (kept in tls/, mode 0600) and a certificate request for the CA.",
    ("pki", "sign"): "Issue a certificate for a node's request CSR (from 'psi-share pki request').",
    ("pki", "revoke"): "Revoke every certificate issued to node NAME (or one --serial); re-sign crl.pem.",
    ("pki", "refresh-crl"): "Re-sign the revocation list with a fresh validity window.",
    ("pki", "list"): "List the certificates this CA issued, and whether each is revoked.",
    ("pki", "install"): "Install a 'pki issue' output DIRECTORY into this node's tls/ folder.",
    ("pki", "show"): "Show this node's certificate (subject, SANs, validity) and check it.",
    ("policy",): "Show the per-peer policy ([policy] in config.toml) and today's budget use.",
    ("policy", "show"): "The effective rule for each known peer (or PEERS), within [exposure], and today's use.",
}


@pytest.mark.parametrize("command", list(HELP), ids=lambda c: " ".join(c) or "psi-share")
def test_help_of_every_command(tmp_path: Path, command: tuple[str, ...]) -> None:
    # An uninitialised home must not matter for --help, and must not be created.
    env = base_env(tmp_path) | {"PSI_SHARE_HOME": str(tmp_path / "no-home")}
    result = ok(cli(tmp_path, *command, "--help", env=env))
    first = result.stdout.splitlines()[0]
    assert first.startswith(" ".join(("Usage: psi-share", *command))), first
    assert HELP[command] in flat(result.stdout)
    assert result.stderr == ""
    assert not (tmp_path / "no-home").exists()


def test_help_via_console_script_short_option_and_version(tmp_path: Path) -> None:
    assert PSI_SHARE_SCRIPT.is_file(), PSI_SHARE_SCRIPT
    top = ok(cli(tmp_path, "-h", script=True)).stdout
    assert top.startswith("Usage: psi-share [OPTIONS] COMMAND [ARGS]...")
    for command in ("init", "node", "data", "peers", "serve", "match", "results", "job"):
        assert re.search(rf"^\s+{command}\s", top, re.M), command
    assert ok(cli(tmp_path, "--version", script=True)).stdout.strip() == "psi-share, version 0.1.0"
    sub = ok(cli(tmp_path, "match", "-h", script=True)).stdout
    assert sub.startswith("Usage: psi-share match [OPTIONS] PEER") and "--kinds" in sub


# -- 2. a full session by hand ------------------------------------------------


def test_full_session_two_nodes(tmp_path: Path, labs: Labs, start_server) -> None:  # type: ignore[no-untyped-def]
    server = serve_b(labs, start_server, tmp_path)

    peers = ok_json(cli(tmp_path, "peers", "list", "--format", "json", home=labs.a))
    assert [(p["peer"], p["address"]) for p in peers] == [("lab-b", f"127.0.0.1:{server.port}")]

    # Reveal match: canonical forms make gmail/phone variants meet.
    m = ok_json(cli(tmp_path, "match", "lab-b", "--kinds", "email,phone", "--format", "json", home=labs.a))
    assert m["peer"] == "lab-b"
    assert m["our_items"] == A_ITEMS_EMAIL_PHONE
    assert m["matching_items"] == 5
    assert m["matching_actors"] == 5
    session = m["session"]
    assert re.fullmatch(r"[0-9a-f]{32}", session)

    sessions = csv_rows(ok(cli(tmp_path, "results", "sessions", "--format", "csv", home=labs.a)).stdout)
    row = next(r for r in sessions if r["session"] == session)
    assert (row["role"], row["peer"], row["dataset"], row["mode"], row["status"]) == (
        "requester", "lab-b", "flagged", "reveal", "done")
    assert (row["set_size"], row["matched"], row["error"]) == (str(A_ITEMS_EMAIL_PHONE), "5", "")

    shown = ok_json(cli(tmp_path, "results", "show", session, "--format", "json", home=labs.a))
    assert [r["actor_id"] for r in shown] == sorted(EXPECTED_MATCHES)
    assert {r["actor_id"]: r["kinds"] for r in shown} == EXPECTED_MATCHES
    assert {r["peer"] for r in shown} == {"lab-b"}
    # A unique prefix names the session too.
    assert ok_json(cli(tmp_path, "results", "show", session[:10], "--format", "json", home=labs.a)) == shown

    # Count-only: a count, no actors; its stored session reveals no actors either.
    c = ok_json(cli(tmp_path, "match", "lab-b", "--kinds", "email,phone", "--count", "--format", "json",
                    home=labs.a))
    assert c["matching_items"] == 5 and c["matching_actors"] is None and c["session"] != session
    count_show = cli(tmp_path, "results", "show", c["session"], "--format", "json", home=labs.a)
    assert json.loads(ok(count_show).stdout) == []
    assert "count-only: 5 matching items" in flat(count_show.stderr)

    # Only the chosen kinds take part: with ip_prefix, a7 matches too.
    m2 = ok_json(cli(tmp_path, "match", "lab-b", "--kinds", "ip_prefix", "--format", "json", home=labs.a))
    assert (m2["our_items"], m2["matching_items"], m2["matching_actors"]) == (1, 1, 1)

    # The responder stored only the requester's set size, never which items matched.
    b_sessions = csv_rows(ok(cli(tmp_path, "results", "sessions", "--format", "csv", home=labs.b)).stdout)
    b_row = next(r for r in b_sessions if r["session"] == session)
    assert (b_row["role"], b_row["peer"], b_row["status"], b_row["set_size"], b_row["matched"]) == (
        "responder", "lab-a", "done", str(A_ITEMS_EMAIL_PHONE), "")
    refused = cli(tmp_path, "results", "show", session, home=labs.b)
    assert "learned only the set size" in failed_cleanly(refused)

    check = ok_json(cli(tmp_path, "peers", "check", "lab-b", "--no-canary", "--format", "json", home=labs.a))
    [peer] = check["peers"]
    by_check = {c["check"]: c for c in peer["checks"]}
    assert peer["peer"] == by_check["identity"]["node_name"] == "lab-b" and check["ok"] is True
    assert by_check["grants"]["datasets"] == {"flagged": ["email", "ip_prefix", "phone"]}
    assert by_check["versions"]["canonicalization_differs"] == []
    assert "psi" in by_check["grants"]["protocols"]

    info = ok_json(cli(tmp_path, "node", "info", "--format", "json", home=labs.a))
    assert info["name"] == "lab-a"
    assert info["home"] == str(labs.a)
    assert info["listen"] == "127.0.0.1:0"
    assert info["datasets"] == ["flagged"] and info["peers"] == ["lab-b"]
    assert info["exposed_datasets"] == ["flagged"] and info["reveal_allowed"] is True
    assert re.fullmatch(r"[0-9a-f]{32}", info["identity_fingerprint"])
    assert info["tls"].startswith("CN=lab-a, serial ")

    assert server.terminate() == 0, server.output()
    assert "shutting down" in server.output()
    assert "Traceback" not in server.output()


# -- 3. jobs -----------------------------------------------------------------


def test_job_ok_partial_and_failed(tmp_path: Path, labs: Labs, start_server) -> None:  # type: ignore[no-untyped-def]
    server = serve_b(labs, start_server, tmp_path)
    config = labs.a / "config.toml"  # no retries of unreachable peers here (tests/test_periodic_jobs.py has them)
    config.write_text(config.read_text().replace("peer_attempts = 3", "peer_attempts = 1"))
    jobfile = write_job(tmp_path / "weekly.toml", "weekly", ["lab-a", "lab-b"])

    run = ok_json(cli(tmp_path, "job", "run", jobfile, "--format", "json", home=labs.a))
    assert run["job"] == "weekly" and run["status"] == "ok"
    [peer] = run["peers"]
    assert (peer["peer"], peer["status"], peer["matching_items"], peer["matching_actors"], peer["error"]) == (
        "lab-b", "ok", 5, 5, "")
    assert run["attribution"] == {a: ["lab-b"] for a in EXPECTED_MATCHES}
    assert run["seen_at_2_or_more"] == []
    run_id = run["run_id"]

    runs = ok_json(cli(tmp_path, "job", "runs", "--format", "json", home=labs.a))
    assert [(r["run"], r["job"], r["status"], r["error"]) for r in runs] == [(run_id, "weekly", "ok", "")]
    assert runs[0]["finished"]

    per_actor = csv_rows(ok(cli(tmp_path, "results", "run", run_id, "--format", "csv", home=labs.a)).stdout)
    assert [(r["actor_id"], r["peer_count"], r["peers"]) for r in per_actor] == [
        (a, "1", "lab-b") for a in sorted(EXPECTED_MATCHES)]
    at_two = ok(cli(tmp_path, "results", "run", run_id, "--min-peers", "2", "--format", "csv", home=labs.a))
    assert csv_rows(at_two.stdout) == []

    # Partial: lab-c is a known peer, but nothing listens at its address.
    ok(cli(tmp_path, "peers", "add", "lab-c", "127.0.0.1:1", home=labs.a))
    trio = write_job(tmp_path / "trio.toml", "trio", ["lab-a", "lab-b", "lab-c"])
    partial = cli(tmp_path, "job", "run", trio, "--format", "json", home=labs.a)
    assert partial.returncode == 3, partial.stderr
    body = json.loads(partial.stdout)
    assert body["status"] == "partial"
    by_peer = {p["peer"]: p for p in body["peers"]}
    assert by_peer["lab-b"]["status"] == "ok" and by_peer["lab-b"]["matching_actors"] == 5
    assert by_peer["lab-c"]["status"] == "failed" and by_peer["lab-c"]["session"] is None
    assert "lab-c" in by_peer["lab-c"]["error"]
    assert body["attribution"] == {a: ["lab-b"] for a in EXPECTED_MATCHES}

    # All peers down: exit 1, status failed, the error names lab-b.
    assert server.terminate() == 0, server.output()
    failed = cli(tmp_path, "job", "run", jobfile, "--format", "json", home=labs.a)
    assert failed.returncode == 4, failed.stderr
    body = json.loads(failed.stdout)
    assert body["status"] == "failed" and body["attribution"] == {}
    [peer] = body["peers"]
    assert peer["peer"] == "lab-b" and peer["status"] == "failed" and "lab-b" in peer["error"]
    assert "Traceback" not in failed.stderr

    runs = ok_json(cli(tmp_path, "job", "runs", "--format", "json", home=labs.a))
    assert [(r["job"], r["status"]) for r in runs] == [("weekly", "ok"), ("trio", "partial"), ("weekly", "failed")]
    assert "lab-b" in runs[2]["error"] and "lab-c" in runs[1]["error"]
    weekly = ok_json(cli(tmp_path, "job", "runs", "--job", "weekly", "--format", "json", home=labs.a))
    assert [r["status"] for r in weekly] == ["ok", "failed"]
    # The failed run attributes nothing.
    failed_rows = ok(cli(tmp_path, "results", "run", body["run_id"], "--format", "csv", home=labs.a)).stdout
    assert csv_rows(failed_rows) == []


# -- 4. bad input -------------------------------------------------------------


def test_malformed_csv_names_file_and_line_and_writes_nothing(tmp_path: Path, lab: Path) -> None:
    before = datasets(tmp_path, lab)
    write_csv(tmp_path / "bad.csv", [
        ("c1", "email", "ok@example.org"),
        ("c2", "email", "not-an-email"),  # line 3
        ("c3", "phone", "+1 415 555 0100"),
    ])
    # Into a new dataset: nothing is created.
    message = failed_cleanly(cli(tmp_path, "data", "import", "fresh", "bad.csv", home=lab))
    assert "bad.csv:3:" in message and "email" in message
    assert "not-an-email" not in message  # identifier values never reach messages
    # Into the existing dataset with --replace: it stays as it was.
    message = failed_cleanly(cli(tmp_path, "data", "import", "flagged", "bad.csv", "--replace", home=lab))
    assert "bad.csv:3:" in message
    assert datasets(tmp_path, lab) == before
    assert "fresh" not in before


def test_reimport_without_mode_is_refused(tmp_path: Path, lab: Path) -> None:
    before = datasets(tmp_path, lab)
    write_csv(tmp_path / "more.csv", [("z1", "email", "z1@example.org")])
    message = failed_cleanly(cli(tmp_path, "data", "import", "flagged", "more.csv", home=lab))
    assert "--replace" in message and "--append" in message and "flagged" in message
    assert datasets(tmp_path, lab) == before


def test_match_unknown_peer_and_unknown_kind(tmp_path: Path, lab: Path) -> None:
    message = failed_cleanly(cli(tmp_path, "match", "lab-zz", "--kinds", "email", home=lab))
    assert "lab-zz" in message and "peers add" in message

    usage = cli(tmp_path, "match", "lab-zz", "--kinds", "email,bogus", home=lab)
    message = failed_cleanly(usage, code=2)
    assert "bogus" in message and "Usage: psi-share match" in usage.stderr
    failed_cleanly(cli(tmp_path, "match", "lab-zz", "--kinds", ",", home=lab), code=2)
    failed_cleanly(cli(tmp_path, "match", "lab-zz", home=lab), code=2)  # --kinds is required
    # Nothing was recorded.
    assert ok_json(cli(tmp_path, "results", "sessions", "--format", "json", home=lab)) == []


def test_uninitialised_home(tmp_path: Path) -> None:
    missing = tmp_path / "not-a-home"
    for args, env in (
        (("--home", missing, "node", "info"), None),
        (("data", "list"), base_env(tmp_path) | {"PSI_SHARE_HOME": str(missing)}),
        (("match", "lab-b", "--kinds", "email"), base_env(tmp_path) | {"PSI_SHARE_HOME": str(missing)}),
    ):
        message = failed_cleanly(cli(tmp_path, *args, env=env))
        assert "psi-share init" in message and "config.toml" in message
    assert not missing.exists()
    assert not (tmp_path / "user-home" / ".psi-share").exists()


def test_bad_job_files(tmp_path: Path, lab: Path) -> None:
    write_job(tmp_path / "typo.toml", "weekly", ["lab-a", "lab-b"], extra='colour = "red"\n')
    message = failed_cleanly(cli(tmp_path, "job", "run", "typo.toml", home=lab))
    assert "typo.toml" in message and "colour" in message

    write_job(tmp_path / "nota.toml", "weekly", ["lab-b", "lab-c"])
    message = failed_cleanly(cli(tmp_path, "job", "run", "nota.toml", home=lab))
    assert "lab-a" in message and "participant" in message

    (tmp_path / "broken.toml").write_text("[job\nname = 1\n", encoding="utf-8")
    message = failed_cleanly(cli(tmp_path, "job", "run", "broken.toml", home=lab))
    assert "broken.toml" in message and "invalid TOML" in message

    write_job(tmp_path / "stranger.toml", "weekly", ["lab-a", "lab-q"])
    message = failed_cleanly(cli(tmp_path, "job", "run", "stranger.toml", home=lab))
    assert "lab-q" in message
    # None of these started a run.
    assert ok_json(cli(tmp_path, "job", "runs", "--format", "json", home=lab)) == []


def test_init_refuses_to_overwrite_and_bad_names(tmp_path: Path, lab: Path) -> None:
    config = (lab / "config.toml").read_text()
    message = failed_cleanly(cli(tmp_path, "init", "lab-x", home=lab))
    assert "--force" in message
    assert (lab / "config.toml").read_text() == config
    for args in (("init", "Bad Name"), ("init", "lab-x", "--listen", "no-port")):
        failed_cleanly(cli(tmp_path, *args, home=tmp_path / "new-home"))
        assert not (tmp_path / "new-home").exists()


def test_peers_add_list_remove(tmp_path: Path, lab: Path) -> None:
    ok(cli(tmp_path, "peers", "add", "lab-b", "10.0.0.2:7400", "--note", "partner", home=lab))
    message = failed_cleanly(cli(tmp_path, "peers", "add", "lab-b", "10.0.0.3:7400", home=lab))
    assert "--replace" in message
    failed_cleanly(cli(tmp_path, "peers", "add", "lab-c", "no-port", home=lab), code=2)
    failed_cleanly(cli(tmp_path, "peers", "add", "lab-a", "10.0.0.9:1", home=lab), code=2)  # itself
    listed = ok_json(cli(tmp_path, "peers", "list", "--format", "json", home=lab))
    assert [(p["peer"], p["address"], p["note"]) for p in listed] == [("lab-b", "10.0.0.2:7400", "partner")]
    assert "removed peer lab-b" in ok(cli(tmp_path, "peers", "remove", "lab-b", home=lab)).stdout
    assert "lab-b" in failed_cleanly(cli(tmp_path, "peers", "remove", "lab-b", home=lab))
    assert ok_json(cli(tmp_path, "peers", "list", "--format", "json", home=lab)) == []


# -- 5. append, replace, delete ----------------------------------------------


def test_append_adds_and_replace_replaces(tmp_path: Path, lab: Path) -> None:
    start = datasets(tmp_path, lab)["flagged"]
    assert (start["actors"], start["identifiers"], start["revision"]) == (8, 9, 1)
    assert start["kinds"] == {"email": 5, "ip_prefix": 1, "phone": 3}
    assert start["exposed_to_peers"] is True

    write_csv(tmp_path / "extra.csv", [
        ("x1", "email", "x1@example.org"),
        ("x2", "phone", "+1 212 555 0100"),
        ("a1", "email", "j.s.m.i.t.h@gmail.com"),  # a1 already holds this mailbox
        ("a1", "phone", "+1 212 555 0199"),        # new identifier of an existing actor
    ])
    added = ok_json(cli(tmp_path, "data", "import", "flagged", "extra.csv", "--append", "--format", "json",
                        home=lab))
    assert (added["actors_added"], added["identifiers_added"]) == (2, 3)
    after = datasets(tmp_path, lab)["flagged"]
    assert (after["actors"], after["identifiers"], after["revision"]) == (10, 12, 2)
    assert after["kinds"] == {"email": 6, "ip_prefix": 1, "phone": 5}

    replaced = ok_json(cli(tmp_path, "data", "import", "flagged", "extra.csv", "--replace", "--format", "json",
                           home=lab))
    assert (replaced["actors"], replaced["identifiers"]) == (3, 4)
    after = datasets(tmp_path, lab)["flagged"]
    assert (after["actors"], after["identifiers"], after["revision"]) == (3, 4, 3)
    assert after["kinds"] == {"email": 2, "phone": 2}

    # A second dataset, then deleting it (confirmation skipped with --yes).
    ok(cli(tmp_path, "data", "import", "customers", "extra.csv", home=lab))
    assert set(datasets(tmp_path, lab)) == {"flagged", "customers"}
    assert datasets(tmp_path, lab)["customers"]["exposed_to_peers"] is False
    aborted = cli(tmp_path, "data", "delete", "customers", home=lab)  # no --yes, stdin is not a terminal
    assert aborted.returncode == 1 and "Aborted" in aborted.stderr, aborted.stderr
    assert set(datasets(tmp_path, lab)) == {"flagged", "customers"}
    assert "deleted dataset customers" in ok(cli(tmp_path, "data", "delete", "customers", "--yes", home=lab)).stdout
    assert set(datasets(tmp_path, lab)) == {"flagged"}
    assert "customers" in failed_cleanly(cli(tmp_path, "data", "delete", "customers", "--yes", home=lab))


def test_home_from_env_and_option_precedence(tmp_path: Path) -> None:
    env_home, opt_home = tmp_path / "env-home", tmp_path / "opt-home"
    env = base_env(tmp_path) | {"PSI_SHARE_HOME": str(env_home)}
    ok(cli(tmp_path, "init", "lab-env", env=env))
    ok(cli(tmp_path, "--home", opt_home, "init", "lab-opt", env=env))
    assert ok_json(cli(tmp_path, "node", "info", "--format", "json", env=env))["name"] == "lab-env"
    assert ok_json(cli(tmp_path, "--home", opt_home, "node", "info", "--format", "json", env=env))["name"] == "lab-opt"
    # Without either, the default is ~/.psi-share (HOME is inside tmp_path here).
    ok(cli(tmp_path, "init", "lab-default"))
    assert (tmp_path / "user-home" / ".psi-share" / "config.toml").is_file()


# -- error output and contradictory flags ---------------------------------------


def test_error_messages_keep_bracketed_text(tmp_path: Path, lab: Path) -> None:
    write_job(tmp_path / "typo.toml", "weekly", ["lab-a", "lab-b"], extra='colour = "red"\n')
    message = failed_cleanly(cli(tmp_path, "job", "run", "typo.toml", home=lab))
    assert "unknown key(s) in [job]: colour" in message


def test_error_message_with_markup_like_path_is_printed_verbatim(tmp_path: Path, lab: Path) -> None:
    (tmp_path / "d[").mkdir()
    write_csv(tmp_path / "d[" / "]x.csv", [("c1", "email", "ok@example.org"), ("c2", "email", "nope")])
    message = failed_cleanly(cli(tmp_path, "data", "import", "fresh", "d[/]x.csv", home=lab))
    assert "d[/]x.csv:3:" in message


def test_long_error_lines_are_not_wrapped(tmp_path: Path, lab: Path) -> None:
    deep = tmp_path / ("d" * 90)
    deep.mkdir()
    bad = write_csv(deep / "bad.csv", [("c1", "email", "ok@example.org"), ("c2", "email", "nope")])
    result = cli(tmp_path, "data", "import", "fresh", bad, home=lab)
    failed_cleanly(result)
    assert f"{bad}:3:" in result.stderr


def test_replace_and_append_together_are_a_usage_error(tmp_path: Path, lab: Path) -> None:
    write_csv(tmp_path / "one.csv", [("z1", "email", "z1@example.org")])
    result = cli(tmp_path, "data", "import", "flagged", "one.csv", "--append", "--replace", home=lab)
    # Refused before anything is written: flagged keeps its 8 actors.
    assert datasets(tmp_path, lab)["flagged"]["actors"] == 8
    assert result.returncode == 2
