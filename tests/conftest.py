"""Shared fixtures: real nodes in temporary homes, served on 127.0.0.1 port 0;
for the CLI tests, two labs' homes (``labs``) and ``psi-share serve`` processes
(``start_server``)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from cli_helpers import LAB_A_ROWS, LAB_B_ROWS, Labs, Server, base_env, cli, issue_cert, ok, ok_json, write_csv

from psi_share import Node, RunningServer, init_home
from psi_share.pki import init_ca, issue_node


class Federation:
    """Real nodes with real gRPC servers on loopback, torn down after the test.

    The federation has its own CA (``self.ca``, in ``root/federation-ca``):
    every node gets a certificate naming it, so every connection is mutual
    TLS exactly as in production. ``channel(frm, to)`` opens a raw gRPC
    channel to node ``to`` that presents ``frm``'s certificate, for tests
    that speak the wire contract by hand.

    A test federation trusts its members: every node's ``[policy] reveal``
    is true unless the test passes ``policy__reveal``, and ``[policy]
    datasets`` follows ``exposure__datasets`` unless ``policy__datasets`` is
    given. Config overrides are ``section__key=value``; a key or section the
    rendered config lacks is added (``**{"policy.peers.lab-a__min_result": 3}``).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: dict[str, Node] = {}
        self.servers: dict[str, RunningServer] = {}
        self.ca = init_ca(root / "federation-ca", "test federation CA")
        self._issued = 0

    def issue(self, name: str, out: Path | None = None) -> Path:
        """Issue a certificate for ``name`` (127.0.0.1 as its address); return its directory."""
        self._issued += 1
        out = out or self.root / "issued" / f"{name}-{self._issued}"
        issue_node(self.ca, name, out, addresses=["127.0.0.1"])
        return out

    def node(self, name: str, **config: object) -> Node:
        home = init_home(self.root / name, name, "127.0.0.1:0", tls_from=self.issue(name))
        config = {"policy__reveal": "true", **config}
        if "exposure__datasets" in config:  # a test exposing more datasets grants them too
            config.setdefault("policy__datasets", config["exposure__datasets"])
        if config:
            home.config_path.write_text(_override(home.config_path.read_text(), config))
        node = Node.open(home.path)
        self.nodes[name] = node
        return node

    def serve(self, name: str) -> RunningServer:
        server = self.nodes[name].serve("127.0.0.1:0")
        self.servers[name] = server
        return server

    def connect_all(self) -> None:
        for a, node in self.nodes.items():
            for b, server in self.servers.items():
                if a != b:
                    node.store.add_peer(b, f"127.0.0.1:{server.port}", now=node.clock(), replace=True)
            for b in self.nodes:
                if a != b and b not in self.servers:
                    node.store.add_peer(b, "127.0.0.1:1", now=node.clock(), replace=True)

    def channel(self, frm: str, to: str, *, tls_dir: Path | None = None, port: int | None = None) -> grpc.Channel:
        """A raw mTLS channel to node ``to``'s server presenting ``frm``'s certificate
        (or the files in ``tls_dir``: node.crt, node.key, ca.crt); ``port`` when
        ``to`` is served by a ``psi-share serve`` process rather than in-process."""
        d = tls_dir or self.nodes[frm].home.tls_path
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(d / "ca.crt").read_bytes(), private_key=(d / "node.key").read_bytes(),
            certificate_chain=(d / "node.crt").read_bytes(),
        )
        return grpc.secure_channel(
            f"127.0.0.1:{port or self.servers[to].port}", credentials, options=[("grpc.ssl_target_name_override", to)]
        )

    def close(self) -> None:
        for server in self.servers.values():
            server.stop(grace=1)
        for node in self.nodes.values():
            node.close()


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    fed = Federation(tmp_path)
    try:
        yield fed
    finally:
        fed.close()


def _override(text: str, config: dict[str, object]) -> str:
    """Set ``section__key=value`` entries in a rendered config.toml."""
    lines, section = text.splitlines(), ""
    done: set[str] = set()
    for i, line in enumerate(lines):
        if line.startswith("["):
            section = line.strip("[]")
        key = line.split("=")[0].strip()
        if f"{section}__{key}" in config:
            lines[i] = f"{key} = {config[f'{section}__{key}']}"
            done.add(f"{section}__{key}")
    for entry, value in config.items():
        if entry in done:
            continue
        section, key = entry.split("__", 1)
        header = f"[{section}]"
        if header in lines:
            lines.insert(lines.index(header) + 1, f"{key} = {value}")
        else:
            lines += [header, f"{key} = {value}"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def csv_file(tmp_path: Path) -> Callable[[str, list[tuple[str, str, str]]], Path]:
    return lambda name, rows: write_csv(tmp_path / name, rows)


# -- the CLI tests' fixtures ----------------------------------------------------


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    servers: list[Server] = []
    handles = []

    def start(home: Path, listen: str = "127.0.0.1:0") -> Server:
        log = tmp_path / f"serve-{home.name}-{len(servers)}.log"
        fh = log.open("wb")
        handles.append(fh)
        proc = subprocess.Popen(
            [sys.executable, "-m", "psi_share.cli.main", "--home", str(home), "serve", "--listen", listen],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=fh,
            env=base_env(tmp_path), cwd=tmp_path,
        )
        server = Server(proc, log)
        servers.append(server)
        server.wait_listening()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.kill()
        for fh in handles:
            fh.close()


@pytest.fixture
def labs(tmp_path: Path) -> Labs:
    """lab-a and lab-b initialised, data imported, peers added both ways (lab-b's
    address on lab-a is a placeholder until lab-b serves)."""
    a, b = tmp_path / "lab-a", tmp_path / "lab-b"
    for name, home in (("lab-a", a), ("lab-b", b)):
        out = ok(cli(tmp_path, "init", name, "--listen", "127.0.0.1:0", "--tls-from", issue_cert(tmp_path, name),
                     home=home)).stdout
        assert f"created node {name!r}" in out and "identity key fingerprint:" in out
        assert (home / "config.toml").is_file() and (home / "store.sqlite3").is_file()
    summary = ok_json(cli(tmp_path, "data", "import", "flagged", write_csv(tmp_path / "a.csv", LAB_A_ROWS),
                          "--format", "json", home=a))
    assert summary["rows"] == 10 and summary["actors"] == 8
    assert summary["identifiers"] == 9 and summary["duplicates_collapsed"] == 1
    summary = ok_json(cli(tmp_path, "data", "import", "flagged", write_csv(tmp_path / "b.csv", LAB_B_ROWS),
                          "--format", "json", home=b))
    assert summary["actors"] == 9 and summary["identifiers"] == 9
    # Policy: by default a peer gets counts only; these two labs let each other see matches.
    for home, peer in ((a, "lab-b"), (b, "lab-a")):
        with (home / "config.toml").open("a") as fh:
            fh.write(f"\n[policy.peers.{peer}]\nreveal = true\n")
    assert "peer lab-b at 127.0.0.1:1" in ok(cli(tmp_path, "peers", "add", "lab-b", "127.0.0.1:1", home=a)).stdout
    ok(cli(tmp_path, "peers", "add", "lab-a", "127.0.0.1:1", "--note", "lab a", home=b))
    return Labs(a, b)
