"""``psi-share serve`` never shares its port: real processes, real sockets.

gRPC turns SO_REUSEPORT on by default, so a second node started on a busy
port used to start silently and take half of the incoming connections (a
peer of one federation then reached the other node and failed TLS with a
confusing message). A node now refuses a port in use with one clear line
and exit code 6, and the node already there keeps every connection.
"""

from __future__ import annotations

import socket
from pathlib import Path

from cli_helpers import Labs, cli, failed_cleanly, ok, ok_json

EXIT_CANNOT_LISTEN = 6


def _refusal(result, port: int) -> str:  # type: ignore[no-untyped-def]
    failed_cleanly(result, EXIT_CANNOT_LISTEN)
    # gRPC's C core may log its own bind failure first; ours is the last line.
    return result.stderr.strip().splitlines()[-1]


def test_second_serve_on_the_same_port_exits_6_and_the_first_keeps_every_connection(
    tmp_path: Path, labs: Labs, start_server  # type: ignore[no-untyped-def]
) -> None:
    first = start_server(labs.a)
    second = cli(tmp_path, "serve", "--listen", f"127.0.0.1:{first.port}", home=labs.b, timeout=30)
    last = _refusal(second, first.port)
    assert last == (f"error: cannot listen on 127.0.0.1:{first.port}: the port is already in use "
                    "(another psi-share node or another program listens there)")
    # Every connection still reaches lab-a: each check opens a fresh channel, and a
    # connection that reached another node would fail its TLS name check.
    ok(cli(tmp_path, "peers", "add", "lab-a", f"127.0.0.1:{first.port}", "--replace", home=labs.b))
    for _ in range(5):
        check = ok_json(cli(tmp_path, "peers", "check", "lab-a", "--no-canary", "--json", home=labs.b))
        assert check["ok"] and [c["node_name"] for c in check["peers"][0]["checks"] if c["check"] == "identity"] == ["lab-a"]
    assert first.proc.poll() is None


def test_serve_on_a_port_another_program_holds(tmp_path: Path, lab: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli(tmp_path, "serve", "--listen", f"127.0.0.1:{port}", home=lab, timeout=30)
    assert _refusal(result, port).startswith(f"error: cannot listen on 127.0.0.1:{port}: the port is already in use")


def test_serve_on_an_address_that_is_not_this_machines(tmp_path: Path, lab: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1: never assigned to a local interface; nothing is sent.
    result = cli(tmp_path, "serve", "--listen", "192.0.2.1:7400", home=lab, timeout=30)
    assert _refusal(result, 7400) == "error: cannot listen on 192.0.2.1:7400: the host is not an address of this machine"
