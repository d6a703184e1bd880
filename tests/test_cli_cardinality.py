"""``psi-share match --mode count`` and count jobs as a user runs them (real processes).

lab-b grants lab-a counts only: a count goes through the cardinality protocol
(lab-b counts), a reveal is refused, and lab-b's min_result withholds small
counts itself.
"""

from __future__ import annotations

from pathlib import Path

from cli_helpers import A_ITEMS_EMAIL_PHONE, Labs, cli, failed_cleanly, flat, ok, ok_json, serve_b


def counts_only(labs: Labs, *extra: str) -> None:
    """lab-b answers lab-a with counts only (the labs fixture granted reveal; its counts are exact)."""
    config = labs.b / "config.toml"
    text = config.read_text().replace("[policy.peers.lab-a]\nreveal = true\n", "[policy.peers.lab-a]\nreveal = false\n")
    config.write_text(text + "".join(f"{line}\n" for line in extra))


def test_count_mode_over_the_cli(tmp_path: Path, labs: Labs, start_server) -> None:  # type: ignore[no-untyped-def]
    counts_only(labs)
    serve_b(labs, start_server, tmp_path)
    out = ok_json(cli(tmp_path, "match", "lab-b", "--kinds", "email,phone", "--mode", "count", "--format", "json",
                      home=labs.a))
    assert (out["matching_items"], out["matching_actors"], out["our_items"]) == (5, None, A_ITEMS_EMAIL_PHONE)
    # --count says the same
    again = ok_json(cli(tmp_path, "match", "lab-b", "--kinds", "email,phone", "--count", "--format", "json", home=labs.a))
    assert again["matching_items"] == 5 and again["session"] != out["session"]
    # lab-b learned our set size and the count, and says so
    err = failed_cleanly(cli(tmp_path, "results", "show", out["session"], home=labs.b))
    assert f"it learned the set size ({A_ITEMS_EMAIL_PHONE}) and the intersection size (5)" in err
    sessions = ok_json(cli(tmp_path, "results", "sessions", "--format", "json", home=labs.b))
    assert {(s["session"], s["mode"], s["matched"]) for s in sessions} >= {(out["session"], "count", 5)}
    # which items match is refused, naming the way to count
    err = failed_cleanly(cli(tmp_path, "match", "lab-b", "--kinds", "email", home=labs.a))
    assert "PERMISSION_DENIED" in err and "counts only" in err and "--count" in err
    err = failed_cleanly(cli(tmp_path, "match", "lab-b", "--kinds", "email", "--count", "--mode", "reveal",
                             home=labs.a), code=2)
    assert "contradict" in err
    # a count job
    job = tmp_path / "count-job.toml"
    job.write_text('[job]\nname = "counts"\nparticipants = ["lab-a", "lab-b"]\ndataset = "flagged"\n'
                   'kinds = ["email", "phone"]\nmode = "count"\n')
    run = ok_json(cli(tmp_path, "job", "run", job, "--format", "json", home=labs.a))
    assert run["status"] == "ok" and [p["matching_items"] for p in run["peers"]] == [5]


def test_min_result_withholds_a_small_count(tmp_path: Path, labs: Labs, start_server) -> None:  # type: ignore[no-untyped-def]
    counts_only(labs, "min_result = 6")
    serve_b(labs, start_server, tmp_path)
    out = ok_json(cli(tmp_path, "match", "lab-b", "--kinds", "email,phone", "--count", "--format", "json", home=labs.a))
    assert out["matching_items"] is None and "fewer than 6" in out["withheld"]
    shown = cli(tmp_path, "results", "show", out["session"], "--format", "json", home=labs.a)
    assert "fewer than 6" in flat(ok(cli(tmp_path, "results", "sessions", "--format", "csv", home=labs.a)).stdout)
    assert ok(shown).stdout.strip() == "[]"
