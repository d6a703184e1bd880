"""``psi-share peers check`` as a user runs it: real processes, a real ``serve``."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cli_helpers import Labs, cli, failed_cleanly, flat, ok, serve_b


def _filters_for(home: Path, queries: int) -> None:
    """[matching] max_set_size: with main's default 1,000,000 the responder serves a
    broken GCS for 520 to 4,600 items, which the canary rightly reports
    (tests/test_peers_check.py); this federation is healthy."""
    config = home / "config.toml"
    text, n = re.subn(r"(?m)^max_set_size = 1000000 ", f"max_set_size = {queries} ", config.read_text())  # [matching]
    assert n == 1
    config.write_text(text)


def test_peers_check_ok_then_refused_then_down(tmp_path: Path, labs: Labs, start_server) -> None:  # type: ignore[no-untyped-def]
    _filters_for(labs.b, 65536)
    server = serve_b(labs, start_server, tmp_path)

    result = ok(cli(tmp_path, "peers", "check", "--json", "--sizes", "16,600", home=labs.a, timeout=120))
    report = json.loads(result.stdout)
    assert (report["ok"], report["exit_code"]) == (True, 0)
    [peer] = report["peers"]
    assert (peer["peer"], peer["ok"], peer["failed"]) == ("lab-b", True, [])
    checks = [(c["check"], c["status"]) for c in peer["checks"]]
    assert checks == [("connect", "ok"), ("tls", "ok"), ("access", "ok"), ("identity", "ok"), ("versions", "ok"),
                      ("grants", "ok")] + [("canary", "ok")] * 4
    canaries = [c for c in peer["checks"] if c["check"] == "canary"]
    assert [(c["asked"], c["mode"]) for c in canaries] == [
        ("_canary.flagged", "reveal"), ("_canary.flagged", "count"),
        ("_canary.flagged.16", "reveal"), ("_canary.flagged.600", "reveal")]
    assert all(c["got"] == c["expected"] == 5 and c["our_items"] == 9 for c in canaries)
    assert result.stderr.strip().splitlines()[-1] == "peers check: lab-b ok"

    table = ok(cli(tmp_path, "peers", "check", "lab-b", "--no-canary", home=labs.a))
    for row in ("connect", "tls", "access", "identity", "versions", "grants"):
        assert re.search(rf"lab-b\s+│?\s*{row}\s+│?\s*ok", table.stdout), table.stdout
    assert "not asked for (--no-canary)" in flat(table.stdout)

    # lab-b forgets lab-a: every check after TLS is refused, and says by whom and why.
    ok(cli(tmp_path, "peers", "remove", "lab-a", home=labs.b))
    refused = failed_cleanly(cli(tmp_path, "peers", "check", "lab-b", home=labs.a), code=7)
    assert "peer lab-b: access failed: lab-b refuses us: UNAUTHENTICATED: node 'lab-a' is not a known peer" in refused
    assert refused.endswith("peers check: lab-b failed (access)")

    assert server.terminate() == 0
    down = failed_cleanly(cli(tmp_path, "peers", "check", home=labs.a), code=8)
    assert "peer lab-b: connect failed: peer lab-b is unavailable: 127.0.0.1:" in down
    assert down.endswith("peers check: lab-b failed (connect)")

    unknown = failed_cleanly(cli(tmp_path, "peers", "check", "lab-b", "lab-z", home=labs.a))
    assert "unknown peer 'lab-z'" in unknown and "peers check:" not in unknown  # nobody was contacted
    bad = cli(tmp_path, "peers", "check", "--sizes", "0,16", home=labs.a)
    assert bad.returncode == 2 and "each size must be 1 to 65536" in flat(bad.stderr)
