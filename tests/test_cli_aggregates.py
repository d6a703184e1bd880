"""``psi-share sum``, ``federation`` and aggregate job files as a user runs them (real processes)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from cli_helpers import Labs, cli, failed_cleanly, issue_cert, ok, ok_json, serve_b

# lab-b's usage: amounts per identifier row. lab-a's flagged emails match b1 (jsmith@gmail.com,
# twice via b1 and b9's rows -> one item worth 100 + 5) and b8 (mixed.case@example.org, 40).
USAGE = [
    ("b1", "email", "jsmith@googlemail.com", "100"),
    ("b9", "email", "j.smith+other@gmail.com", "5"),
    ("b8", "email", "mixed.case@example.org", "40"),
    ("b3", "email", "someone@example.org", "7000"),
]


def write_usage(path: Path, rows) -> Path:  # type: ignore[no-untyped-def]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["actor_id", "kind", "value", "amount"])
        w.writerows(rows)
    return path


def expose(home: Path, *datasets: str) -> None:
    config = home / "config.toml"
    # [exposure] datasets and the [policy] grant to every peer
    text = config.read_text().replace('datasets = ["flagged"]', "datasets = " + str(list(datasets)).replace("'", '"'))
    config.write_text(text.replace("pool_size = 16384", "pool_size = 32", 1))


def exact_sums(home: Path) -> None:
    """[privacy] enabled = false: released sums are exact (noise is tested in test_sum_privacy.py)."""
    config = home / "config.toml"
    text = config.read_text()
    assert "[privacy]\nenabled = true" in text
    config.write_text(text.replace("[privacy]\nenabled = true", "[privacy]\nenabled = false", 1))


def test_sum_results_and_job_over_the_cli(tmp_path: Path, labs: Labs, start_server) -> None:  # type: ignore[no-untyped-def]
    bad = write_usage(tmp_path / "bad.csv", USAGE[:1] + [("b2", "email", "x@example.org", "-3")])
    err = failed_cleanly(cli(tmp_path, "data", "import", "usage", bad, home=labs.b))
    assert f"{bad}:3: amount must be a whole number" in err
    ok(cli(tmp_path, "data", "import", "usage", write_usage(tmp_path / "u.csv", USAGE), home=labs.b))
    expose(labs.b, "flagged", "usage")
    exact_sums(labs.b)
    serve_b(labs, start_server, tmp_path)
    out = ok_json(cli(tmp_path, "sum", "lab-b", "--kind", "email", "--peer-dataset", "usage", "--format", "json",
                      home=labs.a))
    assert (out["intersection_size"], out["sum"], out["values_held_by"]) == (2, 145, "responder")
    shown = ok_json(cli(tmp_path, "results", "show", out["session"], "--format", "json", home=labs.a))
    assert (shown["intersection_size"], shown["sum"], shown["status"]) == (2, 145, "done")
    theirs = ok_json(cli(tmp_path, "results", "show", out["session"], "--format", "json", home=labs.b))
    assert (theirs["role"], theirs["sum"]) == ("responder", 145)
    # lab-b's flagged dataset has no amounts: a clean refusal naming why
    err = failed_cleanly(cli(tmp_path, "sum", "lab-b", "--kind", "email", home=labs.a))
    assert "FAILED_PRECONDITION" in err and "without an amount" in err
    job = tmp_path / "sum-job.toml"
    job.write_text('[job]\nprotocol = "intersection-sum"\nname = "traffic"\nparticipants = ["lab-a", "lab-b"]\n'
                   'dataset = "flagged"\npeer_dataset = "usage"\nkind = "email"\n')
    run = ok_json(cli(tmp_path, "job", "run", job, "--format", "json", home=labs.a))
    assert run["status"] == "ok" and [(p["intersection_size"], p["sum"]) for p in run["peers"]] == [(2, 145)]


@pytest.mark.slow
def test_federation_total_over_the_cli(tmp_path: Path, labs: Labs, start_server) -> None:  # type: ignore[no-untyped-def]
    c = tmp_path / "lab-c"
    ok(cli(tmp_path, "init", "lab-c", "--listen", "127.0.0.1:0", "--tls-from", issue_cert(tmp_path, "lab-c"), home=c))
    homes = {"lab-a": labs.a, "lab-b": labs.b, "lab-c": c}
    for value, home in zip((3, 40, 500), homes.values()):
        ok(cli(tmp_path, "federation", "figure", "campaign", str(value), home=home))
    servers = {name: start_server(home) for name, home in homes.items()}
    for name, home in homes.items():
        for peer, server in servers.items():
            if peer != name:
                ok(cli(tmp_path, "peers", "add", peer, f"127.0.0.1:{server.port}", "--replace", home=home))
    out = ok_json(cli(tmp_path, "federation", "total", "campaign", "--participants", "lab-a,lab-b,lab-c",
                      "--format", "json", home=labs.a))
    assert (out["total"], out["contributors"]) == (543, 3)
    runs = ok_json(cli(tmp_path, "federation", "runs", "--format", "json", home=c))
    assert [(r["role"], r["status"], r["total"]) for r in runs] == [("contributor", "released", 543)]
    err = failed_cleanly(cli(tmp_path, "federation", "total", "campaign", "--participants", "lab-a,lab-b",
                             home=labs.a))
    assert "minimum of 3" in err
    job = tmp_path / "fed-job.toml"
    job.write_text('[job]\nprotocol = "federation-total"\nname = "campaign"\nparticipants = ["lab-a", "lab-b", "lab-c"]\n'
                   'metric = "campaign"\n')
    run = ok_json(cli(tmp_path, "job", "run", job, "--format", "json", home=labs.b))
    assert (run["status"], run["total"], run["contributors"]) == ("ok", 543, 3)
    servers["lab-c"].terminate()
    err = failed_cleanly(cli(tmp_path, "job", "run", job, home=labs.b), code=4)  # 4: the run failed
    assert "lab-c" in err
