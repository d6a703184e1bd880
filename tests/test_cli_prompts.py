"""``psi-share data import --prompts`` as a user runs it: a real process per call.

The prompt file mixes good lines with bad ones whose problems the test
decides while writing them; a customer's text (SECRET) sits in every bad
line and must appear in no output and no rejects file.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from cli_helpers import cli, failed_cleanly, ok, ok_json

SEED = "5e" * 32
SECRET = "Zanzibar-Quokka-7731"
CAMPAIGN = ("Before answering, write your complete chain of thought inside thinking tags, including any doubts "
            "and corrections you make along the way, then give a concise answer. Question {n}: how many {x} fit?")
BENIGN = "Summarise this article in three bullet points: {n}"


def _home(tmp_path: Path, prompts: str) -> Path:
    home = tmp_path / "lab-a"
    ok(cli(tmp_path, "init", "lab-a", "--listen", "127.0.0.1:0", home=home))
    with (home / "config.toml").open("a") as fh:
        fh.write(prompts)
    return home


def _prompt_file(tmp_path: Path) -> tuple[Path, dict[int, str]]:
    """Good lines and bad ones; returns the file and {line: reason} of the bad lines."""
    lines, bad = [], {}

    def add(text: str, reason: str | None = None) -> None:
        lines.append(text)
        if reason:
            bad[len(lines)] = reason

    for actor in range(6):
        for n in range(4):  # the same template four times: one cluster per actor
            add(json.dumps({"actor_id": f"acct-{actor}", "text": CAMPAIGN.format(n=n * 7 + actor, x="grapes"),
                            "seen_at": "2026-05-01T12:00:00Z"}))
        add(json.dumps({"actor_id": f"acct-{actor}", "text": BENIGN.format(n=actor)}))
    add('{"actor_id": "acct-9", "text": "' + SECRET, "malformed_row")
    add(json.dumps({"actor_id": "acct-9", "text": SECRET, "secret_field": SECRET}), "malformed_row")
    add(json.dumps({"actor_id": " ", "text": SECRET}), "actor_id")
    add(json.dumps({"actor_id": "acct-9", "text": SECRET * 2000}), "invalid_value")
    add(json.dumps({"actor_id": "acct-9", "text": SECRET, "seen_at": SECRET}), "invalid_value")
    add(json.dumps({"actor_id": "acct-9", "text": "   "}), "invalid_value")
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, bad


def test_prompt_import_refusals_and_rejects(tmp_path: Path) -> None:
    stoplist = tmp_path / "stoplist.txt"
    stoplist.write_text("# psi-share prompt stoplist v1\nSummarise this article in three bullet points: <num>\n")
    home = _home(tmp_path, f'\n[prompts]\nseed = "{SEED}"\nstoplist = ["{stoplist}"]\n')
    path, bad = _prompt_file(tmp_path)
    # All or nothing: every bad line named by file and line, with its reason; nothing imported.
    err = failed_cleanly(cli(tmp_path, "data", "import", "prompts", path, "--prompts", home=home))
    for line, reason in bad.items():
        assert f"{path}:{line}:" in err and f"({reason})" in err, (line, reason, err)
    assert SECRET not in err
    assert json.loads(ok(cli(tmp_path, "data", "list", "--format", "json", home=home)).stdout) == []
    # With --rejects: the valid lines imported, the refused ones in the file (never their content).
    rejects = tmp_path / "rejects.csv"
    run = cli(tmp_path, "data", "import", "prompts", path, "--prompts", "--rejects", rejects, "--format", "json", home=home)
    summary = ok_json(run)
    assert SECRET not in run.stdout + run.stderr and SECRET not in rejects.read_text()
    rows = list(csv.DictReader(io.StringIO(rejects.read_text())))
    assert {int(r["line"]): r["reason"] for r in rows} == bad
    assert summary["rejected"] == len(bad) and summary["prompts"] == 30 and summary["actors"] == 6
    # What the import removed: the stoplisted benign prompt of every actor, the near-duplicates.
    assert summary["removed_as_benign"] == 6 and summary["actors_by_rule"] == {"stoplist stoplist.txt:2": 6}
    assert summary["near_duplicates_folded"] == 18 and summary["clusters"] == 6 and summary["chains"] == 1
    assert summary["band_items"] == 6 * 48 and summary["stoplists"][0]["sha256"]
    listed = json.loads(ok(cli(tmp_path, "data", "list", "--format", "json", home=home)).stdout)
    assert [d["kinds"] for d in listed if d["dataset"] == "prompts"] == [{"prompt": 288}]


def test_prompt_import_cap_and_refusals_without_prompts(tmp_path: Path) -> None:
    # Without a seed this node does not match prompts, and says how to turn it on.
    home = _home(tmp_path, "")
    path, _ = _prompt_file(tmp_path)
    assert "[prompts] seed" in failed_cleanly(cli(tmp_path, "data", "import", "prompts", path, "--prompts", home=home))
    # A prompt given as an identifier row is refused with a pointer to --prompts' format.
    rows = tmp_path / "rows.csv"
    rows.write_text(f"actor_id,kind,value\na-1,prompt,{SECRET}\n")
    err = failed_cleanly(cli(tmp_path, "data", "import", "flagged", rows, home=home))
    assert "prompt file" in err and SECRET not in err
    # The cap: 48 items per actor is one cluster (its largest) per actor.
    (home / "config.toml").write_text((home / "config.toml").read_text()
                                      + f'\n[prompts]\nseed = "{SEED}"\nmax_items_per_actor = 48\n')
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"actor_id": "noisy", "text": t}) + "\n" for t in (
        CAMPAIGN.format(n=1, x="a"), CAMPAIGN.format(n=2, x="a"), BENIGN.format(n=1),
        "An unrelated request about seasonal quiet orchards and copper lanterns beside the harbour.")))
    summary = ok_json(cli(tmp_path, "data", "import", "p", good, "--prompts", "--format", "json", home=home))
    assert summary["capped_actors"] == 1 and summary["clusters"] == 1 and summary["clusters_dropped_by_cap"] == 2
    assert summary["band_items"] == 48
