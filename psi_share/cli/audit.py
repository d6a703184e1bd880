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


@audit.command("scan")
@click.option("--against", "against", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The lab's own raw data file (CSV or JSONL, as imported). Repeatable; more files may follow.")
@click.argument("more", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def audit_scan(ctx: click.Context, against: tuple[Path, ...], more: tuple[Path, ...]) -> None:
    """Search every transcript for any form of the identifiers in FILE...

    Forms: raw text, canonical text, the domain-separated item, and the MD5,
    SHA-1, SHA-256 and SHA-512 of each (raw bytes, hex, HEX, base64). Also
    checks that each recorded message parses as the type the log names and
    holds only what that type may hold. Reports every hit with its place
    (log entry and byte offset; the identifier by file and line, never by
    value). Exit code 0 when nothing is found, 1 on any hit or bad message.
    Messages sent while transcripts were off cannot be scanned: they are
    counted, and the text fields their entries record are searched.
    """
    import time

    from ..audit.scan import scan_audit

    home = _home(ctx)
    config = home.load_config()
    verified = verify_log(home.audit_path, _trusted_key(home, None), node=config.name)
    if not verified.ok:
        click.echo(f"audit log of {config.name} does not verify (first bad entry at {verified.first_bad}); "
                   "run 'psi-share audit verify'", err=True)
        sys.exit(EXIT_FAILED)
    started = time.perf_counter()
    result = scan_audit(home.audit_path, [*against, *more], config.canonicalization)
    seconds = time.perf_counter() - started
    click.echo(
        f"scanned {result.transcripts} transcripts ({result.transcript_bytes} bytes, {result.messages_checked} messages) "
        f"for {result.needles} forms of {result.identifiers} identifiers in {seconds:.1f}s"
    )
    if result.skipped_short:
        click.echo(f"  ({result.skipped_short} text forms shorter than 8 bytes searched only through their items and digests)")
    if result.sent_without_transcript:
        click.echo(f"  {result.sent_without_transcript} messages were sent while transcripts were off: "
                   "their digests and text fields are logged (the text was searched), their bytes cannot be scanned")
    for finding in result.hits:
        click.echo(f"IDENTIFIER FOUND: {finding.place}: {finding.what}", err=True)
    for finding in result.invalid:
        click.echo(f"BAD MESSAGE: {finding.place}: {finding.what}", err=True)
    if result.clean:
        click.echo(f"audit scan of {config.name}: CLEAN: no form of any identifier, every message as its type allows")
        return
    click.echo(f"audit scan of {config.name}: FOUND {len(result.hits)} identifier form(s), "
               f"{len(result.invalid)} bad message(s)", err=True)
    sys.exit(EXIT_FAILED)


@audit.command("report")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for report.md and report.html (default: HOME/audit/report).")
@click.pass_context
def audit_report(ctx: click.Context, out_dir: Path | None) -> None:
    """Write the compliance report: Markdown and a self-contained HTML page.

    Bytes sent per peer per day (with a chart), what left to whom and when
    under which protection, and a disclosure ledger per peer: its queries,
    how many of our items they covered, and every result it received.
    """
    import time

    from ..audit.log import load_entries
    from ..audit.report import build_report, render_html, render_markdown

    home = _home(ctx)
    name = home.load_config().name
    verified = verify_log(home.audit_path, _trusted_key(home, None), node=name)
    report = build_report(name, load_entries(home.audit_path), verified, time.time_ns())
    out = out_dir or home.audit_path / "report"
    out.mkdir(parents=True, exist_ok=True)
    for file_name, text in (("report.md", render_markdown(report)), ("report.html", render_html(report))):
        tmp = out / (file_name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out / file_name)
    click.echo(f"wrote {out / 'report.md'} and {out / 'report.html'} (log {'intact' if verified.ok else 'FAILED verification'})")
    if not verified.ok:
        sys.exit(EXIT_FAILED)
