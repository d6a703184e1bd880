"""``psi-share audit``: verify, scan and report on the compliance audit log.

These commands only read the node home: they never open the node, never
append to the log, and run while ``serve`` is running.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..audit.log import AuditError, load_public_key_hex, verify_log
from ..errors import ConfigError
from ..node.home import AUDIT_KEY, NodeHome

EXIT_FAILED = 1


def _home(ctx: click.Context) -> NodeHome:
    home = NodeHome(ctx.find_root().obj.home)
    if not (home.audit_path / "log.jsonl").exists():
        raise AuditError(f"{home.path} holds no audit log yet (audit/log.jsonl)")
    return home


def _trusted_key(home: NodeHome, public_key: Path | None) -> Ed25519PublicKey:
    if public_key is not None:
        return load_public_key_hex(public_key.read_text())
    path = home.keys_path / AUDIT_KEY
    if not path.exists():
        raise ConfigError(f"{path} is missing: give the audit public key with --public-key FILE")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    return key.public_key()  # type: ignore[return-value]


def _parse_head(value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    count, _, head = value.partition(":")
    if not count.isdigit() or len(head) != 64:
        raise click.BadParameter("use COUNT:HASH as printed by 'psi-share audit head'")
    return int(count), head.lower()


@click.group()
def audit() -> None:
    """Check the tamper-evident record of everything this node sent and received."""


@audit.command("verify")
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Trust this audit public key (hex, as in audit/audit_key.pub) instead of keys/audit.key.")
@click.option("--expect-head", default=None, metavar="COUNT:HASH",
              help="A head exported earlier ('audit head'): the log must still hold exactly that prefix.")
@click.pass_context
def audit_verify(ctx: click.Context, public_key: Path | None, expect_head: str | None) -> None:
    """Check the hash chain, checkpoint signatures and transcripts.

    Detects an edited, deleted, inserted, reordered or truncated entry and
    names the first bad one. Exit code 0 when the log is intact, 1 when not.
    Entries after the last signed checkpoint are protected by the chain
    only; --expect-head closes that gap.
    """
    home = _home(ctx)
    name = home.load_config().name
    result = verify_log(home.audit_path, _trusted_key(home, public_key), node=name, expect_head=_parse_head(expect_head))
    if result.ok:
        click.echo(
            f"audit log of {name}: OK: {result.entries} entries, {result.checkpoints} signed checkpoints, "
            f"head {result.entries}:{result.head}"
        )
        click.echo(
            f"transcripts: {result.transcripts_checked} verified, {result.transcripts_pruned} pruned by retention; "
            f"entries after the last checkpoint: {result.uncovered}"
        )
        return
    click.echo(f"audit log of {name}: FAILED: first bad entry at {result.first_bad}", err=True)
    for problem in result.problems:
        click.echo(f"  {problem}", err=True)
    sys.exit(EXIT_FAILED)


@audit.command("head")
@click.pass_context
def audit_head(ctx: click.Context) -> None:
    """Print COUNT:HASH of the log's last entry, to keep somewhere the node's operators cannot edit."""
    home = _home(ctx)
    result = verify_log(home.audit_path, _trusted_key(home, None), check_transcripts=False)
    if not result.ok:
        click.echo(f"the log does not verify (first bad entry at {result.first_bad}); run 'audit verify'", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"{result.entries}:{result.head}")
